# Shared body of the image-autoencoder recipes' table3.sh (recipes/cifar10, recipes/vqvae), sourced by them after
# they set rows (every row of the table, conf/<row>.yaml, in the table's order). Trains and evaluates each row
# with the recipe's run.sh --config ROW (the data prepared once; a row whose eval/figures.json exists is not
# retrained), then prints the table with table.py. Options: the wrapper's header, printed by --help.
wrapper=${BASH_SOURCE[1]}
recipe=$(cd "$(dirname "$wrapper")" && pwd)
repo=$(cd "$recipe/../.." && pwd)

run_args=() extra=() exp="" seed=0 table_only=0 rows_given=0 corpus_given=0
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$wrapper" | sed 's/^# \{0,1\}//'; exit 0; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) rows=$2; rows_given=1; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --seed) seed=$2; run_args+=("$1" "$2"); shift 2 ;;
    --table-only) table_only=1; shift ;;
    --mini) run_args+=(--mini); corpus_given=1; shift ;;
    --data) run_args+=("$1" "$2"); corpus_given=1; shift 2 ;;
    --bottleneck) run_args+=("$1" "$2"); shift 2 ;;
    -h|--help) usage ;;
    --) shift; extra=("$@"); break ;;
    *) echo "error: table3.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
  esac
done
[[ $seed =~ ^[0-9]+$ ]] || { echo "error: table3.sh: --seed must be a non-negative integer, got $seed" >&2; exit 1; }
suffix=""
[ "$seed" = 0 ] || suffix=_seed$seed

if [ "$table_only" = 0 ]; then
  if [ "$corpus_given" = 0 ]; then
    echo "error: table3.sh: give --mini or --data CIFAR (or --table-only --exp DIR)" >&2; exit 1
  fi
  if [ -z "$exp" ]; then  # the directory run.sh would choose, so that every row lands in the same one
    exp=$(bash "$recipe/run.sh" "${run_args[@]}" --print-exp)
  fi
  start_time=$(date +%s)
  bash "$recipe/run.sh" "${run_args[@]}" --exp "$exp" --stage 0 --stop-stage 0
  for row in $rows; do
    if [ -f "$exp/$row$suffix/eval/figures.json" ]; then echo "table3.sh: $row$suffix already evaluated"; continue; fi
    bash "$recipe/run.sh" "${run_args[@]}" --exp "$exp" --config "$row" --stage 1 --stop-stage 2 \
      -- ${extra[@]+"${extra[@]}"} || echo "table3.sh: $row$suffix failed" >&2
  done
  echo "table3.sh: done in $(( $(date +%s) - start_time )) s"
fi
[ -n "$exp" ] || { echo "error: table3.sh: --table-only needs --exp DIR" >&2; exit 1; }
# --table-only without --rows (or --seed): every evaluated row, with its seeds (table.py's default)
[ "$rows_given" = 1 ] || [ "$table_only" = 0 ] || [ "$seed" != 0 ] || rows=""
names=()
for row in $rows; do names+=("$row$suffix"); done
python "$repo/recipes/common/table.py" "$(basename "$recipe")" "$exp" --rows "${names[*]-}"
