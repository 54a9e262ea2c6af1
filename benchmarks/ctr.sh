#!/usr/bin/env bash
# The CPU click-model benchmark behind docs/benchmarks.md's "cpu-ctr-*" tables: RecBole's
# labelled protocol (AUC, GAUC, LogLoss), 3 seeds, on ml-100k, the Taobao head and
# Beauty: AttnDIN, AttnDIEN, BST and (not on Beauty, which has no action field) ATRank
# with its ablations (one behaviour group, no time encoding) against RecBole's DIN and
# DIEN; on Taobao also AttnDIN with PReLU instead of Dice and with plain L2 instead of
# mini-batch aware regularisation; then the data pipeline's overhead (--throughput) on
# ml-100k. Resumable: recorded runs are skipped.
#
#   recbole-attn convert taobao --csv ../shared/data/taobao-userbehavior/UserBehavior_head.csv \
#       --name taobao --out "$DATA" --category-conflict first   # beauty: see cpu.sh
#   DATA=/path/to/converted bash benchmarks/ctr.sh            # or DATASETS=ml-100k
#   recbole-attn report benchmarks/records --doc docs/benchmarks.md --plots docs/img
# Each run uses one torch thread (OMP_NUM_THREADS=1): two copies of this script with
# different DATASETS and OUT use two cores without slowing each other down.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-benchmarks/records/ctr}
DATASETS=${DATASETS:-ml-100k taobao beauty}
SEEDS=${SEEDS:-1,2,3}
bench() { recbole-attn benchmark --seeds "$SEEDS" --out "$OUT" --resume --no-progress "$@"; }

for ds in $DATASETS; do
  extra=(--dataset "$ds" --config_files "benchmarks/presets/cpu-ctr-$ds.yaml")
  [ "$ds" != ml-100k ] && extra+=(--data_path="${DATA:?set DATA to the folder that holds the converted $ds/ folder}")
  bench --models AttnDIN,AttnDIEN "${extra[@]}"
  if [ "$ds" != beauty ]; then  # Beauty has no action field for ATRank's behaviour groups
    bench --models ATRank "${extra[@]}"
    bench --models ATRank --label ATRank-one-group "${extra[@]}" --single_group=True
    bench --models ATRank --label ATRank-no-time "${extra[@]}" --use_time=False
  fi
  bench --models DIN,BST "${extra[@]}"
  if [ "$ds" = taobao ]; then
    bench --models AttnDIN --label AttnDIN-PReLU "${extra[@]}" --activation=prelu --attention_activation=prelu
    bench --models AttnDIN --label AttnDIN-L2 "${extra[@]}" --reg_type=l2
  fi
  bench --models DIEN "${extra[@]}"   # RecBole's DIEN: the slowest here (~4 min per epoch on ml-100k at 1 thread), last
done
if [[ " $DATASETS " == *" ml-100k "* ]]; then
  SEEDS=1 bench --models AttnDIN,AttnDIEN,BST,ATRank,DIN,DIEN --dataset ml-100k \
    --config_files benchmarks/presets/cpu-ctr-ml-100k.yaml --throughput
fi
