"""What a stage of a run was built from, so that a rerun reuses an output only when its inputs are unchanged.

A *record* is a JSON mapping: the settings that shaped an output and a :func:`fingerprint` of the files it was
built from (resolved paths, sizes and modification times: cheap, contents never read). A stage writes its
record beside its output once the output is complete (a *stamp*). A rerun compares the record it would write now
with the stamp (:func:`reusable`): the same -> the output is reused; different, or an output without a stamp ->
the stage refuses in one line naming what changed, unless ``force``, which rebuilds. ``seqvq train`` keeps its
record in every checkpoint (the run config and its training data's fingerprint) and compares it the same way
before resuming (:mod:`seqvq.train.resume`).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from seqvq.errors import UserError
from seqvq.train.logs import atomic_write_text

STAMP_SUFFIX = ".stamp.json"
LISTED_FILES = 2000  # a fingerprint of at most this many files lists each one, so a change names the file


def files_under(path: str | Path, skip: Iterable[str | Path] = ()) -> list[Path]:
    """``path`` itself when it is a file, every file below it when it is a folder (stamps and the folders in
    ``skip`` left out), nothing when it does not exist; resolved, sorted."""
    path = Path(path).resolve()
    skipped = [Path(folder).resolve() for folder in skip]
    if path.is_file():
        return [path]
    found = []
    for folder, subfolders, names in os.walk(path):
        subfolders[:] = sorted(name for name in subfolders if Path(folder, name) not in skipped)
        found.extend(Path(folder, name) for name in names if not name.endswith(STAMP_SUFFIX))
    return sorted(found)


def fingerprint(files: Iterable[str | Path]) -> dict:
    """Count, bytes and a digest of each file's resolved path, size and modification time (nanoseconds); for up
    to :data:`LISTED_FILES` files also each one's ``[size, mtime]``. A missing file counts with size -1."""
    listing = {}
    for file in files:
        file = Path(file).resolve()
        try:
            stat = file.stat()
            listing[str(file)] = [stat.st_size, stat.st_mtime_ns]
        except FileNotFoundError:
            listing[str(file)] = [-1, 0]
    digest = hashlib.sha1("".join(f"{name}\t{size}\t{mtime}\n" for name, (size, mtime) in sorted(listing.items()))
                          .encode()).hexdigest()
    record = {"files": len(listing), "bytes": sum(max(size, 0) for size, _ in listing.values()), "digest": digest}
    if len(listing) <= LISTED_FILES:
        record["listing"] = dict(sorted(listing.items()))
    return record


def _is_fingerprint(value) -> bool:
    return isinstance(value, dict) and {"files", "bytes", "digest"} <= set(value)


def _first(names: list[str], what: str) -> str:
    return f"{names[0]} {what}" + (f" (and {len(names) - 1} more)" if len(names) > 1 else "")


def fingerprint_change(old: dict, new: dict) -> str | None:
    """How the files behind two fingerprints differ, in a few words (None when they do not)."""
    if old["digest"] == new["digest"]:
        return None
    if "listing" in old and "listing" in new:
        before, after = old["listing"], new["listing"]
        removed = [name for name in before if name not in after or after[name][0] < 0]
        added = [name for name in after if after[name][0] >= 0 and (name not in before or before[name][0] < 0)]
        changed = [name for name in after if name in before and min(before[name][0], after[name][0]) >= 0
                   and before[name] != after[name]]
        parts = ([_first(changed, "changed")] if changed else []) + ([_first(added, "added")] if added else []) \
            + ([_first(removed, "removed")] if removed else [])
        if parts:
            return ", ".join(parts)
    return (f"{old['files']} files of {old['bytes']} bytes, now {new['files']} of {new['bytes']}"
            if (old["files"], old["bytes"]) != (new["files"], new["bytes"]) else "file sizes or times changed")


def _shown(value) -> str:
    return "(unset)" if value is _UNSET else json.dumps(value)


_UNSET = object()


def record_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """What differs between two records, one ``key: what`` phrase per changed setting or fingerprint."""
    changes = []
    for key in sorted(set(old) | set(new), key=str):
        name = f"{prefix}{key}"
        before, after = old.get(key, _UNSET), new.get(key, _UNSET)
        if _is_fingerprint(before) and _is_fingerprint(after):
            change = fingerprint_change(before, after)
            if change:
                changes.append(f"{name}: {change}")
        elif isinstance(before, dict) and isinstance(after, dict):
            changes.extend(record_changes(before, after, f"{name}."))
        elif before != after:
            changes.append(f"{name}: {_shown(before)}, now {_shown(after)}")
    return changes


def summary(changes: list[str]) -> str:
    """The first change, and how many more there are."""
    return changes[0] + (f" (and {len(changes) - 1} more changes)" if len(changes) > 1 else "")


def as_json(record: dict) -> dict:
    """``record`` as it reads back from a stamp (tuples become lists, keys strings)."""
    return json.loads(json.dumps(record, sort_keys=True))


def read_stamp(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_stamp(path: str | Path, record: dict) -> None:
    """Write the stamp atomically, once its output is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(as_json(record), indent=1) + "\n")


def reusable(output: str | Path, stamp: str | Path, record: dict, force: bool = False, what: str = "an output",
             built: Iterable[str | Path] | str | Path | None = None) -> bool:
    """Whether ``output`` (complete when the files ``built`` exist; default ``output`` itself) was built from
    ``record``, by its ``stamp``: True -> reuse it; False -> build it (it is incomplete, or ``force``). An
    output built from anything else (or of unknown origin) is a :class:`UserError` naming ``what`` it holds and
    what changed, unless ``force``."""
    built = [output] if built is None else [built] if isinstance(built, (str, Path)) else list(built)
    if not all(Path(path).exists() for path in built):
        return False
    saved = read_stamp(stamp)
    if saved == as_json(record):
        return True
    if force:
        return False
    reason = ("no record of what they were built from (made by an older seqvq)" if saved is None
              else summary(record_changes(saved, as_json(record))))
    raise UserError(f"{output}: holds {what} built from other inputs: {reason}; rerun with --force to rebuild "
                    f"them, or write to another folder")
