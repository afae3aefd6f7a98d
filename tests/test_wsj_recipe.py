"""The speech recipe's run.sh refuses bad options before doing anything (one line on stderr, exit 1), and a built
corpus of another size gets its own data and experiment folders."""
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
    (["--train-utts", "0"], "run.sh: --train-utts must be a positive number"),
    (["--train-speakers", "11"], "run.sh: --train-speakers must be 1 to 10"),
])
def test_bad_unit_and_config_options(tmp_path, arguments, message):
    result = subprocess.run(["bash", str(RUN), "--data", str(tmp_path), *arguments], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith("error: " + message) and result.stderr.count("\n") == 1
    assert not result.stdout


@pytest.mark.parametrize("arguments, exp", [
    (["--mini"], "exp/wsj_mini"),
    (["--mini", "--train-utts", "2000"], "exp/wsj_mini"),
    (["--mini", "--train-utts", "500"], "exp/wsj_mini_500utts"),  # never the 2,000-utterance corpus's folders
    (["--mini", "--train-utts", "500", "--exp", "exp/mine"], "exp/mine"),
    (["--mini", "--train-speakers", "2"], "exp/wsj_mini_2spk"),
    (["--mini", "--train-utts", "500", "--train-speakers", "10"], "exp/wsj_mini_500utts"),
])
def test_print_exp_follows_the_corpus_size(arguments, exp):
    result = subprocess.run(["bash", str(RUN), *arguments, "--print-exp"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == exp + "\n" and not result.stderr
