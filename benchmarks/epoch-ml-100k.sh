#!/usr/bin/env bash
# Training-epoch time of the cloze models with their shipped configs on ml-100k (L = 50):
# RecBole's BERT4Rec, AttnBERT4Rec and NOVABERT on RecBole's prefix samples, and both
# plugin models on BERT4Rec's sliding windows (train_samples=window). One epoch each,
# one process after the other, nothing else running: compare the s/epoch column.
#
#   bash benchmarks/epoch-ml-100k.sh
#   recbole-attn report benchmarks/records --doc docs/benchmarks.md --plots docs/img
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/records/epoch}
bench() { recbole-attn benchmark --dataset ml-100k --seeds 1 --out "$OUT" --resume --no-progress "$@"; }

bench --models BERT4Rec,AttnBERT4Rec,NOVABERT epochs=1
bench --models AttnBERT4Rec --label AttnBERT4Rec-window epochs=1 --train_samples=window
bench --models NOVABERT --label NOVABERT-window epochs=1 --train_samples=window

# Equal training time instead of equal epochs: NOVABERT on prefixes for 5 epochs vs on
# windows for 35 epochs (about 7x cheaper each, by the runs above). The committed records of
# these two ran with OMP_NUM_THREADS=1 (the five above with torch's default of 2), so their
# s/epoch compare with each other only.
bench --models NOVABERT --label NOVABERT-prefix-5ep --epochs=5
bench --models NOVABERT --label NOVABERT-window-35ep --train_samples=window --epochs=35
