"""Option schemas and typed options.

:class:`Section` is the keys a mapping of options accepts and the types of their values; :class:`KindSection` a
mapping whose ``kind`` picks its keys. The accepted keys are not listed by hand: :meth:`Section.of` reads them from
the signature of the class or function the keys are passed to, or from the fields of a dataclass, and a key whose
type is an options dataclass (``Options``, or e.g. ``Options | dict | None``) is a nested Section of that
dataclass's fields. A run config (``seqvq.train.config``) and the quantizer's options (``seqvq.quantize.build``) are
both checked this way.

:func:`options_from` turns a mapping into its options dataclass where the code that takes it is called (e.g.
``VectorQuantizer(reestimate={...})``), refusing unknown keys in one line.

This module imports nothing of seqvq but its errors, so every layer above may use it.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import inspect
import types
import typing
from dataclasses import dataclass

from seqvq.errors import UserError


@dataclass(frozen=True)
class Section:
    """The keys one mapping of options (a run config, a part of one) accepts.

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
        (the arguments the code passes itself). ``sections`` describe keys whose value may be a mapping; a key
        typed with an options dataclass gets that dataclass's Section unless ``sections`` gives one."""
        hints = _type_hints(target.__init__ if isinstance(target, type) else target)
        signature = inspect.signature(target)
        fields, nested, required, is_open = {}, {}, set(), False
        for name, parameter in signature.parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                is_open = True
            if name in skip or parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            fields[name] = hints.get(name, typing.Any)
            options_class = _options_class(fields[name])
            if options_class is not None:
                nested[name] = Section.of(options_class)
            if parameter.default is inspect.Parameter.empty and dataclasses.is_dataclass(target):
                required.add(name)
        unknown = set(sections) - set(fields)
        if unknown:
            raise TypeError(f"{target.__qualname__} takes no {', '.join(sorted(unknown))}")
        return cls(target.__qualname__, fields, {**nested, **sections}, frozenset(required), is_open)

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


def options_from(options_class: type, value, name: str):
    """``value`` as the frozen dataclass ``options_class``: an instance as it is; a mapping of its fields as an
    instance (the fields it leaves out keep their defaults, so an empty mapping is the method with every default:
    ``bridge: {}`` turns VQBridge on); None as None (the option is off).
    Anything else, an unknown key or a missing required one is a one-line ValueError naming the option ``name`` and
    the keys it takes."""
    if value is None or isinstance(value, options_class):
        return value
    known = [field.name for field in dataclasses.fields(options_class)]
    if not isinstance(value, collections.abc.Mapping):
        raise ValueError(f"{name} takes a mapping of {_quoted(known)} (or {options_class.__name__}); "
                         f"got {_kind(value)}")
    unknown = sorted(str(key) for key in value if key not in known)
    if unknown:
        raise ValueError(f"{name} takes {_quoted(known)}; got {unknown}")
    missing = [field.name for field in dataclasses.fields(options_class) if field.name not in value
               and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{name} needs {_quoted(missing)}; got {dict(value)}")
    return options_class(**value)


def _options_class(annotation) -> type | None:
    """The options dataclass of an annotation: the dataclass itself, or the one dataclass of a union."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(annotation) if union else (annotation,)
    classes = [member for member in members if isinstance(member, type) and dataclasses.is_dataclass(member)]
    return classes[0] if len(classes) == 1 else None


def _quoted(names) -> str:
    quoted = [repr(name) for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


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
        return " or ".join(dict.fromkeys(_describe(arg) for arg in args))  # an options dataclass or dict: one mapping
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " or ".join(repr(arg) for arg in args)
    if origin in (list, tuple, collections.abc.Sequence):
        return "a list"
    if annotation in (dict,) or origin in (dict, collections.abc.Mapping) or _options_class(annotation):
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
