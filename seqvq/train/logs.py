"""The metrics log of a run (``metrics.jsonl`` + ``metrics.csv``) and its PNG plots."""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

NOT_PLOTTED = ("step", "split", "epoch", "bottleneck")


def user_temp_file(path: Path) -> tuple[int, str]:
    """A temporary file next to ``path`` to write and then rename over it: ``(fd, name)``, with the permissions a
    file the user creates gets (0666 less the umask; ``mkstemp`` alone gives 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return fd, tmp


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = user_temp_file(path)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_metrics(exp_dir: str | Path) -> list[dict]:
    path = Path(exp_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsLog:
    """Appends one JSON object per event (``step``, ``split`` train/dev, ``lr``, ``loss``, metrics...) to
    ``metrics.jsonl`` and a row to ``metrics.csv`` (rewritten when a new column appears). Events after
    ``resume_step`` (written by an interrupted run after its last checkpoint) are dropped."""

    def __init__(self, exp_dir: str | Path, resume_step: int = 0):
        self.exp_dir = Path(exp_dir)
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        self.records = [r for r in read_metrics(exp_dir) if r["step"] <= resume_step]
        self.columns: list[str] = []
        self._rewrite_jsonl()
        self._rewrite_csv()

    def _rewrite_jsonl(self) -> None:
        atomic_write_text(self.exp_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.records))

    def _rewrite_csv(self) -> None:
        first = ["step", "split"]
        self.columns = first + sorted({key for record in self.records for key in record} - set(first))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns)
        writer.writeheader()
        writer.writerows(self.records)
        atomic_write_text(self.exp_dir / "metrics.csv", buffer.getvalue())

    def write(self, record: dict) -> None:
        self.records.append(record)
        with open(self.exp_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if set(record) <= set(self.columns):
            with open(self.exp_dir / "metrics.csv", "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writerow(record)
        else:
            self._rewrite_csv()


def plot_metrics(exp_dir: str | Path) -> list[Path]:
    """One PNG per logged quantity under ``exp_dir/plots/`` (loss, lr, each train/dev metric such as PER, code
    perplexity and active codes) against step, train and dev on the same axes. Returns the files written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = read_metrics(exp_dir)
    plot_dir = Path(exp_dir) / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    names = sorted({k for r in records for k in r if k not in NOT_PLOTTED})
    written = []
    for name in names:
        fig = Figure(figsize=(6, 4))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        for split in sorted({r["split"] for r in records}):
            points = [(r["step"], r[name]) for r in records
                      if r["split"] == split and isinstance(r.get(name), (int, float))]
            if points:
                ax.plot(*zip(*points), marker="." if len(points) < 50 else None, label=split)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
        path = plot_dir / f"{name.replace('/', '_')}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        written.append(path)
    return written
