#!/usr/bin/env bash
# Table 9 of Huh et al. 2023 (MaskGIT, FID per remedy; here FD and rFD in an own classifier's features, masked NLL,
# code usage) and its Fig. 4 curves: trains and evaluates every seed of every row with run.sh --config ROW --seed K
# (stages train, transformer, evaluate; the data prepared once), one run after the other, then writes the table
# with recipes/common/table.py to EXP/table9.md (.json, _curves.png). A run whose transformer/eval/figures.json
# exists is not retrained (delete EXP/RUN to redo one).
#
#   recipes/maskgit/table9.sh --mini | --data CIFAR [--rows "ROW[:SEEDS] ..."] [--exp DIR] [--threads N]
#                             [--transformer "k=v ..."] [-- dotted.key=value ...]
#   recipes/maskgit/table9.sh --table-only --exp DIR [--rows "..."]   # the table of what is evaluated
#
# Default rows: "plain:3 affine opt affine_opt replace l2 all:3" (seeds 0-2 of the plain and full-set rows). The
# other options are run.sh's (run.sh --help); after -- the overrides of stage A.
set -euo pipefail
recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rows="plain:3 affine opt affine_opt replace l2 all:3"
run_args=() extra=() exp="" table_only=false data_given=false note=""
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0; }
die() { echo "error: table9.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) rows=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --table-only) table_only=true; shift ;;
    --mini) run_args+=(--mini); data_given=true; shift ;;
    --data) run_args+=("$1" "$2"); data_given=true; shift 2 ;;
    --threads|--transformer) run_args+=("$1" "$2"); shift 2 ;;
    -h|--help) usage ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
runs=()  # every run folder of the rows: ROW, ROW_seed1, ...
for entry in $rows; do
  row=${entry%%:*} seeds=1
  [[ $entry != *:* ]] || seeds=${entry#*:}
  [[ $seeds =~ ^[1-9][0-9]*$ ]] || die "--rows entry $entry: write ROW or ROW:SEEDS (SEEDS >= 1)"
  for (( seed = 0; seed < seeds; seed++ )); do runs+=("$row:$seed"); done
done

if ! $table_only; then
  $data_given || die "give --mini or --data CIFAR (or --table-only --exp DIR)"
  [ -n "$exp" ] || exp=$(bash "$recipe/run.sh" "${run_args[@]}" --print-exp)
  start_time=$(date +%s)
  bash "$recipe/run.sh" "${run_args[@]}" --exp "$exp" --stage data --stop-stage data
  for entry in "${runs[@]}"; do
    row=${entry%:*} seed=${entry#*:} name=${entry%:*}
    [ "$seed" = 0 ] || name=${row}_seed$seed
    if [ -f "$exp/$name/transformer/eval/figures.json" ]; then echo "table9.sh: $name already evaluated"; continue; fi
    bash "$recipe/run.sh" "${run_args[@]}" --exp "$exp" --config "$row" --seed "$seed" --stage train \
      -- ${extra[@]+"${extra[@]}"} || echo "table9.sh: $name failed" >&2
  done
  note="table9.sh: ${#runs[@]} runs in $(( $(date +%s) - start_time )) s of wall time"
  echo "$note"
fi
[ -n "$exp" ] || die "--table-only needs --exp DIR"
python "$recipe/../common/table.py" maskgit "$exp" --rows "$rows" ${note:+--note "$note"}
