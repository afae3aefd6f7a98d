"""The VQ-VAE of Huh et al. 2023 §5.2 (Table 3): the 32x32 ResNet backbone of Takida et al. 2022 (SQ-VAE),
64 channels, MSE reconstruction.

Layer for layer as SQ-VAE's released 32x32 networks (``EncoderVqResnet32`` / ``DecoderVqResnet32``, 2 residual
blocks), with C the channel count (64 in the paper):

* encoder: conv 4x4 stride 2 (3 -> C/2), BN, ReLU, conv 4x4 stride 2 (C/2 -> C), BN, ReLU, conv 3x3 (C -> C), BN,
  ReLU, residual blocks (ReLU, conv 3x3, BN, ReLU, conv 1x1, BN, + input): an 8x8 map of C channels;
* bottleneck: ``VectorQuantizer(C, K)`` on each of the 8x8 vectors (1024 codes: Huh A.1 uses 1024 throughout), or
  another quantizer by ``kind`` (:func:`seqvq.build_quantizer`);
* decoder: residual blocks, transposed conv 3x3 (C -> C), BN, ReLU, transposed conv 4x4 stride 2 (C -> C/2), BN,
  ReLU, transposed conv 4x4 stride 2 (C/2 -> 3), sigmoid.

Images are uint8 (B, 3, 32, 32); the network sees and reconstructs ``x / 255`` in [0, 1], and the loss is the MSE
of that reconstruction plus the VQ loss. ``quantizer=None`` builds the network without a bottleneck.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqvq.quantize import build_quantizer
from seqvq.models.cifar_ae import ResidualBlock


def vqvae_encoder(channels: int, residual_blocks: int) -> nn.Sequential:
    """(B, 3, 32, 32) in [0, 1] -> (B, channels, 8, 8)."""
    half = channels // 2
    return nn.Sequential(
        nn.Conv2d(3, half, 4, stride=2, padding=1), nn.BatchNorm2d(half), nn.ReLU(),
        nn.Conv2d(half, channels, 4, stride=2, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
        *[ResidualBlock(channels) for _ in range(residual_blocks)])


def vqvae_decoder(channels: int, residual_blocks: int) -> nn.Sequential:
    """(B, channels, 8, 8) -> (B, 3, 32, 32) in (0, 1)."""
    half = channels // 2
    return nn.Sequential(
        *[ResidualBlock(channels) for _ in range(residual_blocks)],
        nn.ConvTranspose2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.ConvTranspose2d(channels, half, 4, stride=2, padding=1), nn.BatchNorm2d(half), nn.ReLU(),
        nn.ConvTranspose2d(half, 3, 4, stride=2, padding=1), nn.Sigmoid())


@dataclass
class VQVAEOutput:
    """`squared_error` is summed over the batch's sub-pixels; `loss` = its mean (the MSE) + the VQ loss."""

    reconstruction: torch.Tensor  # (B, 3, 32, 32) in (0, 1)
    squared_error: torch.Tensor   # scalar
    num_dims: int
    codes: torch.Tensor | None    # (B, 8, 8); None without a bottleneck
    vq_loss: torch.Tensor
    vq_metrics: dict
    loss: torch.Tensor


class VQVAE(nn.Module):
    """Encoder -> quantizer -> decoder, MSE reconstruction. `quantizer` holds `seqvq.build_quantizer` keywords
    beyond dim (kind; for VQ codebook_size (default 1024), distance, affine, replace_dead_after, ...); None = no VQ."""

    def __init__(self, channels: int = 64, residual_blocks: int = 2, quantizer: dict | None = None):
        super().__init__()
        self.channels = channels
        self.encoder = vqvae_encoder(channels, residual_blocks)
        self.quantizer = None
        if quantizer is not None:
            defaults = {"codebook_size": 1024} if quantizer.get("kind", "vq") == "vq" else {}
            self.quantizer = build_quantizer(channels, **(defaults | quantizer))
        self.decoder = vqvae_decoder(channels, residual_blocks)

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Channel-last latents (B, 8, 8, C) of uint8 images (B, 3, 32, 32)."""
        x = images.to(self.encoder[0].weight.dtype) / 255.0
        return self.encoder(x).permute(0, 2, 3, 1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents.permute(0, 3, 1, 2))

    def forward(self, images: torch.Tensor) -> VQVAEOutput:
        latents = self.encode(images)
        codes, vq_loss, vq_metrics = None, latents.new_zeros(()), {}
        if self.quantizer is not None:
            vq = self.quantizer(latents)
            latents, codes, vq_loss, vq_metrics = vq.quantized, vq.codes, vq.loss, dict(vq.metrics)
        reconstruction = self.decode(latents)
        target = images.to(reconstruction.dtype) / 255.0
        squared_error = F.mse_loss(reconstruction, target, reduction="sum")
        num_dims = images.numel()
        return VQVAEOutput(reconstruction, squared_error, num_dims, codes, vq_loss, vq_metrics,
                           squared_error / num_dims + vq_loss)
