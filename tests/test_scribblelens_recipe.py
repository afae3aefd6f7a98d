"""The ScribbleLens recipe's configs build (paper scale and --mini), run.sh picks its corpus, size and output
directory (one model) and checks a folder of line images read-only, and table2.sh prints Table II."""
import json
import os
import subprocess
import numpy as np
import pytest
from PIL import Image

from seqvq.models.handwriting_ae import HandwritingAutoencoder
from seqvq.train import TrainConfig, load_config

import row_overrides  # recipes/common/row_overrides.py (on sys.path: conftest.py)

RECIPE = os.path.join(os.path.dirname(__file__), os.pardir, "recipes", "scribblelens")
ROWS = ["vanilla", "bn", "bn_codebook_lr", "bn_ema", "bn_reestimation", "bn_reestimation_codebook_lr",
        "huh_affine", "huh_sync", "huh_alternating", "huh_replacement"]




def mini_overrides(row):
    """The lines of conf/mini.overrides that run.sh --mini applies to `row` (and its bases), from
    recipes/common/row_overrides.py, which run.sh calls."""
    return row_overrides.row_overrides(os.path.join(RECIPE, "conf", "mini.overrides"),
                                       os.path.join(RECIPE, "conf", f"{row}.yaml"))


@pytest.mark.parametrize("row", ROWS)
def test_row_configs_build(row):
    path = os.path.join(RECIPE, "conf", f"{row}.yaml")
    for overrides in ([], mini_overrides(row)):
        config = load_config(path, overrides)
        assert config["task"] == "handwriting_ae"
        TrainConfig.from_dict(config["train"])
        if overrides:  # the paper-scale model is big; building the mini one checks every quantizer option
            model = HandwritingAutoencoder(**config["model"])
            assert model.codebook_size == 1024 and model.width_stride == 2  # 64 pixels per latent
    assert load_config(path)["model"]["quantizer"]["codebook_size"] == 4096


def test_codebook_lr_rows_are_ten_times_lr():
    for row in ("bn_codebook_lr", "bn_reestimation_codebook_lr"):
        for overrides in ([], mini_overrides(row)):
            train = load_config(os.path.join(RECIPE, "conf", f"{row}.yaml"), overrides)["train"]
            assert float(train["codebook_lr"]) == pytest.approx(10 * float(train["lr"]))


def test_table2_prints_markdown(tmp_path):
    figures = {"bpd": 0.2, "code_perplexity": 2388.0, "codes_used": 3000.0, "uniform_nelbo": 0.29375,
               "unigram_nelbo": 0.2877, "pixels_per_latent": 128.0, "lines": 10.0}
    (tmp_path / "bn_reestimation" / "eval").mkdir(parents=True)
    (tmp_path / "bn_reestimation" / "eval" / "figures.json").write_text(json.dumps(figures))
    command = [os.path.join(RECIPE, "table2.sh"), "--table-only", "--exp", str(tmp_path)]
    out = subprocess.run(command + ["--rows", "bn_reestimation vanilla"], capture_output=True, text=True,
                         check=True).stdout
    assert "| + BN + data-dep reest | 1/1 | 0.2000 | 2388.0 | 3000 | 0.2938 | 0.2877 |" in out
    assert "| vanilla VQ | 0/1 | N/A |" in out
    (tmp_path / "bn_reestimation_seed1" / "eval").mkdir(parents=True)  # a second seed, mean and sd over both
    (tmp_path / "bn_reestimation_seed1" / "eval" / "figures.json").write_text(json.dumps({**figures, "bpd": 0.21}))
    every_evaluated = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert "| + BN + data-dep reest | 2/2 | 0.2050 ± 0.0071 |" in every_evaluated
    assert "vanilla" not in every_evaluated


def run_sh(*arguments, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.path.join(RECIPE, os.pardir, os.pardir), "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", os.path.join(RECIPE, "run.sh"), *map(str, arguments)], capture_output=True,
                          text=True, env=env, cwd=cwd)


def test_run_sh_output_directory_per_corpus_and_errors(tmp_path):
    (tmp_path / "lines").mkdir()
    (tmp_path / "scribblelens.corpus.v1.2.zip").write_bytes(b"")
    repo = os.path.realpath(os.path.join(RECIPE, os.pardir, os.pardir))
    assert run_sh("--mini", "--print-exp").stdout.strip() == f"{repo}/exp/scribblelens/mini"
    # a folder's or zip's experiments are keyed by its full path: folders of one name never share them
    (tmp_path / "other" / "lines").mkdir(parents=True)
    corpora = (tmp_path / "lines", tmp_path / "other" / "lines", tmp_path / "scribblelens.corpus.v1.2.zip")
    keyed = [run_sh("--data", corpus, "--print-exp").stdout.strip() for corpus in corpora]
    assert keyed[0] != keyed[1] and all(os.path.dirname(exp) == f"{repo}/exp/scribblelens" for exp in keyed)
    assert [os.path.basename(exp).rsplit("_", 1)[0] for exp in keyed] == ["lines", "lines", "scribblelens.corpus.v1.2"]
    assert all(len(os.path.basename(exp).rsplit("_", 1)[1]) == 8 for exp in keyed)
    for arguments, message in ((["--mini", "--config", "nope"], "no conf/nope.yaml; configs: bn "),
                               (["--data", tmp_path / "missing"], "no such file or folder"),
                               (["--mini", "--size", "huge"], "--size must be cpu or paper"),
                               (["--rows", "bn"], "unknown option --rows"),
                               (["--mini", "--seed", "one"], "--seed must be a non-negative integer")):
        result = run_sh(*arguments)
        assert result.returncode == 1 and message in result.stderr, (arguments, result.stderr)


def test_run_sh_checks_a_folder_of_line_images_without_writing_into_it(tmp_path):
    folder = tmp_path / "lines"
    folder.mkdir()
    for index, (height, width, mode) in enumerate([(20, 60, "L"), (48, 200, "RGB"), (64, 90, "RGBA")] * 4):
        gray = np.full((height, width), 255, dtype=np.uint8)
        gray[height // 4: 3 * height // 4, 5: width - 5: 6] = 0
        image = Image.fromarray(gray, "L").convert(mode)
        image.save(folder / f"line{index}.png")
    (folder / "transcripts.txt").write_text("line0.png een regel\n")
    before = sorted(os.listdir(folder))
    result = run_sh("--data", folder, "--stop-stage", 0, "--exp", tmp_path / "exp", "--", "data.test_fraction=0.25")
    assert result.returncode == 0, result.stderr
    assert "checking" in result.stdout and "at 32 px high" in result.stdout
    counts = [int(line.split("split: ")[1].split()[0]) for line in result.stdout.splitlines() if "split: " in line]
    assert sum(counts) == 12 and counts[1] >= 1
    assert sorted(os.listdir(folder)) == before and not (tmp_path / "exp").exists()
    (folder / "line3.png").write_bytes(b"broken")
    result = run_sh("--data", folder, "--stop-stage", 0)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {folder / 'line3.png'}: not a readable image " \
        f"(cannot identify image file '{folder / 'line3.png'}'); replace or remove the file"


def test_relative_paths_are_the_callers(tmp_path):
    (tmp_path / "lines").mkdir()
    result = run_sh("--data", "lines", "--exp", "runs/mine", "--print-exp", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == f"{tmp_path}/runs/mine\n", result.stderr
    assert run_sh("--data", "./lines/", "--print-exp", cwd=tmp_path).stdout == \
        run_sh("--data", tmp_path / "lines", "--print-exp").stdout


def test_run_sh_checks_the_overrides_before_decoding_the_images(tmp_path):
    folder = tmp_path / "lines"
    folder.mkdir()
    (folder / "line0.png").write_bytes(b"not an image: decoding it would fail")
    result = run_sh("--data", folder, "--stop-stage", 0, "--", "data.test_fracton=0.2")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: data.test_fracton=0.2: data.test_fracton: unknown key; did you mean "
                                    "'data.test_fraction'?")
