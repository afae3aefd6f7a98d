#!/usr/bin/env bash
# Table 3 of Huh et al. 2023 (test MSE x 1e-3 of the [0, 1] reconstruction, code perplexity, codes used; LPIPS is
# not computed: every package providing it downloads pretrained weights): prepares the data once, trains and
# evaluates every row (run.sh --config ROW), then prints the table, one line per run (a row of several seeds gets a
# line of their mean ± sd).
#
#   recipes/vqvae/table3.sh --mini | --data CIFAR [--rows "vqvae l2 ..."] [--seeds N] [--exp DIR]
#                           [-- dotted.key=value ...]
#   recipes/vqvae/table3.sh --table-only --exp DIR [--rows "..."]   # the table of the trained runs
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/table_driver.sh"

rows="vqvae l2 replace l2_replace sqvae gumbel affine opt affine_opt affine_opt_replace affine_opt_replace_l2"
jobs=1
table_main "$@"
