"""Conditional gated PixelCNN over lines of handwriting (van den Oord et al. 2016; Łańcucki et al. 2020 §IV-B).

Generation order: column by column from left to right (the line's time axis), top to bottom within a column.
Internally the image is transposed so that a column is a conv "row"; the vertical stack sees all earlier columns
and the horizontal stack the pixels above in the current column, so there is no blind spot. Causality comes from
kernel shapes and one-sided padding, not from masked weights: the first layer ("mask A") excludes the current
column/pixel, later layers ("mask B") include the current position of the stack below.

Conditioning: one vector per column (the latents up-sampled along the width), projected and added to the gates
of every layer, for both stacks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _gate(features: torch.Tensor) -> torch.Tensor:
    value, gate = features.chunk(2, dim=1)
    return torch.tanh(value) * torch.sigmoid(gate)


class GatedLayer(nn.Module):
    """One gated layer with vertical and horizontal stacks on (B, C, columns, rows) maps."""

    def __init__(self, in_channels: int, channels: int, kernel: int, first: bool, cond_dim: int):
        super().__init__()
        self.half, self.first = kernel // 2, first
        reach = self.half if first else self.half + 1  # first layer: strictly earlier columns / pixels
        self.vertical = nn.Conv2d(in_channels, 2 * channels, (reach, kernel))
        self.horizontal = nn.Conv2d(in_channels, 2 * channels, (1, reach))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_out = nn.Conv2d(channels, channels, 1)
        self.cond = nn.Linear(cond_dim, 4 * channels) if cond_dim else None

    def forward(self, vertical, horizontal, cond):
        columns, rows = vertical.shape[2:]
        v = self.vertical(F.pad(vertical, (self.half, self.half, self.half, 0)))[:, :, :columns]
        h = self.horizontal(F.pad(horizontal, (self.half, 0, 0, 0)))[:, :, :, :rows]
        h = h + self.vertical_to_horizontal(v)
        if self.cond is not None:
            cond_v, cond_h = self.cond(cond).permute(0, 2, 1).unsqueeze(-1).chunk(2, dim=1)
            v, h = v + cond_v, h + cond_h
        h = self.horizontal_out(_gate(h))
        return _gate(v), (h if self.first else horizontal + h)


class GatedPixelCNN(nn.Module):
    """p(x | cond) over (B, H, W) images of `levels` gray levels; `cond` is (B, W, cond_dim) or None.

    Returns logits (B, H, W, levels). `first_kernel` is the 'A' layer's size, followed by `num_layers`
    gated 'B' layers of size `kernel`.
    """

    def __init__(self, levels: int, channels: int = 32, num_layers: int = 5, first_kernel: int = 7,
                 kernel: int = 3, cond_dim: int = 0):
        super().__init__()
        self.levels = levels
        self.layers = nn.ModuleList([GatedLayer(levels, channels, first_kernel, True, cond_dim)])
        self.layers.extend(GatedLayer(channels, channels, kernel, False, cond_dim) for _ in range(num_layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                  nn.Conv2d(channels, levels, 1))
        # how many earlier columns one output column can see: sampling only recomputes this window
        self.context_columns = first_kernel // 2 + num_layers * (kernel // 2)

    def forward(self, images: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_onehot(F.one_hot(images, self.levels).to(self.head[1].weight.dtype), cond)

    def forward_onehot(self, onehot: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from a (B, H, W, levels) one-hot (or any real) encoding of the image."""
        x = onehot.permute(0, 3, 2, 1)  # (B, levels, W, H): a column is a conv row
        vertical, horizontal = x, x
        for layer in self.layers:
            vertical, horizontal = layer(vertical, horizontal, cond)
        return self.head(horizontal).permute(0, 3, 2, 1)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor | None, widths: torch.Tensor, height: int,
               generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Draw lines (B, height, max width) pixel by pixel; columns past each line's width stay 0.

        `cond` is (B, W, cond_dim) (or None with an unconditional model); `temperature` 0 takes the argmax.
        """
        batch, width = len(widths), int(widths.max())
        device = widths.device if cond is None else cond.device
        images = torch.zeros(batch, height, width, dtype=torch.long, device=device)
        for column in range(width):
            start = max(0, column - self.context_columns)
            window_cond = None if cond is None else cond[:, start: column + 1]
            for row in range(height):
                logits = self(images[:, :, start: column + 1], window_cond)[:, row, -1]
                if temperature == 0:
                    images[:, row, column] = logits.argmax(-1)
                else:
                    probs = torch.softmax(logits.float() / temperature, dim=-1)
                    images[:, row, column] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        valid = torch.arange(width, device=device)[None, :] < widths.to(device)[:, None]
        return images * valid[:, None, :]
