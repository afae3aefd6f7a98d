"""The speech recipe's run.sh refuses bad options before doing anything (one line on stderr, exit 1), and a built
corpus of another size gets its own data and experiment folders."""
import os
import pathlib
import subprocess

import pytest
from helpers import write_kaldi_dir

RUN = pathlib.Path(__file__).resolve().parents[1] / "recipes" / "wsj" / "run.sh"


@pytest.mark.parametrize("arguments, message", [
    (["--units", "words"], "run.sh: --units must be phones, chars or bpe"),
    (["--units", "bpe", "--vocab-size", "0"], "run.sh: --vocab-size must be a positive number"),
    (["--units", "chars", "--lexicon", "lexicon.txt"],
     "run.sh: --phones-dir and --lexicon give phone targets; drop them or use --units phones"),
    (["--config", "nope"], "run.sh: no conf/nope.yaml; configs: "),
    (["--seed", "-1"], "run.sh: --seed must be a non-negative integer"),
    (["--train-utts", "0"], "run.sh: --train-utts must be a positive number"),
    (["--train-speakers", "11"], "run.sh: --train-speakers must be 1 to 10"),
])
def test_bad_unit_and_config_options(tmp_path, arguments, message):
    result = subprocess.run(["bash", str(RUN), "--data", str(tmp_path), *arguments], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith("error: " + message) and result.stderr.count("\n") == 1
    assert not result.stdout


@pytest.mark.parametrize("arguments, exp", [
    (["--mini"], "REPO/exp/wsj_mini"),
    (["--mini", "--train-utts", "2000"], "REPO/exp/wsj_mini"),
    (["--mini", "--train-utts", "500"], "REPO/exp/wsj_mini_500utts"),  # never the 2,000-utterance corpus's folders
    (["--mini", "--train-utts", "500", "--exp", "exp/mine"], "CALLER/exp/mine"),
    (["--mini", "--train-speakers", "2"], "REPO/exp/wsj_mini_2spk"),
    (["--mini", "--train-utts", "500", "--train-speakers", "10"], "REPO/exp/wsj_mini_500utts"),
])
def test_print_exp_follows_the_corpus_size(tmp_path, arguments, exp):
    result = subprocess.run(["bash", str(RUN), *arguments, "--print-exp"], capture_output=True, text=True,
                            cwd=tmp_path)
    exp = exp.replace("REPO", str(RUN.parents[2])).replace("CALLER", str(tmp_path))
    assert result.returncode == 0 and result.stdout == exp + "\n" and not result.stderr


def test_default_exp_of_a_data_folder_is_keyed_by_its_full_path(tmp_path):
    """Two data folders of the same name never share an experiment folder."""
    exps = []
    for parent in ("a", "b"):
        (tmp_path / parent / "data").mkdir(parents=True)
        result = subprocess.run(["bash", str(RUN), "--data", str(tmp_path / parent / "data"), "--print-exp"],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        exps.append(result.stdout.strip())
    assert exps[0] != exps[1] and all(pathlib.Path(exp).name.startswith("data_") for exp in exps)
    assert all(pathlib.Path(exp).parent == RUN.parents[2] / "exp" / "wsj" for exp in exps)


def kaldi_corpus(root):
    for seed, split in enumerate(("train", "dev", "test")):
        write_kaldi_dir(root / split, ["the cat sat", "a red mat", "the mat is red"], seed)
    return root


def run_recipe(*arguments, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(RUN), *map(str, arguments)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def test_changed_data_is_refused_in_one_line_and_force_rebuilds(tmp_path):
    data = kaldi_corpus(tmp_path / "data")
    exp = tmp_path / "exp"
    prepare = ["--data", data, "--train-set", "train", "--dev-set", "dev", "--test-set", "test", "--exp", exp,
               "--stage", 1, "--stop-stage", 2]
    first = run_recipe(*prepare)
    assert first.returncode == 0, first.stderr
    again = run_recipe(*prepare)  # nothing changed: every output is reused as it is
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("reusing") == 4, again.stdout  # the features of 3 splits, the targets
    # the training split's first recording is replaced: its features are stale, the targets are not
    write_kaldi_dir(tmp_path / "other", ["the cat sat is red"], 7)
    os.replace(tmp_path / "other" / "s7_u00.wav", data / "train" / "s0_u00.wav")
    stale = run_recipe(*prepare)
    assert stale.returncode == 1 and stale.stderr.count("\n") == 1, stale.stderr
    assert stale.stderr.startswith(f"error: {exp / 'feats' / 'train'}: holds features built from other inputs: "
                                   f"audio: {data / 'train' / 's0_u00.wav'} changed; rerun with --force")
    forced = run_recipe(*prepare, "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"{exp / 'feats' / 'train'}: " in forced.stdout and "frames from" in forced.stdout
    assert run_recipe(*prepare).returncode == 0  # rebuilt outputs are reused again
    # a changed transcript: the features stay, the targets refuse
    (data / "dev" / "text").write_text("s1_u00 the cat sat\ns1_u01 a red cat\ns1_u02 the mat is red\n")
    stale = run_recipe(*prepare)
    assert stale.returncode == 1 and stale.stderr.count("\n") == 1, stale.stderr
    assert f"dev.text: {data / 'dev' / 'text'} changed; rerun with --force" in stale.stderr


def test_relative_paths_are_the_callers(tmp_path):
    """--data, --exp, --phones-dir and --lexicon relative to the directory run.sh is called from."""
    kaldi_corpus(tmp_path / "corpus")
    sets = ["--train-set", "train", "--dev-set", "dev", "--test-set", "test"]
    result = run_recipe("--data", "corpus", *sets, "--exp", "runs/mine", "--print-exp", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == f"{tmp_path}/runs/mine\n", result.stderr
    result = run_recipe("--data", "./corpus/", *sets, "--print-exp", cwd=tmp_path)  # keyed by the absolute path
    assert result.stdout.startswith(f"{RUN.parents[2]}/exp/wsj/corpus_"), result.stdout
    assert result.stdout == run_recipe("--data", tmp_path / "corpus", *sets, "--print-exp").stdout
    result = run_recipe("--data", "corpus", *sets, "--stop-stage", 0, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path}/corpus/train: 3 utterances, 1 speakers" in result.stdout


def test_a_run_shorter_than_the_warm_up_says_it_never_quantized_and_a_rerun_is_already_trained(tmp_path):
    """The default row quantizes from step 500 (reestimate.init_steps: 2 epochs of 250 steps)."""
    data = kaldi_corpus(tmp_path / "data")
    run = ["--data", data, "--train-set", "train", "--dev-set", "dev", "--test-set", "test", "--exp", tmp_path / "exp",
           "--stage", 1, "--threads", 1, "--", "train.steps=2", "train.batch_size=2", "train.eval_every=2",
           "train.checkpoint_every=2", "model.rnn_hidden=8", "model.rnn_layers=1", "model.mixer_dim=8"]
    first = run_recipe(*run)
    assert first.returncode == 0, first.stderr
    assert "warning: train.steps=2 ends inside the quantizer's pass-through warm-up" in first.stderr
    lines = [line for line in first.stdout.splitlines() if line.startswith("bn_reestimation_codebook_lr (")]
    assert len(lines) == 2 and all("| pass-through: never quantized |" in line for line in lines), first.stdout
    assert all("code perplexity" not in line for line in lines)
    again = run_recipe(*run)
    assert again.returncode == 0, again.stderr
    assert f"{tmp_path / 'exp' / 'bn_reestimation_codebook_lr'}: already trained (step 2 of 2" in again.stderr
