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
        self.vertical_conv = nn.Conv2d(in_channels, 2 * channels, (reach, kernel))
        self.horizontal_conv = nn.Conv2d(in_channels, 2 * channels, (1, reach))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_out = nn.Conv2d(channels, channels, 1)
        self.cond = nn.Linear(cond_dim, 4 * channels) if cond_dim else None

    def vertical(self, vertical, cond):
        """Vertical stack output and what it adds to the horizontal stack (both see only earlier columns)."""
        v = self.vertical_conv(F.pad(vertical, (self.half, self.half, self.half, 0)))[:, :, :vertical.shape[2]]
        to_horizontal = self.vertical_to_horizontal(v)
        if self.cond is not None:
            cond_v, cond_h = self.cond(cond).permute(0, 2, 1).unsqueeze(-1).chunk(2, dim=1)
            v, to_horizontal = v + cond_v, to_horizontal + cond_h
        return _gate(v), to_horizontal

    def horizontal(self, horizontal, to_horizontal):
        """Horizontal stack: the pixels above in the same column, plus the vertical stack's contribution."""
        h = self.horizontal_conv(F.pad(horizontal, (self.half, 0, 0, 0)))[:, :, :, :horizontal.shape[3]]
        h = self.horizontal_out(_gate(h + to_horizontal))
        return h if self.first else horizontal + h


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
        return self._horizontal_pass(x, self._vertical_pass(x, cond)).permute(0, 3, 2, 1)

    def _vertical_pass(self, x, cond) -> list[torch.Tensor]:
        """Per layer, the vertical stack's contribution to the horizontal stack (B, 2C, W, H)."""
        contributions = []
        for layer in self.layers:
            x, to_horizontal = layer.vertical(x, cond)
            contributions.append(to_horizontal)
        return contributions

    def _horizontal_pass(self, x, contributions) -> torch.Tensor:
        for layer, to_horizontal in zip(self.layers, contributions):
            x = layer.horizontal(x, to_horizontal)
        return self.head(x)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor | None, widths: torch.Tensor, height: int,
               generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Draw lines (B, height, max width) pixel by pixel; columns past each line's width stay 0.

        `cond` is (B, W, cond_dim) (or None with an unconditional model); `temperature` 0 takes the argmax.
        The vertical stacks of a column depend only on earlier columns: they run once per column, on the last
        `context_columns`, and only the horizontal stacks run per pixel, on the pixels above it.
        """
        batch, width = len(widths), int(widths.max())
        device = widths.device if cond is None else cond.device
        dtype = self.head[1].weight.dtype
        images = torch.zeros(batch, height, width, dtype=torch.long, device=device)
        for column in range(width):
            start = max(0, column - self.context_columns)
            window = F.one_hot(images[:, :, start: column + 1], self.levels).to(dtype).permute(0, 3, 2, 1)
            window_cond = None if cond is None else cond[:, start: column + 1]
            contributions = [c[:, :, -1:] for c in self._vertical_pass(window, window_cond)]
            for row in range(height):
                above = window[:, :, -1:, : row + 1]  # this column up to the pixel being drawn
                rows = [c[..., : row + 1] for c in contributions]
                logits = self._horizontal_pass(above, rows)[:, :, 0, row]
                if temperature == 0:
                    drawn = logits.argmax(-1)
                else:
                    probs = torch.softmax(logits.float() / temperature, dim=-1)
                    drawn = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                images[:, row, column] = drawn
                window[:, :, -1, row] = F.one_hot(drawn, self.levels).to(dtype)
        valid = torch.arange(width, device=device)[None, :] < widths.to(device)[:, None]
        return images * valid[:, None, :]
