#!/usr/bin/env bash
# Table II of Łańcucki et al. 2020 (Rec. BPD, perplexity, uniform and unigram NELBO in bits), plus Huh et al.
# 2023's remedies: trains and evaluates every run with run.sh --config ROW --seed K (data prepared once, --jobs
# runs at a time on nproc/jobs threads each), then writes EXP/table2.md (mean ± sd over seeds), EXP/table2.json
# and EXP/table2_curves.png (test BPD and code perplexity vs step, every row, seed range shaded) with
# recipes/common/table.py. Runs already evaluated are not retrained (delete EXP/RUN to redo one).
#
#   recipes/scribblelens/table2.sh --mini | --data CORPUS [--rows "vanilla:3 bn ..."] [--jobs 2] [--exp DIR]
#                                  [--size cpu|paper] [-- dotted.key=value ...]
#   recipes/scribblelens/table2.sh --table-only --exp DIR [--rows "..."]    # the table of trained runs
#
# A row is CONFIG or CONFIG:SEEDS (seeds 0..SEEDS-1; seed k > 0 trains into EXP/CONFIG_seedk).
set -euo pipefail
command="$*"

recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$recipe/../.." && pwd)
all_rows="vanilla bn bn_codebook_lr bn_ema bn_reestimation bn_reestimation_codebook_lr huh_affine huh_sync
huh_alternating huh_replacement"
rows="vanilla:3 bn bn_codebook_lr bn_ema:3 bn_reestimation:3 bn_reestimation_codebook_lr:3"
run_args=() extra=() exp="" table_only=0 rows_given=0 jobs=2
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) rows=$2; rows_given=1; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --table-only) table_only=1; shift ;;
    --mini) run_args+=(--mini); shift ;;
    --data|--size) run_args+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "error: table2.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
  esac
done
note=""
if [ "$table_only" = 0 ]; then
  if [ ${#run_args[@]} -eq 0 ]; then
    echo "error: table2.sh: give --mini or --data CORPUS (or --table-only --exp DIR)" >&2; exit 1
  fi
  if [ -z "$exp" ]; then  # the directory run.sh would choose, so that every run lands in the same one
    exp=$(bash "$recipe/run.sh" "${run_args[@]}" --print-exp)
  fi
  source "$repo/recipes/common/jobs.sh"
  start_time=$(date +%s)
  bash "$recipe/run.sh" "${run_args[@]}" --exp "$exp" --stage 0 --stop-stage 0 -- ${extra[@]+"${extra[@]}"}
  # Seed-major order (every row's seed 0, then every seed 1, ...), so a partial table already has every row.
  # The thread count is fixed per table: a different one changes the float sums.
  threads=$(( $(cpu_cores) / jobs )); [ "$threads" -ge 1 ] || threads=1
  max_seeds=1
  for entry in $rows; do case $entry in *:*) [ "${entry#*:}" -le "$max_seeds" ] || max_seeds=${entry#*:} ;; esac; done
  mkdir -p "$exp/logs"
  for (( seed = 0; seed < max_seeds; seed++ )); do
    for entry in $rows; do
      row=${entry%%:*} seeds=1
      case $entry in *:*) seeds=${entry#*:} ;; esac
      [ "$seed" -lt "$seeds" ] || continue
      run=$row; [ "$seed" = 0 ] || run=${row}_seed$seed
      if [ -f "$exp/$run/eval/figures.json" ]; then echo "table2.sh: $run already evaluated"; continue; fi
      echo "table2.sh: training $run (log: $exp/logs/$run.log)"
      start_job "$exp/logs/$run.log" bash "$recipe/run.sh" "${run_args[@]}" --exp "$exp" --config "$row" \
        --seed "$seed" --threads "$threads" --stage 1 --stop-stage 2 -- ${extra[@]+"${extra[@]}"}
    done
  done
  wait_jobs
  minutes=$(( ($(date +%s) - start_time) / 60 ))
  note="Command: \`bash recipes/scribblelens/table2.sh $command\`; $minutes min wall time for the runs trained by \
this call; machine: $(cpu_cores) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), \
torch $(python -c 'import torch; print(torch.__version__)'), $jobs runs at a time with $threads thread(s) each."
fi
[ -n "$exp" ] || { echo "error: table2.sh: --table-only needs --exp DIR" >&2; exit 1; }
if [ "$table_only" = 1 ] && [ "$rows_given" = 0 ]; then  # every evaluated row, with the seeds that are there
  rows=""
  for row in $all_rows; do
    [ -f "$exp/$row/eval/figures.json" ] || continue
    seeds=1; while [ -d "$exp/${row}_seed$seeds" ]; do seeds=$((seeds + 1)); done
    rows="$rows $row:$seeds"
  done
fi
python "$repo/recipes/common/table.py" scribblelens "$exp" --rows "$rows" --note "$note"
