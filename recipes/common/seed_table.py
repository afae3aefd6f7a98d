"""A results table over seeds, and its curves figure, for the speech and handwriting table scripts.

    python recipes/common/seed_table.py wsj EXP_DIR --rows "no_bottleneck:3 vanilla_vq ..." [--suffix _chars]
    python recipes/common/seed_table.py scribblelens EXP_DIR --rows "vanilla:3 bn ..."

A row is ``CONFIG`` or ``CONFIG:SEEDS``; seed 0 of a row is the run EXP_DIR/CONFIG<suffix>, seed k > 0 is
EXP_DIR/CONFIG<suffix>_seedk (the ``--seed`` naming of recipes/wsj/run.sh and recipes/scribblelens/run.sh). Each
cell is the mean over the row's finished seeds, with "± sd" (sample standard deviation) when there are several;
the seed count is its own column. Writes EXP_DIR/NAME.md (the markdown table, also printed), EXP_DIR/NAME.json
(every seed's figures) and EXP_DIR/NAME_curves.png: one panel per curve metric, every row on it, the mean over
seeds as a line and the seeds' min-max range shaded (Łańcucki et al. 2020 Fig. 2 and Fig. 4 style). NAME is
--name, by default table1 (wsj) or table2 (scribblelens).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from seqvq.train.logs import atomic_write_text, read_metrics  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Column:
    header: str
    source: str  # the figures file the value comes from, relative to the run directory
    key: str
    digits: int


@dataclasses.dataclass(frozen=True)
class TableKind:
    name: str  # output files EXP_DIR/NAME.md, .json, _curves.png
    labels: dict[str, str]
    columns: list[Column]
    curves: list[tuple[str, str]]  # (key of the dev records in metrics.jsonl, axis label)
    note: str
    log_scale: dict[str, bool] = dataclasses.field(default_factory=dict)  # curve key -> log y axis


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
}
HANDWRITING_LABELS = {
    "vanilla": "vanilla VQ", "bn": "+ BN", "bn_codebook_lr": "+ BN + codebook LR", "bn_ema": "+ BN + EMA",
    "bn_reestimation": "+ BN + data-dep reest", "bn_reestimation_codebook_lr": "+ BN + data-dep reest + codebook LR",
    "huh_affine": "Huh: affine", "huh_sync": "Huh: synchronized update",
    "huh_alternating": "Huh: alternating optimization", "huh_replacement": "Huh: dead-code replacement",
}


def speech_kind(units: str, decode_suffix: str = "") -> TableKind:
    """Table I's columns, read from each run's ``decode_<split><decode_suffix>/figures.json``."""
    rates = [("per", "PER")] if units == "phones" else [("cer", "CER"), ("wer", "WER")]
    source = {split: f"decode_{split}{decode_suffix}/figures.json" for split in ("dev", "test")}
    columns = [Column(f"{split.capitalize()} {name} (%)", source[split], key, 1)
               for split in ("dev", "test") for key, name in rates]
    columns += [Column("Code perplexity (dev)", source["dev"], "code_perplexity", 1),
                Column("Codes used (dev)", source["dev"], "codes_used", 0)]
    return TableKind("table1", SPEECH_LABELS, columns,
                     [(rates[0][0], f"dev {rates[0][1]} (%)"), ("code_perplexity", "dev code perplexity")],
                     "Greedy CTC decoding of the last checkpoint; perplexity and codes used over the dev latents.",
                     {rates[0][0]: True})  # collapsed rows sit near 100%, converged ones near 10%


HANDWRITING = TableKind(
    "table2", HANDWRITING_LABELS,
    [Column("Rec. BPD", "eval/figures.json", "bpd", 4), Column("Pplx", "eval/figures.json", "code_perplexity", 1),
     Column("Codes used", "eval/figures.json", "codes_used", 0),
     Column("Uniform NELBO bits", "eval/figures.json", "uniform_nelbo", 4),
     Column("Unigram NELBO bits", "eval/figures.json", "unigram_nelbo", 4)],
    [("bpd", "test BPD"), ("code_perplexity", "test code perplexity")],
    "Test split; NELBO = BPD + bits per latent / pixels per latent (uniform: log2 K, unigram: log2 perplexity).",
    {"bpd": True})  # the first evaluations sit near 0.9 bits/dim, the rows differ by 0.01 near 0.3


def parse_rows(spec: str) -> list[tuple[str, int]]:
    rows = []
    for entry in spec.split():
        config, _, seeds = entry.partition(":")
        if seeds and not (seeds.isdigit() and int(seeds) > 0):
            raise SystemExit(f"error: seed_table.py: --rows entry {entry!r}: write CONFIG or CONFIG:SEEDS (SEEDS >= 1)")
        rows.append((config, int(seeds or 1)))
    return rows


def run_dir(exp: Path, config: str, suffix: str, seed: int) -> Path:
    return exp / (config + suffix + (f"_seed{seed}" if seed else ""))


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def cell(values: list[float], digits: int) -> str:
    if not values:
        return "N/A"
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def column_id(column: Column) -> str:
    return f"{column.source}:{column.key}"


def read_seed(kind: TableKind, directory: Path) -> dict | None:
    """The final figures of one finished run (None when its first figures file is missing) and its dev curves."""
    figures = {}
    for column in kind.columns:
        path = directory / column.source
        if not path.is_file():
            if column.source == kind.columns[0].source:
                return None
            continue
        value = json.loads(path.read_text()).get(column.key)
        if value is not None:
            figures[column_id(column)] = value
    figures["curves"] = {key: [(r["step"], r[key]) for r in read_metrics(directory)
                              if r.get("split") == "dev" and key in r] for key, _ in kind.curves}
    return figures


def collect(kind: TableKind, exp: Path, rows: list[tuple[str, int]], suffix: str) -> dict[str, list[dict]]:
    return {config: [f for seed in range(seeds) if (f := read_seed(kind, run_dir(exp, config, suffix, seed)))]
            for config, seeds in rows}


def markdown(kind: TableKind, rows: list[tuple[str, int]], results: dict[str, list[dict]]) -> str:
    header = ["Model", "Seeds"] + [c.header for c in kind.columns]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---|" * (len(header) - 1)]
    for config, seeds in rows:
        runs = results[config]
        cells = [cell([r[column_id(c)] for r in runs if column_id(c) in r], c.digits)
                 for c in kind.columns]
        lines.append(f"| {kind.labels.get(config, config)} | {len(runs)}/{seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nMean ± sample standard deviation over seeds. {kind.note}\n"


def plot(kind: TableKind, rows: list[tuple[str, int]], results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(kind.curves), figsize=(6.5 * len(kind.curves), 4.5), squeeze=False)
    for ax, (key, label) in zip(axes[0], kind.curves):
        for index, (config, _) in enumerate(rows):  # a row keeps its colour in every panel
            curves = [dict(r["curves"][key]) for r in results[config] if r["curves"].get(key)]
            if not curves:
                continue
            steps = sorted(set.intersection(*(set(c) for c in curves)))
            values = [[c[s] for c in curves] for s in steps]
            style = {"color": f"C{index % 10}", "linestyle": "-" if index < 10 else "--"}
            ax.plot(steps, [sum(v) / len(v) for v in values], marker=".", **style,
                    label=f"{kind.labels.get(config, config)} ({len(curves)})")
            if len(curves) > 1:
                ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=style["color"],
                                alpha=0.2)
        if kind.log_scale.get(key):
            ax.set_yscale("log")
            for axis_format in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis_format(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if axes[0][0].lines:
        axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{kind.name}: mean over seeds (count in the legend), min-max over seeds shaded")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", choices=["wsj", "scribblelens"])
    parser.add_argument("exp", type=Path)
    parser.add_argument("--rows", required=True, help='"CONFIG[:SEEDS] ..." in table order')
    parser.add_argument("--suffix", default="", help="run-name suffix of the speech units (_chars, _bpe300)")
    parser.add_argument("--name", help="output files EXP_DIR/NAME.md, .json, _curves.png (default: table1 for "
                        "wsj, table2 for scribblelens)")
    parser.add_argument("--note", default="", help="a line written under the table (command, wall time, machine)")
    parser.add_argument("--decode-suffix", default="",
                        help="wsj: read RUN/decode_<split>SUFFIX/figures.json, e.g. _live for the figures of "
                             "`seqvq evaluate RUN/checkpoints/last.pt DATA --live-weights --out RUN/decode_dev_live`")
    args = parser.parse_args(argv)
    units = {"": "phones", "_chars": "chars"}.get(args.suffix, "bpe")
    kind = speech_kind(units, args.decode_suffix) if args.recipe == "wsj" else HANDWRITING
    if args.name:
        kind = dataclasses.replace(kind, name=args.name)
    rows = parse_rows(args.rows)
    results = collect(kind, args.exp, rows, args.suffix)
    table = markdown(kind, rows, results) + (f"\n{args.note}\n" if args.note else "")
    atomic_write_text(args.exp / f"{kind.name}.md", table)
    atomic_write_text(args.exp / f"{kind.name}.json", json.dumps(results, indent=1) + "\n")
    if any(results.values()):
        plot(kind, rows, results, args.exp / f"{kind.name}_curves.png")
    print(table, end="")
    print(f"(written: {args.exp / kind.name}.md, .json, _curves.png)")


if __name__ == "__main__":
    main()
