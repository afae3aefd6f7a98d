#!/usr/bin/env bash
# Table 2 of Huh et al. 2023 (classification: top-1 accuracy and code perplexity per remedy) on ImageNet100
# (--data DIR) or the built digit set (--mini, default): trains and evaluates every (model, row) through run.sh
# (--jobs at a time, OMP_NUM_THREADS = cores / jobs each) and prints the ablation as markdown. Rows that already
# have eval/figures.json are not retrained (delete EXP/<model>/<row> to redo one).
#
#   bash recipes/imagenet100/table2_huh.sh [--mini | --data DIR] [--models "resnet18 alexnet vit_tiny"]
#        [--rows "novq none affine sync alternating replace all"] [--jobs 2] [--exp DIR] [--table NAME]
#        [--seeds N] [--table-only] [-- train.steps=N ...]
#
# --seeds N trains seeds 0..N-1 of every row (seed 0 in EXP/<model>/<row>, seed k > 0 in EXP/<model>/<row>_seedk,
# with train.seed=k); the table then gives each figure as the mean ± sample standard deviation over the row's
# evaluated seeds, with their count.
# --table NAME also writes the table to EXP/NAME.md (e.g. --table modern for the modern-remedies rows,
# README.md); without it the table is printed only. --table-only prints (and writes) the table of the runs already
# in EXP without preparing data or training.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
models="resnet18" rows="novq none affine sync alternating replace all" jobs=2 exp="" data_args=(--mini) overrides=()
table="" table_only=0 seeds=1
while [ $# -gt 0 ]; do
  case "$1" in
    --mini) shift ;;
    --data) data_args=(--data "$2"); shift 2 ;;
    --models) models=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --table) table=$2; shift 2 ;;
    --table-only) table_only=1; shift ;;
    --seeds) seeds=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; overrides=("$@"); break ;;
    *) echo "error: table2_huh.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
  esac
done
[[ $seeds =~ ^[1-9][0-9]*$ ]] || { echo "error: table2_huh.sh: --seeds takes a count >= 1, got '$seeds'" >&2; exit 1; }
if [ -n "$table" ] && ! [[ $table =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]]; then
  echo "error: table2_huh.sh: --table takes a file name without a folder (EXP/NAME.md), got '$table'" >&2; exit 1
fi
for model in $models; do
  for row in $rows; do
    [ -f "$here/conf/$model/$row.yaml" ] || [ "$table_only" = 1 ] || {
      echo "error: table2_huh.sh: no config conf/$model/$row.yaml; see the rows of recipes/imagenet100/README.md" >&2
      exit 1; }
  done
done
exp=${exp:-$(bash "$here/run.sh" "${data_args[@]}" --print-exp)}  # the EXP run.sh trains into
if [ "$table_only" = 0 ]; then
  start=$(date +%s)
  bash "$here/run.sh" "${data_args[@]}" --stage 0 --stop-stage 0
  mkdir -p "$exp/logs"
  source "$repo/recipes/common/jobs.sh"
  threads=${OMP_NUM_THREADS:-$(( $(cpu_cores) / jobs ))}; (( threads >= 1 )) || threads=1
  for (( seed = 0; seed < seeds; seed++ )); do  # seed-major: a partial table already has every row
    for model in $models; do
      for row in $rows; do
        run=$row
        (( seed == 0 )) || run=${row}_seed$seed
        [ -f "$exp/$model/$run/eval/figures.json" ] && continue
        echo "table2_huh.sh: $model/$run (log: $exp/logs/$model-$run.log)"
        start_job "$exp/logs/$model-$run.log" bash "$here/run.sh" "${data_args[@]}" --model "$model" --config "$row" \
          --seed "$seed" --threads "$threads" --stage 1 --exp "$exp" -- ${overrides[@]+"${overrides[@]}"}
      done
    done
  done
  wait_jobs
  echo "table2_huh.sh: $(( $(date +%s) - start )) s"
elif [ ! -d "$exp" ]; then
  echo "error: table2_huh.sh: --table-only: no runs in $exp; give the --exp DIR of the trained rows" >&2; exit 1
fi

python3 "$repo/recipes/common/table.py" imagenet100 "$exp" --groups "$models" --rows "$rows" \
  --seeds "$seeds" ${table:+--name "$table"}
