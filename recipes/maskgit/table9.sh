#!/usr/bin/env bash
# Table 9 of Huh et al. 2023 (MaskGIT, FID per remedy; here FD and rFD in an own classifier's features, masked NLL,
# code usage) and its Fig. 4 curves: prepares the data once, trains and evaluates every seed of every row
# (run.sh --config ROW --seed K: stages train, transformer, evaluate), then writes EXP/table9.md (.json,
# _curves.png) with recipes/common/table.py.
#
#   recipes/maskgit/table9.sh --mini | --data CIFAR [--rows "ROW[:SEEDS] ..."] [--transformer "k=v ..."]
#                             [-- dotted.key=value ...]
#   recipes/maskgit/table9.sh --table-only --exp DIR [--rows "..."]   # the table of what is evaluated
#
# After --, the overrides of stage A (the autoencoder); --transformer "k=v ..." those of stage B.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/table_driver.sh"

rows="plain:3 affine opt affine_opt replace l2 all:3"  # seeds 0-2 of the plain and full-set rows
evaluated=transformer/eval/figures.json
table_main "$@"
