"""Task `cifar_ae`: the CIFAR-10 multi-codebook autoencoder of Łańcucki et al. 2020 §IV-C for the shared trainer.

Run config keys read here (besides `train:`; declared by `CONFIG`, checked before anything runs):

    data:   corpus: cifar-10-python.tar.gz, its cifar-10-batches-py/ folder (or the folder holding it), or a
            built set in the same layout (data_prep/make_mini_images.py); max_train_images (null = all)
    model:  CifarAutoencoder keywords: channels, num_codebooks (G), code_dim (d), quantizer (VectorQuantizer
            keywords: codebook_size (K), pre_norm, codebook_update, reestimate, ...)
    eval:   batch_size, max_images (null = the whole test split)

Evaluation (Table III): test bits/dim *including the cost of the latents* under a uniform prior, as the paper's
released code computes it (the Table's 4.6-4.8 contain it): every image is sent as its 8x8 x G codes,
log2 K bits each, plus the decoder's NLL of its sub-pixels given them, i.e.

    bpd = (NLL_nats / ln 2 + latents * G * log2 K) / sub-pixels            (eq. 9 with p(z) uniform)

Reported with its parts (`rec_bpd`, `latent_bpd`), the unigram-prior variant (`unigram_bpd`: log2 of each
codebook's test perplexity instead of log2 K), the code perplexity (mean over codebooks) and codes used.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from seqvq.data.cifar import CifarImages, ImageBatch, collate_images
from seqvq.errors import UserError
from seqvq.metrics.bits import bits_per_dim, code_perplexity, nelbo_bits
from seqvq.models.cifar_ae import CifarAutoencoder
from seqvq.tasks import quantizer_section
from seqvq.train.config import Section
from seqvq.train.logs import atomic_write_text
from seqvq.train.types import StepOutput, TaskBundle


@dataclass
class ImageData:
    """The ``data:`` section (shared by the `vqvae` task)."""

    corpus: str | None = None  # cifar-10-python.tar.gz, cifar-10-batches-py/ (or its parent), or a built set
    max_train_images: int | None = None  # None = all


@dataclass
class ImageEval:
    """The ``eval:`` section (shared by the `vqvae` task)."""

    batch_size: int = 100
    max_images: int | None = None  # None = the whole test split


CONFIG = Section.keys("cifar_ae", data=Section.of(ImageData), eval=Section.of(ImageEval),
                      model=Section.of(CifarAutoencoder, quantizer=quantizer_section()))


class CifarAutoencoderTask(nn.Module):
    """Wraps the autoencoder for the trainer: batch -> StepOutput (loss per sub-pixel, weight = sub-pixels)."""

    def __init__(self, autoencoder: CifarAutoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, batch: ImageBatch) -> StepOutput:
        out = self.autoencoder(batch.images)
        metrics = {"rec_bpd": out.nll.detach() / (math.log(2) * out.num_dims), "vq_loss": out.vq_loss.detach(),
                   **out.vq_metrics}
        return StepOutput(out.loss, metrics, weight=out.num_dims)

    def codebook_loss(self, batch: ImageBatch) -> torch.Tensor:
        """The quantizer's codebook term with the encoder under no_grad (Huh eq. 17's inner loss)."""
        with torch.no_grad():
            latents = self.autoencoder.encode(batch.images)
        return self.autoencoder.quantizer(latents).losses["codebook"]


def image_options(config: dict) -> tuple[ImageData, ImageEval]:
    """The config's ``data:`` and ``eval:`` sections, checked."""
    return (ImageData(**Section.of(ImageData).check(config.get("data") or {}, "data")),
            ImageEval(**Section.of(ImageEval).check(config.get("eval") or {}, "eval")))


def open_images(config: dict, split: str, corpus: str | None = None) -> CifarImages:
    """`split` ("train" / "test") of the config's `data.corpus` (or of `corpus`)."""
    data, options = image_options(config)
    corpus = corpus or data.corpus
    if not corpus:
        raise UserError("data.corpus: not set; pass --data CIFAR or --mini to the recipe, or set it")
    try:
        return CifarImages(corpus, split, data.max_train_images if split == "train" else options.max_images)
    except (OSError, ValueError) as error:  # a missing, truncated or foreign file: one line, naming it
        raise UserError(str(error)) from None


def _autoencoder(model: nn.Module) -> CifarAutoencoder:
    model = getattr(model, "module", model)
    return model.autoencoder if isinstance(model, CifarAutoencoderTask) else model


@torch.no_grad()
def evaluate_images(model: nn.Module, images: CifarImages, batch_size: int = 100) -> dict:
    """Table III figures of an autoencoder (in eval mode) on `images`; see the module docstring."""
    autoencoder = _autoencoder(model)
    device = next(autoencoder.parameters()).device
    nll, dims, codes = 0.0, 0, []
    for start in range(0, len(images), batch_size):
        batch = collate_images([images[i] for i in range(start, min(len(images), start + batch_size))])
        out = autoencoder(batch.images.to(device))
        nll, dims = nll + float(out.nll), dims + out.num_dims
        codes.append(out.codes.reshape(-1, autoencoder.num_codebooks).cpu())
    codes = torch.cat(codes)  # (latents, G)
    dims_per_latent = dims / codes.shape[0]
    perplexities = [code_perplexity(codes[:, g], autoencoder.codebook_size) for g in range(codes.shape[1])]
    rec_bpd = bits_per_dim(nll, dims)
    uniform_bits = autoencoder.num_codebooks * math.log2(autoencoder.codebook_size)
    return {"bpd": nelbo_bits(rec_bpd, uniform_bits, dims_per_latent), "rec_bpd": rec_bpd,
            "latent_bpd": uniform_bits / dims_per_latent,
            "unigram_bpd": nelbo_bits(rec_bpd, sum(math.log2(p) for p in perplexities), dims_per_latent),
            "perplexity": sum(perplexities) / len(perplexities),
            "codes_used": float(sum(len(codes[:, g].unique()) for g in range(codes.shape[1]))),
            "images": float(len(images))}


def build_model(config: dict) -> CifarAutoencoderTask:
    options = CONFIG.sections["model"].check(dict(config.get("model") or {}), "model")
    if options.get("quantizer") is None:
        raise UserError("model.quantizer: empty; the CIFAR-10 task needs a VQ bottleneck (codebook_size: K)")
    try:
        return CifarAutoencoderTask(CifarAutoencoder(**options))
    except ValueError as error:  # an option value the model refuses (the keys and types are checked above)
        raise UserError(f"model: {error}; fix the model section of the config") from None


def build_task(config: dict) -> TaskBundle:
    """Model, training images, collate function and the test-split evaluation for the trainer."""
    model = build_model(config)
    train_images, test_images = open_images(config, "train"), open_images(config, "test")
    batch_size = image_options(config)[1].batch_size
    return TaskBundle(model, train_images, collate_images,
                      lambda trained: evaluate_images(trained, test_images, batch_size))


def evaluate_cli(checkpoint: str, data: str, config: dict, out_dir: str | Path | None = None) -> dict:
    """`seqvq evaluate CKPT DATA`: Table III figures on DATA's test split with the Polyak weights when saved;
    also written to `out_dir`/metrics.json (default: :func:`seqvq.train.checkpoint.evaluation_dir`)."""
    from seqvq.train.checkpoint import evaluation_dir, load_checkpoint

    model = build_model(config)
    load_checkpoint(checkpoint, model, use_polyak=True)
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    figures = evaluate_images(model, open_images(config, "test", corpus=data), image_options(config)[1].batch_size)
    write_metrics(Path(out_dir) if out_dir is not None else evaluation_dir(checkpoint, data), figures)
    return figures


def write_metrics(out_dir: Path, figures: dict) -> None:
    """`out_dir`/metrics.json, written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(figures, indent=1) + "\n")
