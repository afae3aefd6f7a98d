#!/usr/bin/env bash
# Print Table III of Łańcucki et al. 2020 (test bits/dim with the latents' cost under a uniform prior, as the
# paper; with its reconstruction and latent parts, the unigram-prior variant, perplexity and codes used) as
# markdown, from EXP_DIR/<row>/eval/metrics.json written by `run.sh` stage 2.
#
#   recipes/cifar10/table3.sh EXP_DIR [ROW ...]     (default rows: every row that has been evaluated)
set -euo pipefail
# the table (labels, columns) and its printing: recipes/common/image_ae_table.py
exec python "$(dirname "${BASH_SOURCE[0]}")/../common/image_ae_table.py" "${BASH_SOURCE[0]}" "$@"
