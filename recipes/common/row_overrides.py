"""The lines of a recipe's override file (conf/mini.overrides) that apply to one row config, in the order they apply.

    python recipes/common/row_overrides.py OVERRIDES_FILE ROW_CONFIG.yaml    # one dotted override per line

An override file has one ``NAME: key=value`` line per override (blank lines and ``#`` comments are skipped).
NAME is ``*`` (every row) or a config ``NAME.yaml`` in the override file's folder. A row gets, in this order:

1. the ``*`` lines;
2. the lines of each config in the row's ``base:`` chain, from the farthest ancestor to the row itself, so a row
   based on ``bn_reestimation.yaml`` gets its lines, and the row's own line for the same key wins (later dotted
   overrides win in ``seqvq.train.load_config``);
3. within one NAME, the lines in file order.

The chain is followed as seqvq's config loader does (``seqvq/train/config.py``): ``base: other.yaml`` is read
with ``yaml.safe_load`` from the top level of the file and is relative to that file's folder. A missing config, a
``base:`` cycle, a malformed line or a NAME with no config behind it is a one-line error naming the file (and
line), exit status 1. Kept free of seqvq imports (torch): the recipe driver (recipes/common/driver.sh) calls it for
every --size cpu run.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml


class OverridesError(ValueError):
    """A mistake in an override file or a config's ``base:`` chain; the message is one line naming the file."""


def base_chain(config: str | Path) -> list[Path]:
    """The resolved config files of ``config``'s ``base:`` chain, the farthest ancestor first, ``config`` last."""
    chain: list[Path] = []
    path, referrer = Path(config).resolve(), None
    while True:
        if path in chain:
            cycle = " -> ".join(map(str, chain + [path]))
            raise OverridesError(f"{referrer}: 'base:' include cycle {cycle}; remove one base:")
        if not path.is_file():
            if referrer is None:
                raise OverridesError(f"{config}: config file not found; check the path")
            raise OverridesError(f"{referrer}: its base: {path} is not a file; fix the base: line")
        chain.append(path)
        try:
            with open(path) as handle:
                data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            raise OverridesError(f"{path}: not valid YAML ({getattr(error, 'problem', None) or error}); "
                                 f"fix the syntax") from None
        base = data.get("base") if isinstance(data, dict) else None
        if base is None:
            return chain[::-1]
        path, referrer = (path.parent / str(base)).resolve(), path


def read_override_lines(overrides_file: str | Path) -> list[tuple[str, str]]:
    """``(NAME, key=value)`` for each line of an override file, in file order; every NAME but ``*`` must be a
    config ``NAME.yaml`` next to the file (a misspelt row would otherwise apply to nothing)."""
    overrides_file = Path(overrides_file)
    try:
        text = overrides_file.read_text()
    except OSError as error:
        raise OverridesError(f"{overrides_file}: cannot read the override file ({error.strerror})") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, override = line.partition(": ")
        if not sep or not name or "=" not in override or override.startswith("="):
            raise OverridesError(f"{overrides_file}:{number}: {line!r} is not 'NAME: key=value'; write e.g. "
                                 f"'*: train.steps=100' or 'ROW: train.lr=1e-3'")
        if name != "*" and not (overrides_file.parent / f"{name}.yaml").is_file():
            raise OverridesError(f"{overrides_file}:{number}: no config {name}.yaml next to this file; "
                                 f"name a row config or '*'")
        pairs.append((name, override))
    return pairs


def row_overrides(overrides_file: str | Path, config: str | Path) -> list[str]:
    """The dotted overrides of ``overrides_file`` for the row ``config``: ``*`` lines, then each config's lines
    along its ``base:`` chain (ancestor first), file order within one name (the module docstring)."""
    pairs = read_override_lines(overrides_file)
    folder = Path(overrides_file).resolve().parent
    names = ["*"] + [path.stem for path in base_chain(config) if path.parent == folder]
    return [override for name in names for key, override in pairs if key == name]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: row_overrides.py OVERRIDES_FILE ROW_CONFIG.yaml", file=sys.stderr)
        return 2
    try:
        lines = row_overrides(*argv)
    except OverridesError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
