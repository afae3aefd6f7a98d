"""The results tables of the image-autoencoder recipes as markdown, one line per trained row, from
EXP_DIR/<row>/eval/figures.json written by the recipe's `run.sh` stage 2 (EXP_DIR/<row>_seedN for seed N > 0).

    python recipes/common/image_ae_table.py RECIPE EXP_DIR [ROW ...]     (RECIPE: cifar10 or vqvae)

(called by recipes/{cifar10,vqvae}/table3.sh for the table and by their run.sh for the line of the row it trained).
"""
from __future__ import annotations

import json
import os
import re
import statistics
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
                   f"{m['code_perplexity']:.1f}", f"{m['codes_used']:.0f}"],
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
        lambda m: [f"{1e3 * m['mse']:.2f}", f"{m['code_perplexity']:.1f}", f"{m['codes_used']:.0f}"],
        lambda evaluated: f"Test images: {evaluated[-1]['images']:.0f}; MSE of the reconstruction in [0, 1] per "
                          "sub-pixel."),
}


SEEDED = re.compile(r"(.+)_seed([0-9]+)")  # the folder of a row trained with run.sh --seed N, N > 0


def label(table: Table, run: str) -> str:
    """The table's label of a row, with "(seed N)" for ROW_seedN; an unknown name as it is."""
    seeded = SEEDED.fullmatch(run)
    if seeded and seeded[1] in table.labels:
        return f"{table.labels[seeded[1]]} (seed {seeded[2]})"
    return table.labels.get(run, run)


def evaluated_runs(table: Table, exp: str) -> list[str]:
    """Every row of the table evaluated in exp, in the table's order, each row's seeds in increasing order."""
    folders = os.listdir(exp) if os.path.isdir(exp) else []
    runs = []
    for row in table.labels:
        seeded = sorted((m for m in map(SEEDED.fullmatch, folders) if m and m[1] == row), key=lambda m: int(m[2]))
        runs += [row] + [m[0] for m in seeded]
    return [run for run in runs if os.path.isfile(os.path.join(exp, run, "eval", "figures.json"))]


def base_row(run: str) -> str:
    """The row a run belongs to: ROW for ROW and ROW_seedN."""
    seeded = SEEDED.fullmatch(run)
    return seeded[1] if seeded else run


def seed_summary(table: Table, row: str, runs: list[dict]) -> str:
    """The line of a row trained with several seeds: every cell as mean ± sample standard deviation (the cells are
    linear in the metrics, so the formatter of one run formats both)."""
    keys = [key for key, value in runs[0].items() if isinstance(value, (int, float))]
    mean = {key: statistics.fmean(run[key] for run in runs) for key in keys}
    spread = {key: statistics.stdev(run[key] for run in runs) for key in keys}
    cells = [f"{m} ± {s}" for m, s in zip(table.cells(mean), table.cells(spread))]
    return "| " + " | ".join([f"{table.labels.get(row, row)}, mean ± sd of {len(runs)} seeds", *cells]) + " |"


def print_table(table: Table, exp: str, rows: list[str]) -> None:
    """One line per row (default: every row of the table evaluated in exp, with its seeds, in the table's order):
    the label (marked when the run never quantized) and the cells, or "not evaluated"; after the seeds of a row
    evaluated with two or more of them, their mean ± sd; then a blank line and the footer if any row was
    evaluated."""
    rows = rows or evaluated_runs(table, exp)
    print("| " + " | ".join(table.header) + " |")
    print("|" + "---|" * len(table.header))
    evaluated, group = [], []
    for index, row in enumerate(rows):
        name = label(table, row)
        path = os.path.join(exp, row, "eval", "figures.json")
        if not os.path.isfile(path):
            print(f"| {name} | not evaluated |" + " |" * (len(table.header) - 2))
        else:
            with open(path) as handle:
                evaluated.append(json.load(handle))
            group.append(evaluated[-1])
            if evaluated[-1].get("quantized") is False:  # a run inside the warm-up: code figures of an unused codebook
                name += " (pass-through: never quantized)"
            print("| " + " | ".join([name, *table.cells(evaluated[-1])]) + " |")
        if index + 1 == len(rows) or base_row(rows[index + 1]) != base_row(row):
            if len(group) > 1:
                print(seed_summary(table, base_row(row), group))
            group = []
    if evaluated:
        print("\n" + table.footer(evaluated))


def main(args: list[str]) -> int:
    if len(args) < 2 or args[0] not in TABLES:
        print(f"error: usage: image_ae_table.py {{{','.join(TABLES)}}} EXP_DIR [ROW ...]", file=sys.stderr)
        return 1
    print_table(TABLES[args[0]], args[1], args[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
