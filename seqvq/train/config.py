"""YAML run configs: ``load_config`` (``base:`` includes, dotted overrides) and the trainer's ``TrainConfig``.

Every key of a run config is checked before anything runs (``seqvq train`` and ``seqvq evaluate`` call
:func:`check_run_config`): an unknown key gets a "did you mean" suggestion, a value of the wrong type is rejected,
and the message names the YAML file or the command-line override that holds it. The accepted keys are not listed
by hand: a :class:`seqvq.options.Section` reads them from the signature of the class or function the section's
keys are passed to (``model:`` -> the model's constructor, ``model.quantizer:`` -> ``VectorQuantizer``) or from the
dataclass the task reads the section into (``train:`` -> :class:`TrainConfig`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import yaml

from seqvq.errors import UserError
from seqvq.options import Section


@dataclass
class TrainConfig:
    """Trainer settings: the ``train:`` section of a run config. ``batch_size`` is per process (DDP rank)."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adam"  # "adam" | "adamw" | "sgd" (Huh Tables 4-6: SGD + momentum for CNNs, AdamW for ViT)
    momentum: float = 0.9  # sgd only
    betas: list | None = None  # adam / adamw; None -> torch's (0.9, 0.999)
    codebook_lr: float | None = None  # None -> lr; Łańcucki 2020 §IV: 10x lr as a rule of thumb
    weight_decay: float = 0.0
    schedule: str = "constant"  # "constant" | "step" | "warmup_cosine"
    step_size: int = 1000
    gamma: float = 0.5
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    clip_grad_norm: float | None = None
    polyak_decay: float | None = None  # None = no Polyak averaging
    checkpoint_every: int = 500
    eval_every: int = 500
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    # > 0: batches of similar-length examples, each drawn from a sorted run of this many batches (EpochBatchSampler);
    # needs a dataset with ``lengths`` (the speech task's). 0: plain shuffled batches.
    bucket_batches: int = 0
    keep_checkpoints: int = 3  # step_*.pt files kept besides last.pt; 0 keeps all
    device: str | None = None  # None -> cuda if available else cpu
    find_unused_parameters: bool = False  # DDP: set when some parameters get no gradient in some steps
    # Huh et al. 2023 §4.2 alternating optimization: k > 0 inner codebook steps (on k sub-batches) before each task
    # step; alternating_fused takes the single inner step from the task's own forward pass (k = 1).
    alternating_inner_steps: int = 0
    alternating_fused: bool = False
    # A batch whose loss or gradient is NaN/Inf stops training (the last checkpoint stays good); true skips it
    # instead (no update; the forward pass's in-place state changes are undone), counted and logged.
    skip_nonfinite: bool = False
    # torch CPU threads of the run, set by `seqvq train` and `seqvq evaluate` (faiss follows torch's count); None
    # leaves torch's default (OMP_NUM_THREADS, else every core). A float sum over other threads differs in its last
    # bits, so a run's figures are reproduced at the same thread count.
    threads: int | None = None
    # Every this many steps, the state of each bottleneck on that step's batch (seqvq.quantize.diagnosis.measure:
    # usage, norms, D(P, C), D(C, P), how far the used codes moved) is logged as a "doctor" record, which
    # `seqvq doctor RUN_DIR` reads. 0: off.
    doctor_every: int = 0
    # torch.compile the model (seqvq.quantize.compiled.compile_model): each quantizer one graph, with eager passes
    # where re-estimation, k-means init, replacement or sampling decide in Python (docs/performance.md).
    compile: bool = False
    # > 1: each batch is split into this many micro-batches (the model's split_batch, else
    # seqvq.quantize.split_batch), forward and backward one at a time, then one optimizer step; the quantizers' and
    # MaskedBatchNorms' statistics are those of the whole batch (seqvq.quantize.accumulation).
    accumulation_steps: int = 1
    compile_backend: str = "inductor"  # torch.compile's backend ("aot_eager": no code generation, for checks)

    @classmethod
    def from_dict(cls, values: dict | None) -> "TrainConfig":
        return cls(**Section.of(cls).check(dict(values or {}), "train"))


# ---- reading: layers (YAML files, overrides), merged -------------------------------------------------------------
@dataclass
class ConfigLayer:
    """One part of a run config and where it came from: a YAML file (base files first) or one override
    (``key`` is its dotted key, and ``values`` the nested mapping it sets)."""

    source: str
    values: dict
    key: tuple[str, ...] = ()


def _merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: Path, seen: tuple[Path, ...]) -> list[ConfigLayer]:
    shown, path = path, path.resolve()
    if path in seen:
        raise UserError(f"{path}: 'base:' include cycle through {' -> '.join(map(str, seen))}; remove one base:")
    if not path.is_file():
        raise UserError(f"{shown}: config file not found; check the path")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{shown}{line}: not valid YAML ({getattr(error, 'problem', None) or error}); "
                        f"fix the syntax") from None
    if not isinstance(data, dict):
        raise UserError(f"{shown}: a config must be a YAML mapping at the top level; write `key: value` lines")
    base = data.pop("base", None)
    layer = ConfigLayer(str(shown), data)
    if base is None:
        return [layer]
    return _read_yaml(path.parent / base, seen + (path,)) + [layer]


def override_layer(item: str) -> ConfigLayer:
    """``a.b.c=value`` (value parsed as YAML) as the nested mapping ``{a: {b: {c: value}}}``."""
    key, sep, raw = item.partition("=")
    parts = tuple(key.split("."))
    if not sep or not key or not all(parts):
        raise UserError(f"{item}: bad override; write it as dotted.key=value, e.g. train.lr=0.001")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise UserError(f"{item}: the value {raw!r} is not valid YAML; quote it") from None
    for part in reversed(parts):
        value = {part: value}
    return ConfigLayer(item, value, parts)


def _apply(config: dict, layer: ConfigLayer) -> dict:
    """Merge a YAML layer into ``config``, or set an override's key (its parents become mappings where null)."""
    if not layer.key:
        return _merge(config, layer.values)
    config, value = copy.deepcopy(config), layer.values
    node = config
    for part in layer.key[:-1]:
        value = value[part]
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise UserError(f"{layer.source}: bad override: {part!r} holds a {type(child).__name__}, not a mapping")
        node = child
    node[layer.key[-1]] = copy.deepcopy(value[layer.key[-1]])
    return config


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a copy of a nested dict."""
    config = copy.deepcopy(config)
    for item in overrides:
        config = _apply(config, override_layer(item))
    return config


def load_config_layers(path: str | Path, overrides: list[str] | None = None) -> list[ConfigLayer]:
    """The YAML file (after its ``base:`` files) and each override, in the order they apply."""
    return _read_yaml(Path(path), ()) + [override_layer(item) for item in overrides or []]


def merge_layers(layers: list[ConfigLayer]) -> dict:
    config: dict = {}
    for layer in layers:
        config = _apply(config, layer)
    return config


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict:
    """Read a YAML config; ``base: other.yaml`` (relative to the file) is loaded first and deep-merged under it."""
    return merge_layers(load_config_layers(path, overrides))


def run_config_section(task_section: Section) -> Section:
    """Every key a run config of a task accepts: ``task``, ``exp_dir``, ``train`` and the task's own."""
    common = Section.keys("run config", task=str, exp_dir=str | None, train=Section.of(TrainConfig))
    return common.merged(task_section)


def check_run_config(config: dict, task_section: Section, layers: list[ConfigLayer] = ()) -> dict:
    """The run config with every key and type checked (see the module docstring); each of ``layers`` first,
    so that a message names the file or override holding the fault."""
    section = run_config_section(task_section)
    for layer in layers:
        try:
            section.check(layer.values, complete=False)
        except UserError as error:
            raise UserError(f"{layer.source}: {error}") from None
    return section.check(config)
