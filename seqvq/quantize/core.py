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

One training step, in order (``VectorQuantizer.quantize_vectors``; the only place the order is decided):

1. collect      offer the valid z_e to the reservoir while Algorithm 1 still has a re-estimation to come.
2. re-estimate  at Algorithm 1's steps, codebook <- k-means++(reservoir), then the reservoir restarts (default);
                or, with ``kmeans_init``, k-means on the first batch.
3. assign       nearest code (eq. 5), a sampled one or the transport plan's (``assignment``), with the codebook
                as phase 2 left it.
4. output       before M_init the input passes through (Algorithm 1); else straight-through (eq. 7) or the
                rotation trick (``rotation.py``), plus the sync term (eq. 21), or the Gumbel-softmax or IBQ output; the
                losses of eq. 10, and the usage regularizer (``usage.py``) while training.
5. statistics   EMA codebook (Łańcucki eq. 4), EMA affine moments (Huh A.12), LRU usage clock.
6. replace      LRU dead codes <- random valid z_e of this batch (Huh §3).

Precedence, written once: before M_init there is no codebook — no quantization, no codebook term (reported
as 0) and no replacement; a step that rewrote the codebook by k-means (phase 2) replaces nothing; replacement
draws from this batch only (a reservoir may hold vectors from long ago, warm-up included); every rewrite
restarts the rewritten codes' EMA statistics, LRU clocks and optimizer moments.

Which phases run depends on the pass (``VectorQuantizer.pass_kind``, a :class:`PassKind`, set for a whole model
by :func:`quantizer_passes`): a training step has exactly one state-updating pass, so ``step`` counts optimizer
steps and every vector enters the reservoir, the EMA and the affine statistics once.

* ``"step"`` (default): all six phases; ``loss`` is eq. 10.
* ``"task_step"``: the task pass of alternating optimization (Huh eq. 18): all six phases, but the codebook
  term enters ``loss`` with weight 0 — the inner passes train the codebook — so the codebook's gradient from
  this pass is exactly the sync term (eq. 21), the Gumbel-softmax one, or the usage regularizer's (part of the
  task loss, like them).
* ``"codebook_fit"``: an inner pass of alternating optimization (eq. 17): phases 3-4 with the state as it is.
* ``"bypass"``: the gradient gap's unquantized pass (Huh eq. 14): phases 3-4, output = input, zero loss.
* ``"zero_loss"``: phases 3-4, quantized output, zero loss (eq. 14 is about the task loss alone).

The last three change no buffer, the sampler's included: a sampled assignment (``assignment``) in them draws from
``sampling_rng`` without advancing it — from the seed the next state-updating pass will draw, plus one — so every
such pass between two state-updating ones draws the same noise (other than the state-updating pass's), and the
state-updating passes draw the same samples however many other passes ran (k inner steps, a diagnostic's passes,
more on one rank than another).

Gradient accumulation (:func:`seqvq.quantize.accumulation.accumulated_step`): a state-updating pass runs phases 3-4
and keeps its valid vectors and codes; phases 1-2 and 5-6 run once per optimizer step on all of them
(``finish_accumulated_step``).

In evaluation mode every pass is phases 3-4 with the nearest code.  The quantizer's ``pre_norm`` BatchNorm,
like every other BatchNorm of a model, updates its running moments on every forward pass in training mode.
"""
from __future__ import annotations

import contextlib
import enum
import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..options import options_from
from .affine import AffineOptions, AffineReparameterization
from .bridge import BridgeOptions, CodebookBridge, check_bridge
from .distance import nearest_codes
from .distributed import all_gather_rows, all_reduce_sum, broadcast
from .diveq import DiVeQOptions, check_diveq, diveq_output, space_filling_quantize
from .ema import EMACodebookUpdate
from .groups import code_vectors, grouped_counts
from .ibq import check_index_backprop, index_backprop_output
from .kmeans import kmeans
from .linear_map import LinearCodebookMap
from .norm import MaskedBatchNorm
from .optimal_transport import SinkhornOptions, optimal_transport_codes
from .precision import autocast_disabled
from .reestimation import DataDependentReestimation, ReestimationOptions
from .replacement import LRUReplacement
from .rng import BufferedGenerator
from .rotation import rotation_trick
from .stochastic import TemperatureAnneal, gumbel_softmax_quantize, stochastic_codes
from .usage import UsageRegularizerOptions, kl_to_uniform, mean_soft_assignment


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


class PassKind(str, enum.Enum):
    """What a forward pass of :class:`VectorQuantizer` does (the module docstring).  A ``str``: each kind equals
    its name, ``PassKind.STEP == "step"``, so the names may be passed wherever a kind is taken."""

    STEP = "step"
    TASK_STEP = "task_step"
    CODEBOOK_FIT = "codebook_fit"
    BYPASS = "bypass"
    ZERO_LOSS = "zero_loss"

    def __str__(self) -> str:
        return self.value


STATE_UPDATING_PASSES = (PassKind.STEP, PassKind.TASK_STEP)


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

    Remedies for index collapse (each in its own file; all write codes through the affine map; the module
    docstring gives the order they act in within a step).  A remedy's options are a frozen dataclass defined next
    to it, or a mapping of its fields (converted here; an unknown key is refused, naming the option); None or an
    empty mapping leaves the remedy off.  A combination that cannot work is refused here:
        affine: :class:`~seqvq.quantize.affine.AffineOptions` (``mode``, ``lr_scale``, ``momentum``,
            ``codes_per_group``, ``eps``, ``max_ratio``), or its mode alone: ``"learned"`` or ``"ema"`` — Huh
            §4.1.  ``"learned"`` is trained by the codebook gradient, so not with ``codebook_update="ema"``.
            ``"linear"``: SimVQ's frozen basis x learned d x d matrix
            (:class:`~seqvq.quantize.linear_map.LinearCodebookMap`); also gradient-trained.
        bridge: :class:`~seqvq.quantize.bridge.BridgeOptions` (``group``, ``width``, ``depth``, ``heads``): VQBridge
            (FVQ, :mod:`.bridge`): the codes are the frozen codebook plus a learned compress-process-recover map of
            the whole codebook, trained by the codebook gradient.  It has no inverse, so not with ``affine``,
            ``codebook_update="ema"``, ``kmeans_init``, ``reestimate`` or ``replace_dead_after``.
        sync_nu: the synchronized commitment update; the codebook receives ``sync_nu`` x the task gradient at
            z_q (Huh §4.3, eq. 21).  0 is the ordinary straight-through estimator.  Needs a codebook gradient
            (not ``codebook_update="ema"``) and a straight-through output (not ``assignment="gumbel"``).
        kmeans_init: set the codebook by k-means++ on the first training batch (Huh App. A.7); not with
            ``reestimate``, whose schedule starts with the same k-means.
        reestimate: :class:`~seqvq.quantize.reestimation.ReestimationOptions` (``init_steps``, ``every``,
            ``steps``, ``reservoir_size``, ``kmeans_iterations``, ``steps_per_epoch``, ``restart_reservoir``) —
            Łańcucki Algorithm 1.
        replace_dead_after: LRU life span in steps; codes unused that long are replaced by random valid inputs of
            the batch — Huh §3.
        assignment: ``"nearest"`` (eq. 5), or the baselines of Huh Table 3 while training: ``"stochastic"``
            (SQ-VAE sampling, Huh eq. 12; straight-through as usual) or ``"gumbel"`` (Gumbel-softmax: the output
            is the hard sample with gradients through the soft weights, no straight-through; keeps N x K weights
            for backward); or ``"optimal_transport"``: the codes of the balanced transport plan of the (global) batch
            onto the codebook (OptVQ, :mod:`.optimal_transport`; straight-through as usual).  Evaluation always uses
            the nearest code.  Or ``"index_backprop"``: the nearest code, output by IBQ's straight-through over the
            index (:mod:`.ibq`): the value of the code, gradients through the softmax over all codes to the input and
            every code (chunked); not with ``codebook_update="ema"``, ``sync_nu`` or ``rotation_trick``.
        sinkhorn: :class:`~seqvq.quantize.optimal_transport.SinkhornOptions` (``epsilon``, ``iterations``,
            ``sample``) of ``assignment="optimal_transport"`` (default OptVQ's); only with that assignment.
        diveq: :class:`~seqvq.quantize.diveq.DiVeQOptions` (``space_filling``, ``noise``): while training, the
            output is DiVeQ's reparameterized quantization error (:mod:`.diveq`), so the task gradient trains the
            selected code with no auxiliary loss (set ``alpha=0`` for the paper's setting); ``space_filling``:
            SF-DiVeQ's assignment to the dithered curve through the codes.  Not with ``rotation_trick`` or the
            ``"gumbel"`` and ``"index_backprop"`` outputs; ``space_filling`` only with ``assignment="nearest"``.
        rotation_trick: carry the gradient from z_q to z_e by the rotation and rescaling that maps z_e onto z_q
            (Fifty et al. 2024) instead of the identity (eq. 7).  Composes with ``sync_nu`` (the sync term is
            added to the codebook's gradient as usual), the affine map (the rotation is onto the effective code)
            and ``assignment="stochastic"`` (the rotation is onto the sampled code, so a far sample rotates the
            gradient far); not with ``assignment="gumbel"``, whose output is not a straight-through one.
        usage_regularizer: :class:`~seqvq.quantize.usage.UsageRegularizerOptions` (``weight`` w,
            ``temperature`` tau): adds w x KL(mean soft assignment || uniform) to ``loss`` while training, reported
            as ``losses["usage"]`` (Zhang et al. 2023; wav2vec 2.0's diversity loss).  Chunked, never N x K in
            memory; global under DDP.  With ``codebook_update="ema"`` only the inputs receive its gradient.
        temperature: tau of the stochastic assignments; a number, or a
            :class:`~seqvq.quantize.stochastic.TemperatureAnneal` (``start``, ``end``, ``decay_steps``) for the
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
        affine: AffineOptions | str | dict | None = None,
        bridge: BridgeOptions | dict | None = None,
        sync_nu: float = 0.0,
        kmeans_init: bool = False,
        reestimate: ReestimationOptions | dict | None = None,
        replace_dead_after: int | None = None,
        assignment: str = "nearest",
        sinkhorn: SinkhornOptions | dict | None = None,
        rotation_trick: bool = False,
        diveq: DiVeQOptions | dict | None = None,
        usage_regularizer: UsageRegularizerOptions | dict | None = None,
        temperature: float | TemperatureAnneal | dict = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        affine = options_from(AffineOptions, AffineOptions(affine) if isinstance(affine, str) else affine, "affine")
        reestimate = options_from(ReestimationOptions, reestimate, "reestimate")
        usage_regularizer = options_from(UsageRegularizerOptions, usage_regularizer, "usage_regularizer")
        if sinkhorn and assignment != "optimal_transport":
            raise ValueError(f"sinkhorn sets the transport plan of assignment='optimal_transport', which "
                             f"assignment={assignment!r} does not use; use one or the other")
        sinkhorn = options_from(SinkhornOptions, sinkhorn, "sinkhorn") or SinkhornOptions()
        diveq = options_from(DiVeQOptions, diveq, "diveq")
        check_diveq(diveq, assignment, rotation_trick, codebook_size)
        bridge = options_from(BridgeOptions, bridge, "bridge")
        check_bridge(bridge, codebook_size, affine, codebook_update, kmeans_init, reestimate, replace_dead_after)
        if not isinstance(temperature, (int, float)):
            temperature = options_from(TemperatureAnneal, temperature, "temperature")
        _check_options(dim, num_codebooks, distance, codebook_update, assignment, beta, affine, sync_nu,
                       kmeans_init, reestimate, rotation_trick)
        self.dim, self.codebook_size, self.num_codebooks = dim, codebook_size, num_codebooks
        self.code_dim = dim // num_codebooks
        self.distance, self.alpha, self.beta = distance, alpha, beta
        self.codebook_update, self.channel_dim = codebook_update, channel_dim
        self.low_precision_search, self.sync_nu = low_precision_search, sync_nu
        self.rotation_trick, self.diveq = rotation_trick, diveq
        self.usage_regularizer = usage_regularizer
        self.pass_kind = PassKind.STEP  # see the module docstring; set model-wide with quantizer_passes()
        self.codebook_terms: list[torch.Tensor] | None = None  # where quantizer_passes() collects them
        # True during a pass that :meth:`python_phases_idle_next_pass` found to need no phase that decides in Python
        # (set by seqvq.quantize.compiled around a compiled pass, which then reads no buffer in Python).
        self.python_phases_idle = False
        # A list while seqvq.quantize.accumulation gathers an optimizer step's micro-batches: (z_e, codes) of each.
        self.micro_batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None

        init = torch.randn(num_codebooks, codebook_size, self.code_dim) * (init_scale / math.sqrt(self.code_dim))
        linear = affine is not None and affine.mode == "linear"
        # SimVQ's basis and VQBridge's codebook are frozen: the codebook gradient trains their maps alone.
        self.codebook = nn.Parameter(init, requires_grad=codebook_update == "gradient" and not linear and not bridge)
        self.norm = MaskedBatchNorm(dim) if pre_norm else None
        self.ema = (EMACodebookUpdate(num_codebooks, codebook_size, self.code_dim, ema_decay, ema_eps)
                    if codebook_update == "ema" else None)
        if linear:
            self.affine = LinearCodebookMap(num_codebooks, self.code_dim)
        elif bridge is not None:
            self.affine = CodebookBridge(codebook_size, self.code_dim, bridge)
        else:
            self.affine = (AffineReparameterization(num_codebooks, codebook_size, self.code_dim, affine)
                           if affine is not None else None)
        self.reestimation = DataDependentReestimation(dim, reestimate, seed) if reestimate is not None else None
        self.replacement = (LRUReplacement(num_codebooks, codebook_size, replace_dead_after, seed=seed + 2)
                            if replace_dead_after else None)
        self.kmeans_init = kmeans_init
        self.assignment, self.temperature, self.sinkhorn = assignment, temperature, sinkhorn
        if assignment not in ("nearest", "index_backprop") or diveq is not None:
            self.sampling_rng = BufferedGenerator(seed + 4)
        if kmeans_init:
            self.init_rng = BufferedGenerator(seed + 3)
            self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        # Training steps taken (state-updating passes, one per optimizer step); rewrites counted, and per code the
        # count at its last wholesale rewrite (re-estimation, replacement) — seqvq.reset_optimizer_state compares
        # them with the count it last saw.
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("rewrites", torch.zeros((), dtype=torch.long))
        self.register_buffer("code_rewritten_at", torch.zeros(num_codebooks, codebook_size, dtype=torch.long))
        self.register_buffer("optimizer_synced_rewrites", torch.zeros((), dtype=torch.long))
        if self.ema is not None:
            self.ema.reset(self.effective_codebook().detach())

    @property
    def task_gradient_reaches_codebook(self) -> bool:
        """Whether the task loss itself trains the codebook: the sync term (eq. 21), Gumbel-softmax or IBQ weights,
        DiVeQ's error length or the usage regularizer."""
        return self.codebook_update == "gradient" and (self.sync_nu != 0 or self.usage_regularizer is not None
                                                       or self.assignment in ("gumbel", "index_backprop")
                                                       or self.diveq is not None)

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
        """The parameters that define the codes: the codebook and the learned affine (Huh §4.1) or linear (SimVQ)
        map."""
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
        statistics and LRU clocks, and mark them so :func:`seqvq.reset_optimizer_state` clears their optimizer
        moments."""
        self.store_codebook(vectors, rows)
        if self.ema is not None:
            self.ema.reset(self.effective_codebook(), rows)
        if self.replacement is not None:
            self.replacement.restart_clocks(rows, int(self.step))
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
        vectors = code_vectors(codebook, codes.clamp_min(0)) * (codes >= 0).unsqueeze(-1)
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
        """Quantize the valid vectors ``z`` (N, dim) in the phases of the module docstring; returns (quantized,
        codes (N, G), loss, losses, metrics)."""
        kind = self.pass_kind
        updates_state = self.training and kind in STATE_UPDATING_PASSES
        micro_batch = updates_state and self.micro_batches is not None  # gradient accumulation: phases 1-2, 5-6 wait
        updates_state = updates_state and not micro_batch
        # The optimizer step this pass belongs to, as a number only where a phase decides on it in Python (read
        # from a buffer: a graph break under torch.compile, see seqvq.quantize.compiled).
        step = self.pass_step() if self.decides_on_step and not self.python_phases_idle else None
        passes_through = step is not None and self.reestimation is not None and self.reestimation.passes_through(step)
        z_e = self._comparison_space(z.reshape(z.shape[0], self.num_codebooks, self.code_dim))

        rewritten = False
        if updates_state:
            self.step.add_(1)
            if not self.python_phases_idle:
                rewritten = self._collect_and_reestimate(z_e.detach(), step)  # phases 1-2
        # Phases 5-6 may rewrite the codebook in place; the graph uses a copy so backward sees this pass's values.
        signal = self.codebook.clone() if updates_state else self.codebook
        codebook = self._comparison_space(self.effective_codebook(signal))

        codes, sampled = self._assign(z_e, codebook, step, updates_state)  # phase 3
        z_q = code_vectors(codebook, codes)  # (N, G, d), differentiable w.r.t. the codebook

        # Phase 4: output and losses.
        commitment = squared_error(z_e, z_q.detach())
        codebook_term = squared_error(z_e.detach(), z_q)
        if passes_through:  # Algorithm 1: no quantization, no codebook to train (kept in the graph for DDP)
            quantized, codebook_term = z_e, 0.0 * codebook_term
            loss = codebook_term
        else:
            loss = self.alpha * (1.0 - self.beta) * commitment
            if self.ema is None:  # an EMA codebook is moved by eq. 4, not by this term
                codebook_weight = 0.0 if kind == "task_step" else self.alpha * self.beta
                loss = loss + codebook_weight * codebook_term
            if sampled is not None:
                quantized = sampled  # Gumbel-softmax, IBQ: gradients through the soft weights, no straight-through
            else:
                if self.rotation_trick:
                    quantized = rotation_trick(z_e, z_q)  # Fifty et al. 2024
                elif self.diveq is not None and self.training:
                    quantized = diveq_output(z_e, z_q, self._diveq_noise(z_e, updates_state))  # Vali et al. 2025
                else:
                    quantized = z_e + (z_q - z_e).detach()  # straight-through estimator, Huh eq. 7
                if self.sync_nu:
                    quantized = quantized + self.sync_nu * (z_q - z_q.detach())  # Huh eq. 21
        losses = {"codebook": codebook_term, "commitment": commitment}
        if self.training and self.usage_regularizer is not None:
            usage = kl_to_uniform(mean_soft_assignment(z_e, codebook, self.usage_regularizer.temperature,
                                                       reduce_over_ranks=updates_state))
            if passes_through:  # no codebook yet (kept in the graph for DDP)
                usage = 0.0 * usage
            loss = loss + self.usage_regularizer.weight * usage
            losses["usage"] = usage
        if self.codebook_terms is not None:
            self.codebook_terms.append(codebook_term)
        if kind == "bypass":
            quantized = z.reshape(z_e.shape)
        if kind in ("bypass", "zero_loss"):
            loss, losses = torch.zeros_like(loss), {name: value.detach() for name, value in losses.items()}

        counts = self.code_counts(codes, summed_over_ranks=updates_state)
        if updates_state:
            self._update_and_replace(z_e.detach(), codes, counts, step,
                                     replaces=not (passes_through or rewritten or self.python_phases_idle))
        elif micro_batch:
            self.micro_batches.append((z_e.detach(), codes))
        metrics = self.usage_metrics(counts, commitment.detach())
        return quantized.reshape(z.shape), codes, loss, losses, metrics

    @torch.no_grad()
    def finish_accumulated_step(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Gradient accumulation (:mod:`.accumulation`): the state-updating phases of one training step (1-2,
        5-6) on the valid vectors and codes of its micro-batches, taken together — what one pass over their
        concatenation does, except on a re-estimation or k-means-init step, where the micro-batches were assigned
        with the codebook from before the k-means."""
        z_e, codes = (torch.cat(parts) for parts in zip(*micro_batches))
        step = int(self.step) + 1
        passes_through = self.reestimation is not None and self.reestimation.passes_through(step)
        self.step.add_(1)
        rewritten = self._collect_and_reestimate(z_e, step)  # phases 1-2
        counts = self.code_counts(codes, summed_over_ranks=True)
        self._update_and_replace(z_e, codes, counts, step, replaces=not (passes_through or rewritten))

    def _update_and_replace(self, z_e: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor, step: int | None,
                            replaces: bool) -> None:
        """Phases 5 and 6 (the latter only where ``replaces``)."""
        self._update_statistics(z_e, codes, counts)  # phase 5
        if self.replacement is not None and replaces:
            self._replace_dead_codes(z_e, step)  # phase 6

    @property
    def decides_on_step(self) -> bool:
        """Whether a phase of this quantizer reads the step count in Python: re-estimation, k-means init,
        replacement, a sampled assignment (its seed and temperature)."""
        return (self.reestimation is not None or self.kmeans_init or self.replacement is not None
                or self.assignment != "nearest")

    def python_phases_idle_next_pass(self) -> bool:
        """Whether the next pass can skip every phase that decides in Python, changing nothing: no sampled
        assignment in training; past the last re-estimation (no collecting, no pass-through; in evaluation, past
        M_init); k-means init done; no code that this pass could find dead (each used within its life span)."""
        if not self.decides_on_step:
            return True
        if self.training and self.assignment != "nearest":
            return False
        step = self.pass_step()
        if self.reestimation is not None and (step <= self.reestimation.last_reestimation() if self.training
                                              else self.reestimation.passes_through(step)):
            return False
        if self.training and self.kmeans_init and not bool(self.initialized):
            return False
        replacement = self.replacement
        return not (self.training and replacement is not None
                    and bool((step - replacement.last_used >= replacement.life_span).any()))

    def pass_step(self) -> int:
        """The optimizer step the next pass belongs to: the steps taken, plus one in training mode."""
        return int(self.step) + 1 if self.training else int(self.step)

    @torch.no_grad()
    def _collect_and_reestimate(self, z_e: torch.Tensor, step: int) -> bool:
        """Phases 1-2: feed the reservoir and re-estimate on Algorithm 1's schedule, or k-means on the first
        batch (``kmeans_init``).  Returns whether the codebook was rewritten."""
        flat = z_e.reshape(z_e.shape[0], self.dim)
        if self.reestimation is not None:
            self.reestimation.collect(flat, step)
            centroids = self.reestimation.new_codebook(step, self.num_codebooks, self.codebook_size)
            if centroids is None:
                return False
            self.rewrite_codes(broadcast(centroids))
            return True
        if self.kmeans_init and not self.initialized:
            points = all_gather_rows(flat).view(-1, self.num_codebooks, self.code_dim)
            if points.shape[0]:
                with self.init_rng.generator() as generator:
                    centroids = torch.stack([kmeans(points[:, g].contiguous(), self.codebook_size, 5, generator)
                                             for g in range(self.num_codebooks)])
                self.rewrite_codes(broadcast(centroids))
                self.initialized.fill_(True)
                return True
        return False

    @torch.no_grad()
    def _update_statistics(self, z_e: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor) -> None:
        """Phase 5: EMA codebook (eq. 4), affine statistics (A.12), LRU usage clock."""
        if self.ema is not None:
            self.store_codebook(self.ema.update(z_e, codes))
        if isinstance(self.affine, AffineReparameterization):
            self.affine.update_statistics(z_e, code_vectors(self.codebook, codes), codes)
        if self.replacement is not None:
            self.replacement.record_usage(counts, self.step)

    @torch.no_grad()
    def _replace_dead_codes(self, z_e: torch.Tensor, step: int) -> None:
        """Phase 6: LRU dead codes <- random valid vectors of this batch (rank 0's draw)."""
        dead = self.replacement.dead_codes(step)
        vectors = self.replacement.replacements(dead, z_e)
        if vectors is not None:
            self.rewrite_codes(vectors, dead)

    def current_temperature(self, step: int | None = None) -> float:
        """tau at ``step`` (default the steps taken so far)."""
        if isinstance(self.temperature, TemperatureAnneal):
            return self.temperature.at(int(self.step) if step is None else step)
        return float(self.temperature)

    def _assign(self, z_e: torch.Tensor, codebook: torch.Tensor, step: int, updates_state: bool):
        """Phase 3: codes (N, G), and the output (N, G, d) that replaces the straight-through one (Gumbel-softmax,
        IBQ) or None."""
        if self.training and self.diveq is not None and self.diveq.space_filling:
            return self._space_filling(z_e, codebook, updates_state)
        if self.training and self.assignment == "index_backprop":
            codes = self.assign(z_e.detach(), codebook.detach())
            tau = self.current_temperature(step)
            return codes, torch.stack([index_backprop_output(z_e[:, g], codebook[g], codes[:, g], tau)
                                       for g in range(self.num_codebooks)], dim=1)
        if self.training and self.assignment != "nearest":
            return self.sample(z_e, codebook, self.current_temperature(step), advance=updates_state)
        return self.assign(z_e.detach(), codebook.detach()), None

    def sample(self, z_e: torch.Tensor, codebook: torch.Tensor, tau: float, advance: bool = True):
        """Training-time stochastic assignment: codes (N, G) and, for Gumbel-softmax, the differentiable output
        (N, G, d).  The device generator is seeded from a buffered CPU generator, so resuming is exact; without
        ``advance`` that generator is left as it is and the seed is the one it would give, plus one (module
        docstring)."""
        device_generator = self._device_generator(z_e.device, advance)
        if self.assignment == "optimal_transport":  # a global plan in state-updating passes (phase 3's all-reduce)
            codes = [optimal_transport_codes(z_e[:, g].detach().contiguous(), codebook[g].detach(), self.sinkhorn,
                                             reduce_over_ranks=advance,
                                             generator=device_generator if self.sinkhorn.sample else None)
                     for g in range(self.num_codebooks)]
            return torch.stack(codes, dim=1), None
        if self.assignment == "stochastic":
            codes = [stochastic_codes(z_e[:, g].detach(), codebook[g].detach(), tau, device_generator)
                     for g in range(self.num_codebooks)]
            return torch.stack(codes, dim=1), None
        outputs = [gumbel_softmax_quantize(z_e[:, g], codebook[g], tau, hard=True, generator=device_generator)
                   for g in range(self.num_codebooks)]
        return torch.stack([c for _, c in outputs], dim=1), torch.stack([q for q, _ in outputs], dim=1)

    def _device_generator(self, device: torch.device, advance: bool) -> torch.Generator:
        """A generator on ``device`` seeded from ``sampling_rng`` (advanced only with ``advance``; sample())."""
        if advance:
            with self.sampling_rng.generator() as generator:
                seed = int(torch.randint(2**62, (1,), generator=generator))
        else:
            seed = int(torch.randint(2**62, (1,), generator=self.sampling_rng.peek())) + 1
        return torch.Generator(device=device).manual_seed(seed)

    def _diveq_noise(self, z_e: torch.Tensor, advance: bool) -> torch.Tensor:
        """DiVeQ's directional noise, the shape of ``z_e``."""
        generator = self._device_generator(z_e.device, advance)
        return self.diveq.noise * torch.randn(z_e.shape, generator=generator, device=z_e.device, dtype=z_e.dtype)

    def _space_filling(self, z_e: torch.Tensor, codebook: torch.Tensor, advance: bool):
        """SF-DiVeQ's codes (N, G) and output (N, G, d): one dither per segment, then the noise."""
        generator = self._device_generator(z_e.device, advance)
        dither = torch.rand((self.num_codebooks, self.codebook_size - 1), generator=generator, device=z_e.device,
                            dtype=z_e.dtype)
        noise = self.diveq.noise * torch.randn((2, *z_e.shape), generator=generator, device=z_e.device,
                                               dtype=z_e.dtype)
        results = [space_filling_quantize(z_e[:, g], codebook[g], dither[g], noise[:, :, g])
                   for g in range(self.num_codebooks)]
        return torch.stack([c for c, _ in results], dim=1), torch.stack([q for _, q in results], dim=1)

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
    def code_counts(self, codes: torch.Tensor, summed_over_ranks: bool = False) -> torch.Tensor:
        """Usage counts (G, K) of the valid ``codes`` (N, G), summed over ranks in state-updating passes
        (replacement needs the global usage).  Other passes (evaluation, which may run on one rank alone; the
        inner passes, of which ranks may take different numbers) issue no collective."""
        counts = grouped_counts(codes, self.codebook_size).float()
        return all_reduce_sum(counts) if summed_over_ranks else counts


def _check_options(dim, num_codebooks, distance, codebook_update, assignment, beta, affine, sync_nu, kmeans_init,
                   reestimate, rotation_trick) -> None:
    """Refuse bad values and the combinations that cannot work, naming both options."""
    if dim % num_codebooks:
        raise ValueError(f"dim={dim} is not divisible by num_codebooks={num_codebooks}")
    if distance not in ("l2", "cosine"):
        raise ValueError(f"distance must be 'l2' or 'cosine', got {distance!r}")
    if codebook_update not in ("gradient", "ema"):
        raise ValueError(f"codebook_update must be 'gradient' or 'ema', got {codebook_update!r}")
    if assignment not in ("nearest", "stochastic", "gumbel", "optimal_transport", "index_backprop"):
        raise ValueError(f"assignment must be 'nearest', 'stochastic', 'gumbel', 'optimal_transport' or "
                         f"'index_backprop', got {assignment!r}")
    check_index_backprop(assignment, codebook_update, sync_nu, rotation_trick)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if sync_nu and codebook_update == "ema":
        raise ValueError("sync_nu gives the codebook nu x the task gradient (Huh eq. 21), but "
                         "codebook_update='ema' takes no codebook gradient; use one or the other")
    if sync_nu and assignment == "gumbel":
        raise ValueError("sync_nu acts through the straight-through output (Huh eq. 21), which "
                         "assignment='gumbel' replaces by the Gumbel-softmax one; use one or the other")
    if rotation_trick and assignment == "gumbel":
        raise ValueError("rotation_trick rotates the straight-through output (Fifty et al. 2024), which "
                         "assignment='gumbel' replaces by the Gumbel-softmax one; use one or the other")
    if affine is not None and affine.mode in ("learned", "linear") and codebook_update == "ema":
        raise ValueError(f"affine='{affine.mode}' is trained by the codebook gradient, which codebook_update='ema' "
                         "does not take; use affine='ema' or codebook_update='gradient'")
    if kmeans_init and reestimate is not None:
        raise ValueError("kmeans_init and reestimate both set the codebook by k-means (reestimate at step "
                         "init_steps); use one or the other")


@contextlib.contextmanager
def quantizer_passes(model: nn.Module, kind: PassKind | str):
    """Within the block every :class:`VectorQuantizer` in ``model`` runs passes of ``kind`` (a :class:`PassKind`
    or its name; module docstring) and appends its codebook term (the unweighted d of eq. 10, 0 before M_init) of
    each pass to the list this yields — the inner loss of alternating optimization (Huh eq. 17).  The previous
    kinds return afterwards."""
    try:
        kind = PassKind(kind)
    except ValueError:
        raise ValueError(f"pass kind must be one of {', '.join(PassKind)}; got {kind!r}") from None
    quantizers = [module for module in model.modules() if isinstance(module, VectorQuantizer)]
    previous = [(quantizer.pass_kind, quantizer.codebook_terms) for quantizer in quantizers]
    codebook_terms: list[torch.Tensor] = []
    for quantizer in quantizers:
        quantizer.pass_kind, quantizer.codebook_terms = kind, codebook_terms
    try:
        yield codebook_terms
    finally:
        for quantizer, (previous_kind, previous_terms) in zip(quantizers, previous):
            quantizer.pass_kind, quantizer.codebook_terms = previous_kind, previous_terms
