#!/usr/bin/env bash
# The CPU benchmark of PRM behind docs/benchmarks.md's "cpu-prm-*" tables: on ml-100k and
# Beauty, with SASRec (RecBole) and AttRec (recbole-attn) as initial rankers, 3 seeds:
# the initial list, PRM, PRM without the personalised vector, PRM without the rank
# embedding. Each seed's ranker is trained once (cpu-<dataset>.yaml) and shared by the
# three PRM variants. Resumable: recorded runs are skipped.
#
#   DATA=/path/to/converted bash benchmarks/prm.sh     # DATA holds beauty/ (see cpu.sh); or DATASETS=ml-100k
#   recbole-attn report benchmarks/records --doc docs/benchmarks.md --plots docs/img
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=${OUT:-benchmarks/records/prm}
DATASETS=${DATASETS:-ml-100k beauty}
SEEDS=${SEEDS:-1,2,3}
RANKERS=${RANKERS:-SASRec AttRec}
bench() { recbole-attn benchmark --models PRM --seeds "$SEEDS" --out "$OUT" --resume --no-progress "$@"; }

for ds in $DATASETS; do
  extra=(--dataset "$ds" --config_files "benchmarks/presets/cpu-prm-$ds.yaml"
         --ranker_config_files "benchmarks/presets/cpu-$ds.yaml")
  [ "$ds" != ml-100k ] && extra+=(--data_path="${DATA:?set DATA to the folder that holds the converted $ds/ folder}")
  for ranker in $RANKERS; do
    bench --ranker "$ranker" "${extra[@]}"
    bench --ranker "$ranker" --label PRM-no-personal-vector "${extra[@]}" --use_personal_vector=False
    bench --ranker "$ranker" --label PRM-no-rank-embedding "${extra[@]}" --use_rank_embedding=False
  done
done
