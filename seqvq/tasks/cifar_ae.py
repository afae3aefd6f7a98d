"""Task `cifar_ae`: the CIFAR-10 multi-codebook autoencoder of Łańcucki et al. 2020 §IV-C for the shared trainer.

Run config keys read here (besides `train:`; declared by `CifarAutoencoderTask`, checked before anything runs):

    data:   corpus, max_train_images (:mod:`seqvq.tasks.image_ae`, shared with the `vqvae` task)
    model:  CifarAutoencoder keywords: channels, num_codebooks (G), code_dim (d), quantizer (VectorQuantizer
            keywords: codebook_size (K), pre_norm, codebook_update, reestimate, ...)
    eval:   batch_size, max_images (null = the whole test split; :mod:`seqvq.tasks.image_ae`)

Evaluation (Table III): test bits/dim *including the cost of the latents* under a uniform prior, as the paper's
released code computes it (the Table's 4.6-4.8 contain it): every image is sent as its 8x8 x G codes,
log2 K bits each, plus the decoder's NLL of its sub-pixels given them, i.e.

    bpd = (NLL_nats / ln 2 + latents * G * log2 K) / sub-pixels            (eq. 9 with p(z) uniform)

Reported with its parts (`rec_bpd`, `latent_bpd`), the unigram-prior variant (`unigram_bpd`: log2 of each
codebook's test perplexity instead of log2 K), the code perplexity (mean over codebooks) and codes used.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from seqvq.data.cifar import CifarImages
from seqvq.metrics.bits import bits_per_dim, code_perplexity, nelbo_bits
from seqvq.models.cifar_ae import CifarAutoencoder
from seqvq.tasks.image_ae import ImageAutoencoderModel, ImageAutoencoderTask, summed_over_images


class CifarAutoencoderModel(ImageAutoencoderModel):
    """Wraps the autoencoder for the trainer: batch -> StepOutput (loss per sub-pixel, weight = sub-pixels)."""

    network_name = "autoencoder"

    def reconstruction_metrics(self, out) -> dict[str, torch.Tensor]:
        """Reconstruction bits/dim of the step."""
        return {"rec_bpd": out.nll.detach() / (math.log(2) * out.num_dims)}


def evaluate_images(model: nn.Module, images: CifarImages, batch_size: int = 100) -> dict:
    """Table III figures of an autoencoder (in eval mode) on `images`; see the module docstring."""
    autoencoder, nll, dims, codes = summed_over_images(model, images, batch_size, "nll")  # codes (latents, G)
    dims_per_latent = dims / codes.shape[0]
    perplexities = [code_perplexity(codes[:, g], autoencoder.codebook_size) for g in range(codes.shape[1])]
    rec_bpd = bits_per_dim(nll, dims)
    uniform_bits = autoencoder.num_codebooks * math.log2(autoencoder.codebook_size)
    return {"bpd": nelbo_bits(rec_bpd, uniform_bits, dims_per_latent), "rec_bpd": rec_bpd,
            "latent_bpd": uniform_bits / dims_per_latent,
            "unigram_bpd": nelbo_bits(rec_bpd, sum(math.log2(p) for p in perplexities), dims_per_latent),
            "code_perplexity": sum(perplexities) / len(perplexities),
            "codes_used": float(sum(len(codes[:, g].unique()) for g in range(codes.shape[1]))),
            "images": float(len(images))}


class CifarAutoencoderTask(ImageAutoencoderTask):
    """Table III's multi-codebook autoencoder."""

    name = "cifar_ae"
    network_class = CifarAutoencoder
    model_class = CifarAutoencoderModel
    title = "CIFAR-10"

    def evaluate(self, model: nn.Module, dataset: CifarImages, out_dir: Path | None) -> dict:
        return evaluate_images(model, dataset, self.eval.batch_size)
