#!/usr/bin/env bash
# Table II of Łańcucki et al. 2020 (Rec. BPD, perplexity, uniform and unigram NELBO in bits), plus Huh et al.
# 2023's remedies: prepares the data once, trains and evaluates every run (run.sh --config ROW --seed K), then
# writes EXP/table2.md (mean ± sd over seeds), EXP/table2.json and EXP/table2_curves.png (test BPD and code
# perplexity vs step, every row, seed range shaded) with recipes/common/table.py.
#
#   recipes/scribblelens/table2.sh --mini | --data CORPUS [--rows "vanilla:3 bn ..."] [--jobs 2] [--exp DIR]
#                                  [--size cpu|paper] [-- dotted.key=value ...]
#   recipes/scribblelens/table2.sh --table-only --exp DIR [--rows "..."]    # the table of trained runs
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/table_driver.sh"

rows="vanilla:3 bn bn_codebook_lr bn_ema:3 bn_reestimation:3 bn_reestimation_codebook_lr:3"
table_main "$@"
