#!/usr/bin/env bash
# Table III of Łańcucki et al. 2020 (test bits/dim with the latents' cost under a uniform prior, as the paper; with
# its reconstruction and latent parts, the unigram-prior variant, perplexity and codes used) at one of its
# bottlenecks: prepares the data once, trains and evaluates every row (run.sh --config ROW), then prints the
# table, one line per run (a row of several seeds gets a line of their mean ± sd).
#
#   recipes/cifar10/table3.sh --mini | --data CIFAR [--bottleneck 8x128|5x1024] [--rows "vqvae bn ..."]
#                             [--seeds N] [--exp DIR] [-- dotted.key=value ...]
#   recipes/cifar10/table3.sh --table-only --exp DIR [--rows "..."]   # the table of the trained runs
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/table_driver.sh"

rows="vqvae bn bn_codebook_lr bn_ema bn_reestimation bn_reestimation_codebook_lr"
jobs=1
table_main "$@"
