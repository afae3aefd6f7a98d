"""The ScribbleLens autoencoder of Łańcucki et al. 2020 §IV-B: conv + BiLSTM encoder, VQ bottleneck, PixelCNN.

Lines are (B, H, W) gray levels with a (B, W) column mask. The encoder collapses the height with strided
convolutions and runs bidirectional LSTMs over the width, giving one latent every `width_stride` (4) columns.
Latents go through (masked BatchNorm ->) Linear -> `VectorQuantizer`; the quantized latents, up-sampled along
the width, condition every layer of a gated PixelCNN that reconstructs the line. Padded columns are excluded
from the loss and never influence valid pixels (masks after every conv, `MaskedLSTM`, causal decoder).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqvq.models.masked_lstm import MaskedLSTM
from seqvq.models.pixelcnn import GatedPixelCNN
from seqvq.quantize import MaskedBatchNorm, build_quantizer


def _downsampled_mask(widths: torch.Tensor, stride: int, length: int) -> torch.Tensor:
    valid = torch.div(widths + stride - 1, stride, rounding_mode="floor")
    return torch.arange(length, device=widths.device)[None, :] < valid[:, None]


class LineEncoder(nn.Module):
    """Strided 3x3 convs collapsing the height, then BiLSTMs: (B, H, W) levels -> (B, W / stride, 2 * hidden).

    `strides` lists (height, width) strides per conv; the product of width strides is the latent stride.
    """

    def __init__(self, levels: int, height: int = 32, channels: int = 32,
                 strides=((2, 2), (2, 2), (2, 1), (2, 1)), lstm_hidden: int = 64, lstm_layers: int = 1):
        super().__init__()
        self.levels = levels
        self.strides = [tuple(s) for s in strides]
        self.convs = nn.ModuleList(
            nn.Conv2d(1 if i == 0 else channels, channels, 3, stride=s, padding=1)
            for i, s in enumerate(self.strides))
        self.width_stride = math.prod(s[1] for s in self.strides)
        out_height = height
        for stride_h, _ in self.strides:
            out_height = (out_height - 1) // stride_h + 1
        self.lstm = MaskedLSTM(channels * out_height, lstm_hidden, lstm_layers, batch_first=True,
                            bidirectional=True)
        self.output_dim = 2 * lstm_hidden

    def forward(self, images: torch.Tensor, widths: torch.Tensor):
        """Returns features (B, T, output_dim) and their mask (B, T)."""
        x = (images.to(self.convs[0].weight.dtype) / (self.levels - 1)).unsqueeze(1)  # level 0 -> 0.0
        stride = 1
        for conv in self.convs:
            stride *= conv.stride[1]
            x = F.relu(conv(x))
            x = x * _downsampled_mask(widths, stride, x.shape[-1])[:, None, None, :]
        features = x.flatten(1, 2).transpose(1, 2)  # (B, T, C * H')
        mask = _downsampled_mask(widths, stride, features.shape[1])
        return self.lstm(features, mask), mask


@dataclass
class AutoencoderOutput:
    """`nll` is summed over valid pixels (nats); `loss` = mean NLL per valid pixel + the VQ loss."""

    logits: torch.Tensor       # (B, H, W, levels)
    nll: torch.Tensor          # scalar, nats, summed over valid pixels
    num_pixels: int
    codes: torch.Tensor        # (B, T), -1 at padded latents
    latent_mask: torch.Tensor  # (B, T)
    quantized: torch.Tensor    # (B, T, latent_dim)
    vq_loss: torch.Tensor
    vq_metrics: dict
    loss: torch.Tensor


class HandwritingAutoencoder(nn.Module):
    """Encoder -> [MaskedBatchNorm] -> Linear -> VectorQuantizer -> conditional gated PixelCNN.

    `encoder`, `quantizer` and `decoder` are keyword dicts for `LineEncoder`, `seqvq.build_quantizer` (beyond dim;
    a VQ codebook by default, another quantizer by `kind`) and `GatedPixelCNN` (beyond levels and cond_dim), so a
    YAML file can describe the whole model.
    `encoder_norm` puts a masked BatchNorm on the encoder features before the projection; Table II's "+ BN"
    is the quantizer's own `pre_norm` (BatchNorm right before the codes).
    """

    def __init__(self, levels: int = 4, height: int = 32, latent_dim: int = 32, encoder_norm: bool = True,
                 encoder: dict | None = None, quantizer: dict | None = None, decoder: dict | None = None):
        super().__init__()
        self.levels, self.height = levels, height
        self.encoder = LineEncoder(levels, height, **(encoder or {}))
        self.encoder_norm = MaskedBatchNorm(self.encoder.output_dim) if encoder_norm else None
        self.projection = nn.Linear(self.encoder.output_dim, latent_dim)
        quantizer = quantizer or {}
        defaults = {"codebook_size": 256} if quantizer.get("kind", "vq") == "vq" else {}
        self.quantizer = build_quantizer(latent_dim, **(defaults | quantizer))
        self.codebook_size = int(self.quantizer.codebook_size)
        self.decoder = GatedPixelCNN(levels, cond_dim=latent_dim, **(decoder or {}))

    @property
    def width_stride(self) -> int:
        return self.encoder.width_stride

    def encode(self, images: torch.Tensor, widths: torch.Tensor):
        """Quantizer result and latent mask for a batch of lines."""
        features, mask = self.encoder(images, widths)
        if self.encoder_norm is not None:
            features = self.encoder_norm(features, mask)
        return self.quantizer(self.projection(features), mask=mask), mask

    def upsample(self, latents: torch.Tensor, width: int) -> torch.Tensor:
        """(B, T, D) latents -> (B, width, D): each latent repeated over the columns it stands for."""
        return latents.repeat_interleave(self.width_stride, dim=1)[:, :width]

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> AutoencoderOutput:
        widths = mask.sum(1)
        vq, latent_mask = self.encode(images, widths)
        logits = self.decoder(images, self.upsample(vq.quantized, images.shape[2]))
        nll_map = F.cross_entropy(logits.permute(0, 3, 1, 2), images, reduction="none")  # (B, H, W)
        pixel_mask = mask[:, None, :].expand_as(nll_map)
        nll = nll_map[pixel_mask].sum()
        num_pixels = int(pixel_mask.sum())
        loss = nll / num_pixels + vq.loss
        return AutoencoderOutput(logits, nll, num_pixels, vq.codes, latent_mask, vq.quantized, vq.loss,
                                 dict(vq.metrics), loss)

    @torch.no_grad()
    def sample_from_codes(self, codes: torch.Tensor, widths: torch.Tensor,
                          generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Lines (B, H, max width) drawn pixel by pixel by the decoder, conditioned on codes (B, T)."""
        latents = self.quantizer.codes_to_vectors(codes)
        cond = self.upsample(latents, int(widths.max()))
        return self.decoder.sample(cond, widths, self.height, generator, temperature)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                    temperature: float = 1.0):
        """Encode lines to codes and sample lines back from the codes: (lines (B, H, W), codes (B, T))."""
        widths = mask.sum(1)
        vq, _ = self.encode(images, widths)
        return self.sample_from_codes(vq.codes, widths, generator, temperature), vq.codes
