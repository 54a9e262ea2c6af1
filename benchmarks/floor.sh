#!/usr/bin/env bash
# Floor ratios on ml-100k (one thread): every plugin model and RecBole's SASRec and
# BERT4Rec through our runner vs a plain loop (benchmarks/floor.py), one process at a time.
#   OUT=/path/to/records bash benchmarks/floor.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
OUT=${OUT:-benchmarks/records/speed/floor}
MODELS=${MODELS:-AttnDIN AttnDIEN BST ATRank AttnBERT4Rec NOVABERT AttRec SASRec BERT4Rec}
for m in $MODELS; do
  nice -n 10 python benchmarks/floor.py "$m" ml-100k --batches "${BATCHES:-4}" --rounds "${ROUNDS:-5}" --out "$OUT" "$@"
done
