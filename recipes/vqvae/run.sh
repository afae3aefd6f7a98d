#!/usr/bin/env bash
# VQ-VAE recipe (Huh et al. 2023 §5.2): trains ONE 64-channel VQ-VAE (one Table 3 row, --config), evaluates it on
# the test split (MSE, code perplexity) and prints its line of the table. recipes/vqvae/table3.sh trains every row.
#
#   recipes/vqvae/run.sh --data cifar-10-python.tar.gz    # the real set (or cifar-10-batches-py/), read in place
#   recipes/vqvae/run.sh --mini                            # built set of 32x32 photo crops, minutes
#
# Options: --config ROW (a file in conf/; default affine_opt_replace_l2, the full set of remedies), --seed N
# (train.seed; default 0, a seed N > 0 trains into EXP/ROW_seedN), --stage N / --stop-stage N (0 data, 1 train,
# 2 evaluate and print), --exp DIR (default exp/vqvae/mini or exp/vqvae/<data name>_<hash of its full path>; the
# model goes to EXP/ROW), --force (start the row's training over when EXP/ROW holds a run of other settings or
# data, which is refused otherwise), and after `--` extra dotted overrides, e.g. `-- train.steps=100`. Training
# resumes from the row's last checkpoint when re-run.
# Threads: OMP_NUM_THREADS (default 2 here).
set -euo pipefail

config=affine_opt_replace_l2
bottlenecks=""
# the options above and the stages: the body shared by the image-autoencoder recipes
source "$(dirname "${BASH_SOURCE[0]}")/../common/image_ae_run.sh"
