#!/usr/bin/env bash
# VQ-VAE recipe (Huh et al. 2023 §5.2): train the 64-channel VQ-VAE for every Table 3 row, evaluate each on the
# test split (MSE, code perplexity), print Table 3.
#
#   recipes/vqvae/run.sh --data cifar-10-python.tar.gz    # the real set (or cifar-10-batches-py/), read in place
#   recipes/vqvae/run.sh --mini                            # built set of 32x32 photo crops, minutes per row
#
# Options: --stage N / --stop-stage N (0 data, 1 train, 2 evaluate, 3 table), --rows "vqvae l2 ..." (default:
# all), --exp DIR (default exp/vqvae/{full,mini}), and after `--` extra dotted overrides for every row, e.g.
# `-- train.steps=100 train.seed=1`. Training resumes from a row's last checkpoint when re-run.
# Threads: OMP_NUM_THREADS (default 2 here).
set -euo pipefail

rows="vqvae l2 replace l2_replace sqvae gumbel affine opt affine_opt affine_opt_replace affine_opt_replace_l2"
bottlenecks=""
# the options above and the stages: the body shared by the image-autoencoder recipes
source "$(dirname "${BASH_SOURCE[0]}")/../common/image_ae_run.sh"
