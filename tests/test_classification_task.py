"""The `image_classification` task with the shared trainer: a smoke run per model whose loss falls, the evaluation
CLI, every recipe config, and the trainer's SGD / AdamW option (Huh Tables 4-6)."""
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from seqvq import UserError, cli
from seqvq.quantize import BinarySphericalQuantizer, FiniteScalarQuantizer, PeerVectorQuantize, VectorQuantizer
from seqvq.quantize.linear_map import LinearCodebookMap
from seqvq.tasks.classification import ClassificationTask, build_classifier
from seqvq.train import Trainer, TrainConfig, load_config, read_metrics
from seqvq.train.config import check_run_config
from seqvq.train.trainer import build_optimizer

import row_overrides  # recipes/common/row_overrides.py (on sys.path: conftest.py)

pytestmark = pytest.mark.usefixtures("one_thread")
CONF = Path(__file__).resolve().parents[1] / "recipes" / "imagenet100" / "conf"
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 60, 230)}


def _folder(root: Path, per_class: int = 8, size: int = 20) -> None:
    """Three classes told apart by colour, with noise and a random bright square."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 3)):
        for name, colour in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for index in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 30, (size, size, 3)), 0, 255)
                top, left = rng.integers(0, size - 6, 2)
                pixels[top: top + 6, left: left + 6] = 255
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{index}.JPEG")


MODELS = {
    "resnet18": ({"arch": "resnet18", "width": 8}, 32),
    "alexnet": ({"arch": "alexnet", "hidden": 32, "pooled_size": 1, "dropout": 0.0}, 64),
    "vit_tiny": ({"arch": "vit_tiny", "patch_size": 8, "embed_dim": 24, "depth": 2, "num_heads": 2,
                  "quantize_after": 1}, 16),
}


def _config(tmp_path, arch: str) -> dict:
    model, size = MODELS[arch]
    return {"task": "image_classification", "exp_dir": str(tmp_path / "exp"),
            "data": {"root": str(tmp_path / "images"), "image_size": size, "resize_size": size,
                     "crop_scale": [0.5, 1.0]},
            "model": {**model, "quantizer": {"codebook_size": 8, "kmeans_init": True, "affine": "learned",
                                             "sync_nu": 1.0, "replace_dead_after": 8}},
            "eval": {"batch_size": 5}}


@pytest.mark.parametrize("arch", list(MODELS))
def test_smoke_run_loss_falls_then_evaluate_cli(tmp_path, arch):
    _folder(tmp_path / "images")
    config = _config(tmp_path, arch)
    torch.manual_seed(0)
    bundle = ClassificationTask(config).build_task()
    assert config["data"]["classes"] == ["blue", "green", "red"]
    train = TrainConfig(steps=32, batch_size=12, optimizer="adamw", lr=1e-3 if arch == "vit_tiny" else 2e-3,
                        log_every=4, eval_every=32, checkpoint_every=32, device="cpu")
    figures = Trainer(bundle.model, train, bundle.train_dataset, bundle.collate_fn, bundle.evaluate,
                      exp_dir=tmp_path / "exp", run_config=config).fit()
    records = [r for r in read_metrics(tmp_path / "exp") if r["split"] == "train"]
    losses, task_losses = [r["loss"] for r in records], [r["cross_entropy"] for r in records]
    assert sum(losses[-2:]) < sum(losses[:2]), (losses, task_losses)  # + the VQ loss, which may grow
    assert sum(task_losses[-2:]) < 0.6 * sum(task_losses[:2]), (losses, task_losses)
    assert set(figures) == {"accuracy", "images", "code_perplexity", "codes_used"} and figures["images"] == 9
    assert 1 <= figures["code_perplexity"] <= figures["codes_used"] <= 8

    # `seqvq evaluate` as recipes/imagenet100/run.sh calls it: the run config is checked, figures go to --out
    cli.main(["evaluate", str(tmp_path / "exp" / "checkpoints" / "last.pt"), str(tmp_path / "images"),
              "--out", str(tmp_path / "exp" / "eval")])
    saved = json.loads((tmp_path / "exp" / "eval" / "figures.json").read_text())
    assert saved["step"] == 32 and saved["data"] == str(tmp_path / "images")
    assert saved["quantized"] is True  # no warm-up: it quantizes from step 1
    assert {name: saved[name] for name in figures} == pytest.approx(figures)


def test_all_remedies_train_together(tmp_path):
    """Huh's full set (affine + sync + alternating + replacement) through the trainer's alternating step."""
    _folder(tmp_path / "images")
    config = _config(tmp_path, "resnet18")
    config["model"]["quantizer"].update(sync_nu=0.2, replace_dead_after=2)
    torch.manual_seed(0)
    bundle = ClassificationTask(config).build_task()
    train = TrainConfig(steps=6, batch_size=12, optimizer="sgd", lr=0.05, alternating_fused=True, log_every=2,
                        eval_every=6, checkpoint_every=6, device="cpu")
    quantizer = bundle.model.classifier.quantizer
    Trainer(bundle.model, train, bundle.train_dataset, bundle.collate_fn, bundle.evaluate,
            exp_dir=tmp_path / "exp", run_config=config).fit()
    assert quantizer.affine.scale.abs().sum() > 0  # the affine parameters were trained
    assert int(quantizer.rewrites) >= 1  # k-means on the first batch (it restarts every code's LRU clock)
    assert int(quantizer.step) == 6 and int(quantizer.replacement.last_used.max()) == 6  # the clock ran every step
    records = [r for r in read_metrics(tmp_path / "exp") if r["split"] == "train"]
    assert all("inner_codebook_loss" in r for r in records)
    assert all(r["loss"] < 100 for r in records)


def test_data_errors(tmp_path):
    config = _config(tmp_path, "resnet18")
    config["data"]["root"] = None
    with pytest.raises(UserError, match="data.root"):
        ClassificationTask(config).build_task()
    with pytest.raises(UserError, match="model.arch"):
        build_classifier({"arch": "vgg16"}, 10, 224)
    with pytest.raises(UserError, match="data.image_size"):
        build_classifier({"arch": "vit_tiny", "image_size": 32}, 10, 224)
    with pytest.raises(ValueError, match="kind 'residual'"):  # several codes per vector: not what evaluation counts
        build_classifier({"arch": "resnet18", "width": 8, "quantizer": {"kind": "residual", "codebook_size": 8,
                                                                      "num_quantizers": 2}}, 10, 32)


def mini_overrides(path: Path) -> list[str]:
    """The lines of conf/<model>/mini.overrides that run.sh --mini applies to the row ``path`` (and its bases),
    from recipes/common/row_overrides.py, which run.sh calls."""
    return row_overrides.row_overrides(path.parent / "mini.overrides", path)


MODERN = {"modern_rotation", "modern_simvq", "modern_usage_kl", "modern_fsq", "modern_bsq", "bn_reestimation",
          "modern_bn_reestimation_rotation", "modern_bn_reestimation_simvq", "modern_bn_reestimation_usage_kl",
          "modern_bn_fsq"}


@pytest.mark.parametrize("mini", [False, True], ids=["paper", "mini"])
@pytest.mark.parametrize("path", sorted(CONF.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_configs_build(path, mini):
    if path.stem == "peer_vector_quantize":
        pytest.importorskip("vector_quantize_pytorch")
    config = load_config(path, mini_overrides(path) if mini else [])
    check_run_config(config, ClassificationTask.schema())  # what `seqvq train` checks before anything runs
    train = TrainConfig.from_dict(config["train"])
    assert config["task"] == "image_classification" and train.optimizer in ("sgd", "adamw")
    model = dict(config["model"])
    if model["arch"] == "alexnet":
        model["hidden"] = 16  # the 4096-unit layers take seconds to initialise; the quantizer options are the test
    classifier = build_classifier(model, 10, int(config["data"]["image_size"]))
    quantizer = classifier.quantizer
    assert (quantizer is None) == (path.stem == "novq")
    if path.stem in ("all", "alternating"):
        assert train.alternating_fused
    if path.stem.endswith("fsq"):  # FSQ Table 1's levels for about 2^10 codes, no VQ key inherited
        assert isinstance(quantizer, FiniteScalarQuantizer) and quantizer.codebook_size == 1000
        assert (quantizer.norm is not None) == (path.stem == "modern_bn_fsq")
    elif path.stem == "modern_bsq":
        assert isinstance(quantizer, BinarySphericalQuantizer) and quantizer.codebook_size == 1024
    elif path.stem == "peer_vector_quantize":  # the peer's own settings, none of the VQ rows' keys
        assert isinstance(quantizer, PeerVectorQuantize) and quantizer.codebook_size == 1024
    elif quantizer is not None:
        assert quantizer.codebook_size == 1024 and quantizer.alpha == 5.0
        assert quantizer.rotation_trick == path.stem.endswith("rotation")
        assert isinstance(quantizer.affine, LinearCodebookMap) == path.stem.endswith("simvq")
        assert (quantizer.usage_regularizer is not None) == path.stem.endswith("usage_kl")
        reestimation = quantizer.reestimation
        assert (reestimation is not None) == ("reestimation" in path.stem) == (quantizer.norm is not None)
        assert quantizer.kmeans_init == (reestimation is None)  # refused together; re-estimation sets the codes
        if reestimation is not None:  # the re-estimations end well before the first lr step (1/3 of training)
            assert reestimation.init_steps > 0 and reestimation.last_reestimation() < train.step_size
            assert reestimation.reservoir.size >= quantizer.codebook_size
            if mini:  # quantize from step 40, re-estimate at 40, 80, 120 (mini.overrides)
                assert [s for s in range(train.steps) if reestimation.reestimates_at(s)] == [40, 80, 120]


@pytest.mark.parametrize("row", sorted(MODERN))
def test_modern_rows_train_one_batch(row):
    """Each modern row's --mini ResNet18 (re-estimating from its first step) takes a training step on one batch of
    64 random 32 px images: the loss is finite and the gradient reaches the first convolution."""
    path = CONF / "resnet18" / f"{row}.yaml"
    config = load_config(path, mini_overrides(path))
    if "reestimate" in config["model"]["quantizer"]:
        config = load_config(path, mini_overrides(path) + ["model.quantizer.reestimate.steps_per_epoch=1"])
    torch.manual_seed(0)
    classifier = build_classifier(config["model"], 10, int(config["data"]["image_size"]))
    out = classifier(torch.randn(64, 3, 32, 32))
    loss = F.cross_entropy(out.logits, torch.randint(0, 10, (64,))) + out.quantized.loss
    loss.backward()
    assert torch.isfinite(loss) and classifier.conv1.weight.grad.abs().sum() > 0
    codes = out.quantized.codes
    assert codes.shape == (64, 4, 4) and 0 <= int(codes.min()) and int(codes.max()) < classifier.quantizer.codebook_size
    if isinstance(classifier.quantizer, VectorQuantizer):  # k-means on the first batch, or re-estimation at step 1
        assert int(classifier.quantizer.rewrites) == 1


def test_table_script_writes_a_named_table(tmp_path):
    """table2_huh.sh --table-only: the table of the runs in --exp, rows labelled by their method; --table NAME also
    writes EXP/NAME.md, and without it nothing is written (the Table 2 default)."""
    figures = {"none": (80.0, 300.0, 700), "modern_rotation": (82.5, 512.25, 900), "modern_fsq": (79.0, 250.0, 600)}
    for row, (accuracy, perplexity, used) in figures.items():
        (tmp_path / "resnet18" / row / "eval").mkdir(parents=True)
        (tmp_path / "resnet18" / row / "eval" / "figures.json").write_text(json.dumps(
            {"accuracy": accuracy, "images": 1000.0, "code_perplexity": perplexity, "codes_used": float(used)}))
    (tmp_path / "resnet18" / "none" / "train_seconds.txt").write_text("61\n")
    script = str(CONF.parent / "table2_huh.sh")
    rows = ["--rows", "none modern_rotation modern_fsq modern_bn_reestimation_simvq"]
    command = ["bash", script, "--table-only", "--exp", str(tmp_path), *rows]
    printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert list(tmp_path.glob("*.md")) == []
    lines = printed.splitlines()
    assert lines[2] == "| resnet18 | none | - | - | - | - | 80.0 | 300.0 | 700 | 61 |"
    assert lines[3] == "| resnet18 | rotation trick | - | - | - | - | 82.5 (+2.5) | 512.2 | 900 |  |"
    assert lines[4] == "| resnet18 | FSQ 8x5x5x5 | - | - | - | - | 79.0 (-1.0) | 250.0 | 600 |  |"
    assert lines[5] == "| resnet18 | + BN + data-dep reest + SimVQ | - | - | - | - | not evaluated | | | |"

    written = subprocess.run(command + ["--table", "modern"], capture_output=True, text=True, check=True).stdout
    assert written == printed + f"(written: {tmp_path / 'modern.md'})\n"
    assert (tmp_path / "modern.md").read_text() == printed
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["modern.md"]  # no temporary file left

    def error(*arguments):
        result = subprocess.run(["bash", script, *arguments], capture_output=True, text=True)
        assert result.returncode == 1 and result.stdout == ""
        return result.stderr.strip()
    assert error("--table-only", "--exp", str(tmp_path), "--table", "../modern").startswith(
        "error: table2_huh.sh: --table takes a file name without a folder")
    assert error("--table-only", "--exp", str(tmp_path / "missing")).startswith(
        "error: table2_huh.sh: --table-only: no runs in")
    assert error("--mini", "--groups", "alexnet", "--rows", "modern_fsq").startswith(  # before any data or training
        "error: run.sh: no conf/alexnet/modern_fsq.yaml; configs: ")


def test_table_script_averages_seeds(tmp_path):
    """table2_huh.sh --seeds N: seed k > 0 of a row lives in ROW_seedk; each figure is the mean ± sample sd over
    the row's evaluated seeds, with their count; the gain over plain VQ is between the means."""
    figures = {"none": (40.0, 4.0, 40), "none_seed1": (50.0, 6.0, 50), "all": (80.0, 600.0, 900),
               "all_seed1": (84.0, 580.0, 910), "all_seed2": (82.0, 590.0, 905), "novq": (88.0, None, None)}
    for run, (accuracy, perplexity, used) in figures.items():
        (tmp_path / "resnet18" / run / "eval").mkdir(parents=True)
        metrics = {"accuracy": accuracy} if used is None else {"accuracy": accuracy, "code_perplexity": perplexity,
                                                                "codes_used": float(used)}
        (tmp_path / "resnet18" / run / "eval" / "figures.json").write_text(json.dumps(metrics))
    (tmp_path / "resnet18" / "all" / "train_seconds.txt").write_text("100\n")
    (tmp_path / "resnet18" / "all_seed1" / "train_seconds.txt").write_text("120\n")
    script = str(CONF.parent / "table2_huh.sh")
    command = ["bash", script, "--table-only", "--exp", str(tmp_path), "--rows", "novq none all sync", "--seeds", "3"]
    lines = subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines[0].startswith("| Model | Row | Affine | Sync. | Alt. | Replace | Seeds | Accuracy |")
    assert lines[2] == "| resnet18 | novq | no VQ |  |  |  | 1/3 | 88.0 | - | - |  |"
    assert lines[3] == "| resnet18 | none | - | - | - | - | 2/3 | 45.0 ± 7.1 | 5.0 ± 1.4 | 45 ± 7 |  |"
    assert lines[4] == "| resnet18 | all | ✓ | ✓ | ✓ | ✓ | 3/3 | 82.0 ± 2.0 (+37.0) | 590.0 ± 10.0 | 905 ± 5 | 110 |"
    assert lines[5] == "| resnet18 | sync | - | ✓ | - | - | 0/3 | not evaluated | | | |"
    result = subprocess.run(["bash", script, "--table-only", "--exp", str(tmp_path), "--seeds", "0"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith("error: table2_huh.sh: --seeds takes a count >= 1")


def test_trainer_builds_sgd_and_adamw():
    groups = [{"name": "model", "params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.1, "weight_decay": 1e-4},
              {"name": "codebook", "params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.1, "weight_decay": 0.0}]
    sgd = build_optimizer(TrainConfig(optimizer="sgd", lr=0.1, momentum=0.8, weight_decay=1e-4), groups)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8
    assert [g["weight_decay"] for g in sgd.param_groups] == [1e-4, 0.0]
    adamw = build_optimizer(TrainConfig.from_dict({"optimizer": "adamw", "betas": [0.9, 0.95]}), groups)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.9, 0.95)
    with pytest.raises(ValueError, match="train.optimizer"):
        build_optimizer(TrainConfig(optimizer="lion"), groups)
