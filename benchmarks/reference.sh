#!/usr/bin/env bash
# The reference grid: every model trained to convergence (early stopping, patience 10, a
# 200-epoch cap; benchmarks/presets/ref-*.yaml), 3 seeds, from the public raw data.
#
#   bash benchmarks/reference.sh [RAW [DATA]]
#   recbole-attn report benchmarks/records --results docs/results.md   # the "Reference results" page
#
#   SMOKE=1 bash benchmarks/reference.sh RAW   # the same script end to end in minutes: a few
#       jobs of each kind (sequential, labelled on ml-100k and the Taobao head, PRM with its
#       control, Beauty), seed 1, one epoch each, records in benchmarks/scratch/smoke, then
#       the results page from them (benchmarks/scratch/smoke/results.md); proves the grid
#       runs, not a number to cite.
#   DRY_RUN=1 bash benchmarks/reference.sh     # print the jobs of the grid and stop
#   ONLY='^ml-100k/' bash benchmarks/reference.sh   # only the jobs whose name (TABLE/ROW/seedS/)
#       matches the bash regex: a CPU grows the grid a table or a row at a time, across sessions;
#       the raw data of a dataset is converted only when a chosen job reads it
#   DEADLINE=3000 bash benchmarks/reference.sh   # take no new job 3000 s after the start (the
#       jobs under way finish): a session or a lease with an end time; a rerun goes on
#   On a lent GPU machine: benchmarks/device-grid.sh (wheels, raw data, records back as one file).
#
# RAW: folder of the raw public files (default $RAW, else ../shared/data), laid out as
#   amazon-s3rec/Beauty.txt, amazon-s3rec/Beauty_item2attributes.json and
#   taobao-userbehavior/UserBehavior_head.csv; each file can also be named on its own with
#   BEAUTY_SEQ, BEAUTY_ATTRIBUTES and TAOBAO_CSV. ml-100k comes with RecBole.
# DATA: folder that receives the converted atomic files (default $DATA, else
#   benchmarks/scratch/data). Keep it relative to the repository: the records keep
#   `--data_path` as given, so each row's command pastes from the repository root anywhere.
#
# Grid: ml-100k, full ranking: SASRec, SASRecF, GRU4Rec, FDSA, AttRec (20 positions) and the
# cloze models BERT4Rec, AttnBERT4Rec, NOVABERT, NOVABERT-invasive, NOVABERT-behavior (21:
# one for the mask token, so every model reads 20 items); PRM on SASRec's and AttRec's
# lists, each with its control (--ranker_control: the ranker retrained on train + the
# validation-point rows PRM learns from). ml-100k and the Taobao head, labelled protocol: AttnDIN, AttnDIEN, ATRank, BST,
# RecBole's DIN and DIEN. Beauty: on a CPU only NOVABERT, NOVABERT-invasive, AttnBERT4Rec
# and SASRecF at one seed (tables then say "seeds 1"); on a GPU every sequential model at
# 3 seeds, and ml-100k and Beauty's sequential grid again at 50 positions (51).
#
# Parallel: JOBS processes at a time (default 2 on a CPU, each with one torch thread: a
# 2-core CPU is busy without the runs slowing each other; 4 on a GPU machine). Each job is
# one row at one seed with its own --out folder under OUT (default benchmarks/records/ref),
# taken from one queue by whichever process is free; rerunning the script skips every run
# already recorded (--resume), whatever JOBS was, and continues a killed run from its last
# finished epoch (same commit and config). Logs: OUT/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
RAW=${1:-${RAW:-../shared/data}}
DATA=${2:-${DATA:-benchmarks/scratch/data}}
SMOKE=${SMOKE:-0}
DRY_RUN=${DRY_RUN:-0}
ONLY=${ONLY:-}
DEADLINE=${DEADLINE:-}
START=$(date +%s)
RA=${RECBOLE_ATTN:-recbole-attn}  # the command; where the package is not installed: "python3 -m recbole_attn.cli"
if [ "$SMOKE" = 1 ]; then OUT=${OUT:-benchmarks/scratch/smoke}; SEEDS=${SEEDS:-1}; fi
OUT=${OUT:-benchmarks/records/ref}
SEEDS=${SEEDS:-1 2 3}
# the jobs SMOKE=1 keeps (one of each kind), each for one epoch
SMOKE_JOBS=${SMOKE_JOBS:-'^(ml-100k/SASRec|ml-100k/NOVABERT-behavior|ml-100k-ctr/AttnDIN|taobao-ctr/AttnDIN|ml-100k-prm/SASRec|beauty/SASRecF)/'}
export OMP_NUM_THREADS=1
GPU=${GPU:-$(python -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null || echo False)}
if [ "$GPU" = True ]; then JOBS=${JOBS:-4}; else JOBS=${JOBS:-2}; fi
BEAUTY_SEQ=${BEAUTY_SEQ:-$RAW/amazon-s3rec/Beauty.txt}
BEAUTY_ATTRIBUTES=${BEAUTY_ATTRIBUTES:-$RAW/amazon-s3rec/Beauty_item2attributes.json}
TAOBAO_CSV=${TAOBAO_CSV:-$RAW/taobao-userbehavior/UserBehavior_head.csv}
P=benchmarks/presets

# ---------------------------------------------------------------- the queue of jobs
mkdir -p "$OUT/logs"
QUEUE=$(mktemp) COUNTER=$(mktemp) FAILED=$(mktemp) GRID=$(mktemp) LEFT=$(mktemp)
trap 'rm -f "$QUEUE" "$COUNTER" "$COUNTER.lock" "$FAILED" "$GRID" "$LEFT"' EXIT
echo 0 > "$COUNTER"
# job NAME ARGS...: one `recbole-attn benchmark` run list, recorded in OUT/NAME (only the jobs
# ONLY matches, when set; with SMOKE=1 only the jobs SMOKE_JOBS matches, for one epoch). Every
# job's NAME goes to OUT/grid.txt, so the results page says how much of the grid is recorded.
job() {
  [ "$SMOKE" = 1 ] && { [[ "$1/" =~ $SMOKE_JOBS ]] || return 0; }
  echo "$1" >> "$GRID"  # every job of the grid, chosen by ONLY or not
  [ -z "$ONLY" ] || [[ "$1/" =~ $ONLY ]] || return 0
  [ "$SMOKE" = 1 ] && set -- "$@" --epochs=1
  printf '%q ' "$@" >> "$QUEUE"; echo >> "$QUEUE"
}

# seq_grid TABLE DATASET SEEDS LENGTH CONFIG_FILES [extra args]: the sequential models
seq_grid() {
  local table=$1 ds=$2 seeds=$3 len=$4 files=$5; shift 5
  local base=(--dataset "$ds" --config_files "$files" "$@")
  local cloze=(--MAX_ITEM_LIST_LENGTH=$((len + 1)))  # the mask token's position on top
  local side=() s m
  [ "$ds" = beauty ] && side=(--item_side_fields='[]')  # the preset's item side fields are NOVABERT's
  for s in $seeds; do
    for m in SASRec SASRecF GRU4Rec FDSA AttRec; do job "$table/$m/seed$s" --models $m --seeds $s "${base[@]}"; done
    job "$table/BERT4Rec/seed$s" --models BERT4Rec --seeds $s "${base[@]}" "${cloze[@]}"
    job "$table/AttnBERT4Rec/seed$s" --models AttnBERT4Rec --seeds $s "${base[@]}" "${cloze[@]}" "${side[@]}"
    job "$table/NOVABERT/seed$s" --models NOVABERT --seeds $s "${base[@]}" "${cloze[@]}"
    job "$table/NOVABERT-invasive/seed$s" --models NOVABERT --label NOVABERT-invasive --seeds $s "${base[@]}" \
      "${cloze[@]}" --attention_type=invasive
    if [ "$ds" = ml-100k ]; then  # behaviour side information: rating and time (the NOVA paper's setting)
      job "$table/NOVABERT-behavior/seed$s" --models NOVABERT --label NOVABERT-behavior --seeds $s "${base[@]}" \
        "${cloze[@]}" "--behavior_side_fields=['rating', 'timestamp']"
    fi
  done
}

# ctr_grid TABLE DATASET [extra args]: the target-item models, labelled protocol
ctr_grid() {
  local table=$1 ds=$2 s m; shift 2
  for s in $SEEDS; do
    for m in DIEN AttnDIEN ATRank AttnDIN BST DIN; do  # RecBole's DIEN, the slowest, first
      job "$table/$m/seed$s" --models $m --seeds $s --dataset "$ds" --config_files "$P/ref-ctr-$ds.yaml" "$@"
    done
  done
}

ctr_grid ml-100k-ctr ml-100k
ctr_grid taobao-ctr taobao --data_path="$DATA"
seq_grid ml-100k ml-100k "$SEEDS" 20 "$P/ref-ml-100k.yaml"
for s in $SEEDS; do  # PRM: its ranker trained once per seed (ref-ml-100k.yaml), in the job's folder
  for ranker in SASRec AttRec; do
    job "ml-100k-prm/$ranker/seed$s" --models PRM --ranker $ranker --seeds $s --dataset ml-100k \
      --config_files "$P/ref-prm-ml-100k.yaml" --ranker_config_files "$P/ref-ml-100k.yaml" --ranker_control
  done
done
if [ "$GPU" = True ]; then
  seq_grid beauty beauty "$SEEDS" 20 "$P/ref-beauty.yaml" --data_path="$DATA"
  seq_grid ml-100k-len50 ml-100k "$SEEDS" 50 "$P/ref-ml-100k.yaml $P/ref-len50.yaml"
  seq_grid beauty-len50 beauty "$SEEDS" 50 "$P/ref-beauty.yaml $P/ref-len50.yaml" --data_path="$DATA"
else  # one seed each, the models of the NOVABERT and BERT4Rec claims
  base=(--seeds 1 --dataset beauty --config_files "$P/ref-beauty.yaml" --data_path="$DATA")
  job beauty/NOVABERT/seed1 --models NOVABERT "${base[@]}" --MAX_ITEM_LIST_LENGTH=21
  job beauty/NOVABERT-invasive/seed1 --models NOVABERT --label NOVABERT-invasive "${base[@]}" \
    --MAX_ITEM_LIST_LENGTH=21 --attention_type=invasive
  job beauty/AttnBERT4Rec/seed1 --models AttnBERT4Rec "${base[@]}" --MAX_ITEM_LIST_LENGTH=21 --item_side_fields='[]'
  job beauty/SASRecF/seed1 --models SASRecF "${base[@]}"
fi

# ---------------------------------------------------------------- raw data -> atomic files
need() { [ -f "$1" ] || { echo "reference.sh: no such file: $1 (set $2, or RAW to the folder of the raw data)" >&2; exit 2; }; }
reads() { grep -q -- "--dataset $1 " "$QUEUE"; }  # a queued job reads dataset $1
if [ "$DRY_RUN" = 1 ]; then :  # nothing is converted or run
elif reads beauty && [ ! -f "$DATA/beauty/beauty.inter" ]; then
  need "$BEAUTY_SEQ" BEAUTY_SEQ; need "$BEAUTY_ATTRIBUTES" BEAUTY_ATTRIBUTES
  $RA convert s3rec --seq "$BEAUTY_SEQ" --attributes "$BEAUTY_ATTRIBUTES" --name beauty --out "$DATA"
fi
if [ "$DRY_RUN" = 1 ]; then :
elif reads taobao && [ ! -f "$DATA/taobao/taobao.inter" ]; then
  need "$TAOBAO_CSV" TAOBAO_CSV
  $RA convert taobao --csv "$TAOBAO_CSV" --name taobao --out "$DATA" --category-conflict first
fi

if [ "$DRY_RUN" != 1 ]; then  # OUT/grid.txt: the union of the grids run into OUT (a GPU's is larger)
  touch "$OUT/grid.txt"; grep -Fxv -f "$OUT/grid.txt" "$GRID" >> "$OUT/grid.txt" || true
fi

# ---------------------------------------------------------------- JOBS workers on the queue
next_job() {  # the next job's line number (1-based), taken under a lock
  local n
  {
    flock 9
    n=$(($(cat "$COUNTER") + 1))
    echo "$n" > "$COUNTER"
  } 9> "$COUNTER.lock"
  echo "$n"
}
worker() {
  local id=$1 n line name
  while n=$(next_job) && line=$(sed -n "${n}p" "$QUEUE") && [ -n "$line" ]; do
    if [ -n "$DEADLINE" ] && [ $(($(date +%s) - START)) -ge "$DEADLINE" ]; then
      echo "[$(date +%H:%M:%S)] worker $id: deadline of ${DEADLINE} s passed, no new job"
      echo "$n" >> "$LEFT"  # the first job this worker did not start
      break
    fi
    eval "set -- $line"
    name=$1; shift
    echo "[$(date +%H:%M:%S)] worker $id: $name"
    if ! $RA benchmark --out "$OUT/$name" --resume --no-progress "$@" \
        >> "$OUT/logs/${name//\//_}.log" 2>&1; then
      echo "$name" >> "$FAILED"
    fi
  done
}
if [ "$DRY_RUN" = 1 ]; then
  cat "$QUEUE"
  exit 0
fi
echo "reference.sh: $(wc -l < "$QUEUE") jobs, $JOBS at a time (GPU: $GPU), records in $OUT"
for i in $(seq "$JOBS"); do worker "$i" & done
wait
if [ -s "$FAILED" ]; then
  echo "reference.sh: runs failed in (see $OUT/logs/ and each records.jsonl; rerun to retry them):" >&2
  sed 's/^/  /' "$FAILED" >&2
  exit 1
fi
if [ -s "$LEFT" ]; then
  left=$(( $(wc -l < "$QUEUE") - $(sort -n "$LEFT" | head -1) + 1 ))
  echo "reference.sh: the deadline (${DEADLINE} s) passed with $left job(s) not started; rerun to go on"
  exit 0
fi
REPORT=($RA report "$OUT" --claims benchmarks/records/claims.yaml
        --paper_claims benchmarks/records/paper_claims.yaml)
if [ "$SMOKE" = 1 ]; then
  "${REPORT[@]}" --results "$OUT/results.md"
  echo "reference.sh: smoke run done (one epoch per job: no number to cite); page: $OUT/results.md"
else
  echo "reference.sh: done; now: ${REPORT[*]} --results docs/results.md"
fi
