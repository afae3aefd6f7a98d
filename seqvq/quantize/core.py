"""The one vector quantizer (Łańcucki et al. 2020 §II; Huh et al. 2023 §2).

``VectorQuantizer`` replaces every valid input vector by its nearest codeword (eq. 1 / eq. 5), passes gradients
straight through (eq. 7), and returns the commitment loss of Huh eq. 8-10:

    loss = alpha * [(1 - beta) * d(z_e, sg z_q) + beta * d(sg z_e, z_q)]

with ``d`` the mean squared error over valid vectors and channels (Huh A.1 uses MSE).  The van den Oord /
Łańcucki eq. 2 form ``||sg e - q||^2 + gamma ||e - sg q||^2`` is ``alpha = 1 + gamma, beta = 1 / (1 + gamma)``;
the defaults (alpha = 1.25, beta = 0.8) are eq. 2 with van den Oord's gamma = 0.25, which the Łańcucki recipes use.
Huh et al. recommend alpha = 5, beta = 0.9-0.995 (A.1).  With ``codebook_update="ema"`` the codebook term carries
no gradient (the codebook is a buffer-like parameter moved by eq. 4) and is reported but not added to ``loss``.

Padded positions (mask False) pass through unchanged, get code -1, and touch neither the loss, the statistics,
the codebook nor the metrics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from .affine import AffineReparameterization
from .distance import nearest_codes
from .distributed import all_gather_rows, all_reduce_sum, broadcast
from .ema import EMACodebookUpdate
from .kmeans import kmeans
from .norm import MaskedBatchNorm
from .precision import autocast_disabled
from .reestimation import DataDependentReestimation
from .replacement import LRUReplacement
from .rng import BufferedGenerator
from .stochastic import annealed_temperature, gumbel_softmax_quantize, stochastic_codes


@dataclass
class QuantizedResult:
    """What one forward pass of :class:`VectorQuantizer` returns."""

    quantized: torch.Tensor  # same shape as the input; straight-through gradients
    codes: torch.Tensor  # int64, input shape without channels (+ trailing codebook axis when G > 1); -1 = padded
    loss: torch.Tensor  # scalar to add to the task loss
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # "codebook", "commitment" (unweighted d)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # "perplexity", "active_codes", ...

    def with_output_dtype(self, dtype: torch.dtype) -> "QuantizedResult":
        """The same result with ``quantized`` cast (differentiably) to ``dtype``, e.g. the input's."""
        return replace(self, quantized=self.quantized.to(dtype))


def squared_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error that is 0 (not NaN) for empty input."""
    return (a - b).pow(2).sum() / max(a.numel(), 1)


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """``2^H`` of the code distribution in ``counts`` (..., K); 1 for an all-zero row."""
    probs = counts / counts.sum(dim=-1, keepdim=True).clamp_min(1)
    entropy = -(probs * torch.log2(probs.clamp_min(1e-30))).sum(dim=-1)
    return torch.exp2(entropy)


def channel_last_with_mask(x: torch.Tensor, dim: int, channel_dim: int, mask: torch.Tensor | None,
                           lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Move the channels of ``x`` last and turn ``mask`` / ``lengths`` into one bool mask of ``x`` without its
    channel dim (None when every position is valid)."""
    x_last = x.movedim(channel_dim % x.dim(), -1)
    if x_last.shape[-1] != dim:
        raise ValueError(f"expected {dim} channels at dim {channel_dim}, got shape {tuple(x.shape)}")
    if mask is not None and lengths is not None:
        raise ValueError("pass either mask or lengths, not both")
    if lengths is not None:
        if x_last.dim() != 3:
            raise ValueError(f"lengths needs (B, T, D) input; got {x_last.dim()} dims — pass a mask instead")
        positions = torch.arange(x_last.shape[1], device=x_last.device)
        return x_last, positions.unsqueeze(0) < lengths.to(x_last.device).unsqueeze(1)
    if mask is not None:
        if mask.shape != x_last.shape[:-1]:
            raise ValueError(f"mask shape {tuple(mask.shape)} must be the input shape without the channel "
                             f"dim, {tuple(x_last.shape[:-1])}")
        return x_last, mask.to(torch.bool)
    return x_last, None


class VectorQuantizer(nn.Module):
    """Vector quantization layer with ``num_codebooks`` independent codebooks of ``codebook_size`` codes.

    Args:
        dim: channels of the input; split into ``num_codebooks`` equal parts, each quantized by its own codebook
            (Łańcucki §IV-C: CIFAR-10 uses 8 x 128 and 5 x 1024).
        distance: ``"l2"`` (squared Euclidean) or ``"cosine"`` (inputs and codes l2-normalised; Huh §5).
        alpha, beta: loss weights of Huh eq. 10 (see the module docstring for defaults).
        codebook_update: ``"gradient"`` (the codebook term trains it; give it its own learning rate with
            :func:`seqvq.param_groups`) or ``"ema"`` (Łańcucki eq. 4 with discount ``ema_decay``).
        pre_norm: BatchNorm over valid positions right before the codes (Łańcucki §III-A, "+BN").
        channel_dim: where the channels are; -1 (channel-last, the default) or e.g. 1 for (B, C, H, W).
        low_precision_search: bfloat16 search with float32 re-ranking; ``"auto"`` = on CUDA only, where it is
            faster (on CPU it is not).
        init_scale: codes start at N(0, init_scale^2 / d) per entry, i.e. norm ~ init_scale — smaller than
            BatchNorm-ed inputs (norm ~ sqrt(d)), which Łańcucki §III-A shows keeps many codes in use.

    Remedies for index collapse (each in its own file; all compose, all write codes through the affine map):
        affine: ``"learned"``, ``"ema"`` or a dict of :class:`AffineReparameterization` options
            (``mode``, ``lr_scale``, ``momentum``, ``codes_per_group``) — Huh §4.1.
        sync_nu: the synchronized commitment update; the codebook receives ``sync_nu`` x the task gradient at
            z_q (Huh §4.3, eq. 21).  0 is the ordinary straight-through estimator.
        kmeans_init: set the codebook by k-means++ on the first training batch (Huh App. A.7).
        reestimate: dict of :class:`DataDependentReestimation` options (``init_steps``, ``every``, ``steps``,
            ``reservoir_size``, ``kmeans_iterations``, ``steps_per_epoch``) — Łańcucki Algorithm 1.
        replace_dead_after: LRU life span in steps; codes unused that long are replaced by random valid inputs of
            the batch (or the reservoir) — Huh §3.
        assignment: ``"nearest"`` (eq. 5), or the baselines of Huh Table 3 while training: ``"stochastic"``
            (SQ-VAE sampling, Huh eq. 12; straight-through as usual) or ``"gumbel"`` (Gumbel-softmax: the output
            is the hard sample with gradients through the soft weights, no straight-through; keeps N x K weights
            for backward).  Evaluation always uses the nearest code.
        temperature: tau of the stochastic assignments; a number, or ``{"start", "end", "decay_steps"}`` for the
            exponential anneal over training steps.
        seed: seeds the buffered generators (reservoir, k-means++, replacement, sampling).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        num_codebooks: int = 1,
        *,
        distance: str = "l2",
        alpha: float = 1.25,
        beta: float = 0.8,
        codebook_update: str = "gradient",
        ema_decay: float = 0.99,
        ema_eps: float = 1e-5,
        pre_norm: bool = False,
        channel_dim: int = -1,
        low_precision_search: bool | str = "auto",
        init_scale: float = 1.0,
        affine: str | dict | None = None,
        sync_nu: float = 0.0,
        kmeans_init: bool = False,
        reestimate: dict | None = None,
        replace_dead_after: int | None = None,
        assignment: str = "nearest",
        temperature: float | dict = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        if dim % num_codebooks:
            raise ValueError(f"dim={dim} is not divisible by num_codebooks={num_codebooks}")
        if distance not in ("l2", "cosine"):
            raise ValueError(f"distance must be 'l2' or 'cosine', got {distance!r}")
        if codebook_update not in ("gradient", "ema"):
            raise ValueError(f"codebook_update must be 'gradient' or 'ema', got {codebook_update!r}")
        if assignment not in ("nearest", "stochastic", "gumbel"):
            raise ValueError(f"assignment must be 'nearest', 'stochastic' or 'gumbel', got {assignment!r}")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self.dim, self.codebook_size, self.num_codebooks = dim, codebook_size, num_codebooks
        self.code_dim = dim // num_codebooks
        self.distance, self.alpha, self.beta = distance, alpha, beta
        self.codebook_update, self.channel_dim = codebook_update, channel_dim
        self.low_precision_search, self.sync_nu = low_precision_search, sync_nu

        init = torch.randn(num_codebooks, codebook_size, self.code_dim) * (init_scale / math.sqrt(self.code_dim))
        self.codebook = nn.Parameter(init, requires_grad=codebook_update == "gradient")
        self.norm = MaskedBatchNorm(dim) if pre_norm else None
        self.ema = (EMACodebookUpdate(num_codebooks, codebook_size, self.code_dim, ema_decay, ema_eps)
                    if codebook_update == "ema" else None)
        if isinstance(affine, str):
            affine = {"mode": affine}
        self.affine = (AffineReparameterization(num_codebooks, codebook_size, self.code_dim, **affine)
                       if affine else None)
        self.reestimation = (DataDependentReestimation(dim, seed=seed, **reestimate) if reestimate else None)
        self.replacement = (LRUReplacement(num_codebooks, codebook_size, replace_dead_after, seed=seed + 2)
                            if replace_dead_after else None)
        self.kmeans_init = kmeans_init
        self.assignment, self.temperature = assignment, temperature
        if assignment != "nearest":
            self.sampling_rng = BufferedGenerator(seed + 4)
        if kmeans_init:
            self.init_rng = BufferedGenerator(seed + 3)
            self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        # Training steps taken (forward passes in training mode); rewrites counted, and per code the count at its
        # last wholesale rewrite (re-estimation, replacement) — seqvq.reset_optimizer_state compares them with the
        # count it last saw.
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("rewrites", torch.zeros((), dtype=torch.long))
        self.register_buffer("code_rewritten_at", torch.zeros(num_codebooks, codebook_size, dtype=torch.long))
        self.register_buffer("optimizer_synced_rewrites", torch.zeros((), dtype=torch.long))
        if self.ema is not None:
            self.ema.reset(self.effective_codebook().detach())

    # ----------------------------------------------------------------------------------------------- codebook
    def effective_codebook(self, signal: torch.Tensor | None = None) -> torch.Tensor:
        """The code vectors (G, K, d) that inputs are compared with: ``signal`` (default the codebook parameter)
        through the affine map when there is one."""
        signal = self.codebook if signal is None else signal
        return signal if self.affine is None else self.affine(signal)

    def signal_from_effective(self, vectors: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`effective_codebook`'s map, for writing chosen code vectors into the parameters."""
        return vectors if self.affine is None else self.affine.inverse(vectors)

    def codebook_parameters(self) -> list[nn.Parameter]:
        """The parameters that define the codes: the codebook and the learned affine map (Huh §4.1)."""
        return [self.codebook] + (list(self.affine.parameters()) if self.affine is not None else [])

    @torch.no_grad()
    def store_codebook(self, vectors: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Make the effective codes of ``rows`` (bool (G, K); all when None) equal ``vectors`` (G, K, d)."""
        signal = self.signal_from_effective(vectors).to(self.codebook.dtype)
        if rows is None:
            self.codebook.copy_(signal)
        else:
            self.codebook[rows] = signal[rows]

    @torch.no_grad()
    def rewrite_codes(self, vectors: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Replace codes wholesale (k-means, re-estimation, replacement): store them, restart their EMA
        statistics, and mark them so :func:`seqvq.reset_optimizer_state` clears their optimizer moments."""
        self.store_codebook(vectors, rows)
        if self.ema is not None:
            self.ema.reset(self.effective_codebook(), rows)
        self.rewrites += 1
        if rows is None:
            self.code_rewritten_at.copy_(self.rewrites.expand_as(self.code_rewritten_at))
        else:
            self.code_rewritten_at[rows] = self.rewrites

    def codes_to_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode ``codes`` (``...`` or ``(..., G)``) to vectors ``(..., dim)``; code -1 decodes to zeros."""
        if self.num_codebooks == 1 and (codes.dim() == 0 or codes.shape[-1] != 1):
            codes = codes.unsqueeze(-1)
        codebook = self._comparison_space(self.effective_codebook())
        groups = torch.arange(self.num_codebooks, device=codes.device) * self.codebook_size
        flat = codebook.reshape(-1, self.code_dim)
        vectors = flat[(codes.clamp_min(0) + groups).reshape(-1)].view(*codes.shape, self.code_dim)
        vectors = vectors * (codes >= 0).unsqueeze(-1)
        return vectors.reshape(*codes.shape[:-1], self.dim)

    def _comparison_space(self, vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(vectors, dim=-1) if self.distance == "cosine" else vectors

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> QuantizedResult:
        """Quantize ``x`` (any floating dtype; computed in the codebook's dtype, see :mod:`.precision`)."""
        with autocast_disabled(x.device):
            result = self._forward(x.to(self.codebook.dtype), mask, lengths)
        return result.with_output_dtype(x.dtype)

    def _forward(self, x: torch.Tensor, mask: torch.Tensor | None, lengths: torch.Tensor | None) -> QuantizedResult:
        channel_dim = self.channel_dim % x.dim()
        x_last, mask = channel_last_with_mask(x, self.dim, self.channel_dim, mask, lengths)
        if self.norm is not None:
            x_last = self.norm(x_last, mask)
        z = x_last.reshape(-1, self.dim) if mask is None else x_last[mask]

        quantized_z, codes_z, loss, losses, metrics = self.quantize_vectors(z)

        grid = x_last.shape[:-1]
        if mask is None:
            quantized = quantized_z.reshape(x_last.shape)
            codes = codes_z.reshape(*grid, self.num_codebooks)
        else:
            quantized = x_last.index_put((mask,), quantized_z.to(x_last.dtype))
            codes = codes_z.new_full((*grid, self.num_codebooks), -1).index_put((mask,), codes_z)
        if self.num_codebooks == 1:
            codes = codes.squeeze(-1)
        return QuantizedResult(quantized.movedim(-1, channel_dim), codes, loss, losses, metrics)

    def quantize_vectors(self, z: torch.Tensor):
        """Quantize the valid vectors ``z`` (N, dim); returns (quantized, codes (N, G), loss, losses, metrics)."""
        groups = self.num_codebooks
        z_e = self._comparison_space(z.reshape(z.shape[0], groups, self.code_dim))
        if self.training:
            self.step += 1
            self._prepare_codebook(z_e.detach())
        # In training the codebook may be rewritten in place after assignment (EMA, replacement); the graph uses a
        # copy so backward sees the values the forward pass used.
        signal = self.codebook.clone() if self.training else self.codebook
        codebook = self._comparison_space(self.effective_codebook(signal))
        sampled = None
        if self.training and self.assignment != "nearest":
            codes, sampled = self.sample(z_e, codebook)
        else:
            codes = self.assign(z_e.detach(), codebook.detach())
        offsets = torch.arange(groups, device=z.device) * self.codebook_size
        z_q = codebook.reshape(-1, self.code_dim)[codes + offsets]  # (N, G, d), differentiable w.r.t. codebook

        commitment = squared_error(z_e, z_q.detach())
        codebook_term = squared_error(z_e.detach(), z_q)
        if self.reestimation is not None and self.reestimation.passes_through(int(self.step)):
            # Algorithm 1: no quantization before M_init.  The zero-weighted term keeps the codebook in the graph,
            # so DistributedDataParallel does not stop on parameters without a gradient.
            quantized, loss = z_e, 0.0 * z_q.sum()
        else:
            loss = self.alpha * (1.0 - self.beta) * commitment
            if self.codebook_update == "gradient":
                loss = loss + self.alpha * self.beta * codebook_term
            quantized = z_e + (z_q - z_e).detach()  # straight-through estimator, Huh eq. 7
            if sampled is not None:
                quantized = sampled  # Gumbel-softmax: gradients through the soft weights instead
            elif self.sync_nu:
                quantized = quantized + self.sync_nu * (z_q - z_q.detach())  # Huh eq. 21

        counts = self.code_counts(codes)
        if self.training:
            self._update_codebook(z_e.detach(), codes, counts)
        metrics = self.usage_metrics(counts, commitment.detach())
        return quantized.reshape(z.shape), codes, loss, {"codebook": codebook_term, "commitment": commitment}, metrics

    @torch.no_grad()
    def _prepare_codebook(self, z_e: torch.Tensor) -> None:
        """Before assignment: reservoir, data-dependent re-estimation (Algorithm 1) or first-batch k-means."""
        step, flat = int(self.step), z_e.reshape(z_e.shape[0], self.dim)
        if self.reestimation is not None:
            if self.reestimation.collecting(step):
                self.reestimation.reservoir.add(flat)
            if self.reestimation.reestimates_at(step) and self.reestimation.reservoir.filled:
                self.rewrite_codes(broadcast(self.reestimation.codebook(self.num_codebooks, self.codebook_size)))
        elif self.kmeans_init and not self.initialized:
            points = all_gather_rows(flat).view(-1, self.num_codebooks, self.code_dim)
            if points.shape[0]:
                with self.init_rng.generator() as generator:
                    centroids = torch.stack([kmeans(points[:, g].contiguous(), self.codebook_size, 5, generator)
                                             for g in range(self.num_codebooks)])
                self.rewrite_codes(broadcast(centroids))
                self.initialized.fill_(True)

    @torch.no_grad()
    def _update_codebook(self, z_e: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor) -> None:
        """After assignment: EMA codebook (eq. 4), affine statistics (A.12), LRU replacement."""
        if self.ema is not None:
            self.store_codebook(self.ema.update(z_e, codes))
        if self.affine is not None:
            offsets = torch.arange(self.num_codebooks, device=codes.device) * self.codebook_size
            selected_signal = self.codebook.reshape(-1, self.code_dim)[codes + offsets]
            self.affine.update_statistics(z_e, selected_signal, codes)
        if self.replacement is not None:
            dead = self.replacement.dead_codes(counts, int(self.step))
            candidates = z_e
            if self.reestimation is not None and self.reestimation.reservoir.filled:
                reservoir = self.reestimation.reservoir
                candidates = reservoir.samples[: reservoir.filled].view(-1, self.num_codebooks, self.code_dim)
            vectors = self.replacement.replacements(dead, candidates, int(self.step))
            if vectors is not None:
                self.rewrite_codes(vectors, dead)

    def current_temperature(self) -> float:
        if isinstance(self.temperature, dict):
            return annealed_temperature(int(self.step), **self.temperature)
        return float(self.temperature)

    def sample(self, z_e: torch.Tensor, codebook: torch.Tensor):
        """Training-time stochastic assignment: codes (N, G) and, for Gumbel-softmax, the differentiable output
        (N, G, d).  The device generator is seeded from a buffered CPU generator, so resuming is exact."""
        with self.sampling_rng.generator() as generator:
            seed = int(torch.randint(2**62, (1,), generator=generator))
        device_generator = torch.Generator(device=z_e.device).manual_seed(seed)
        tau = self.current_temperature()
        if self.assignment == "stochastic":
            codes = [stochastic_codes(z_e[:, g].detach(), codebook[g].detach(), tau, device_generator)
                     for g in range(self.num_codebooks)]
            return torch.stack(codes, dim=1), None
        outputs = [gumbel_softmax_quantize(z_e[:, g], codebook[g], tau, hard=True, generator=device_generator)
                   for g in range(self.num_codebooks)]
        return torch.stack([c for _, c in outputs], dim=1), torch.stack([q for q, _ in outputs], dim=1)

    def assign(self, z_e: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """Nearest code per group: (N, G, d) x (G, K, d) -> (N, G) int64, chunked (never N x K in memory)."""
        low_precision = self.low_precision_search
        if low_precision == "auto":
            low_precision = z_e.is_cuda
        return torch.stack([nearest_codes(z_e[:, g].contiguous(), codebook[g], low_precision=bool(low_precision),
                                          with_distances=False)[0]
                            for g in range(self.num_codebooks)], dim=1)

    @staticmethod
    def usage_metrics(counts: torch.Tensor, quantization_error: torch.Tensor) -> dict[str, torch.Tensor]:
        """Batch perplexity 2^H and active codes (both averaged over codebooks), and mean quantization error."""
        return {
            "perplexity": perplexity(counts).mean(),
            "active_codes": (counts > 0).sum(dim=-1).float().mean(),
            "quantization_error": quantization_error,
        }

    @torch.no_grad()
    def code_counts(self, codes: torch.Tensor) -> torch.Tensor:
        """Usage counts (G, K) of the valid ``codes`` (N, G); in training summed over ranks (replacement needs the
        global usage).  Evaluation may run on one rank alone, so in eval mode no collective is issued."""
        offsets = torch.arange(self.num_codebooks, device=codes.device) * self.codebook_size
        counts = torch.bincount((codes + offsets).reshape(-1), minlength=self.num_codebooks * self.codebook_size)
        counts = counts.view(self.num_codebooks, self.codebook_size).float()
        return all_reduce_sum(counts) if self.training else counts
