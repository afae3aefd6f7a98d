#!/usr/bin/env bash
# ScribbleLens recipe (Łańcucki et al. 2020 §IV-B): train the VQ autoencoder for every Table II row (and the Huh
# remedies), evaluate each on the test split, print Table II.
#
#   recipes/scribblelens/run.sh --data scribblelens.corpus.v1.2.zip   # the real corpus, read in place (paper scale)
#   recipes/scribblelens/run.sh --mini                                 # built MNIST-lines corpus, minutes per row
#
# Options: --stage N / --stop-stage N (0 data, 1 train, 2 evaluate, 3 table), --rows "vanilla bn ..."
# (default: all), --exp DIR (default exp/scribblelens/{full,mini}), and after `--` extra dotted overrides for
# every row, e.g. `-- train.steps=100 train.seed=1`. Training resumes from a row's last checkpoint when re-run.
# Threads: OMP_NUM_THREADS (default 2 here).
set -euo pipefail

recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$recipe/../.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

TABLE_ROWS="vanilla bn bn_codebook_lr bn_ema bn_reestimation bn_reestimation_codebook_lr"
HUH_ROWS="huh_affine huh_sync huh_alternating huh_replacement"
rows="$TABLE_ROWS $HUH_ROWS"
stage=0 stop_stage=3 corpus="" mini=0 exp="" extra=()

usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-1}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --data) corpus=$2; shift 2 ;;
    --mini) mini=1; shift ;;
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "error: run.sh: unknown option $1" >&2; usage ;;
  esac
done
if [ "$mini" = 1 ] && [ -n "$corpus" ]; then echo "error: run.sh: give --data ZIP or --mini, not both" >&2; exit 1; fi
if [ "$mini" = 1 ]; then
  corpus=$repo/data/mini_handwriting
  exp=${exp:-$repo/exp/scribblelens/mini}
elif [ -n "$corpus" ]; then
  [ -f "$corpus" ] || { echo "error: run.sh: $corpus: no such file (the ScribbleLens zip, OpenSLR 84)" >&2; exit 1; }
  corpus=$(cd "$(dirname "$corpus")" && pwd)/$(basename "$corpus")
  exp=${exp:-$repo/exp/scribblelens/full}
else
  usage
fi

# overrides of one row: the --mini lines that apply to it, then the command line's
row_overrides() {
  if [ "$mini" = 1 ]; then
    grep -v '^\s*#' "$recipe/conf/mini.overrides" | awk -v row="$1" -F': ' '$1 == "*" { print $2 }'
    grep -v '^\s*#' "$recipe/conf/mini.overrides" | awk -v row="$1" -F': ' '$1 == row { print $2 }'
  fi
  echo "data.corpus=$corpus"
  for item in "${extra[@]+"${extra[@]}"}"; do echo "$item"; done
}

for row in $rows; do
  [ -f "$recipe/conf/$row.yaml" ] || { echo "error: run.sh: no config conf/$row.yaml" >&2; exit 1; }
done

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ] && [ "$mini" = 1 ]; then
  if [ -f "$corpus/train.npz" ] && [ -f "$corpus/test.npz" ]; then
    echo "stage 0: $corpus already built"
  else
    echo "stage 0: building the mini corpus in $corpus"
    python "$repo/data_prep/make_mini_handwriting.py" --out "$corpus"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  for row in $rows; do
    mapfile -t overrides < <(row_overrides "$row")
    echo "stage 1: training $row -> $exp/$row"
    start=$(date +%s)
    python -m seqvq.cli train "$recipe/conf/$row.yaml" "${overrides[@]}" --exp-dir "$exp/$row"
    echo "$row trained in $(( $(date +%s) - start )) s" | tee -a "$exp/train_times.txt"
  done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  for row in $rows; do
    echo "stage 2: evaluating $row"
    python -m seqvq.cli evaluate "$exp/$row/checkpoints/last.pt" "$corpus" --out "$exp/$row/eval"
  done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  "$recipe/table2.sh" "$exp" $rows
fi
