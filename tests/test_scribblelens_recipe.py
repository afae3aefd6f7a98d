"""The ScribbleLens recipe's configs build (paper scale and --mini), and table2.sh prints Table II."""
import json
import os
import subprocess

import pytest

from seqvq.models.handwriting_ae import HandwritingAutoencoder
from seqvq.train import TrainConfig, load_config

RECIPE = os.path.join(os.path.dirname(__file__), os.pardir, "recipes", "scribblelens")
ROWS = ["vanilla", "bn", "bn_codebook_lr", "bn_ema", "bn_reestimation", "bn_reestimation_codebook_lr",
        "huh_affine", "huh_sync", "huh_alternating", "huh_replacement"]


def mini_overrides(row):
    """The lines of conf/mini.overrides that run.sh --mini applies to `row`: '*' lines first."""
    with open(os.path.join(RECIPE, "conf", "mini.overrides")) as handle:
        pairs = [line.strip().split(": ", 1) for line in handle if line.strip() and not line.startswith("#")]
    return [value for key, value in pairs if key == "*"] + [value for key, value in pairs if key == row]


@pytest.mark.parametrize("row", ROWS)
def test_row_configs_build(row):
    path = os.path.join(RECIPE, "conf", f"{row}.yaml")
    for overrides in ([], mini_overrides(row)):
        config = load_config(path, overrides)
        assert config["task"] == "handwriting_ae"
        TrainConfig.from_dict(config["train"])
        if overrides:  # the paper-scale model is big; building the mini one checks every quantizer option
            model = HandwritingAutoencoder(**config["model"])
            assert model.codebook_size == 256 and model.width_stride == 4
    assert load_config(path)["model"]["quantizer"]["codebook_size"] == 4096


def test_codebook_lr_rows_are_ten_times_lr():
    for row in ("bn_codebook_lr", "bn_reestimation_codebook_lr"):
        for overrides in ([], mini_overrides(row)):
            train = load_config(os.path.join(RECIPE, "conf", f"{row}.yaml"), overrides)["train"]
            assert float(train["codebook_lr"]) == pytest.approx(10 * float(train["lr"]))


def test_table2_prints_markdown(tmp_path):
    figures = {"bpd": 0.2, "perplexity": 2388.0, "codes_used": 3000.0, "uniform_nelbo": 0.29375,
               "unigram_nelbo": 0.2877, "pixels_per_latent": 128.0, "lines": 10.0}
    (tmp_path / "bn_reestimation" / "eval").mkdir(parents=True)
    (tmp_path / "bn_reestimation" / "eval" / "metrics.json").write_text(json.dumps(figures))
    out = subprocess.run([os.path.join(RECIPE, "table2.sh"), str(tmp_path), "bn_reestimation", "vanilla"],
                         capture_output=True, text=True, check=True).stdout
    assert "| + BN + data-dep reest | 0.200 | 2388.0 | 3000 | 0.294 | 0.288 |" in out
    assert "| vanilla VQ | not evaluated |" in out and "128 pixels per latent" in out
