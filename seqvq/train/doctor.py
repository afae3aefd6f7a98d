"""``seqvq doctor RUN_DIR``: why a run's bottleneck collapsed and what to change, from what the run left behind.

Reads the run's ``metrics.jsonl``, its ``config.yaml`` (else the checkpoint's run config) and
``checkpoints/last.pt``.  Each bottleneck's state (:class:`seqvq.quantize.diagnosis.BottleneckState`) comes from

* ``--batches N`` > 0: N training batches of the run's data through the checkpoint's model
  (:func:`seqvq.quantize.diagnose`, with the gradient gap; the initial codebooks rebuilt from the run's seed);
* else the last ``doctor`` record of the bottleneck (``train.doctor_every``), completed from the checkpoint
  (step, warm-up, reservoir, LRU ages);
* else the checkpoint and the last ``train`` record (codes used, perplexity) alone.

The rules of :mod:`seqvq.quantize.causes` then name the cause and the remedy as config overrides.  The dashboard,
``RUN_DIR/doctor.png``, has one panel each for codes used, perplexity, dead codes, the losses and the task's error
figure against steps.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import yaml

from seqvq.errors import UserError
from seqvq.quantize.causes import name_cause, settings_from_config
from seqvq.quantize.diagnosis import BottleneckState, Diagnosis
from seqvq.train.checkpoint import read_checkpoint
from seqvq.train.logs import read_metrics, user_temp_file

ERROR_FIGURES = ("per", "cer", "wer", "bpd", "mse", "accuracy", "top1")  # the first a run logs is plotted
STATE_FIELDS = {field.name for field in dataclasses.fields(BottleneckState)}


def config_prefix(bottleneck: str) -> str:
    """Where a bottleneck's options sit in a run config: every task reads its quantizer from ``model.quantizer``."""
    return "model.quantizer"


def read_run(run_dir: str | Path) -> tuple[list[dict], dict, dict]:
    """(metrics records, run config, last checkpoint) of a ``seqvq train`` run directory."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if not records and not last.is_file():
        raise UserError(f"{run_dir}: no metrics.jsonl and no checkpoints/last.pt; pass the --exp-dir of a "
                        f"`seqvq train` run")
    checkpoint = read_checkpoint(last) if last.is_file() else {"model": {}}
    config_file = run_dir / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else checkpoint.get("config") or {}
    return records, config or {}, checkpoint


def _from_checkpoint(state: BottleneckState, model_state: dict, name: str, checkpoint: dict, settings: dict
                     ) -> BottleneckState:
    """Complete ``state`` with what the checkpoint's quantizer buffers say: step, warm-up, reservoir, LRU ages."""
    prefix = name + "."  # the trainer logs the bottleneck by its name in the model the checkpoint holds
    step = model_state.get(prefix + "step")
    state.step = int(step) if step is not None else checkpoint.get("step")
    reestimate = settings.get("reestimate")
    if reestimate and state.step is not None:
        state.quantizing = state.step >= reestimate["init_steps"]
        seen = model_state.get(prefix + "reestimation.reservoir.seen")
        state.reservoir_size = reestimate["reservoir_size"]
        if seen is not None:
            state.reservoir_filled = min(int(seen), reestimate["reservoir_size"])
    last_used = model_state.get(prefix + "replacement.last_used")
    if last_used is not None and state.step is not None and settings.get("replace_dead_after"):
        ages = state.step - last_used.flatten()
        state.dead_code_ages = sorted(int(age) for age in ages if age >= settings["replace_dead_after"])
        state.dead_code_ages.reverse()
    codebook = model_state.get(prefix + "codebook")
    if state.code_norm is None and codebook is not None:
        state.code_norm = float(codebook.float().norm(dim=-1).mean())
    return state


def _logged_states(records: list[dict], checkpoint: dict, config: dict) -> list[BottleneckState]:
    """One state per bottleneck from its last ``doctor`` record (else the last ``train`` record)."""
    last: dict[str, dict] = {}
    for record in records:
        if record.get("split") == "doctor":
            last[record.get("bottleneck", "quantizer")] = record
    model_state = checkpoint.get("model") or {}
    if not last:  # no doctor records: the checkpoint's quantizer and the last logged usage
        names = sorted({key[: -len(".codebook")] for key in model_state if key.endswith("quantizer.codebook")})
        train = [record for record in records if record.get("split") == "train"]
        final = train[-1] if train else {}
        for name in names or ["quantizer"]:
            codebook = model_state.get(name + ".codebook")
            size = int(codebook.shape[-2]) if codebook is not None else int(
                ((config.get("model") or {}).get("quantizer") or {}).get("codebook_size", 0))
            last[name] = {"codebook_size": size, "codes_used": final.get("active_codes", 0.0),
                          "perplexity": final.get("perplexity", 0.0)}
    states = []
    for name, record in last.items():
        values = {key: value for key, value in record.items() if key in STATE_FIELDS and key not in ("name",)}
        values.setdefault("kind", "vq")
        values.setdefault("step", record.get("step"))
        values.setdefault("codebook_size", 0)
        state = BottleneckState(name=name, **values)
        settings = settings_from_config(config, config_prefix(name))
        if settings["kind"] != "vq":
            state.kind = settings["kind"]
        states.append(_from_checkpoint(state, model_state, name, checkpoint, settings))
    return states


def _measured_states(run_dir: Path, config: dict, batches: int) -> list[BottleneckState]:
    """Each bottleneck's state on ``batches`` training batches of the run's data (the checkpoint's live weights)."""
    from seqvq.quantize.diagnosis import diagnose, initial_codebooks
    from seqvq.tasks import get_task
    from seqvq.train import TrainConfig, seed_everything
    from seqvq.train.checkpoint import load_checkpoint
    from seqvq.train.data import SeededCollate
    from seqvq.train.trainer import move_to

    train = TrainConfig.from_dict(config.get("train"))
    seed_everything(train.seed)
    bundle = get_task(config["task"])(config).build_task()  # as `seqvq train` builds it: the initial model
    model = bundle.model
    initial = initial_codebooks(model)
    load_checkpoint(run_dir / "checkpoints" / "last.pt", model, use_polyak=False)
    generator = torch.Generator().manual_seed(train.seed)
    order = torch.randperm(len(bundle.train_dataset), generator=generator).tolist()
    size = train.batch_size
    items = [[bundle.train_dataset[i] for i in order[start:start + size]]
             for start in range(0, min(len(order), batches * size), size)]
    collate = SeededCollate(bundle.collate_fn)
    chosen = [move_to(collate([(item, index) for item in group]), torch.device("cpu"))
              for index, group in enumerate(items)]
    return diagnose(model, chosen, initial=initial, with_gradient_gap=True).bottlenecks


def doctor(run_dir: str | Path, batches: int = 0) -> Diagnosis:
    """The diagnosis of the run in ``run_dir`` (module docstring)."""
    run_dir = Path(run_dir)
    records, config, checkpoint = read_run(run_dir)
    if batches > 0:
        if not config.get("task"):
            raise UserError(f"{run_dir}: no run config to rebuild the model from; run without --batches")
        states = _measured_states(run_dir, config, batches)
        for state in states:
            _from_checkpoint(state, {}, state.name, checkpoint, settings_from_config(config, config_prefix(state.name)))
    else:
        states = _logged_states(records, checkpoint, config)
    findings = [name_cause(state, settings_from_config(config, config_prefix(state.name)), records)
                for state in states]
    return Diagnosis(states, findings)


# ------------------------------------------------------------------------------------------------ dashboard
def _points(records: list[dict], name: str, split: str, bottleneck: str | None = None) -> list[tuple[int, float]]:
    return [(r["step"], float(r[name])) for r in records
            if r.get("split") == split and isinstance(r.get(name), (int, float)) and not isinstance(r[name], bool)
            and (bottleneck is None or r.get("bottleneck") == bottleneck)]


def dashboard(run_dir: str | Path, diagnosis: Diagnosis | None = None) -> Path:
    """Write ``RUN_DIR/doctor.png``: codes used, perplexity, dead codes, losses and the error figure against steps,
    one panel each (written atomically); returns its path."""
    import os

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    sizes = [state.codebook_size for state in diagnosis.bottlenecks] if diagnosis else []
    size = max(sizes) if sizes else None
    panels = [
        ("codes used", [("train active codes", "active_codes", "train"), ("doctor", "codes_used", "doctor"),
                        ("dev", "codes_used", "dev")]),
        ("perplexity", [("train", "perplexity", "train"), ("doctor", "perplexity", "doctor"),
                        ("dev", "code_perplexity", "dev")]),
        ("dead codes", [("doctor", "dead_codes", "doctor")]),
        ("losses", [(name, name, "train") for name in ("loss", "vq_loss", "quantization_error")]),
    ]
    error = next((name for name in ERROR_FIGURES
                  if _points(records, name, "dev") or _points(records, name, "train")), None)
    panels.append((error or "error figure", [(split, error, split) for split in ("train", "dev")] if error else []))
    figure = Figure(figsize=(16, 3.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels))
    names = sorted({r["bottleneck"] for r in records if r.get("split") == "doctor" and "bottleneck" in r})
    for axis, (title, series) in zip(axes, panels):
        # The doctor records: one line per bottleneck.
        series = [(f"{label} {bottleneck}" if len(names) > 1 else label, name, split, bottleneck)
                  for label, name, split in series for bottleneck in (names if split == "doctor" else [None])]
        for label, name, split, bottleneck in series:
            points = _points(records, name, split, bottleneck)
            if title == "dead codes" and not points and size:  # no doctor records: the codebook less the active
                points = [(step, size - value) for step, value in _points(records, "active_codes", "train")]
                label = "codebook - train active codes"
            if points:
                axis.plot(*zip(*points), marker="." if len(points) < 30 else None, label=label)
        if title in ("codes used", "dead codes") and size:
            axis.axhline(size, color="grey", linestyle=":", linewidth=1)
        if title == "losses":
            axis.set_yscale("log")
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    if diagnosis is not None and diagnosis.findings:
        figure.suptitle("; ".join(f"{finding.bottleneck}: {finding.cause}" for finding in diagnosis.findings),
                        fontsize=10)
    figure.tight_layout()
    path = run_dir / "doctor.png"
    fd, tmp = user_temp_file(path)
    os.close(fd)
    try:
        figure.savefig(tmp, dpi=80, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
