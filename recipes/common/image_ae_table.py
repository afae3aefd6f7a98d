"""The results tables of the image-autoencoder recipes as markdown, one line per row (config), from
EXP_DIR/<row>/eval/metrics.json written by the recipe's `run.sh` stage 2.

    python recipes/common/image_ae_table.py RECIPE/table3.sh EXP_DIR [ROW ...]

(called by recipes/cifar10/table3.sh and recipes/vqvae/table3.sh; the recipe is the folder of the script, whose
header comment is the usage printed when EXP_DIR is missing).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Callable


@dataclass
class Table:
    labels: dict[str, str]  # row (config name) -> its label, in the table's order
    header: list[str]
    cells: Callable[[dict], list[str]]  # the metrics of an evaluated row -> its cells after the label
    footer: Callable[[list[dict]], str]  # the metrics of the evaluated rows -> the line under the table


TABLES = {
    # Łańcucki et al. 2020, Table III
    "cifar10": Table(
        {"vqvae": "VQ-VAE", "bn": "+ BN", "bn_codebook_lr": "+ BN + codebook LR", "bn_ema": "+ BN + EMA",
         "bn_reestimation": "+ BN + data-dep reest",
         "bn_reestimation_codebook_lr": "+ BN + data-dep reest + codebook LR"},
        ["Model", "BPD", "Rec. BPD", "Latent BPD", "Unigram BPD", "Pplx (mean over codebooks)", "Codes used"],
        lambda m: [f"{m['bpd']:.3f}", f"{m['rec_bpd']:.3f}", f"{m['latent_bpd']:.3f}", f"{m['unigram_bpd']:.3f}",
                   f"{m['perplexity']:.1f}", f"{m['codes_used']:.0f}"],
        lambda evaluated: f"Test images: {evaluated[0]['images']:.0f}; BPD = Rec. BPD + 64 latents x G x log2 K "
                          "bits / 3,072 sub-pixels (uniform prior); Unigram BPD uses log2 of each codebook's test "
                          "perplexity instead of log2 K."),
    # Huh et al. 2023, Table 3
    "vqvae": Table(
        {"vqvae": "VQVAE", "l2": "VQVAE + l2", "replace": "VQVAE + replace", "l2_replace": "VQVAE + l2 + replace",
         "sqvae": "SQVAE", "gumbel": "Gumbel-VQVAE", "affine": "VQVAE + Affine", "opt": "VQVAE + OPT",
         "affine_opt": "VQVAE + Affine + OPT", "affine_opt_replace": "VQVAE + Affine + OPT + replace",
         "affine_opt_replace_l2": "VQVAE + Affine + OPT + replace + l2"},
        ["Method", "MSE (1e-3)", "Perplexity", "Codes used"],
        lambda m: [f"{1e3 * m['mse']:.2f}", f"{m['perplexity']:.1f}", f"{m['codes_used']:.0f}"],
        lambda evaluated: f"Test images: {evaluated[-1]['images']:.0f}; MSE of the reconstruction in [0, 1] per "
                          "sub-pixel."),
}


def print_table(table: Table, exp: str, rows: list[str]) -> None:
    """One line per row (default: every row of the table that has been evaluated, in its order): the label and
    the cells, or "not evaluated"; then a blank line and the footer if any row was evaluated."""
    if not rows:
        rows = [r for r in table.labels if os.path.isfile(os.path.join(exp, r, "eval", "metrics.json"))]
    print("| " + " | ".join(table.header) + " |")
    print("|" + "---|" * len(table.header))
    evaluated = []
    for row in rows:
        label = table.labels.get(row, row)
        path = os.path.join(exp, row, "eval", "metrics.json")
        if not os.path.isfile(path):
            print(f"| {label} | not evaluated |" + " |" * (len(table.header) - 2))
            continue
        with open(path) as handle:
            evaluated.append(json.load(handle))
        print("| " + " | ".join([label, *table.cells(evaluated[-1])]) + " |")
    if evaluated:
        print("\n" + table.footer(evaluated))


def main(script: str, args: list[str]) -> int:
    if not args:  # the script's header comment, after its #! line, is its usage
        with open(script) as handle:
            lines = handle.read().splitlines()[1:]
        for line in lines:
            if not line.startswith("#"):
                break
            print(line[2:] if line.startswith("# ") else line[1:])
        return 1
    print_table(TABLES[os.path.basename(os.path.dirname(os.path.abspath(script)))], args[0], args[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
