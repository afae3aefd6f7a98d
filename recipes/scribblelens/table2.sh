#!/usr/bin/env bash
# Print Table II of Łańcucki et al. 2020 (Rec. BPD, perplexity, uniform and unigram NELBO in bits) as markdown,
# from EXP_DIR/<row>/eval/metrics.json written by `run.sh` stage 2.
#
#   recipes/scribblelens/table2.sh EXP_DIR [ROW ...]     (default rows: every row that has been evaluated)
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 1; }
exp=$1; shift
python - "$exp" "$@" <<'PY'
import json
import os
import sys

LABELS = {
    "vanilla": "vanilla VQ",
    "bn": "+ BN",
    "bn_codebook_lr": "+ BN + codebook LR",
    "bn_ema": "+ BN + EMA",
    "bn_reestimation": "+ BN + data-dep reest",
    "bn_reestimation_codebook_lr": "+ BN + data-dep reest + codebook LR",
    "huh_affine": "Huh: affine reparameterization",
    "huh_sync": "Huh: synchronized update",
    "huh_alternating": "Huh: alternating optimization",
    "huh_replacement": "dead-code replacement",
}
exp, rows = sys.argv[1], sys.argv[2:]
if not rows:
    rows = [r for r in LABELS if os.path.isfile(os.path.join(exp, r, "eval", "metrics.json"))]
print("| Model | Rec. BPD | Pplx | Codes used | Uniform NELBO bits | Unigram NELBO bits |")
print("|---|---|---|---|---|---|")
for row in rows:
    path = os.path.join(exp, row, "eval", "metrics.json")
    if not os.path.isfile(path):
        print(f"| {LABELS.get(row, row)} | not evaluated | | | | |")
        continue
    with open(path) as handle:
        m = json.load(handle)
    print(f"| {LABELS.get(row, row)} | {m['bpd']:.3f} | {m['perplexity']:.1f} | {m['codes_used']:.0f} | "
          f"{m['uniform_nelbo']:.3f} | {m['unigram_nelbo']:.3f} |")
if rows:
    with open(os.path.join(exp, rows[0], "eval", "metrics.json")) as handle:
        first = json.load(handle)
    print(f"\nTest lines: {first['lines']:.0f}; NELBO = BPD + bits per latent / {first['pixels_per_latent']:.0f} "
          f"pixels per latent (line height x width stride).")
PY
