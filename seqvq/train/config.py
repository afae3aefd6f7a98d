"""YAML run configs: ``load_config`` (``base:`` includes, dotted overrides) and the trainer's ``TrainConfig``."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml


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
    keep_checkpoints: int = 3  # step_*.pt files kept besides last.pt; 0 keeps all
    device: str | None = None  # None -> cuda if available else cpu
    find_unused_parameters: bool = False  # DDP: set when some parameters get no gradient in some steps
    # Huh et al. 2023 §4.2 alternating optimization: k > 0 inner codebook steps (on k sub-batches) before each task
    # step; alternating_fused takes the single inner step from the task's own forward pass (k = 1).
    alternating_inner_steps: int = 0
    alternating_fused: bool = False

    @classmethod
    def from_dict(cls, values: dict | None) -> "TrainConfig":
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown train option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for f in dataclasses.fields(cls):
            if f.name in values and values[f.name] is not None:
                values[f.name] = _coerce(f.name, values[f.name], f.type)
        return cls(**values)


def _coerce(name: str, value, annotation: str):
    """YAML reads ``1e-3`` as a string (no dot); accept it, and ints, where a float is declared."""
    kind = annotation.split("|")[0].strip()
    try:
        if kind == "float" and not isinstance(value, bool):
            return float(value)
        if kind == "int" and not isinstance(value, bool) and float(value) == int(float(value)):
            return int(float(value))
    except (TypeError, ValueError):
        pass
    if kind in ("float", "int"):
        raise ValueError(f"train.{name} must be {'a number' if kind == 'float' else 'an integer'}, got {value!r}")
    return value


def _merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: Path, seen: tuple[Path, ...]) -> dict:
    path = path.resolve()
    if path in seen:
        raise ValueError(f"{path}: 'base:' include cycle through {' -> '.join(map(str, seen))}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    return _merge(_read_yaml(path.parent / base, seen + (path,)), data)


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a copy of a nested dict."""
    config = copy.deepcopy(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ValueError(f"bad override {item!r}: write it as dotted.key=value, e.g. train.lr=0.001")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"bad override {item!r}: {part!r} holds a {type(child).__name__}, not a mapping")
            node = child
        node[leaf] = yaml.safe_load(raw)
    return config


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict:
    """Read a YAML config; ``base: other.yaml`` (relative to the file) is loaded first and deep-merged under it."""
    return apply_overrides(_read_yaml(Path(path), ()), list(overrides or []))
