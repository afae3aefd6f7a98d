"""The CIFAR-10 autoencoder of Łańcucki et al. 2020 §IV-C, with a bottleneck of G independent codebooks.

The paper "follows closely" the VQ-VAE of van den Oord et al. 2017 (§4.1); its released configuration (DistSup,
``egs/robustvq``) fixes what the text leaves out, and is followed layer for layer here:

* encoder: conv 4x4 stride 2 (3 -> C), BN, ReLU, conv 4x4 stride 2 (C -> C), BN, two residual blocks
  (ReLU, conv 3x3, BN, ReLU, conv 1x1, BN, + input), conv 1x1 (C -> G * d): an 8x8 map of G * d channels;
* bottleneck: ``VectorQuantizer(G * d, K, num_codebooks=G)`` at each of the 8x8 positions — the vector is split
  into G blocks of d channels, each quantized with its own K codes (8 x 128 and 5 x 1024 in Table III);
  the "+ BN" rows are the quantizer's ``pre_norm``;
* decoder: conv 1x1 (G * d -> C), BN, two residual blocks, two transposed convs 4x4 stride 2 (each + BN, ReLU),
  conv 1x1 (C -> 3 * 256): a 256-way softmax for every red, green and blue sub-pixel. The last 1x1 conv is
  applied as a Linear layer to channel-last features, so the (B, 32, 32, 3, 256) logits need no transposed copy.

Inputs are uint8 images (B, 3, 32, 32); the encoder sees ``x / 255 - 0.5``. ``quantizer=None`` builds the same
network without a bottleneck (the continuous reference the speed benchmark compares with).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqvq import VectorQuantizer

LEVELS = 256


class ResidualBlock(nn.Module):
    """``x + BN(conv1x1(ReLU(BN(conv3x3(ReLU(x))))))`` (van den Oord et al. 2017 §4.1, with BatchNorm)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(), nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def cifar_encoder(channels: int, latent_dim: int) -> nn.Sequential:
    """(B, 3, 32, 32) in [-0.5, 0.5] -> (B, latent_dim, 8, 8)."""
    return nn.Sequential(
        nn.Conv2d(3, channels, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels),
        ResidualBlock(channels), ResidualBlock(channels),
        nn.Conv2d(channels, latent_dim, 1))


def cifar_decoder(channels: int, latent_dim: int) -> nn.Sequential:
    """(B, latent_dim, 8, 8) -> features (B, channels, 32, 32); the softmax layer is `CifarAutoencoder.output`."""
    return nn.Sequential(
        nn.Conv2d(latent_dim, channels, 1, bias=False), nn.BatchNorm2d(channels),
        ResidualBlock(channels), ResidualBlock(channels),
        nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels),
        nn.ReLU())


@dataclass
class CifarAutoencoderOutput:
    """`nll` is summed over the batch's sub-pixels (nats); `loss` = NLL per sub-pixel + the VQ loss."""

    logits: torch.Tensor        # (B, 32, 32, 3, 256): channel-last
    nll: torch.Tensor           # scalar, nats
    num_dims: int               # sub-pixels in the batch: B * 3 * 32 * 32
    codes: torch.Tensor | None  # (B, 8, 8, G); None without a bottleneck
    vq_loss: torch.Tensor
    vq_metrics: dict
    loss: torch.Tensor


class CifarAutoencoder(nn.Module):
    """Encoder -> VectorQuantizer (G codebooks of K codes, d channels each) -> decoder with a softmax per
    sub-pixel. `quantizer` holds `VectorQuantizer` keywords beyond dim and num_codebooks (e.g. codebook_size,
    pre_norm, codebook_update, reestimate); None means no bottleneck."""

    def __init__(self, channels: int = 256, num_codebooks: int = 8, code_dim: int = 32,
                 quantizer: dict | None = None):
        super().__init__()
        self.num_codebooks, self.latent_dim = num_codebooks, num_codebooks * code_dim
        self.encoder = cifar_encoder(channels, self.latent_dim)
        self.quantizer = None
        if quantizer is not None:
            if "num_codebooks" in quantizer:
                raise ValueError("the number of codebooks is num_codebooks of the autoencoder, not of its quantizer")
            quantizer = {"codebook_size": 128} | quantizer
            self.quantizer = VectorQuantizer(self.latent_dim, num_codebooks=num_codebooks, **quantizer)
        self.decoder = cifar_decoder(channels, self.latent_dim)
        self.output = nn.Linear(channels, 3 * LEVELS)  # the final 1x1 conv

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Channel-last latents (B, 8, 8, G * d) of uint8 images (B, 3, 32, 32)."""
        x = images.to(self.encoder[0].weight.dtype) / (LEVELS - 1) - 0.5
        return self.encoder(x).permute(0, 2, 3, 1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Logits (B, 32, 32, 3, 256) from channel-last latents (B, 8, 8, G * d)."""
        features = self.decoder(latents.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.output(features).unflatten(-1, (3, LEVELS))

    def forward(self, images: torch.Tensor) -> CifarAutoencoderOutput:
        latents = self.encode(images)
        codes, vq_loss, vq_metrics = None, latents.new_zeros(()), {}
        if self.quantizer is not None:
            vq = self.quantizer(latents)
            latents, codes, vq_loss, vq_metrics = vq.quantized, vq.codes, vq.loss, dict(vq.metrics)
        logits = self.decode(latents)
        targets = images.permute(0, 2, 3, 1).long()  # (B, 32, 32, 3), as the logits
        nll = F.cross_entropy(logits.reshape(-1, LEVELS), targets.reshape(-1), reduction="sum")
        num_dims = images.numel()
        return CifarAutoencoderOutput(logits, nll, num_dims, codes, vq_loss, vq_metrics, nll / num_dims + vq_loss)
