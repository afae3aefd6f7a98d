#!/usr/bin/env bash
# CIFAR-10 recipe (Łańcucki et al. 2020 §IV-C): trains ONE multi-codebook VQ autoencoder (one Table III row,
# --config), evaluates it (Polyak weights) on the test split and prints its line of the table.
# recipes/cifar10/table3.sh trains every row.
#
#   recipes/cifar10/run.sh --data cifar-10-python.tar.gz    # the real set (or cifar-10-batches-py/), read in place
#   recipes/cifar10/run.sh --mini                            # built set of 32x32 photo crops, minutes
#
# Options: --config ROW (a file in conf/; default bn_reestimation_codebook_lr), --seed N (train.seed; default 0,
# a seed N > 0 trains into EXP/ROW_seedN), --stage N / --stop-stage N (0 data, 1 train, 2 evaluate and print),
# --bottleneck 8x128 | 5x1024 (G codebooks x K codes; default 8x128), --exp DIR (default exp/cifar10/mini_<bottleneck>
# or exp/cifar10/<data name>_<hash of its full path>_<bottleneck>; the model goes to EXP/ROW), --force (start the
# row's training over when EXP/ROW holds a run of other settings or data, which is refused otherwise), and after
# `--` extra dotted overrides, e.g. `-- train.steps=100`. Training resumes from the row's last checkpoint when
# re-run.
# Threads: OMP_NUM_THREADS (default 2 here).
set -euo pipefail

config=bn_reestimation_codebook_lr
bottlenecks="8x128 5x1024" bottleneck=8x128 bottleneck_note="Table III's columns"
# the options above and the stages: the body shared by the image-autoencoder recipes
source "$(dirname "${BASH_SOURCE[0]}")/../common/image_ae_run.sh"
