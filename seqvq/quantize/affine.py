"""Affine re-parameterization of the codebook (Huh et al. 2023, §4.1 eq. 15; App. A.1 and A.12).

``c_i = c_mean + c_std * c_signal_i`` with ``c_mean, c_std`` shared by every code of a codebook (or of a group
of ``codes_per_group`` codes): every code moves with the shared parameters even when it is not selected, which
keeps the codebook matched to the moments of the encoder outputs ("internal codebook covariate shift").

* ``mode="learned"`` (A.1): ``c_std = 1 + lr_scale * s``, ``c_mean = lr_scale * b`` with s, b trained by the task
  gradient; ``lr_scale`` is the affine parameters' learning-rate scale.
* ``mode="ema"`` (A.12, eq. 38-45): running moments of the encoder outputs z_e and of the selected codes z_q (in the
  signal space) with momentum m; the codes are centred and rescaled to the embedding moments,
  ``c = sigma_e / sigma_q * (c_signal - mu_q) + mu_e``.  (Eq. 43 prints ``+ sigma_ema(z_e)``; matching the
  moments needs ``+ mu_ema(z_e)``, which is what we use.)  The paper leaves the ratio unbounded; here
  ``sigma_e / sigma_q`` is clamped to ``[1 / max_ratio, max_ratio]`` (default 1,000, far above the ~sqrt(d) /
  init_scale of a healthy codebook): when the selected codes of a group coincide (one code used, sigma_q -> 0) the
  raw ratio ``sigma_e / sqrt(eps)`` would fling every unselected code of the group far from the data.

``inverse`` maps effective codes back to the signal space, so k-means, re-estimation, replacement and the EMA
codebook update all write the effective codes they intend.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from .distributed import all_reduce_sum


@dataclass(frozen=True)
class AffineOptions:
    """The codebook's affine re-parameterization (``VectorQuantizer(affine=...)``; the module docstring): ``mode``
    ``"learned"`` (Huh A.1, with the learning-rate scale ``lr_scale``) or ``"ema"`` (Huh A.12, with ``momentum``,
    ``eps`` and the ratio clamp ``max_ratio``), shared by each codebook or by each group of ``codes_per_group``
    codes; or ``"linear"``, SimVQ's learned linear map (:class:`~seqvq.quantize.linear_map.LinearCodebookMap`,
    Zhu et al. 2024), which takes no other option."""

    mode: str = "learned"
    lr_scale: float = 1.0
    momentum: float = 0.1
    codes_per_group: int | None = None
    eps: float = 1e-5
    max_ratio: float = 1e3

    def __post_init__(self):
        if self.mode not in ("learned", "ema", "linear"):
            raise ValueError(f"affine mode must be 'learned', 'ema' or 'linear', got {self.mode!r}")
        others = [field.name for field in dataclasses.fields(self)
                  if field.name != "mode" and getattr(self, field.name) != field.default]
        if self.mode == "linear" and others:
            raise ValueError(f"affine mode 'linear' (SimVQ) takes no other option; got {others}")
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"affine momentum must be in (0, 1], got {self.momentum}")
        if self.max_ratio < 1.0:
            raise ValueError(f"affine max_ratio must be >= 1, got {self.max_ratio}")


class AffineReparameterization(nn.Module):
    def __init__(self, num_codebooks: int, codebook_size: int, dim: int, options: AffineOptions = AffineOptions()):
        super().__init__()
        if options.mode not in ("learned", "ema"):
            raise ValueError(f"affine mode must be 'learned' or 'ema', got {options.mode!r}")
        codes_per_group = options.codes_per_group or codebook_size
        if codebook_size % codes_per_group:
            raise ValueError(f"codes_per_group={codes_per_group} does not divide codebook_size={codebook_size}")
        self.mode, self.lr_scale, self.momentum = options.mode, options.lr_scale, options.momentum
        self.eps, self.max_ratio, self.codes_per_group = options.eps, options.max_ratio, codes_per_group
        shape = (num_codebooks, codebook_size // codes_per_group, dim)
        if self.mode == "learned":
            self.scale = nn.Parameter(torch.zeros(shape))
            self.shift = nn.Parameter(torch.zeros(shape))
        else:
            self.register_buffer("embedding_mean", torch.zeros(shape))
            self.register_buffer("embedding_var", torch.ones(shape))
            self.register_buffer("code_mean", torch.zeros(shape))
            self.register_buffer("code_var", torch.ones(shape))

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c_std, c_mean)`` with shape (G, groups, d)."""
        if self.mode == "learned":
            return 1.0 + self.lr_scale * self.scale, self.lr_scale * self.shift
        ratio = torch.sqrt((self.embedding_var + self.eps) / (self.code_var + self.eps))
        ratio = ratio.clamp(1.0 / self.max_ratio, self.max_ratio)
        return ratio, self.embedding_mean - ratio * self.code_mean

    def _grouped(self, codebook: torch.Tensor) -> torch.Tensor:
        groups, size, dim = codebook.shape
        return codebook.view(groups, size // self.codes_per_group, self.codes_per_group, dim)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        """Effective codes (G, K, d) from the signal codebook (eq. 15)."""
        std, mean = self.coefficients()
        return (self._grouped(signal) * std.unsqueeze(2) + mean.unsqueeze(2)).reshape(signal.shape)

    def inverse(self, effective: torch.Tensor) -> torch.Tensor:
        std, mean = self.coefficients()
        return ((self._grouped(effective) - mean.unsqueeze(2)) / std.unsqueeze(2)).reshape(effective.shape)

    @torch.no_grad()
    def update_statistics(self, z_e: torch.Tensor, signal_codes: torch.Tensor, codes: torch.Tensor) -> None:
        """EMA variant: fold in the moments of the valid z_e (N, G, d) and of their selected signal codes, per
        code group (eq. 38-41), summed over ranks.

        The batch moments take two passes, each one all-reduce for both sets of vectors: the global mean first,
        then the sum of squares around it.  (The one-pass ``E[x^2] - E[x]^2`` loses everything in float32 far from
        the origin: at an offset of 3,000 the variance of unit-variance data comes out 0.75.)  The collectives are
        issued on every rank, with or without valid vectors.  Groups with fewer than two vectors in the global
        batch keep their running moments.
        """
        if self.mode != "ema":
            return
        groups, code_groups, dim = self.embedding_mean.shape
        slots = groups * code_groups
        group_index = codes // self.codes_per_group  # (N, G)
        flat = (group_index + torch.arange(groups, device=codes.device) * code_groups).reshape(-1)
        rows = torch.stack([z_e.reshape(-1, dim), signal_codes.reshape(-1, dim)]).to(self.embedding_mean.dtype)

        count = rows.new_zeros(slots).index_add_(0, flat, torch.ones_like(flat, dtype=rows.dtype))  # as bincount
        totals = rows.new_zeros(2, slots, dim).index_add_(1, flat, rows)
        reduced = all_reduce_sum(torch.cat([count.expand(2, slots).unsqueeze(2), totals], dim=2))
        count, mean = reduced[0, :, :1], reduced[:, :, 1:] / reduced[:, :, :1].clamp_min(1)
        squares = rows.new_zeros(2, slots, dim).index_add_(1, flat, (rows - mean[:, flat]).pow(2))
        var = all_reduce_sum(squares) / count.clamp_min(1)

        seen = (count > 1).view(groups, code_groups, 1)
        for index, (running_mean, running_var) in enumerate(((self.embedding_mean, self.embedding_var),
                                                             (self.code_mean, self.code_var))):
            running_mean.copy_(torch.where(seen, running_mean.lerp(mean[index].view_as(running_mean), self.momentum),
                                           running_mean))
            running_var.copy_(torch.where(seen, running_var.lerp(var[index].view_as(running_var), self.momentum),
                                          running_var))
