#!/usr/bin/env bash
# The discrete-unit table: trains and evaluates recipes/units/run.sh for K = 100, 500, 2000 on one feature set (one
# row at a time; an evaluated row is not retrained), then prints the table (recipes/common/table.py units). Usage:
#   bash recipes/units/table.sh --mini [run.sh options, e.g. --encoder CHECKPOINT --layer -1]
#   bash recipes/units/table.sh --table-only EXP      (every row of EXP that is evaluated)
set -euo pipefail
recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$recipe/../.." && pwd)
if [ "${1:-}" = --table-only ]; then
  [ $# -eq 2 ] || { echo "error: table.sh: --table-only takes EXP" >&2; exit 1; }
  rows=$(cd "$2" && find . -maxdepth 3 -path './units_ctc_*/decode_dev/figures.json' | cut -d/ -f2 | sort -V |
         paste -sd ' ')
  python3 "$repo/recipes/common/table.py" units "$2" --rows "$rows"
  exit 0
fi
exp=$(bash "$recipe/run.sh" "$@" --print-exp)
rows=()
for k in 100 500 2000; do
  run=$(bash "$recipe/run.sh" "$@" --units-k "$k" --print-train | awk '{print $NF}' | xargs basename)
  rows+=("$run")
  if [ -f "$exp/$run/decode_dev/figures.json" ]; then echo "table.sh: $run already evaluated"; continue; fi
  bash "$recipe/run.sh" "$@" --units-k "$k" || echo "table.sh: K = $k failed" >&2
done
python3 "$repo/recipes/common/table.py" units "$exp" --rows "${rows[*]}"
