#!/usr/bin/env bash
# Print Table 3 of Huh et al. 2023 (test MSE x 1e-3 of the [0, 1] reconstruction, code perplexity, codes used) as
# markdown, from EXP_DIR/<row>/eval/metrics.json written by `run.sh` stage 2. LPIPS is not computed (every package
# providing it downloads pretrained weights).
#
#   recipes/vqvae/table3.sh EXP_DIR [ROW ...]     (default rows: every row that has been evaluated)
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 1; }
exp=$1; shift
python - "$exp" "$@" <<'PY'
import json
import os
import sys

LABELS = {
    "vqvae": "VQVAE",
    "l2": "VQVAE + l2",
    "replace": "VQVAE + replace",
    "l2_replace": "VQVAE + l2 + replace",
    "sqvae": "SQVAE",
    "gumbel": "Gumbel-VQVAE",
    "affine": "VQVAE + Affine",
    "opt": "VQVAE + OPT",
    "affine_opt": "VQVAE + Affine + OPT",
    "affine_opt_replace": "VQVAE + Affine + OPT + replace",
    "affine_opt_replace_l2": "VQVAE + Affine + OPT + replace + l2",
}
exp, rows = sys.argv[1], sys.argv[2:]
if not rows:
    rows = [r for r in LABELS if os.path.isfile(os.path.join(exp, r, "eval", "metrics.json"))]
print("| Method | MSE (1e-3) | Perplexity | Codes used |")
print("|---|---|---|---|")
images = None
for row in rows:
    path = os.path.join(exp, row, "eval", "metrics.json")
    if not os.path.isfile(path):
        print(f"| {LABELS.get(row, row)} | not evaluated | | |")
        continue
    with open(path) as handle:
        m = json.load(handle)
    images = m["images"]
    print(f"| {LABELS.get(row, row)} | {1e3 * m['mse']:.2f} | {m['perplexity']:.1f} | {m['codes_used']:.0f} |")
if images is not None:
    print(f"\nTest images: {images:.0f}; MSE of the reconstruction in [0, 1] per sub-pixel.")
PY
