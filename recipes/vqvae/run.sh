#!/usr/bin/env bash
# VQ-VAE recipe (Huh et al. 2023 §5.2): its defaults on the recipe driver (recipes/common/driver.sh) and the
# image-autoencoder stages (recipes/common/image_ae_run.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/driver.sh"

recipe_about="VQ-VAE recipe (Huh et al. 2023 §5.2): trains ONE 64-channel VQ-VAE (one Table 3 row, --config), evaluates
it on the test split (MSE, code perplexity) and prints its line of the table. recipes/vqvae/table3.sh trains every
row.

  recipes/vqvae/run.sh --data cifar-10-python.tar.gz    # the real set (or cifar-10-batches-py/), read in place
  recipes/vqvae/run.sh --mini                            # built set of 32x32 photo crops, minutes"
config=affine_opt_replace_l2
source "$recipe_dir/../common/image_ae_run.sh"
driver_main "$@"
