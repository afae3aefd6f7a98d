#!/usr/bin/env bash
# Print Table III of Łańcucki et al. 2020 (test bits/dim with the latents' cost under a uniform prior, as the
# paper; with its reconstruction and latent parts, the unigram-prior variant, perplexity and codes used) as
# markdown, from EXP_DIR/<row>/eval/metrics.json written by `run.sh` stage 2.
#
#   recipes/cifar10/table3.sh EXP_DIR [ROW ...]     (default rows: every row that has been evaluated)
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 1; }
exp=$1; shift
python - "$exp" "$@" <<'PY'
import json
import os
import sys

LABELS = {
    "vqvae": "VQ-VAE",
    "bn": "+ BN",
    "bn_codebook_lr": "+ BN + codebook LR",
    "bn_ema": "+ BN + EMA",
    "bn_reestimation": "+ BN + data-dep reest",
    "bn_reestimation_codebook_lr": "+ BN + data-dep reest + codebook LR",
}
exp, rows = sys.argv[1], sys.argv[2:]
if not rows:
    rows = [r for r in LABELS if os.path.isfile(os.path.join(exp, r, "eval", "metrics.json"))]
print("| Model | BPD | Rec. BPD | Latent BPD | Unigram BPD | Pplx (mean over codebooks) | Codes used |")
print("|---|---|---|---|---|---|---|")
first = None
for row in rows:
    path = os.path.join(exp, row, "eval", "metrics.json")
    if not os.path.isfile(path):
        print(f"| {LABELS.get(row, row)} | not evaluated | | | | | |")
        continue
    with open(path) as handle:
        m = json.load(handle)
    first = first or m
    print(f"| {LABELS.get(row, row)} | {m['bpd']:.3f} | {m['rec_bpd']:.3f} | {m['latent_bpd']:.3f} | "
          f"{m['unigram_bpd']:.3f} | {m['perplexity']:.1f} | {m['codes_used']:.0f} |")
if first:
    print(f"\nTest images: {first['images']:.0f}; BPD = Rec. BPD + 64 latents x G x log2 K bits / 3,072 sub-pixels "
          f"(uniform prior); Unigram BPD uses log2 of each codebook's test perplexity instead of log2 K.")
PY
