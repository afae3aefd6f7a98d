"""Task `handwriting_ae`: the ScribbleLens VQ autoencoder of Łańcucki et al. 2020 §IV-B for the shared trainer.

Run config keys read here (besides `train:`):

    data:   corpus: a ScribbleLens zip, a folder with train.npz/test.npz (the built --mini corpus), or a folder
                    of PNG/JPEG line images (seqvq/data/image_folder.py; nothing is written into it)
            train_split: train, test_split: test, colormode: bw     (colormode: zip only; height/levels from model:)
            test_fraction: 0.1, transcripts, train_list, test_list, ink: dark   (folder of images only)
    model:  HandwritingAutoencoder keywords: levels, height, latent_dim, encoder_norm, encoder, decoder,
            quantizer (VectorQuantizer keywords, e.g. codebook_size, pre_norm, codebook_update, reestimate...)
    eval:   batch_size, max_lines (null = whole test split), grid_lines, temperature, seed

Evaluation (Table II): test reconstruction bits/dim, code perplexity and codes used over the test split, and the
uniform and unigram NELBOs (eq. 9) with pixels per latent = line height x encoder width stride.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from seqvq.data.image_folder import ImageFolderLines, find_images
from seqvq.data.lines import LineBatch, LineCorpus, collate_lines
from seqvq.data.scribblelens import ScribbleLensLines
from seqvq.metrics.bits import (bits_per_dim, code_perplexity, pixels_per_latent, uniform_nelbo,
                                unigram_nelbo)
from seqvq.models.handwriting_ae import HandwritingAutoencoder
from seqvq.tasks.handwriting_grid import save_reconstruction_grid
from seqvq.train.types import StepOutput, TaskBundle


class HandwritingTask(nn.Module):
    """Wraps the autoencoder for the trainer: batch -> StepOutput (loss per valid pixel, weight = pixels)."""

    def __init__(self, autoencoder: HandwritingAutoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, batch: LineBatch) -> StepOutput:
        out = self.autoencoder(batch.images, batch.mask)
        metrics = {"bpd": out.nll.detach() / (math.log(2) * out.num_pixels), "vq_loss": out.vq_loss.detach(),
                   **{name: value for name, value in out.vq_metrics.items()}}
        return StepOutput(out.loss, metrics, weight=out.num_pixels)

    def codebook_loss(self, batch: LineBatch) -> torch.Tensor:
        """The quantizer's codebook term on `batch`, encoder run under no_grad: the inner loss (eq. 17) of Huh's
        alternating optimization, `seqvq.quantize.AlternatingOptimizer.step(batch, task, task.codebook_loss)`."""
        autoencoder = self.autoencoder
        with torch.no_grad():
            features, mask = autoencoder.encoder(batch.images, batch.mask.sum(1))
            if autoencoder.encoder_norm is not None:
                features = autoencoder.encoder_norm(features, mask)
            latents = autoencoder.projection(features)
        return autoencoder.quantizer(latents, mask=mask).losses["codebook"]


FOLDER_KEYS = ("test_fraction", "transcripts", "train_list", "test_list", "ink")


def open_lines(corpus: str, split: str, height: int, levels: int, colormode: str = "bw",
               folder_options: dict | None = None) -> Dataset:
    """One split of a ScribbleLens zip, of a built line corpus (folder with <split>.npz, or the .npz), or of a
    folder of line images (``folder_options``: :class:`ImageFolderLines` keywords)."""
    if str(corpus).endswith(".zip"):
        return ScribbleLensLines(corpus, split, colormode, height, levels)
    if os.path.isdir(corpus) and not os.path.isfile(os.path.join(corpus, f"{split}.npz")):
        if find_images(Path(corpus)):
            return ImageFolderLines(corpus, split, height, levels, **(folder_options or {}))
        raise FileNotFoundError(f"{corpus}: holds neither line images (.png/.jpg/.jpeg) nor {split}.npz; pass a "
                                f"folder of line images or a ScribbleLens zip (recipes/scribblelens/run.sh --mini "
                                f"builds a corpus of its own under data/mini_handwriting)")
    path = os.path.join(corpus, f"{split}.npz") if os.path.isdir(corpus) else corpus
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such line corpus; pass a ScribbleLens zip, a folder of line images, "
                                f"or a built corpus (recipes/scribblelens/run.sh --mini)")
    lines = LineCorpus(path)
    if lines.levels != levels or lines.height != height:
        raise ValueError(f"{path}: lines are {lines.height} px with {lines.levels} levels but the model expects "
                         f"{height} px and {levels}; set model.height / model.levels to match")
    return lines


def _split(config: dict, key: str, default: str, corpus: str | None = None) -> Dataset:
    data, model = config.get("data") or {}, config.get("model") or {}
    corpus = corpus or data.get("corpus")
    if not corpus:
        raise ValueError("the config has no data.corpus: pass --data ZIP or --mini to the recipe, or set it")
    folder_options = {name: data[name] for name in FOLDER_KEYS if data.get(name) is not None}
    return open_lines(corpus, data.get(key, default), int(model.get("height", 32)), int(model.get("levels", 4)),
                      data.get("colormode", "bw"), folder_options)


def _autoencoder(model: nn.Module) -> HandwritingAutoencoder:
    model = getattr(model, "module", model)
    return model.autoencoder if isinstance(model, HandwritingTask) else model


@torch.no_grad()
def evaluate_lines(model: nn.Module, lines: Dataset, batch_size: int = 16, max_lines: int | None = None) -> dict:
    """Test bits/dim, code perplexity, codes used and NELBOs of an autoencoder (in eval mode) on `lines`."""
    autoencoder = _autoencoder(model)
    device = next(autoencoder.parameters()).device
    count = len(lines) if max_lines is None else min(len(lines), int(max_lines))
    nll, pixels, codes = 0.0, 0, []
    for start in range(0, count, batch_size):
        batch = collate_lines([lines[i] for i in range(start, min(count, start + batch_size))]).to(device)
        out = autoencoder(batch.images, batch.mask)
        nll, pixels = nll + float(out.nll), pixels + out.num_pixels
        codes.append(out.codes[out.latent_mask].reshape(-1, *out.codes.shape[2:]).cpu())
    codes = torch.cat(codes)
    bpd = bits_per_dim(nll, pixels)
    perplexity = code_perplexity(codes, autoencoder.codebook_size)
    per_latent = pixels_per_latent(autoencoder.height, autoencoder.width_stride)
    return {"bpd": bpd, "perplexity": perplexity, "codes_used": float(len(codes.unique())),
            "uniform_nelbo": uniform_nelbo(bpd, autoencoder.codebook_size, per_latent),
            "unigram_nelbo": unigram_nelbo(bpd, perplexity, per_latent), "pixels_per_latent": float(per_latent),
            "lines": float(count)}


def write_reconstructions(model: nn.Module, lines: Dataset, out_dir: str, count: int = 4, seed: int = 0,
                          temperature: float = 1.0) -> None:
    """`out_dir/reconstructions.png` (originals, lines sampled from their codes, codes) and codes.txt."""
    autoencoder = _autoencoder(model)
    device = next(autoencoder.parameters()).device
    batch = collate_lines([lines[i] for i in range(min(count, len(lines)))]).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    samples, codes = autoencoder.reconstruct(batch.images, batch.mask, generator, temperature)
    labels = [f"{os.path.basename(name)} {text!r}" if text else os.path.basename(name)
              for name, text in zip(batch.names, batch.texts)]
    save_reconstruction_grid(os.path.join(out_dir, "reconstructions.png"), batch.images, samples, codes,
                             batch.widths, autoencoder.levels, labels)
    text = "".join(f"{name}\t{' '.join(map(str, row[row >= 0].tolist()))}\n"
                   for name, row in zip(batch.names, codes.cpu()))
    tmp_path = os.path.join(out_dir, "codes.txt.tmp")
    with open(tmp_path, "w") as handle:
        handle.write(text)
    os.replace(tmp_path, os.path.join(out_dir, "codes.txt"))


def build_model(config: dict) -> HandwritingTask:
    return HandwritingTask(HandwritingAutoencoder(**(config.get("model") or {})))


def build_task(config: dict) -> TaskBundle:
    """Model, training lines, collate function and the test-split evaluation for the trainer."""
    model = build_model(config)
    train_lines = _split(config, "train_split", "train")
    test_lines = _split(config, "test_split", "test")
    options = config.get("eval") or {}

    def evaluate(trained: nn.Module) -> dict:
        return evaluate_lines(trained, test_lines, int(options.get("batch_size", 16)), options.get("max_lines"))

    return TaskBundle(model, train_lines, collate_lines, evaluate)


def evaluate_cli(checkpoint: str, data: str, config: dict) -> dict:
    """`seqvq evaluate CKPT DATA`: Table II figures on DATA's test split (Polyak weights when saved), plus
    reconstructions.png / codes.txt / metrics.json in <exp_dir>/eval/."""
    from seqvq.train.checkpoint import load_checkpoint

    model = build_model(config)
    load_checkpoint(checkpoint, model, use_polyak=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    options = config.get("eval") or {}
    lines = _split(config, "test_split", "test", corpus=data)
    figures = evaluate_lines(model, lines, int(options.get("batch_size", 16)), options.get("max_lines"))
    out_dir = Path(checkpoint).resolve().parent.parent / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_reconstructions(model, lines, str(out_dir), int(options.get("grid_lines", 4)),
                          int(options.get("seed", 0)), float(options.get("temperature", 1.0)))
    tmp_path = out_dir / "metrics.json.tmp"
    tmp_path.write_text(json.dumps(figures, indent=1) + "\n")
    os.replace(tmp_path, out_dir / "metrics.json")
    return figures
