"""The results table of every recipe's table script: each row's figures over its seeds (mean ± sample standard
deviation), as markdown, from the figures files the recipe's evaluation wrote into each run folder.

    python recipes/common/table.py RECIPE EXP [--rows "ROW[:SEEDS] ..."] [--seeds N] [--groups "G ..."]
                                   [--suffix S] [--decode-suffix S] [--name NAME] [--note TEXT]

RECIPE is one of TABLES (wsj, scribblelens, cifar10, vqvae, imagenet100, units, maskgit): its rows, labels and
columns, defined as data below. Seed 0 of a row is the run folder EXP/ROW<suffix>, seed k > 0 EXP/ROW<suffix>_seedk
(the --seed naming of the recipes' run.sh); with --groups (the classifiers' models) EXP/GROUP/..., the group in the
first column. A run is evaluated when its first column's figures file exists.

Two layouts. One line per row (wsj, scribblelens, imagenet100, units, maskgit): the mean over the row's evaluated seeds
0..SEEDS-1 (":SEEDS" of --rows, else --seeds), with "± sd" when there are several, and their count. One line per
run (cifar10, vqvae): a line for each seed 0..SEEDS-1 of each row (--rows may also name a run folder, ROW_seedN;
by default every evaluated run of the table's rows, with its seeds), and a row evaluated with several seeds gets a
line of their mean ± sd after them.

The table is printed and, with --name or the table's default name, written to EXP/NAME.md; tables with curves also
write EXP/NAME.json (every seed's figures) and EXP/NAME_curves.png: one panel per curve, every row on it, the mean
over seeds as a line and the seeds' min-max range shaded (Łańcucki et al. 2020 Fig. 2 and Fig. 4 style).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import re
import statistics
import string
import sys
from pathlib import Path

# seqvq.train.logs (and with it torch) is imported only where a table is written or has curves: printing a table
# stays instant.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


@dataclasses.dataclass(frozen=True)
class Versus:
    """After a column's cell, the change of its mean against a base row's, "(+x)", in the rows after the base."""
    row: str
    skip: tuple[str, ...] = ()  # rows never compared with it


@dataclasses.dataclass(frozen=True)
class Column:
    header: str
    source: str  # the figures file, relative to the run folder: JSON, or text holding one number (key None)
    key: str | None
    digits: int
    scale: float = 1.0  # the cell shows scale x the figure
    absent: str = "N/A"  # the cell when no evaluated seed has the figure
    spread: bool = True  # "mean ± sd" over several seeds; False: the mean alone
    versus: Versus | None = None


@dataclasses.dataclass(frozen=True)
class Curve:
    key: str  # of the dev records in RUN/metrics.jsonl
    label: str
    log_scale: bool = False
    folder: str = ""  # the dev records of RUN/FOLDER/metrics.jsonl instead (a run's second training stage)


@dataclasses.dataclass(frozen=True)
class Table:
    labels: dict[str, str]  # row -> its label, in the table's order
    label_header: str
    columns: tuple[Column, ...]
    footer: str = ""  # under the table; its {key} fields are the first evaluated run's (first column's file)
    name: str = ""  # EXP/NAME.md written by default; "": printed only, unless --name
    curves: tuple[Curve, ...] = ()
    group_header: str = ""  # the first column: the run folders' parent EXP/GROUP (--groups)
    marks: tuple[str, ...] = ()  # headers of columns after the label, with the cells of mark_rows
    mark_rows: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # other rows: "-" in each
    seeds_always: bool = True  # the Seeds column also when every row has one seed
    line_per_run: bool = False
    not_evaluated: str = ""  # the figure cells of a row without an evaluated seed ("": each column's absent)


# The figures files and keys of the evaluations: speech `decode_<split>/`, the other tasks `eval/`.
SPEECH_FIGURES, SPEECH_PERPLEXITY = "figures.json", "code_perplexity"
EVAL_FIGURES, EVAL_PERPLEXITY = "eval/figures.json", "code_perplexity"
MASKGIT_FIGURES = "transformer/eval/figures.json"  # a maskgit run's second stage (its first: eval/)
TRAIN_SECONDS = "train_seconds.txt"  # a run's training wall time (written by the recipe driver's train stage)

# The quantizers since 2024, alone on each recipe's plain VQ row (the "does the claim hold?" rows, docs/remedies.md)
RECENT_LABELS = {
    "modern_bn_reestimation_usage_kl": "+ BN + data-dep reest + usage regularizer", "recent_diveq": "DiVeQ",
    "recent_sf_diveq": "SF-DiVeQ", "recent_bridge": "VQBridge (FVQ)",
    "recent_optvq": "OptVQ (codes drawn from the plan)", "recent_optvq_argmax": "OptVQ (argmax of the plan)",
    "recent_ibq": "IBQ (index backpropagation)", "recent_lfq": "LFQ (log2 K bits)"}
# The most used VQ library's VectorQuantize as the bottleneck (seqvq/quantize/peer.py), beside the recommendation
PEER_LABELS = {"peer_vector_quantize": "vector-quantize-pytorch VectorQuantize (its README's settings)"}
# The bottlenecks at the discrete units' bit rates (recipes/units/RESULTS.md)
BITRATE_LABELS = {"bitrate_bn_reestimation_k2048": "+ BN + data-dep reest, 2,048 codes",
                  "bitrate_bn_reestimation_k16384": "+ BN + data-dep reest, 16,384 codes",
                  "bitrate_bn_fsq_k2048": "FSQ 8x8x6x5 + BN", "bitrate_bn_fsq_k16384": "FSQ 8x8x8x6x5 + BN"}
SPEECH_LABELS = {
    "no_bottleneck": "no bottleneck", "vanilla_vq": "vanilla VQ", "bn": "+ BN",
    "bn_codebook_lr": "+ BN + codebook LR", "bn_ema": "+ BN + EMA", "bn_ema_decay09": "+ BN + EMA (γ = 0.9)",
    "bn_reestimation": "+ BN + data-dep reest",
    "bn_reestimation_codebook_lr": "+ BN + data-dep reest + codebook LR", "huh_affine": "Huh: affine",
    "huh_sync": "Huh: synchronized update", "huh_replacement": "Huh: dead-code replacement",
    "huh_alternating": "Huh: alternating optimization", "huh_all": "Huh: all remedies",
    "modern_rotation": "rotation trick", "modern_simvq": "SimVQ linear map",
    "modern_usage_kl": "usage regularizer (KL)", "modern_fsq": "FSQ 8x8x8", "modern_bn_fsq": "FSQ + BN",
    "modern_bn_reestimation_rotation": "+ BN + data-dep reest + rotation trick",
    "modern_bn_reestimation_simvq": "+ BN + data-dep reest + SimVQ",
    "modern_bn_reestimation_usage_kl": "+ BN + data-dep reest + usage regularizer", "modern_bsq": "BSQ 9 bits",
    "ablation_constant_lr": "reest + codebook LR, constant LR (no warm-up, no cosine)",
    "ablation_no_restart": "reest + codebook LR, reservoir never restarted",
    "ablation_early_reestimation": "reest + codebook LR, re-estimation at steps 50-200 (5 iterations)",
    "ablation_huh_all_defaults": "Huh: all remedies, library defaults (lr scale 1, no k-means init, constant LR)",
} | RECENT_LABELS | PEER_LABELS | BITRATE_LABELS
SEEDS_NOTE = "Mean ± sample standard deviation over seeds. "


def speech_table(units: str, decode_suffix: str = "") -> Table:
    """Łańcucki et al. 2020, Table I: PER (CER and WER for characters and subwords) of greedy decoding of each
    run's ``decode_<split><decode_suffix>/``, code perplexity, codes used and the code stream's bits per second
    (unigram entropy; repeats merged for dedup) over the dev latents, and the training stage's wall time."""
    rates = [("per", "PER")] if units == "phones" else [("cer", "CER"), ("wer", "WER")]
    source = {split: f"decode_{split}{decode_suffix}/{SPEECH_FIGURES}" for split in ("dev", "test")}
    columns = [Column(f"{split.capitalize()} {name} (%)", source[split], key, 1)
               for split in ("dev", "test") for key, name in rates]
    columns += [Column("Code perplexity (dev)", source["dev"], SPEECH_PERPLEXITY, 1),
                Column("Codes used (dev)", source["dev"], "codes_used", 0),
                Column("Codes b/s (dev)", source["dev"], "frames_bps", 0),
                Column("Dedup b/s (dev)", source["dev"], "dedup_bps", 0),
                Column("Train s", TRAIN_SECONDS, None, 0, absent="", spread=False)]
    return Table(SPEECH_LABELS, "Model", tuple(columns), SEEDS_NOTE + "Greedy CTC decoding of the last checkpoint; "
                 "perplexity, codes used and the code stream's bits per second (unigram entropy per code x codes per "
                 "second; dedup: runs of a code merged) over the dev latents.", "table1",
                 (Curve(rates[0][0], f"dev {rates[0][1]} (%)", True),  # collapsed rows near 100%, converged near 10%
                  Curve("code_perplexity", "dev code perplexity")))


HUH_METHODS = ("Affine", "Sync.", "Alt.", "Replace")


def huh_marks(*methods: str) -> tuple[str, ...]:
    return tuple("✓" if method in methods else "-" for method in HUH_METHODS)


TABLES = {
    # Łańcucki et al. 2020, Table II
    "scribblelens": Table(
        {"vanilla": "vanilla VQ", "bn": "+ BN", "bn_codebook_lr": "+ BN + codebook LR", "bn_ema": "+ BN + EMA",
         "bn_reestimation": "+ BN + data-dep reest",
         "bn_reestimation_codebook_lr": "+ BN + data-dep reest + codebook LR", "huh_affine": "Huh: affine",
         "huh_sync": "Huh: synchronized update", "huh_alternating": "Huh: alternating optimization",
         "huh_replacement": "Huh: dead-code replacement"} | RECENT_LABELS,
        "Model",
        (Column("Rec. BPD", EVAL_FIGURES, "bpd", 4), Column("Pplx", EVAL_FIGURES, EVAL_PERPLEXITY, 1),
         Column("Codes used", EVAL_FIGURES, "codes_used", 0),
         Column("Uniform NELBO bits", EVAL_FIGURES, "uniform_nelbo", 4),
         Column("Unigram NELBO bits", EVAL_FIGURES, "unigram_nelbo", 4)),
        SEEDS_NOTE + "Test split; NELBO = BPD + bits per latent / pixels per latent (uniform: log2 K, unigram: log2 "
        "perplexity).", "table2",
        (Curve("bpd", "test BPD", True),  # the first evaluations near 0.9 bits/dim, the rows 0.01 apart near 0.3
         Curve("perplexity", "test code perplexity"))),
    # Łańcucki et al. 2020, Table III
    "cifar10": Table(
        {"vqvae": "VQ-VAE", "bn": "+ BN", "bn_codebook_lr": "+ BN + codebook LR", "bn_ema": "+ BN + EMA",
         "bn_reestimation": "+ BN + data-dep reest",
         "bn_reestimation_codebook_lr": "+ BN + data-dep reest + codebook LR"},
        "Model",
        (Column("BPD", EVAL_FIGURES, "bpd", 3), Column("Rec. BPD", EVAL_FIGURES, "rec_bpd", 3),
         Column("Latent BPD", EVAL_FIGURES, "latent_bpd", 3), Column("Unigram BPD", EVAL_FIGURES, "unigram_bpd", 3),
         Column("Pplx (mean over codebooks)", EVAL_FIGURES, EVAL_PERPLEXITY, 1),
         Column("Codes used", EVAL_FIGURES, "codes_used", 0)),
        "Test images: {images:.0f}; BPD = Rec. BPD + 64 latents x G x log2 K bits / 3,072 sub-pixels (uniform "
        "prior); Unigram BPD uses log2 of each codebook's test perplexity instead of log2 K.",
        line_per_run=True, not_evaluated="not evaluated"),
    # Huh et al. 2023, Table 3
    "vqvae": Table(
        {"vqvae": "VQVAE", "l2": "VQVAE + l2", "replace": "VQVAE + replace", "l2_replace": "VQVAE + l2 + replace",
         "sqvae": "SQVAE", "gumbel": "Gumbel-VQVAE", "affine": "VQVAE + Affine", "opt": "VQVAE + OPT",
         "affine_opt": "VQVAE + Affine + OPT", "affine_opt_replace": "VQVAE + Affine + OPT + replace",
         "affine_opt_replace_l2": "VQVAE + Affine + OPT + replace + l2",
         "bn_reestimation": "VQVAE + BN + data-dep reest"} | RECENT_LABELS,
        "Method",
        (Column("MSE (1e-3)", EVAL_FIGURES, "mse", 2, scale=1e3),
         Column("Perplexity", EVAL_FIGURES, EVAL_PERPLEXITY, 1), Column("Codes used", EVAL_FIGURES, "codes_used", 0)),
        "Test images: {images:.0f}; MSE of the reconstruction in [0, 1] per sub-pixel.",
        line_per_run=True, not_evaluated="not evaluated"),
    # Huh et al. 2023, Table 2: which of Huh's four methods a row uses; rows that use none of them (the plain row,
    # Łańcucki's remedy, the modern remedies) are labelled by their method
    "imagenet100": Table(
        {"bn_reestimation": "+ BN + data-dep reest", "modern_rotation": "rotation trick",
         "modern_simvq": "SimVQ linear map", "modern_usage_kl": "usage regularizer (KL)",
         "modern_fsq": "FSQ 8x5x5x5", "modern_bsq": "BSQ 10 bits", "modern_bn_fsq": "FSQ 8x5x5x5 + BN",
         "modern_bn_reestimation_rotation": "+ BN + data-dep reest + rotation trick",
         "modern_bn_reestimation_simvq": "+ BN + data-dep reest + SimVQ",
         "modern_bn_reestimation_usage_kl": "+ BN + data-dep reest + usage regularizer (KL)"} | PEER_LABELS,
        "Row",
        (Column("Accuracy", EVAL_FIGURES, "accuracy", 1, absent="-", versus=Versus("none", skip=("novq",))),
         Column("Perplexity", EVAL_FIGURES, EVAL_PERPLEXITY, 1, absent="-"),
         Column("Codes used", EVAL_FIGURES, "codes_used", 0, absent="-"),
         Column("Train s", TRAIN_SECONDS, None, 0, absent="", spread=False)),
        group_header="Model", marks=HUH_METHODS,
        mark_rows={"novq": ("no VQ", "", "", ""), "affine": huh_marks("Affine"), "sync": huh_marks("Sync."),
                   "alternating": huh_marks("Alt."), "replace": huh_marks("Replace"), "all": huh_marks(*HUH_METHODS)},
        seeds_always=False, not_evaluated="not evaluated"),
    # Huh et al. 2023, Table 9 (FID of MaskGIT on CelebA) beside the FD of the own classifier's features
    "maskgit": Table(
        {"plain": "MaskGIT", "affine": "+ Affine", "opt": "+ OPT", "affine_opt": "+ Affine + OPT (ours)",
         "replace": "+ replace", "l2": "+ l2", "all": "+ Affine + OPT + replace + l2"},
        "Method",
        (Column("FD (own classifier)", MASKGIT_FIGURES, "fd", 2),
         Column("rFD (own classifier)", MASKGIT_FIGURES, "rfd", 2),
         Column("Masked NLL (nats)", MASKGIT_FIGURES, "nll", 3),
         Column("Perplexity", MASKGIT_FIGURES, EVAL_PERPLEXITY, 1),
         Column("Codes used", MASKGIT_FIGURES, "codes_used", 0),
         Column("Codes sampled", MASKGIT_FIGURES, "sample_codes_used", 0),
         Column("AE MSE (1e-3)", EVAL_FIGURES, "mse", 2, scale=1e3),
         Column("AE train s", TRAIN_SECONDS, None, 0, absent="", spread=False)),
        SEEDS_NOTE + "FD: {samples:.0f} generated images against the training images; rFD: the {images:.0f} test "
        "images' reconstructions against the test images; in the features of a small classifier trained on the training "
        "images' labels (not Inception: not FID). The test images against the training images: FD {fd_test:.2f}. "
        "NLL: the transformer's, per masked test code; perplexity and codes used: the test codes'.",
        "table9",
        (Curve("fd", "FD (own classifier) of the samples", folder="transformer"),
         Curve("nll", "masked NLL of the test codes (nats)", folder="transformer")),
        marks=("Paper FID (CelebA)",),
        mark_rows={"plain": ("90.4",), "affine_opt": ("74.8",), "replace": ("79.7",), "l2": ("81.5",)},
        seeds_always=False, not_evaluated="not evaluated"),
}

# recipes/units: the CTC recognizer on discrete units; the bits per second of the dev token streams (unigram
# entropy per token x tokens per second) that run.sh's evaluate stage copies into RUN/token_rates.json
UNIT_RATES = "token_rates.json"
TABLES["units"] = Table(
    {f"units_ctc_{features}_k{k}": f"{label}, K = {k}"
     for features, label in (("logmel", "log-mel k-means"), ("no_bottleneck_layer-1", "BiLSTM (last layer) k-means"))
     for k in (100, 500, 2000)},
    "Units",
    (Column("Dev PER (%)", f"decode_dev/{SPEECH_FIGURES}", "per", 1),
     Column("Test PER (%)", f"decode_test/{SPEECH_FIGURES}", "per", 1),
     Column("Frames b/s", UNIT_RATES, "frames_bps", 0), Column("Dedup b/s", UNIT_RATES, "dedup_bps", 0),
     Column("Sentencepiece b/s", UNIT_RATES, "sentencepiece_bps", 0),
     Column("Sentencepiece tokens/s", UNIT_RATES, "sentencepiece_tokens_per_second", 1)),
    SEEDS_NOTE + "Greedy CTC decoding of the last checkpoint. b/s: dev token stream, unigram entropy per token x "
    "tokens per second (frames: one unit per feature frame; dedup: repeats merged; sentencepiece: the model's input).",
    "units")

SEEDED = re.compile(r"(.+)_seed([0-9]+)")  # the folder of a row trained with run.sh --seed N, N > 0


def parse_rows(spec: str, seeds: int) -> list[tuple[str, int]]:
    rows = []
    for entry in spec.split():
        row, _, count = entry.partition(":")
        if count and not (count.isdigit() and int(count) > 0):
            raise SystemExit(f"error: table.py: --rows entry {entry!r}: write CONFIG or CONFIG:SEEDS (SEEDS >= 1)")
        rows.append((row, int(count or seeds)))
    return rows


def run_name(row: str, suffix: str, seed: int) -> str:
    return row + suffix + (f"_seed{seed}" if seed else "")


def row_and_seed(name: str) -> tuple[str, str]:
    """The row of a run folder and its seed ("" for seed 0): ROW, or ROW_seedN."""
    seeded = SEEDED.fullmatch(name)
    return (seeded[1], seeded[2]) if seeded else (name, "")


def column_id(column: Column) -> str:
    return f"{column.source}:{column.key}" if column.key else column.source


def read_figure(path: Path, key: str | None) -> float | None:
    text = path.read_text()
    if key is None:
        return float(text) if text.strip() else None
    return json.loads(text).get(key)


def read_run(table: Table, folder: Path) -> dict | None:
    """The figures of an evaluated run by column (None when its first column's file is missing), whether it never
    left the quantizer's pass-through warm-up, and its dev curves."""
    if not (folder / table.columns[0].source).is_file():
        return None
    figures = {}
    for column in table.columns:
        path = folder / column.source
        if path.is_file() and (value := read_figure(path, column.key)) is not None:
            figures[column_id(column)] = value
    first = table.columns[0]
    if first.key is not None and json.loads((folder / first.source).read_text()).get("quantized") is False:
        figures["never_quantized"] = True  # a run inside the warm-up: the code figures count an unused codebook
    if table.curves:
        from seqvq.train.logs import read_metrics
        records = {f: [r for r in read_metrics(folder / f) if r.get("split") == "dev"]
                   for f in {c.folder for c in table.curves}}
        figures["curves"] = {c.key: [(r["step"], r[c.key]) for r in records[c.folder] if c.key in r]
                             for c in table.curves}
    return figures


def evaluated_runs(table: Table, folder: Path) -> list[str]:
    """Every evaluated run of the table's rows in folder, in the table's order, each row's seeds in increasing
    order."""
    names = os.listdir(folder) if folder.is_dir() else []
    runs = []
    for row in table.labels:
        seeded = sorted((m for m in map(SEEDED.fullmatch, names) if m and m[1] == row), key=lambda m: int(m[2]))
        runs += [row] + [m[0] for m in seeded]
    return [run for run in runs if (folder / run / table.columns[0].source).is_file()]


def evaluated_rows(table: Table, folders: list[Path], suffix: str) -> list[tuple[str, int]]:
    """The table's rows with an evaluated seed 0 in one of folders, in the table's order, each with the count of its
    evaluated seeds 0, 1, ... before the first one missing."""
    rows = []
    for row in table.labels:
        seeds = max((next(seed for seed in itertools.count()
                          if not (folder / run_name(row, suffix, seed) / table.columns[0].source).is_file())
                     for folder in folders), default=0)
        rows += [(row, seeds)] if seeds else []
    return rows


def values(column: Column, runs: list[dict]) -> list[float]:
    return [run[column_id(column)] for run in runs if column_id(column) in run]


def cell(column: Column, runs: list[dict], base: float | None = None) -> str:
    """The mean of the runs' figure, "± sd" over several, and "(+x)" its change against base."""
    figures = values(column, runs)
    if not figures:
        return column.absent
    text = f"{column.scale * statistics.fmean(figures):.{column.digits}f}"
    if column.spread and len(figures) > 1:
        text += f" ± {column.scale * statistics.stdev(figures):.{column.digits}f}"
    if base is not None:
        text += f" ({column.scale * (statistics.fmean(figures) - base):+.{column.digits}f})"
    return text


class Writer:
    """The markdown of one table over the runs in exp, and the figures of every evaluated run."""

    def __init__(self, table: Table, exp: Path, suffix: str = "") -> None:
        self.table, self.exp, self.suffix = table, exp, suffix
        self.rows: list[tuple[str, list[dict]]] = []  # per line: the row (GROUP/ROW) and its evaluated seeds
        self.first: Path | None = None  # the first evaluated run, whose figures fill the footer

    def read(self, folder: Path) -> dict | None:
        figures = read_run(self.table, folder)
        if figures is not None and self.first is None:
            self.first = folder
        return figures

    def line(self, group: str, row: str, label: str, runs: list[dict], seeds: int | None = None,
             bases: dict[str, float] | None = None) -> str:
        """The line of a row: its group, label and marks, "n/seeds" evaluated when seeds is given, then the
        figures of the runs, each column with its change against bases[column] if there."""
        table = self.table
        if any(run.get("never_quantized") for run in runs):
            label += " (pass-through: never quantized)"
        lead = ([group] if table.group_header else []) + [label]
        lead += table.mark_rows.get(row, ("-",) * len(table.marks))
        lead += [] if seeds is None else [f"{len(runs)}/{seeds}"]
        if not runs and table.not_evaluated:
            return "| " + " | ".join([*lead, table.not_evaluated]) + " |" + " |" * (len(table.columns) - 1)
        cells = [cell(column, runs, (bases or {}).get(column_id(column))) for column in table.columns]
        return "| " + " | ".join(lead + cells) + " |"

    def row_lines(self, group: str, rows: list[tuple[str, int]], seeds_column: bool) -> list[str]:
        """One line per row: the mean ± sd over its evaluated seeds, the change against a base row's after it."""
        lines, bases = [], {}
        for row, seeds in rows:
            runs = [f for seed in range(seeds) if (f := self.read(self.exp / group / run_name(row, self.suffix, seed)))]
            self.rows.append((f"{group}/{row}" if group else row, runs))
            compared = {column_id(c): bases[column_id(c)] for c in self.table.columns
                        if c.versus and column_id(c) in bases and row not in (c.versus.row, *c.versus.skip)}
            lines.append(self.line(group, row, self.table.labels.get(row, row), runs, seeds if seeds_column else None,
                                   compared))
            for column in self.table.columns:
                if column.versus and row == column.versus.row and values(column, runs):
                    bases[column_id(column)] = statistics.fmean(values(column, runs))
        return lines

    def run_lines(self, group: str, names: list[str]) -> list[str]:
        """One line per run folder, then after a row's seeds their mean ± sd when two or more were evaluated."""
        folder = self.exp / group
        names = names or evaluated_runs(self.table, folder)
        lines, seeds = [], []
        for index, name in enumerate(names):
            row, seed = row_and_seed(name)
            label = self.table.labels.get(name, name)
            if seed and row in self.table.labels:
                label = f"{self.table.labels[row]} (seed {seed})"
            figures = self.read(folder / name)
            seeds += [figures] if figures else []
            lines.append(self.line(group, row, label, [figures] if figures else []))
            if index + 1 == len(names) or row_and_seed(names[index + 1])[0] != row:
                if len(seeds) > 1:
                    label = f"{self.table.labels.get(row, row)}, mean ± sd of {len(seeds)} seeds"
                    lines.append(self.line(group, row, label, seeds))
                seeds = []
        return lines

    def markdown(self, groups: list[str], rows: list[tuple[str, int]]) -> str:
        """The table, then a blank line and the footer (a footer with fields only after an evaluated run)."""
        table = self.table
        if not rows and not table.line_per_run:
            rows = evaluated_rows(table, [self.exp / group for group in groups], self.suffix)
        seeds_column = not table.line_per_run and (table.seeds_always or any(seeds > 1 for _, seeds in rows))
        header = ([table.group_header] if table.group_header else []) + [table.label_header, *table.marks]
        header += ["Seeds"] * seeds_column + [column.header for column in table.columns]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for group in groups:
            if table.line_per_run:
                lines += self.run_lines(group, [run_name(row, self.suffix, seed) for row, seeds in rows
                                                for seed in range(seeds)])
            else:
                lines += self.row_lines(group, rows, seeds_column)
        footer = table.footer
        if any(field for _, field, _, _ in string.Formatter().parse(footer)):
            footer = footer.format_map(json.loads((self.first / table.columns[0].source).read_text())) \
                if self.first else ""
        return "\n".join(lines) + "\n" + (f"\n{footer}\n" if footer else "")


def plot(name: str, table: Table, rows: list[tuple[str, list[dict]]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(table.curves), figsize=(6.5 * len(table.curves), 4.5), squeeze=False)
    for ax, curve in zip(axes[0], table.curves):
        for index, (row, runs) in enumerate(rows):  # a row keeps its colour in every panel
            curves = [dict(r["curves"][curve.key]) for r in runs if r["curves"].get(curve.key)]
            if not curves:
                continue
            steps = sorted(set.intersection(*(set(c) for c in curves)))
            values = [[c[s] for c in curves] for s in steps]
            style = {"color": f"C{index % 10}", "linestyle": "-" if index < 10 else "--"}
            ax.plot(steps, [sum(v) / len(v) for v in values], marker=".", **style,
                    label=f"{table.labels.get(row, row)} ({len(curves)})")
            if len(curves) > 1:
                ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=style["color"],
                                alpha=0.2)
        if curve.log_scale:
            ax.set_yscale("log")
            for axis_format in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis_format(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("training step")
        ax.set_ylabel(curve.label)
        ax.grid(alpha=0.3)
    if axes[0][0].lines:
        axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{name}: mean over seeds (count in the legend), min-max over seeds shaded")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", choices=["wsj", *TABLES])
    parser.add_argument("exp", type=Path)
    parser.add_argument("--rows", default="", help='"ROW[:SEEDS] ..." in table order; default: every row with an '
                        'evaluated seed 0, with its evaluated seeds (one line per run: every evaluated run)')
    parser.add_argument("--seeds", type=int, default=1, help="the seeds of a row without :SEEDS (default 1)")
    parser.add_argument("--groups", default="", help='"GROUP ...": the runs are in EXP/GROUP/ (imagenet100: models)')
    parser.add_argument("--suffix", default="", help="run-name suffix of the speech units (_chars, _bpe300)")
    parser.add_argument("--name", help="write EXP/NAME.md (and .json, _curves.png for tables with curves); default: "
                        "table1 for wsj, table2 for scribblelens, the others only print")
    parser.add_argument("--note", default="", help="a line written under the table (command, wall time, machine)")
    parser.add_argument("--decode-suffix", default="",
                        help="wsj: read RUN/decode_<split>SUFFIX/figures.json, e.g. _live for the figures of "
                             "`seqvq evaluate RUN/checkpoints/last.pt DATA --live-weights --out RUN/decode_dev_live`")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        raise SystemExit(f"error: table.py: --seeds takes a count >= 1, got {args.seeds}")
    units = {"": "phones", "_chars": "chars"}.get(args.suffix, "bpe")
    table = speech_table(units, args.decode_suffix) if args.recipe == "wsj" else TABLES[args.recipe]
    writer = Writer(table, args.exp, args.suffix)
    text = writer.markdown(args.groups.split() or [""], parse_rows(args.rows, args.seeds))
    text += f"\n{args.note}\n" if args.note else ""
    print(text, end="")
    name = args.name or table.name
    if not name:
        return
    from seqvq.train.logs import atomic_write_text
    atomic_write_text(args.exp / f"{name}.md", text)
    if table.curves:
        atomic_write_text(args.exp / f"{name}.json", json.dumps(dict(writer.rows), indent=1) + "\n")
        if any(runs for _, runs in writer.rows):
            plot(name, table, writer.rows, args.exp / f"{name}_curves.png")
    print(f"(written: {args.exp / name}.md" + (", .json, _curves.png)" if table.curves else ")"))


if __name__ == "__main__":
    main()
