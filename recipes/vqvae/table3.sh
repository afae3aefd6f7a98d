#!/usr/bin/env bash
# Print Table 3 of Huh et al. 2023 (test MSE x 1e-3 of the [0, 1] reconstruction, code perplexity, codes used) as
# markdown, from EXP_DIR/<row>/eval/metrics.json written by `run.sh` stage 2. LPIPS is not computed (every package
# providing it downloads pretrained weights).
#
#   recipes/vqvae/table3.sh EXP_DIR [ROW ...]     (default rows: every row that has been evaluated)
set -euo pipefail
# the table (labels, columns) and its printing: recipes/common/image_ae_table.py
exec python "$(dirname "${BASH_SOURCE[0]}")/../common/image_ae_table.py" "${BASH_SOURCE[0]}" "$@"
