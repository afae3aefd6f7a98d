#!/usr/bin/env bash
# VQ-VAE recipe (Huh et al. 2023 §5.2): train the 64-channel VQ-VAE for every Table 3 row, evaluate each on the
# test split (MSE, code perplexity), print Table 3.
#
#   recipes/vqvae/run.sh --data cifar-10-python.tar.gz    # the real set (or cifar-10-batches-py/), read in place
#   recipes/vqvae/run.sh --mini                            # built set of 32x32 photo crops, minutes per row
#
# Options: --stage N / --stop-stage N (0 data, 1 train, 2 evaluate, 3 table), --rows "vqvae l2 ..." (default:
# all), --exp DIR (default exp/vqvae/{full,mini}), and after `--` extra dotted overrides for every row, e.g.
# `-- train.steps=100 train.seed=1`. Training resumes from a row's last checkpoint when re-run.
# Threads: OMP_NUM_THREADS (default 2 here).
set -euo pipefail

recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$recipe/../.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

rows="vqvae l2 replace l2_replace sqvae gumbel affine opt affine_opt affine_opt_replace affine_opt_replace_l2"
stage=0 stop_stage=3 corpus="" mini=0 exp="" extra=()

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-1}"; }
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
    *) echo "run.sh: unknown option $1" >&2; usage ;;
  esac
done
if [ "$mini" = 1 ] && [ -n "$corpus" ]; then echo "run.sh: give --data CIFAR or --mini, not both" >&2; exit 1; fi
if [ "$mini" = 1 ]; then
  corpus=$repo/data/mini_images
  exp=${exp:-$repo/exp/vqvae/mini}
elif [ -n "$corpus" ]; then
  [ -e "$corpus" ] || { echo "run.sh: $corpus: no such file or folder (cifar-10-python.tar.gz)" >&2; exit 1; }
  corpus=$(cd "$(dirname "$corpus")" && pwd)/$(basename "$corpus")
  exp=${exp:-$repo/exp/vqvae/full}
else
  usage
fi

# overrides of one row: the --mini lines that apply to it, then the command line's
row_overrides() {
  if [ "$mini" = 1 ]; then
    grep -v '^\s*#' "$recipe/conf/mini.overrides" | awk -F': ' '$1 == "*" { print $2 }'
    grep -v '^\s*#' "$recipe/conf/mini.overrides" | awk -v row="$1" -F': ' '$1 == row { print $2 }'
  fi
  echo "data.corpus=$corpus"
  for item in "${extra[@]+"${extra[@]}"}"; do echo "$item"; done
}

for row in $rows; do
  [ -f "$recipe/conf/$row.yaml" ] || { echo "run.sh: no config conf/$row.yaml" >&2; exit 1; }
done

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ] && [ "$mini" = 1 ]; then
  if [ -f "$corpus/test_batch" ]; then
    echo "stage 0: $corpus already built"
  else
    echo "stage 0: building the mini image set in $corpus"
    python "$repo/data_prep/make_mini_images.py" --out "$corpus"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  mkdir -p "$exp"
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
  "$recipe/table3.sh" "$exp" $rows
fi
