#!/usr/bin/env bash
# The discrete-unit table: the speech corpus's features once, then k-means units, tokens, the CTC recognizer and its
# evaluation for every K (run.sh --units-k K --seed S), then the table (PER and bits per second of each token
# stream) with recipes/common/table.py units.
#
#   bash recipes/units/table.sh --mini [--rows "100 500 2000"] [--encoder CHECKPOINT --layer -1] [-- overrides]
#   bash recipes/units/table.sh --table-only --exp DIR     # every evaluated row of DIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/table_driver.sh"

rows="100 500 2000"
row_option=--units-k first_run_stage=kmeans evaluated=decode_dev/figures.json
table_main "$@"
