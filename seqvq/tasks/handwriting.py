"""Task `handwriting_ae`: the ScribbleLens VQ autoencoder of Łańcucki et al. 2020 §IV-B for the shared trainer.

Run config keys read here (besides `train:`; declared by `HandwritingTask`, checked before anything runs):

    data:   corpus: a ScribbleLens zip, a folder with train.npz/test.npz (the built --mini corpus), or a folder
                    of PNG/JPEG line images (seqvq/data/image_folder.py; nothing is written into it)
            train_split: train, test_split: test, colormode: bw     (colormode: zip only; height/levels from model:)
            test_fraction: 0.1, transcripts, train_list, test_list, ink: dark   (folder of images only)
    model:  HandwritingAutoencoder keywords: levels, height, latent_dim, encoder_norm, encoder, decoder,
            quantizer (VectorQuantizer keywords, e.g. codebook_size, pre_norm, codebook_update, reestimate...)
    eval:   batch_size, max_lines (null = whole test split), grid_lines, temperature, seed

Evaluation (Table II): test reconstruction bits/dim, code perplexity and codes used over the test split, and the
uniform and unigram NELBOs (eq. 9) with pixels per latent = line height x encoder width stride; ``seqvq evaluate``
also writes reconstructions.png and codes.txt (:func:`write_reconstructions`).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from seqvq.data.image_folder import ImageFolderLines, find_images
from seqvq.data.lines import LineBatch, LineCorpus, collate_lines
from seqvq.data.scribblelens import ScribbleLensLines
from seqvq.errors import UserError
from seqvq.metrics.bits import (bits_per_dim, code_perplexity, pixels_per_latent, uniform_nelbo,
                                unigram_nelbo)
from seqvq.models.handwriting_ae import HandwritingAutoencoder, LineEncoder
from seqvq.models.pixelcnn import GatedPixelCNN
from seqvq.options import Section
from seqvq.quantize import quantizer_section
from seqvq.tasks.base import TRAIN, Task
from seqvq.tasks.handwriting_grid import save_reconstruction_grid
from seqvq.train.logs import atomic_write_text
from seqvq.train.types import StepOutput


@dataclass
class HandwritingData:
    """The ``data:`` section."""

    corpus: str | None = None  # a ScribbleLens zip, a folder with train.npz / test.npz, or of line images
    colormode: str = "bw"  # zip only
    train_split: str = "train"
    test_split: str = "test"
    # A folder of line images only (seqvq.data.image_folder.ImageFolderLines; None = its default):
    test_fraction: float | None = None
    transcripts: str | None = None
    train_list: str | None = None
    test_list: str | None = None
    ink: str | None = None


@dataclass
class HandwritingEval:
    """The ``eval:`` section."""

    batch_size: int = 16
    max_lines: int | None = None  # None = the whole test split
    grid_lines: int = 4
    temperature: float = 1.0
    seed: int = 0


class HandwritingModel(nn.Module):
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
CORPUS_FILES = ("transcripts", "train_list", "test_list")  # files that describe one folder of images


def evaluation_data(data: HandwritingData, trained: dict, corpus: str) -> HandwritingData:
    """The ``data:`` options for evaluating on ``corpus`` a model trained with the ``data:`` section ``trained``:
    on another corpus than the training one, the training folder's files (:data:`CORPUS_FILES`: its transcripts and
    split lists) are not inherited; those given for the evaluation apply."""
    if not trained.get("corpus") or Path(corpus).resolve() == Path(trained["corpus"]).resolve():
        return data
    return dataclasses.replace(data, **{key: None for key in CORPUS_FILES if getattr(data, key) == trained.get(key)})


def open_lines(corpus: str, split: str, height: int, levels: int, colormode: str = "bw",
               folder_options: dict | None = None) -> Dataset:
    """One split of a ScribbleLens zip, of a built line corpus (folder with <split>.npz, or the .npz), or of a
    folder of line images (``folder_options``: :class:`ImageFolderLines` keywords)."""
    if str(corpus).endswith(".zip"):
        return ScribbleLensLines(corpus, split, colormode, height, levels)
    if os.path.isdir(corpus) and not os.path.isfile(os.path.join(corpus, f"{split}.npz")):
        if find_images(Path(corpus)):
            return ImageFolderLines(corpus, split, height, levels, **(folder_options or {}))
        raise UserError(f"{corpus}: holds neither line images (.png/.jpg/.jpeg) nor {split}.npz; pass a "
                        f"folder of line images or a ScribbleLens zip (recipes/scribblelens/run.sh --mini "
                        f"builds a corpus of its own under data/mini_handwriting)")
    path = os.path.join(corpus, f"{split}.npz") if os.path.isdir(corpus) else corpus
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such line corpus; pass a ScribbleLens zip, a folder of line images, "
                        f"or a built corpus (recipes/scribblelens/run.sh --mini)")
    lines = LineCorpus(path)
    if lines.levels != levels or lines.height != height:
        raise UserError(f"{path}: lines are {lines.height} px with {lines.levels} levels but the model expects "
                         f"{height} px and {levels}; set model.height / model.levels to match")
    return lines


def _autoencoder(model: nn.Module) -> HandwritingAutoencoder:
    model = getattr(model, "module", model)
    return model.autoencoder if isinstance(model, HandwritingModel) else model


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
    return {"bpd": bpd, "code_perplexity": perplexity, "codes_used": float(len(codes.unique())),
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
    atomic_write_text(Path(out_dir) / "codes.txt", text)


class HandwritingTask(Task):
    """The ScribbleLens VQ autoencoder: lines in, bits/dim of their reconstruction from the codes out."""

    name = "handwriting_ae"
    data_options = HandwritingData
    eval_options = HandwritingEval

    @classmethod
    def model_section(cls) -> Section:
        return Section.of(HandwritingAutoencoder, quantizer=quantizer_section(),
                          encoder=Section.of(LineEncoder, skip=("levels", "height")),
                          decoder=Section.of(GatedPixelCNN, skip=("levels", "cond_dim")))

    def build_network(self, options: dict) -> HandwritingModel:
        return HandwritingModel(HandwritingAutoencoder(**options))

    def restore(self, checkpoint: dict, path: str) -> None:
        """The ``data:`` section the model was trained with (:func:`evaluation_data`)."""
        self.trained_data = (checkpoint.get("config") or {}).get("data") or {}

    def open_split(self, split: str, model: HandwritingModel, path: str | None = None) -> Dataset:
        """The ``data.train_split`` or ``data.test_split`` lines of ``data.corpus`` (or of the corpus at ``path``,
        :func:`evaluation_data`), at the model's height and levels."""
        corpus = path or self.data.corpus
        if not corpus:
            raise UserError("data.corpus: not set; pass --data ZIP_OR_FOLDER or --mini to the recipe, or set it")
        data = self.data if path is None else evaluation_data(self.data, self.trained_data, corpus)
        folder_options = {name: getattr(data, name) for name in FOLDER_KEYS if getattr(data, name) is not None}
        return open_lines(corpus, data.train_split if split == TRAIN else data.test_split,
                          model.autoencoder.height, model.autoencoder.levels, data.colormode, folder_options)

    def training_collate(self):
        return collate_lines

    def evaluate(self, model: nn.Module, dataset: Dataset, out_dir: Path | None) -> dict:
        """Table II's figures of the first ``eval.max_lines`` lines; with ``out_dir``, their reconstructions too."""
        figures = evaluate_lines(model, dataset, self.eval.batch_size, self.eval.max_lines)
        if out_dir is not None:
            write_reconstructions(model, dataset, str(out_dir), self.eval.grid_lines, self.eval.seed,
                                  self.eval.temperature)
        return figures
