"""Task `vqvae`: the VQ-VAE comparison of Huh et al. 2023 §5.2 (Table 3) for the shared trainer.

Run config keys read here (besides `train:`; declared by `VQVAETask`, checked before anything runs):

    data:   corpus, max_train_images (:mod:`seqvq.tasks.image_ae`, shared with the `cifar_ae` task)
    model:  VQVAE keywords: channels, residual_blocks, quantizer (VectorQuantizer keywords: codebook_size,
            alpha, beta, distance, affine, sync_nu, replace_dead_after, assignment, temperature, ...)
    eval:   batch_size, max_images (null = the whole test split)

Evaluation (Table 3): test MSE of the [0, 1] reconstruction (the paper reports it x 1e-3) and the perplexity and
number of the codes the test images use. LPIPS is not computed: every package providing it downloads
pretrained network weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from seqvq.data.cifar import CifarImages
from seqvq.metrics.bits import code_perplexity
from seqvq.models.vqvae import VQVAE
from seqvq.tasks.image_ae import ImageAutoencoderModel, ImageAutoencoderTask, summed_over_images


class VQVAEModel(ImageAutoencoderModel):
    """Wraps the VQ-VAE for the trainer: batch -> StepOutput (MSE + VQ loss, weight = sub-pixels)."""

    network_name = "vqvae"

    def reconstruction_metrics(self, out) -> dict[str, torch.Tensor]:
        """Mean squared error per sub-pixel of the step."""
        return {"mse": out.squared_error.detach() / out.num_dims}


def evaluate_reconstruction(model: nn.Module, images: CifarImages, batch_size: int = 100) -> dict:
    """Test MSE, code perplexity and codes used of a VQ-VAE (in eval mode) on `images`."""
    vqvae, squared_error, dims, codes = summed_over_images(model, images, batch_size, "squared_error")
    return {"mse": squared_error / dims, "code_perplexity": code_perplexity(codes, vqvae.codebook_size),
            "codes_used": float(len(codes.unique())), "images": float(len(images))}


class VQVAETask(ImageAutoencoderTask):
    """Huh et al.'s VQ-VAE of Table 3."""

    name = "vqvae"
    network_class = VQVAE
    model_class = VQVAEModel
    title = "VQ-VAE"

    def evaluate(self, model: nn.Module, dataset: CifarImages, out_dir: Path | None) -> dict:
        return evaluate_reconstruction(model, dataset, self.eval.batch_size)
