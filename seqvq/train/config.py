"""YAML run configs: ``load_config`` (``base:`` includes, dotted overrides), the trainer's ``TrainConfig``, and
:class:`Section`, the keys a part of a run config accepts.

Every key of a run config is checked before anything runs (``seqvq train`` and ``seqvq evaluate`` call
:func:`check_run_config`): an unknown key gets a "did you mean" suggestion, a value of the wrong type is rejected,
and the message names the YAML file or the command-line override that holds it. The accepted keys are not listed
by hand: a :class:`Section` reads them from the signature of the class or function the section's keys are passed
to (``model:`` -> the model's constructor, ``model.quantizer:`` -> ``VectorQuantizer``) or from the dataclass
the task reads the section into (``train:`` -> :class:`TrainConfig`).
"""
from __future__ import annotations

import collections.abc
import copy
import dataclasses
import difflib
import inspect
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from seqvq.errors import UserError


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

    @classmethod
    def from_dict(cls, values: dict | None) -> "TrainConfig":
        return cls(**Section.of(cls).check(dict(values or {}), "train"))


# ---- sections: the keys a part of a run config accepts -------------------------------------------------------
@dataclass(frozen=True)
class Section:
    """The keys one mapping of a run config accepts.

    ``fields``: key -> type annotation of its value; ``sections``: key -> the Section of its value when that
    value may be a mapping with keys of its own; ``required``: keys that must be present in a complete config;
    ``source``: what reads the keys (named in messages); ``open``: any key is accepted (a ``**kwargs`` target).
    """

    source: str
    fields: dict[str, object]
    sections: dict[str, "Section"] = dataclasses.field(default_factory=dict)
    required: frozenset[str] = frozenset()
    open: bool = False

    @classmethod
    def of(cls, target, skip: tuple[str, ...] = (), **sections: "Section") -> "Section":
        """The keyword arguments of a class (its ``__init__``; a dataclass's fields) or a function, less ``skip``
        (the arguments the code passes itself). ``sections`` describe keys whose value may be a mapping."""
        hints = _type_hints(target.__init__ if isinstance(target, type) else target)
        signature = inspect.signature(target)
        fields, required, is_open = {}, set(), False
        for name, parameter in signature.parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                is_open = True
            if name in skip or parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            fields[name] = hints.get(name, typing.Any)
            if parameter.default is inspect.Parameter.empty and dataclasses.is_dataclass(target):
                required.add(name)
        unknown = set(sections) - set(fields)
        if unknown:
            raise TypeError(f"{target.__qualname__} takes no {', '.join(sorted(unknown))}")
        return cls(target.__qualname__, fields, dict(sections), frozenset(required), is_open)

    @classmethod
    def keys(cls, source: str, **fields) -> "Section":
        """A mapping with the given keys; a :class:`Section` value stands for an optional nested mapping."""
        sections = {name: value for name, value in fields.items() if isinstance(value, Section)}
        annotations = {name: dict | None if isinstance(value, Section) else value for name, value in fields.items()}
        return cls(source, annotations, sections)

    def merged(self, other: "Section") -> "Section":
        return Section(f"{self.source} + {other.source}", {**self.fields, **other.fields},
                       {**self.sections, **other.sections}, self.required | other.required, self.open or other.open)

    def check(self, values, path: str = "", complete: bool = True) -> dict:
        """``values`` with every key known and every value of its declared type (numbers given as strings,
        e.g. YAML's ``1e-3``, converted); else :class:`UserError` naming the key. ``complete`` also requires the
        required keys (off for one layer of a config, e.g. a ``base:`` file or an override)."""
        where = path or "the config"
        if not isinstance(values, dict):
            raise UserError(f"{where}: expected a mapping of {self.source} options, got {_kind(values)}; "
                            f"write it as `key: value` lines")
        checked = {}
        for key, value in values.items():
            name = f"{path}.{key}" if path else str(key)
            if key not in self.fields:
                if self.open:
                    checked[key] = value
                    continue
                raise UserError(f"{name}: unknown key; "
                                f"{_suggestion(str(key), self.fields, path) or _listing(where, self.fields)}")
            if key in self.sections and isinstance(value, dict):
                checked[key] = self.sections[key].check(value, name, complete)
            else:
                checked[key] = _typed(value, self.fields[key], name)
        if complete:
            missing = sorted(self.required - set(values))
            if missing:
                keys = ", ".join(f"{path}.{key}" if path else key for key in missing)
                raise UserError(f"{keys}: missing; set it in the config or as an override {keys}=...")
        return checked


@dataclass(frozen=True)
class KindSection(Section):
    """A mapping whose ``kind`` key picks the :class:`Section` the other keys are checked against (e.g.
    ``model.quantizer``: ``kind: vq | residual | fsq | bsq``, see :func:`seqvq.build_quantizer`). A config layer
    that names no kind (an override, a ``base:`` file's part) is checked against the keys any kind takes."""

    kinds: dict[str, Section] = dataclasses.field(default_factory=dict)
    default: str = ""

    @classmethod
    def of_kinds(cls, default: str, **kinds: Section) -> "KindSection":
        union = Section("any quantizer kind", {}, {})
        for section in kinds.values():
            union = union.merged(section)
        return cls(union.source, {"kind": str, **union.fields}, union.sections, frozenset(), union.open, kinds,
                   default)

    def check(self, values, path: str = "", complete: bool = True) -> dict:
        if not isinstance(values, dict) or ("kind" not in values and not complete):
            return super().check(values, path, complete)
        kind = values.get("kind", self.default)
        if kind not in self.kinds:
            raise UserError(f"{path + '.' if path else ''}kind: unknown kind {kind!r}; use one of "
                            f"{', '.join(self.kinds)}")
        checked = self.kinds[kind].check({k: v for k, v in values.items() if k != "kind"}, path, complete)
        return {"kind": kind, **checked} if "kind" in values else checked


def _type_hints(target) -> dict:
    try:
        return typing.get_type_hints(target)
    except Exception:  # an annotation that does not evaluate here: accept any value for it
        return {}


def _suggestion(key: str, known, path: str) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    if not close:
        return ""
    return f"did you mean '{f'{path}.{close[0]}' if path else close[0]}'?"


def _listing(where: str, known) -> str:
    return f"{where} takes {', '.join(sorted(known))}"


def _kind(value) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"


def _describe(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " or ".join(repr(arg) for arg in args)
    if origin in (list, tuple, collections.abc.Sequence):
        return "a list"
    if annotation in (dict,) or origin in (dict, collections.abc.Mapping):
        return "a mapping"
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


class _Mismatch(Exception):
    pass


def _typed(value, annotation, name: str):
    try:
        return _convert(value, annotation)
    except _Mismatch:
        raise UserError(f"{name}: expected {_describe(annotation)}, got {_kind(value)}; fix the value") from None


def _convert(value, annotation):
    """``value`` as ``annotation`` declares it (int -> float, numeric strings -> numbers), else _Mismatch."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any or annotation is inspect.Parameter.empty:
        return value
    if origin in (typing.Union, types.UnionType):
        members = sorted(args, key=lambda arg: arg is str)  # "1e-3" for `float | str` is the number
        for member in members:
            try:
                return _convert(value, member)
            except _Mismatch:
                continue
        raise _Mismatch
    if annotation is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is typing.Literal:
        if value in args:
            return value
        raise _Mismatch
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation in (int, float):
        return _number(value, annotation)
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if annotation in (list, tuple) or origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise _Mismatch
            return [_convert(item, arg) for item, arg in zip(value, args)]
        return [_convert(item, args[0]) for item in value] if args else list(value)
    if annotation is dict or origin in (dict, collections.abc.Mapping):
        if isinstance(value, dict):
            return value
        raise _Mismatch
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise _Mismatch
    return value  # an annotation this check does not understand (a Callable, a TypeVar...): accept


def _number(value, kind: type):
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Mismatch
    try:
        number = float(value)
    except ValueError:
        raise _Mismatch from None
    if kind is float:
        return number
    if isinstance(value, int):
        return value
    if number.is_integer():
        return int(number)
    raise _Mismatch


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
