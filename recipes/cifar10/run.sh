#!/usr/bin/env bash
# CIFAR-10 recipe (Łańcucki et al. 2020 §IV-C): train the multi-codebook VQ autoencoder for every Table III row,
# evaluate each (Polyak weights) on the test split, print Table III.
#
#   recipes/cifar10/run.sh --data cifar-10-python.tar.gz    # the real set (or cifar-10-batches-py/), read in place
#   recipes/cifar10/run.sh --mini                            # built set of 32x32 photo crops, minutes per row
#
# Options: --stage N / --stop-stage N (0 data, 1 train, 2 evaluate, 3 table), --rows "vqvae bn ..." (default:
# all), --bottleneck 8x128 | 5x1024 (G codebooks x K codes; default 8x128), --exp DIR (default
# exp/cifar10/{full,mini}_<bottleneck>), and after `--` extra dotted overrides for every row, e.g.
# `-- train.steps=100 train.seed=1`. Training resumes from a row's last checkpoint when re-run.
# Threads: OMP_NUM_THREADS (default 2 here).
set -euo pipefail

rows="vqvae bn bn_codebook_lr bn_ema bn_reestimation bn_reestimation_codebook_lr"
bottlenecks="8x128 5x1024" bottleneck=8x128 bottleneck_note="Table III's columns"
# the options above and the stages: the body shared by the image-autoencoder recipes
source "$(dirname "${BASH_SOURCE[0]}")/../common/image_ae_run.sh"
