"""The `handwriting_ae` task with the shared trainer: a smoke run whose loss falls, then its evaluation."""
import json
import math

import numpy as np
import pytest

from seqvq.data.lines import save_line_corpus
from seqvq.tasks.handwriting import HandwritingTask
from seqvq.train import Trainer, TrainConfig, read_metrics

HEIGHT, LEVELS = 16, 4


pytestmark = pytest.mark.usefixtures("one_thread")


def _corpus(folder, seed=0):
    """Lines of bars of random widths and heights: structure a small model learns within a few steps."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", 24), ("test", 6)):
        lines = []
        for _ in range(count):
            line = np.zeros((HEIGHT, int(rng.integers(16, 33))), dtype=np.uint8)
            for left in range(1, line.shape[1] - 3, 6):
                top = int(rng.integers(0, HEIGHT // 2))
                line[top: top + HEIGHT // 2, left: left + int(rng.integers(1, 4))] = LEVELS - 1
            lines.append(line)
        save_line_corpus(str(folder / f"{split}.npz"), lines, [""] * count, LEVELS)


def _config(tmp_path):
    return {
        "task": "handwriting_ae", "exp_dir": str(tmp_path / "exp"),
        "data": {"corpus": str(tmp_path / "corpus")},
        "model": {"levels": LEVELS, "height": HEIGHT, "latent_dim": 8,
                  "encoder": {"channels": 8, "strides": [[2, 2], [2, 2], [2, 1]], "lstm_hidden": 8},
                  "decoder": {"channels": 8, "num_layers": 2, "first_kernel": 5},
                  "quantizer": {"codebook_size": 16, "pre_norm": True}},
        "eval": {"batch_size": 4, "grid_lines": 2},
    }


def test_smoke_run_loss_falls_and_evaluation(tmp_path):
    (tmp_path / "corpus").mkdir()
    _corpus(tmp_path / "corpus")
    config = _config(tmp_path)
    bundle = HandwritingTask(config).build_task()
    train = TrainConfig(steps=40, batch_size=6, lr=3e-3, log_every=5, eval_every=40, checkpoint_every=40,
                        device="cpu")
    figures = Trainer(bundle.model, train, bundle.train_dataset, bundle.collate_fn, bundle.evaluate,
                      exp_dir=tmp_path / "exp", run_config=config).fit()
    losses = [r["loss"] for r in read_metrics(tmp_path / "exp") if r["split"] == "train"]
    assert losses[-1] < 0.7 * losses[0]
    assert {"bpd", "code_perplexity", "codes_used", "uniform_nelbo", "unigram_nelbo"} <= set(figures)
    assert figures["uniform_nelbo"] == pytest.approx(figures["bpd"] + math.log2(16) / (HEIGHT * 4))
    assert figures["unigram_nelbo"] <= figures["uniform_nelbo"] + 1e-9

    result = HandwritingTask(config).evaluate_checkpoint(tmp_path / "exp" / "checkpoints" / "last.pt",
                                                         tmp_path / "corpus", tmp_path / "exp" / "eval")
    out = tmp_path / "exp" / "eval"
    assert json.loads((out / "figures.json").read_text()) == pytest.approx(result)
    assert {name: result[name] for name in figures} == pytest.approx(figures)
    assert (out / "reconstructions.png").stat().st_size > 0
    codes = (out / "codes.txt").read_text().splitlines()
    assert len(codes) == 2 and all(line.split("\t")[1].split() for line in codes)


def test_codebook_loss_reaches_only_the_codebook(tmp_path):
    (tmp_path / "corpus").mkdir()
    _corpus(tmp_path / "corpus")
    bundle = HandwritingTask(_config(tmp_path)).build_task()
    batch = bundle.collate_fn([bundle.train_dataset[i] for i in range(4)])
    loss = bundle.model.codebook_loss(batch)
    loss.backward()
    for name, parameter in bundle.model.named_parameters():
        has_grad = parameter.grad is not None and bool(parameter.grad.abs().sum() > 0)
        assert has_grad == (name == "autoencoder.quantizer.codebook"), name


def _line_images(folder, names, seed=0):
    """PNG line images of dark bars on white paper."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name in names:
        line = np.full((HEIGHT, int(rng.integers(24, 40))), 255, dtype=np.uint8)
        line[4:12, 2::5] = 0
        Image.fromarray(line, "L").save(folder / name)


def test_evaluating_another_folder_ignores_the_training_folders_transcripts_and_split_lists(tmp_path, capsys):
    from seqvq import cli

    names = [f"a{index}.png" for index in range(8)]
    _line_images(tmp_path / "lines", names)
    (tmp_path / "labels.txt").write_text("".join(f"{name} regel {index}\n" for index, name in enumerate(names)))
    (tmp_path / "train_list.txt").write_text("\n".join(names[2:]) + "\n")
    (tmp_path / "test_list.txt").write_text("\n".join(names[:2]) + "\n")
    config = _config(tmp_path)
    config["data"] = {"corpus": str(tmp_path / "lines"), "transcripts": str(tmp_path / "labels.txt"),
                      "train_list": str(tmp_path / "train_list.txt"), "test_list": str(tmp_path / "test_list.txt")}
    config["train"] = {"steps": 2, "batch_size": 2, "eval_every": 2, "checkpoint_every": 2, "device": "cpu"}
    (tmp_path / "run.yaml").write_text(json.dumps(config))
    cli.main(["train", str(tmp_path / "run.yaml")])
    checkpoint = str(tmp_path / "exp" / "checkpoints" / "last.pt")
    _line_images(tmp_path / "other", [f"b{index}.png" for index in range(3)], seed=1)
    cli.main(["evaluate", checkpoint, str(tmp_path / "other"), "data.test_fraction=1", "--out", str(tmp_path / "o")])
    assert json.loads((tmp_path / "o" / "figures.json").read_text())["lines"] == 3
    # the training folder itself is still evaluated on its own test list, with its transcripts
    cli.main(["evaluate", checkpoint, str(tmp_path / "lines"), "--out", str(tmp_path / "own")])
    assert json.loads((tmp_path / "own" / "figures.json").read_text())["lines"] == 2
    assert (tmp_path / "own" / "codes.txt").read_text().startswith(f"{tmp_path / 'lines' / 'a0.png'}\t")
    # a transcript file given for the evaluation applies
    (tmp_path / "other_labels.txt").write_text("b0.png nieuw\n")
    cli.main(["evaluate", checkpoint, str(tmp_path / "other"), "data.test_fraction=1",
              f"data.transcripts={tmp_path / 'other_labels.txt'}", "--out", str(tmp_path / "o2")])
    assert json.loads((tmp_path / "o2" / "figures.json").read_text())["lines"] == 3
