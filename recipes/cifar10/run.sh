#!/usr/bin/env bash
# CIFAR-10 recipe (Łańcucki et al. 2020 §IV-C): its defaults and --bottleneck on the recipe driver
# (recipes/common/driver.sh) and the image-autoencoder stages (recipes/common/image_ae_run.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/driver.sh"

recipe_about="CIFAR-10 recipe (Łańcucki et al. 2020 §IV-C): trains ONE multi-codebook VQ autoencoder (one Table III
row, --config), evaluates it (Polyak weights) on the test split and prints its line of the table.
recipes/cifar10/table3.sh trains every row.

  recipes/cifar10/run.sh --data cifar-10-python.tar.gz    # the real set (or cifar-10-batches-py/), read in place
  recipes/cifar10/run.sh --mini                            # built set of 32x32 photo crops, minutes"
config=bn_reestimation_codebook_lr bottleneck=8x128
option --bottleneck choice:8x128\|5x1024 "G codebooks x K codes, Table III's columns (EXP gets _<bottleneck>)"
source "$recipe_dir/../common/image_ae_run.sh"
driver_main "$@"
