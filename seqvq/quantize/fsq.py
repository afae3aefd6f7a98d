"""Finite scalar quantization (FSQ; Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple",
arXiv 2309.15505): a codebook-free baseline.

Each of ``len(levels)`` channels is bounded to ``L_i`` values and rounded, with straight-through gradients through
the rounding (§2):

    bound(z) = tanh(z + shift) * (L - 1)(1 + eps) / 2 - offset,        z_hat = round(bound(z)) / floor(L/2),

with ``offset = 0.5`` and ``shift = atanh(offset / half_level)`` for even ``L`` (so the rounded values are the ``L``
integers ``-L/2 .. L/2 - 1``), 0 for odd ``L`` (``-(L-1)/2 .. (L-1)/2``).  The implicit codebook is the product of
the levels; a code's index is the mixed-radix number of its per-channel levels.  There is no codebook to collapse
and no auxiliary loss (``loss`` is 0).

Inputs of another width than ``len(levels)`` go through a learned linear projection in and out (our choice, so that
FSQ drops into a model whose bottleneck has another width).  Padding follows :class:`VectorQuantizer`: padded
positions pass through unchanged with code -1 and touch no metric.  Metrics (``perplexity``, ``active_codes``) are
those of this pass's valid codes, from their unique values (the implicit codebook may be too large to count).
The quantizer keeps no state beyond the projections (and the noise generator below), so nothing is reduced under DDP
and the metrics are per rank.

Symmetric bounds (``symmetric=True``; the symmetry-preserving FSQ of Parker et al. 2024, "Scaling Transformers for
Low-Bitrate High-Quality Speech Coding", arXiv 2411.19842, §3.2): level ``k`` of ``L`` is ``2k/(L - 1) - 1``, so
every channel's levels are symmetric about 0 and span [-1, 1] — for even ``L`` there is no level at 0, where FSQ's
``-L/2 .. L/2 - 1`` lean to the negative side.  The bound is ``tanh(z) (L - 1)/2`` (no ``eps``: the outer levels are
reached at ``|tanh z| >= (L - 2)/(L - 1)``), rounded on the grid of half-integers (even ``L``) or integers (odd
``L``), then divided by ``(L - 1)/2``; for odd ``L`` the levels are FSQ's.  Codes are the level indices ``k`` in
the same mixed radix.

Noise substitution (``noise_dropout=p``, training only): each valid vector, with probability ``p``, replaces the
rounding of all its channels by additive uniform noise of one level step, ``bound(z) + u``, ``u ~ U(-1/2, 1/2)``
in level units — the additive uniform noise that Ballé et al. 2017 ("End-to-end Optimized Image Compression",
arXiv 1611.01704) train with in place of rounding, applied to FSQ with a probability by Parker et al. 2024 (§3.2,
their noise-approximated quantization; ``noise_dropout`` in their released code, stable-audio-tools' DitheredFSQ).
The gradient is that of the bound either way (the noise is a constant), and the vector keeps the code of its
nearest level; evaluation rounds.  The draw is per valid vector from a device generator seeded by a buffered one
(``seed``), so resuming is exact and every rank draws from the same seeds.  (The released code draws per example,
which would make a padded batch draw otherwise than its frames unpadded, and a second draw there also lets some
examples through unquantized; we implement the noise substitution alone.)
"""
from __future__ import annotations

import math

import torch

from .codebook_free import CodebookFreeQuantizer, code_space_metrics
from .core import QuantizedResult
from .rng import BufferedGenerator


class FiniteScalarQuantizer(CodebookFreeQuantizer):
    """FSQ with per-channel ``levels`` (e.g. ``[8, 5, 5, 5]`` for about 2^10 codes; FSQ Table 1).

    Args:
        dim: channels of the input; projected to ``len(levels)`` and back when they differ.
        levels: values per quantized channel, each >= 2.
        pre_norm: BatchNorm over valid positions before the quantizer (Łańcucki §III-A, "+BN"), as for
            :class:`VectorQuantizer`.
        channel_dim: where the channels are (-1 = channel-last).
        eps: widens the bound slightly past the outer levels (``1 + eps``, default 1e-3), so that ``L = 2``
            (``shift = atanh(0.5 / half_level)``) is finite and the outer levels are reached; not with
            ``symmetric``, whose bound needs none.
        symmetric: levels ``2k/(L - 1) - 1``, symmetric about 0 (Parker et al. 2024; module docstring).
        noise_dropout: probability that a training vector's rounding is replaced by uniform noise of one level
            step (Ballé et al. 2017; module docstring).
        seed: seeds the noise's buffered generator.
    """

    def __init__(self, dim: int, levels: list[int], *, pre_norm: bool = False, channel_dim: int = -1,
                 eps: float | None = None, symmetric: bool = False, noise_dropout: float = 0.0, seed: int = 0):
        if not levels or any(int(level) < 2 for level in levels):
            raise ValueError(f"FiniteScalarQuantizer: levels must be a non-empty list of integers >= 2, got {levels}")
        codebook_size = math.prod(int(level) for level in levels)
        if codebook_size >= 2**63:
            raise ValueError(f"FiniteScalarQuantizer: {codebook_size} codes do not fit int64 codes; use fewer "
                             "or smaller levels")
        if symmetric and eps is not None:
            raise ValueError(f"FiniteScalarQuantizer: eps={eps} widens FSQ's bound, and symmetric=True has a bound "
                             "that needs none; drop eps or symmetric")
        if not 0.0 <= noise_dropout <= 1.0:
            raise ValueError(f"FiniteScalarQuantizer: noise_dropout must be in [0, 1], got {noise_dropout}")
        super().__init__(dim, len(levels), pre_norm, channel_dim)
        self.codebook_size, self.symmetric, self.noise_dropout = codebook_size, symmetric, noise_dropout
        self.eps = None if symmetric else (1e-3 if eps is None else eps)
        if noise_dropout:
            self.noise_rng = BufferedGenerator(seed)
        level_tensor = torch.tensor([int(level) for level in levels], dtype=torch.long)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), level_tensor[:-1]]), dim=0)
        # Constants of the level layout, buffers so they follow .to(device) (not trained, not state).
        self.register_buffer("levels", level_tensor, persistent=False)
        self.register_buffer("basis", basis, persistent=False)

    def centre(self, dtype: torch.dtype) -> torch.Tensor:
        """Per channel, the level index of 0 and the divisor that takes levels to the output: ``floor(L/2)``, or
        ``(L - 1)/2`` with symmetric bounds."""
        if self.symmetric:
            return (self.levels - 1).to(dtype) / 2
        return (self.levels // 2).to(dtype)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash each channel into the range of its levels (before rounding), in level units about 0."""
        if self.symmetric:
            return torch.tanh(z) * self.centre(z.dtype)
        levels = self.levels.to(z.dtype)
        half_level = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0).to(z.dtype)
        shift = torch.atanh(offset / half_level)
        return torch.tanh(z + shift) * half_level - offset

    def quantize(self, x: torch.Tensor, mask: torch.Tensor | None, lengths: torch.Tensor | None) -> QuantizedResult:
        x_last, mask, h = self.valid_inputs(x, mask, lengths)
        bounded = self.bound(h)
        # Each channel's level as a digit in 0..L-1, in int64 (exact for any L), and its value in level units.
        if self.symmetric:
            centre = self.centre(h.dtype)
            digits = torch.minimum((bounded + centre).round().long().clamp_min(0), self.levels - 1)
            rounded = digits.to(h.dtype) - centre
        else:
            half_width = self.levels // 2
            # The bound reaches (L - 1) eps / 2 past the outer levels, which rounds one level further once that is
            # 1/2 (L >= 1001): clamp.
            digits = torch.minimum((bounded.round().long() + half_width).clamp_min(0), self.levels - 1)
            rounded = (digits - half_width).to(h.dtype)  # as codes_to_vectors computes it
        if self.training and self.noise_dropout:
            rounded = self.substitute_noise(bounded, rounded)
        levels_out = (bounded + (rounded - bounded).detach()) / self.centre(h.dtype)  # straight-through rounding
        codes = (digits * self.basis).sum(dim=-1)
        return self.output(x, x_last, mask, levels_out, codes, x_last.new_zeros(()), {},
                           code_space_metrics(codes.detach()))

    def substitute_noise(self, bounded: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
        """``rounded`` (N, width) with each vector, with probability ``noise_dropout``, replaced by ``bounded`` plus
        uniform noise of one level step (module docstring)."""
        with self.noise_rng.generator() as generator:
            seed = int(torch.randint(2**62, (1,), generator=generator))
        device_generator = torch.Generator(device=bounded.device).manual_seed(seed)
        draw = dict(generator=device_generator, device=bounded.device, dtype=bounded.dtype)
        substituted = torch.rand(bounded.shape[0], 1, **draw) < self.noise_dropout
        noise = torch.rand(bounded.shape, **draw) - 0.5
        return torch.where(substituted, bounded + noise, rounded)

    def codes_to_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode codes ``(...)`` to vectors ``(..., dim)``; code -1 decodes to zeros."""
        digits = (codes.clamp_min(0).unsqueeze(-1) // self.basis) % self.levels
        if self.symmetric:
            centre = self.centre(torch.float32)
            levels_out = (digits.float() - centre) / centre
        else:
            half_width = self.levels // 2
            levels_out = (digits - half_width).float() / half_width.float()
        return self.decode_width(levels_out) * (codes >= 0).unsqueeze(-1)
