#!/usr/bin/env bash
# The reference grid (benchmarks/reference.sh) on a lent GPU machine, one device command a lease.
#
# Here, from the repository root, once a session:
#   bash ../shared/tools/gpu-wheels.sh              # RecBole and its small dependencies -> .whl/
#   bash benchmarks/device-grid.sh prepare [RAW]    # the raw public files -> .device/raw/ (git ignores it)
# The device command (carry [".whl", ".device"], timeout_s 600):
#   bash benchmarks/device-grid.sh run [SECONDS]
#     installs the wheels, runs reference.sh on the GPU (JOBS processes, default 12; no new job
#     after SECONDS, default 420; the jobs under way are stopped SECONDS + GRACE s after the start,
#     GRACE default 90)
#     and packs what this lease recorded into one file, $OUT/ref-records.tgz (a device returns
#     only a few files). A run stopped unfinished leaves no record, so the next lease redoes it.
# Here again:
#   bash benchmarks/device-grid.sh collect FILES_AT/ref-records.tgz
#     adds the lease's records to benchmarks/records/ref (lines not there yet; nothing replaced).
# Each lease goes on where the records stop: the tree it takes holds benchmarks/records/ref, and
# reference.sh (--resume) skips every run recorded there, here or on an earlier lease. RECORDS
# (default benchmarks/records/ref) names another records folder; WHEELS (default .whl) the wheels'
# folder, PYTHON (default python3) the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${RECORDS:-benchmarks/records/ref}
usage() { echo "usage: bash benchmarks/device-grid.sh prepare [RAW] | run [SECONDS] | collect FILE.tgz" >&2; exit 2; }

prepare() {  # RAW: the folder of the raw public files (reference.sh's layout)
  local raw=${1:-${RAW:-../shared/data}} f
  local files=(amazon-s3rec/Beauty.txt amazon-s3rec/Beauty_item2attributes.json taobao-userbehavior/UserBehavior_head.csv)
  for f in "${files[@]}"; do
    [ -f "$raw/$f" ] || { echo "device-grid.sh: no such file: $raw/$f (give the folder of the raw data as RAW)" >&2; exit 2; }
  done
  mkdir -p .device/raw/amazon-s3rec .device/raw/taobao-userbehavior
  grep -qx '/.device/' "$(git rev-parse --git-path info/exclude)" 2>/dev/null \
    || echo '/.device/' >> "$(git rev-parse --git-path info/exclude)"
  for f in "${files[@]}"; do cp "$raw/$f" ".device/raw/$f"; done
  echo "device-grid.sh: raw files in .device/raw; device command: bash benchmarks/device-grid.sh run (carry .whl and .device)"
}

run() {  # on the device machine
  local budget=${1:-420} mark rc=0
  [[ "$budget" =~ ^[0-9]+$ ]] || usage
  [ -n "$OUT_BACK" ] || { echo "device-grid.sh run: OUT (the device's folder of files to bring back) is not set" >&2; exit 2; }
  local wheels=${WHEELS:-.whl} py=${PYTHON:-python3}
  if compgen -G "$wheels/*.whl" > /dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl
    export PYTHONPATH=/tmp/site:$PWD
  fi
  "$py" -c "import recbole, recbole_attn" || { echo "device-grid.sh: RecBole missing: carry .whl (gpu-wheels.sh)" >&2; exit 2; }
  export GPU=${GPU:-$("$py" -c 'import torch; print(torch.cuda.is_available())')}  # True: the GPU grid
  mark=$(mktemp)  # what is newer than this was written by this lease
  export RECBOLE_ATTN=${RECBOLE_ATTN:-$py -m recbole_attn.cli} JOBS=${JOBS:-12} DEADLINE=$budget OUT=$RECORDS
  # SIGTERM: background jobs of a script ignore SIGINT; a run stopped unfinished writes no record
  timeout --signal=TERM --kill-after=20 $((budget + ${GRACE:-90})) bash benchmarks/reference.sh .device/raw || rc=$?
  (cd "$RECORDS" && find . -type f -newer "$mark" ! -name '*.pth' ! -path '*/log_tensorboard/*' -print0) \
    | tar czf "$OUT_BACK/ref-records.tgz" -C "$RECORDS" --null -T -
  echo "device-grid.sh: reference.sh exit $rc; $(tar tzf "$OUT_BACK/ref-records.tgz" | grep -c 'records.jsonl$' || true) records files back"
}

collect() {  # FILE: the lease's ref-records.tgz
  local tgz=${1:-} tmp f
  [ -f "$tgz" ] || usage
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  tar xzf "$tgz" -C "$tmp"
  local added=0 here new
  while IFS= read -r -d '' f; do
    f=${f#"$tmp"/}; here=$RECORDS/$f
    mkdir -p "$(dirname "$here")"
    if [[ "$f" =~ (^|/)(records\.jsonl|grid\.txt)$ ]]; then  # keep every line here, add the new ones
      touch "$here"
      new=$(grep -Fxv -f "$here" "$tmp/$f" || true)
      [ -z "$new" ] || printf '%s\n' "$new" >> "$here"
      [[ "$f" == */records.jsonl && -n "$new" ]] && added=$((added + $(printf '%s\n' "$new" | wc -l)))
    elif [ ! -e "$here" ]; then
      cp "$tmp/$f" "$here"
    fi
  done < <(find "$tmp" -type f -print0)
  echo "device-grid.sh: $added record(s) added under $RECORDS; then: recbole-attn report benchmarks/records --results docs/results.md"
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  run) shift; OUT_BACK=${OUT:-}; run "$@" ;;
  collect) shift; collect "$@" ;;
  *) usage ;;
esac
