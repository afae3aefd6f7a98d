"""The speech recipe's run.sh refuses bad unit options before doing anything (one line on stderr, exit 1)."""
import pathlib
import subprocess

import pytest

RUN = pathlib.Path(__file__).resolve().parents[1] / "recipes" / "wsj" / "run.sh"


@pytest.mark.parametrize("arguments, message", [
    (["--units", "words"], "run.sh: --units must be phones, chars or bpe"),
    (["--units", "bpe", "--vocab-size", "0"], "run.sh: --vocab-size must be a positive number"),
    (["--units", "chars", "--lexicon", "lexicon.txt"],
     "run.sh: --phones-dir and --lexicon give phone targets; drop them or use --units phones"),
    (["--config", "nope"], "run.sh: no recipes/wsj/conf/nope.yaml; configs: "),
    (["--seed", "-1"], "run.sh: --seed must be a non-negative integer"),
])
def test_bad_unit_and_config_options(tmp_path, arguments, message):
    result = subprocess.run(["bash", str(RUN), "--data", str(tmp_path), *arguments], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith("error: " + message) and result.stderr.count("\n") == 1
    assert not result.stdout
