#!/usr/bin/env bash
# Table 3 of Huh et al. 2023 (test MSE x 1e-3 of the [0, 1] reconstruction, code perplexity, codes used; LPIPS is
# not computed: every package providing it downloads pretrained weights): trains and evaluates every row with
# run.sh --config ROW (data prepared once), then prints the markdown table from EXP/<row>/eval/figures.json. Rows
# already evaluated are not retrained (delete EXP/ROW to redo one).
#
#   recipes/vqvae/table3.sh --mini | --data CIFAR [--rows "vqvae l2 ..."] [--seed N] [--exp DIR]
#                           [-- dotted.key=value ...]
#   recipes/vqvae/table3.sh --table-only --exp DIR [--rows "..."] [--seed N]   # print the table of trained rows
#
# --seed N (N > 0) trains and tabulates EXP/<row>_seedN; --table-only without --rows or --seed prints every
# evaluated row and seed. The other options are run.sh's (see run.sh --help).
set -euo pipefail

rows="vqvae l2 replace l2_replace sqvae gumbel affine opt affine_opt affine_opt_replace affine_opt_replace_l2"
# the options above: the body shared by the image-autoencoder recipes
source "$(dirname "${BASH_SOURCE[0]}")/../common/image_ae_table.sh"
