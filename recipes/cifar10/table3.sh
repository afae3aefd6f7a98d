#!/usr/bin/env bash
# Table III of Łańcucki et al. 2020 (test bits/dim with the latents' cost under a uniform prior, as the paper; with
# its reconstruction and latent parts, the unigram-prior variant, perplexity and codes used): trains and evaluates
# every row with run.sh --config ROW (data prepared once), then prints the markdown table from
# EXP/<row>/eval/figures.json. Rows already evaluated are not retrained (delete EXP/ROW to redo one).
#
#   recipes/cifar10/table3.sh --mini | --data CIFAR [--bottleneck 8x128|5x1024] [--rows "vqvae bn ..."]
#                             [--seed N] [--exp DIR] [-- dotted.key=value ...]
#   recipes/cifar10/table3.sh --table-only --exp DIR [--rows "..."] [--seed N]   # print the table of trained rows
#
# --seed N (N > 0) trains and tabulates EXP/<row>_seedN; --table-only without --rows or --seed prints every
# evaluated row and seed. The other options are run.sh's (see run.sh --help).
set -euo pipefail

rows="vqvae bn bn_codebook_lr bn_ema bn_reestimation bn_reestimation_codebook_lr"
# the options above: the body shared by the image-autoencoder recipes
source "$(dirname "${BASH_SOURCE[0]}")/../common/image_ae_table.sh"
