"""recipes/common/row_overrides.py, the mini.overrides reader of the recipe driver (recipes/common/driver.sh, for
every recipe's --size cpu): '*' lines, then the lines of the row's base: chain (farthest
ancestor first), file order within a name; a broken chain or override file is a one-line error naming the file,
and stops run.sh."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from seqvq.train import apply_overrides

import row_overrides  # recipes/common/row_overrides.py (on sys.path: conftest.py)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipes" / "common" / "row_overrides.py"


def write_configs(folder: Path, bases: dict[str, str | None]) -> None:
    for name, base in bases.items():
        (folder / f"{name}.yaml").write_text(f"base: {base}\ntrain: {{}}\n" if base else "train: {}\n")


def run_script(*arguments) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, arguments)], capture_output=True, text=True)


def test_star_lines_then_the_base_chain_ancestor_first(tmp_path):
    write_configs(tmp_path, {"common": None, "reestimation": "common.yaml", "reestimation_lr": "reestimation.yaml",
                             "other": "common.yaml"})
    (tmp_path / "mini.overrides").write_text(
        "# a comment\n"
        "reestimation_lr: x=3\n"
        "*: s=1\n"
        "\n"
        "reestimation: x=2\n"
        "common: x=1\n"
        "other: x=9\n"
        "reestimation: y=2\n"
        "*: x=0\n")
    lines = row_overrides.row_overrides(tmp_path / "mini.overrides", tmp_path / "reestimation_lr.yaml")
    assert lines == ["s=1", "x=0", "x=1", "x=2", "y=2", "x=3"]
    assert apply_overrides({}, lines) == {"s": 1, "x": 3, "y": 2}  # the row's own line wins over its base's
    assert row_overrides.row_overrides(tmp_path / "mini.overrides", tmp_path / "reestimation.yaml") == \
        ["s=1", "x=0", "x=1", "x=2", "y=2"]
    result = run_script(tmp_path / "mini.overrides", tmp_path / "other.yaml")  # as run.sh calls it
    assert (result.returncode, result.stdout, result.stderr) == (0, "s=1\nx=0\nx=1\nx=9\n", "")


@pytest.mark.parametrize("case", ["missing row", "missing base", "cycle", "bad line", "unknown row"])
def test_errors_are_one_line_naming_the_file(tmp_path, case):
    write_configs(tmp_path, {"a": "b.yaml" if case == "cycle" else None,
                             "b": "gone.yaml" if case == "missing base" else "a.yaml"})
    text = {"bad line": "*: x=1\nb x=2\n", "unknown row": "*: x=1\nbb: x=2\n"}.get(case, "b: x=1\n")
    (tmp_path / "mini.overrides").write_text(text)
    row = tmp_path / ("nope.yaml" if case == "missing row" else "b.yaml")
    result = run_script(tmp_path / "mini.overrides", row)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    expected = {"missing row": f"error: {row}: config file not found",
                "missing base": f"error: {tmp_path / 'b.yaml'}: its base: {tmp_path / 'gone.yaml'} is not a file",
                "cycle": f"error: {tmp_path / 'a.yaml'}: 'base:' include cycle {tmp_path / 'b.yaml'} -> "
                         f"{tmp_path / 'a.yaml'} -> {tmp_path / 'b.yaml'}",
                "bad line": f"error: {tmp_path / 'mini.overrides'}:2: 'b x=2' is not 'NAME: key=value'",
                "unknown row": f"error: {tmp_path / 'mini.overrides'}:2: no config bb.yaml next to this file"}[case]
    assert result.stderr.startswith(expected)


@pytest.mark.parametrize("folder", sorted(path.parent for path in REPO.glob("recipes/**/mini.overrides")),
                         ids=lambda folder: str(folder.relative_to(REPO / "recipes")))
def test_every_recipe_row_gets_its_bases_lines(folder):
    """The recipes' own override files: every row config reads without error (every NAME is a config there) and
    a row's lines start with all of its base's (bn_reestimation_codebook_lr gets bn_reestimation's)."""
    for path in sorted(folder.glob("*.yaml")):
        lines = row_overrides.row_overrides(folder / "mini.overrides", path)
        chain = row_overrides.base_chain(path)
        if len(chain) > 1:
            base_lines = row_overrides.row_overrides(folder / "mini.overrides", chain[-2])
            assert lines[:len(base_lines)] == base_lines, path.name


@pytest.mark.parametrize("recipe, arguments, overrides", [
    ("scribblelens", ["--mini"], "conf/mini.overrides"),
    ("imagenet100", ["--mini", "--model", "resnet18", "--config", "modern_bn_reestimation_simvq"],
     "conf/resnet18/mini.overrides"),
    ("cifar10", ["--mini"], "conf/mini.overrides"),
    ("wsj", ["--mini"], "conf/mini.overrides")])
def test_run_sh_stops_with_the_helpers_message(tmp_path, recipe, arguments, overrides):
    """A copy of the recipe (run.sh finds the helper, and the image recipes their shared body, in ../common/) with
    a misspelt row in its override file: run.sh prints the helper's line and exits 1 before any stage
    (--print-train runs none); the real file passes."""
    copy = tmp_path / "recipes" / recipe
    shutil.copytree(REPO / "recipes" / recipe / "conf", copy / "conf")
    shutil.copy(REPO / "recipes" / recipe / "run.sh", copy / "run.sh")
    shutil.copytree(REPO / "recipes" / "common", tmp_path / "recipes" / "common")
    command = ["bash", str(copy / "run.sh"), *arguments, "--print-train", "--exp", str(tmp_path / "exp")]
    assert subprocess.run(command, capture_output=True, text=True).returncode == 0
    with open(copy / overrides, "a") as handle:
        handle.write("bn_reestimaton: train.steps=1\n")
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {copy / overrides}:") and result.stderr.count("\n") == 1
    assert "no config bn_reestimaton.yaml" in result.stderr
