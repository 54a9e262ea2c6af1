#!/usr/bin/env bash
# The CPU benchmark behind docs/benchmarks.md's "cpu-*" tables: every model x 3 seeds on
# ml-100k and Beauty with the CPU presets, then NOVABERT's variants (issue: NOVABERT vs
# invasive vs BERT4Rec), and on ml-100k the target-item models in the full ranking.
# Resumable: runs already recorded are skipped.
#
#   recbole-attn convert s3rec --seq ../shared/data/amazon-s3rec/Beauty.txt \
#       --attributes ../shared/data/amazon-s3rec/Beauty_item2attributes.json --name beauty --out "$DATA"
#   DATA=/path/to/converted bash benchmarks/cpu.sh
#   recbole-attn report benchmarks/records --doc docs/benchmarks.md --plots docs/img
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/records/cpu}
DATA=${DATA:?set DATA to the folder that holds the converted beauty/ folder}  # ml-100k comes with RecBole
SEEDS=${SEEDS:-1,2,3}
MODELS=SASRec,SASRecF,GRU4Rec,BERT4Rec,FDSA,AttRec,NOVABERT,AttnBERT4Rec
bench() { recbole-attn benchmark --seeds "$SEEDS" --out "$OUT" --resume --no-progress "$@"; }

for ds in ml-100k beauty; do
  extra=(--dataset "$ds" --config_files "benchmarks/presets/cpu-$ds.yaml")
  [ "$ds" = beauty ] && extra+=(--data_path="$DATA")
  if [ "$ds" = beauty ]; then
    # the preset's item_side_fields are NOVABERT's; AttnBERT4Rec (BERT4Rec) refuses side information
    bench --models "${MODELS/,AttnBERT4Rec/}" "${extra[@]}"
    bench --models AttnBERT4Rec "${extra[@]}" --item_side_fields='[]'
  else
    bench --models "$MODELS" "${extra[@]}"
  fi
  bench --models NOVABERT --label NOVABERT-add "${extra[@]}" --fusion_type=add
  bench --models NOVABERT --label NOVABERT-concat "${extra[@]}" --fusion_type=concat
  bench --models NOVABERT --label NOVABERT-invasive "${extra[@]}" --attention_type=invasive
  if [ "$ds" = ml-100k ]; then
    # NOVABERT without the LayerNorm of its side embeddings, and with behaviour side
    # information (rating and time buckets, the NOVA paper's setting)
    bench --models NOVABERT --label NOVABERT-noLN "${extra[@]}" --side_layer_norm=False
    bench --models NOVABERT --label NOVABERT-behavior --dataset ml-100k \
      --config_files "benchmarks/presets/cpu-ml-100k.yaml benchmarks/presets/nova-behavior-ml-100k.yaml"
    # target-item models in the full ranking (their presets use sampled negatives): every
    # (user, item) pair is a forward pass, so on Beauty (22,363 users x 12,101 items = 270M
    # pairs per evaluation, ~3 h for AttnDIN at ~25k pairs/s on one CPU thread) this needs a GPU
    bench --models AttnDIN,AttnDIEN,ATRank,BST "${extra[@]}" \
      "--eval_args={'split': {'LS': 'valid_and_test'}, 'order': 'TO', 'group_by': 'user', 'mode': 'full'}"
  fi
done
