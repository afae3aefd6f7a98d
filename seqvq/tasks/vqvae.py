"""Task `vqvae`: the VQ-VAE comparison of Huh et al. 2023 §5.2 (Table 3) for the shared trainer.

Run config keys read here (besides `train:`; declared by `CONFIG`, checked before anything runs):

    data:   corpus: as the `cifar_ae` task (CIFAR-10 archive / folder, or the built set); max_train_images
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

from seqvq.data.cifar import CifarImages, ImageBatch, collate_images
from seqvq.errors import UserError
from seqvq.metrics.bits import code_perplexity
from seqvq.models.vqvae import VQVAE
from seqvq.tasks import quantizer_section
from seqvq.tasks.cifar_ae import ImageData, ImageEval, image_options, open_images, write_metrics
from seqvq.train.config import Section
from seqvq.train.types import StepOutput, TaskBundle

CONFIG = Section.keys("vqvae", data=Section.of(ImageData), eval=Section.of(ImageEval),
                      model=Section.of(VQVAE, quantizer=quantizer_section()))


class VQVAETask(nn.Module):
    """Wraps the VQ-VAE for the trainer: batch -> StepOutput (MSE + VQ loss, weight = sub-pixels)."""

    def __init__(self, vqvae: VQVAE):
        super().__init__()
        self.vqvae = vqvae

    def forward(self, batch: ImageBatch) -> StepOutput:
        out = self.vqvae(batch.images)
        metrics = {"mse": out.squared_error.detach() / out.num_dims, "vq_loss": out.vq_loss.detach(),
                   **out.vq_metrics}
        return StepOutput(out.loss, metrics, weight=out.num_dims)

    def codebook_loss(self, batch: ImageBatch) -> torch.Tensor:
        """The quantizer's codebook term with the encoder under no_grad (Huh eq. 17's inner loss)."""
        with torch.no_grad():
            latents = self.vqvae.encode(batch.images)
        return self.vqvae.quantizer(latents).losses["codebook"]


def _vqvae(model: nn.Module) -> VQVAE:
    model = getattr(model, "module", model)
    return model.vqvae if isinstance(model, VQVAETask) else model


@torch.no_grad()
def evaluate_reconstruction(model: nn.Module, images: CifarImages, batch_size: int = 100) -> dict:
    """Test MSE, code perplexity and codes used of a VQ-VAE (in eval mode) on `images`."""
    vqvae = _vqvae(model)
    device = next(vqvae.parameters()).device
    squared_error, dims, codes = 0.0, 0, []
    for start in range(0, len(images), batch_size):
        batch = collate_images([images[i] for i in range(start, min(len(images), start + batch_size))])
        out = vqvae(batch.images.to(device))
        squared_error, dims = squared_error + float(out.squared_error), dims + out.num_dims
        codes.append(out.codes.reshape(-1).cpu())
    codes = torch.cat(codes)
    return {"mse": squared_error / dims, "perplexity": code_perplexity(codes, vqvae.codebook_size),
            "codes_used": float(len(codes.unique())), "images": float(len(images))}


def build_model(config: dict) -> VQVAETask:
    options = CONFIG.sections["model"].check(dict(config.get("model") or {}), "model")
    if options.get("quantizer") is None:
        raise UserError("model.quantizer: empty; the VQ-VAE task needs a VQ bottleneck (codebook_size: K)")
    try:
        return VQVAETask(VQVAE(**options))
    except ValueError as error:  # an option value the model refuses (the keys and types are checked above)
        raise UserError(f"model: {error}; fix the model section of the config") from None


def build_task(config: dict) -> TaskBundle:
    """Model, training images, collate function and the test-split evaluation for the trainer."""
    model = build_model(config)
    train_images, test_images = open_images(config, "train"), open_images(config, "test")
    batch_size = image_options(config)[1].batch_size
    return TaskBundle(model, train_images, collate_images,
                      lambda trained: evaluate_reconstruction(trained, test_images, batch_size))


def evaluate_cli(checkpoint: str, data: str, config: dict, out_dir: str | Path | None = None) -> dict:
    """`seqvq evaluate CKPT DATA`: Table 3 figures on DATA's test split (Polyak weights when saved); also written
    to `out_dir`/metrics.json (default: :func:`seqvq.train.checkpoint.evaluation_dir`)."""
    from seqvq.train.checkpoint import evaluation_dir, load_checkpoint

    model = build_model(config)
    load_checkpoint(checkpoint, model, use_polyak=True)
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    figures = evaluate_reconstruction(model, open_images(config, "test", corpus=data),
                                      image_options(config)[1].batch_size)
    write_metrics(Path(out_dir) if out_dir is not None else evaluation_dir(checkpoint, data), figures)
    return figures
