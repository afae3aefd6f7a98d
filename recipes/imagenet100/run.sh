#!/usr/bin/env bash
# ImageNet100 classification with a VQ layer (Huh et al. 2023 §5.1, Table 2): trains ONE configuration
# (a model and a Table 2 row) and evaluates it on the validation split (top-1 accuracy, code perplexity).
#
#   recipes/imagenet100/run.sh --data DIR --model resnet18 --config all   # DIR/train/<class>/*.JPEG, DIR/val/...
#   recipes/imagenet100/run.sh --mini --model resnet18 --config all       # the built MNIST digit set, minutes
#
# --model: resnet18 | alexnet | vit_tiny (conf/<model>/); --config: novq none affine sync alternating replace all,
# and for resnet18 bn_reestimation and the modern_* rows (conf/<model>/<config>.yaml; README.md). Options:
# --stage N / --stop-stage N (0 data, 1 train, 2 evaluate), --exp DIR (default exp/imagenet100/mini/<model>/<config>
# or exp/imagenet100/<data name>_<hash of its full path>/<model>/<config>), --print-exp (print EXP and stop),
# --nproc N (train under torchrun with N processes: DDP), --force (start the training over when EXP holds a run
# of other settings or data, which is refused otherwise), and after `--` dotted overrides, e.g.
# `-- train.steps=100 train.seed=1`. Training resumes from the run's last checkpoint when re-run.
# Threads: OMP_NUM_THREADS (default 2 here).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/runs.sh"

recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$recipe/../.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

stage=0 stop_stage=2 root="" mini=0 exp="" model=resnet18 config=all nproc=1 extra=() print_exp=0 force=()
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-1}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --data) root=$2; shift 2 ;;
    --mini) mini=1; shift ;;
    --model) model=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --nproc) nproc=$2; shift 2 ;;
    --print-exp) print_exp=1; shift ;;
    --force) force=(--force); shift ;;
    -h|--help) usage 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "run.sh: unknown option $1" >&2; usage ;;
  esac
done
if [ "$mini" = 1 ] && [ -n "$root" ]; then echo "run.sh: give --data DIR or --mini, not both" >&2; exit 1; fi
root=$(user_path "$root") exp=$(user_path "$exp")
conf=$recipe/conf/$model/$config.yaml
[ -f "$conf" ] || { echo "run.sh: no config $conf (see conf/<model>/<config>.yaml)" >&2; exit 1; }
if [ "$mini" = 1 ]; then
  root=$repo/data/mini_digits
  exp=${exp:-$repo/exp/imagenet100/mini/$model/$config}
elif [ -n "$root" ]; then
  [ -d "$root/train" ] && [ -d "$root/val" ] || { echo "run.sh: $root needs train/<class>/ and val/<class>/ image folders" >&2; exit 1; }
  exp=${exp:-$repo/exp/imagenet100/$(data_key "$root")/$model/$config}
else
  usage
fi
if [ "$print_exp" = 1 ]; then echo "$exp"; exit 0; fi

# the row's overrides: the --mini lines that apply to it and its base: chain (conf/<model>/mini.overrides, read by
# recipes/common/row_overrides.py), then the command line's
overrides=()
if [ "$mini" = 1 ]; then
  mini_lines=$(python "$repo/recipes/common/row_overrides.py" "$recipe/conf/$model/mini.overrides" "$conf")
  [ -z "$mini_lines" ] || mapfile -t overrides <<< "$mini_lines"
fi
overrides+=("data.root=$root" "${extra[@]+"${extra[@]}"}")

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ] && [ "$mini" = 1 ]; then
  if [ -d "$root/train" ] && [ -d "$root/val" ]; then
    echo "stage 0: $root already built"
  else
    echo "stage 0: building the mini digit set in $root"
    python "$repo/data_prep/make_mini_digits.py" --out "$root"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "stage 1: training $model/$config -> $exp"
  mkdir -p "$exp"
  start=$(date +%s)
  if [ "$nproc" -gt 1 ]; then
    torchrun --standalone --nproc_per_node "$nproc" -m seqvq.cli train "$conf" "${overrides[@]}" --exp-dir "$exp" \
      ${force[@]+"${force[@]}"}
  else
    python -m seqvq.cli train "$conf" "${overrides[@]}" --exp-dir "$exp" ${force[@]+"${force[@]}"}
  fi
  echo "$(( $(date +%s) - start ))" > "$exp/train_seconds.txt"
  echo "$model/$config trained in $(cat "$exp/train_seconds.txt") s"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  echo "stage 2: evaluating $model/$config"
  python -m seqvq.cli evaluate "$exp/checkpoints/last.pt" "$root" --out "$exp/eval"
fi
