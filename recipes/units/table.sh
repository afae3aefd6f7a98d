#!/usr/bin/env bash
# The discrete-unit table: trains and evaluates recipes/units/run.sh for K = 100, 500, 2000 on one feature set (one
# row at a time), then prints the table (recipes/common/table.py units). Usage:
#   bash recipes/units/table.sh --mini [run.sh options, e.g. --encoder CHECKPOINT --layer -1]
#   bash recipes/units/table.sh --table-only EXP
set -euo pipefail
recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$recipe/../.." && pwd)
if [ "${1:-}" = --table-only ]; then
  python3 "$repo/recipes/common/table.py" units "$2"
  exit 0
fi
exp=$(bash "$recipe/run.sh" "$@" --print-exp)
for k in 100 500 2000; do
  bash "$recipe/run.sh" "$@" --units-k "$k" || echo "table.sh: K = $k failed" >&2
done
python3 "$repo/recipes/common/table.py" units "$exp"
