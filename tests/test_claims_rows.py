"""The "does the claim hold?" rows (docs/remedies.md): on the speech, handwriting and VQ-VAE recipes, every row
with conf/mini.overrides and conf/codesK.overrides (run.sh --row-overrides) builds its model with K codes, whatever
the quantizer's kind, and Algorithm 1's reservoir holds more vectors than codes."""
import os

import pytest
import torch

from seqvq.models.deepspeech2 import DeepSpeech2CTC
from seqvq.models.handwriting_ae import HandwritingAutoencoder
from seqvq.models.vqvae import VQVAE
from seqvq.train import load_config

import row_overrides  # recipes/common/row_overrides.py (on sys.path: conftest.py)

RECIPES = os.path.join(os.path.dirname(__file__), os.pardir, "recipes")
RECENT = ["recent_diveq", "recent_sf_diveq", "recent_bridge", "recent_optvq", "recent_optvq_argmax", "recent_ibq",
          "recent_lfq"]
ROWS = {"wsj": ["vanilla_vq", "bn_reestimation", "modern_bn_reestimation_usage_kl"] + RECENT,
        "scribblelens": ["vanilla", "bn_reestimation", "modern_bn_reestimation_usage_kl"] + RECENT,
        "vqvae": ["vqvae", "bn_reestimation", "modern_bn_reestimation_usage_kl"] + RECENT}
BUILD = {"wsj": lambda model: DeepSpeech2CTC(input_dim=243, num_classes=40, **model).quantizer,
         "scribblelens": lambda model: HandwritingAutoencoder(**model).quantizer,
         "vqvae": lambda model: VQVAE(**model).quantizer}


def claims_config(recipe, row, codes):
    conf = os.path.join(RECIPES, recipe, "conf")
    path = os.path.join(conf, f"{row}.yaml")
    lines = [line for overrides in ("mini.overrides", f"codes{codes}.overrides")
             for line in row_overrides.row_overrides(os.path.join(conf, overrides), path)]
    return load_config(path, lines)


@pytest.mark.parametrize("codes", [1024, 16384])
@pytest.mark.parametrize("recipe,row", [(recipe, row) for recipe, rows in ROWS.items() for row in rows])
def test_every_claims_row_builds_with_k_codes(recipe, row, codes):
    config = claims_config(recipe, row, codes)
    quantizer = BUILD[recipe](config["model"])
    assert quantizer.codebook_size == codes
    reestimate = config["model"]["quantizer"].get("reestimate")
    assert (reestimate is not None) == ("reestimation" in row)
    if reestimate:
        assert reestimate["reservoir_size"] > codes
    if row == "recent_lfq":
        assert config["model"]["quantizer"]["kind"] == "lfq"


@pytest.mark.parametrize("recipe", ROWS)
def test_both_codebook_sizes_train_on_the_same_schedule(recipe):
    for row in ROWS[recipe]:
        small, large = (claims_config(recipe, row, codes)["train"] for codes in (1024, 16384))
        assert small == large


def test_the_codebook_free_rows_of_the_image_recipes_run(one_thread):
    """VQ-VAE and the handwriting autoencoder take a quantizer of any kind (here LFQ, 14 bits)."""
    quantizer = claims_config("vqvae", "recent_lfq", 16384)["model"]
    vqvae = VQVAE(**quantizer)
    out = vqvae(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert out.codes.shape == (2, 8, 8) and 0 <= out.codes.min() and out.codes.max() < 2**14
