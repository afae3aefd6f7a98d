"""Task `cifar_ae`: the CIFAR-10 multi-codebook autoencoder of Łańcucki et al. 2020 §IV-C for the shared trainer.

Run config keys read here (besides `train:`):

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
import os
from pathlib import Path

import torch
from torch import nn

from seqvq.data.cifar import CifarImages, ImageBatch, collate_images
from seqvq.metrics.bits import bits_per_dim, code_perplexity, nelbo_bits
from seqvq.models.cifar_ae import CifarAutoencoder
from seqvq.train.types import StepOutput, TaskBundle


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


def open_images(config: dict, split: str, corpus: str | None = None) -> CifarImages:
    """`split` ("train" / "test") of the config's `data.corpus` (or of `corpus`)."""
    data = config.get("data") or {}
    corpus = corpus or data.get("corpus")
    if not corpus:
        raise ValueError("the config has no data.corpus: pass --data CIFAR or --mini to the recipe, or set it")
    limit = data.get("max_train_images") if split == "train" else (config.get("eval") or {}).get("max_images")
    return CifarImages(corpus, split, None if limit is None else int(limit))


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
    model = dict(config.get("model") or {})
    if model.get("quantizer") is None:
        raise ValueError("model.quantizer is empty: the CIFAR-10 task needs a VQ bottleneck (codebook_size: K)")
    return CifarAutoencoderTask(CifarAutoencoder(**model))


def build_task(config: dict) -> TaskBundle:
    """Model, training images, collate function and the test-split evaluation for the trainer."""
    model = build_model(config)
    train_images, test_images = open_images(config, "train"), open_images(config, "test")
    batch_size = int((config.get("eval") or {}).get("batch_size", 100))
    return TaskBundle(model, train_images, collate_images,
                      lambda trained: evaluate_images(trained, test_images, batch_size))


def write_metrics(checkpoint: str, figures: dict) -> None:
    """`<exp_dir>/eval/metrics.json` next to the checkpoints folder, written atomically."""
    out_dir = Path(checkpoint).resolve().parent.parent / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_path = out_dir / "metrics.json.tmp"
    tmp_path.write_text(json.dumps(figures, indent=1) + "\n")
    os.replace(tmp_path, out_dir / "metrics.json")


def evaluate_cli(checkpoint: str, data: str, config: dict) -> dict:
    """`seqvq evaluate CKPT DATA`: Table III figures on DATA's test split with the Polyak weights when saved;
    also written to <exp_dir>/eval/metrics.json."""
    from seqvq.train.checkpoint import load_checkpoint

    model = build_model(config)
    load_checkpoint(checkpoint, model, use_polyak=True)
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    figures = evaluate_images(model, open_images(config, "test", corpus=data),
                              int((config.get("eval") or {}).get("batch_size", 100)))
    write_metrics(checkpoint, figures)
    return figures
