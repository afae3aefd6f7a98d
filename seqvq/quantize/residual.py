"""Residual vector quantization: a stack of quantizers, each coding what the previous ones left over (the
SoundStream / EnCodec bottleneck, Zeghidour et al. 2021).

Stage ``i`` quantizes the residual ``r_i = x - sum_{j<i} sg(q_j)``; the output is ``sum_i q_i`` with one
straight-through estimator on the total (Huh eq. 7), so ``d output / d x`` is the identity.  Every stage's
commitment term ``||r_i - sg q_i||^2`` reaches the encoder through ``r_i``, and every stage's codebook term
trains that stage's codebook towards its own residuals.  The loss is the sum of the stage losses.

Stage options that have no meaning on residuals are refused at construction (one line naming the option):
``sync_nu``, ``rotation_trick``, ``diveq`` and ``assignment="gumbel"`` or ``"index_backprop"`` act through a stage's
output gradient, but the stage outputs are detached (only the total carries a straight-through gradient), so none
would reach anything; ``distance="cosine"`` would normalise the residuals, whose norms are exactly what the later
stages code; and ``reestimate`` passes the input through for M_init steps, so stages >= 1 would see zero residuals
and fill their reservoirs with zeros.
(``kmeans_init`` works: each stage runs its k-means on the first batch's residuals, in stage order.)

Codec options (SoundStream, Zeghidour et al. 2021; EnCodec, Défossez et al. 2022; DAC, Kumar et al. 2023):

* ``codebook_size`` may be a list, one size per stage.
* ``num_quantizers=n`` in ``forward`` / ``codes_to_vectors`` runs / decodes the first n stages only (a lower
  bitrate from the same model); the codes of the stages not run are -1.  Under DDP every rank must pass the same n
  (the stages' statistics are reduced over ranks).
* ``quantizer_dropout=p`` (training): each example (the first axis), with probability p, uses only its first n_q
  stages, n_q uniform in 1..n (SoundStream samples for every example, p = 1; DAC uses p = 0.5).  The dropped
  stages see that example as padding (code -1, no loss or statistics) and add nothing to its output.  The draw
  comes from a buffered generator (exact resume) and is taken in state-updating passes only (``quantizer_passes``:
  the inner passes of alternating optimization and the diagnostics' passes change no state, so they run every
  stage).
* ``code_dim=c`` (DAC's factorized codes): stage i quantizes ``in_i(r_i)``, a learned projection to c
  channels, in an l2-normalised code space (``distance="cosine"``), and adds ``out_i(q_i)`` to the output, a
  learned projection back.  The stage outputs then carry gradients (straight-through inside each stage, through
  the projections and the residual chain, as in DAC) instead of one estimator on the total, so the options refused
  above for detached stage outputs (``sync_nu``, ``rotation_trick``, ``assignment="gumbel"``) and cosine distance
  (which now normalises projections, not residuals) work here; ``reestimate`` stays refused (during the
  pass-through warm-up the later stages would sample residuals of a stack that does not quantize).

Codebook-free stages (``stage={"kind": "fsq", "levels": [...], ...}`` or ``{"kind": "lfq", "bits": b, ...}``, the
stage's own options, e.g. FSQ's ``symmetric`` and ``noise_dropout``; ``codebook_size``, ``code_dim`` and the
VectorQuantizer options are then refused): residual FSQ / LFQ.  The stack projects the input once to the stage
width (``len(levels)`` or ``bits``) and the sum back, when ``dim`` differs (learned linear maps; the stages have
none).  Stage ``i`` quantizes the residual scaled up, ``r_i / s^i``, and contributes ``s^i q_i``: ``s = 1/(L - 1)``
per channel for FSQ — the step of ``L`` levels spanning [-1, 1] is ``2/(L - 1)``, so what a stage leaves inside the
range is at most ``1/(L - 1)`` and stage ``i + 1`` sees it on the full range — and ``s = 1/2`` for LFQ (each stage
one more binary digit): the scales of vector-quantize-pytorch's ResidualFSQ and ResidualLFQ.  Without them the
later stages see residuals a fraction of their range wide (the "residual magnitude decay" of Zhu 2025, "Robust
Residual Finite Scalar Quantization", arXiv 2508.15860, who learn the scale instead); Parker et al. 2024 decompose
a trained FSQ into residual stages post hoc.  The stage outputs carry their straight-through gradients through the
residual chain (as with ``code_dim``) instead of one estimator on the total: an FSQ stage's gradient is that of its
bound, and a stage's own loss (LFQ's commitment and entropy penalty) reaches the input through its residual.

Randomness: stage ``i`` is built with ``seed + 1000 * i`` (``STAGE_SEED_STRIDE``), so stage 0 draws as a lone
:class:`VectorQuantizer` with ``seed`` would, and no two stages share a generator (a quantizer seeds its own with
``seed + 0`` to ``seed + 4``, the stack its quantizer dropout with ``seed + 5``): k-means++, dead-code replacement,
sampling and FSQ's noise draw differently in every stage.

Padding follows :class:`VectorQuantizer`: padded positions pass the input through, get code -1 at every stage,
and touch no loss, statistic, codebook or projection (they enter the stack as zeros, so -inf or NaN there reaches
no gradient).  ``pre_norm=True`` normalises the input once, before the first stage
(normalising each residual separately would make the stage outputs live in different spaces).
"""
from __future__ import annotations

import torch
from torch import nn

from .core import (STATE_UPDATING_PASSES, PassKind, QuantizedResult, VectorQuantizer, channel_last_with_mask,
                   squared_error)
from .fsq import FiniteScalarQuantizer
from .lfq import LookupFreeQuantizer
from .norm import MaskedBatchNorm
from .precision import autocast_disabled
from .rng import BufferedGenerator

STAGE_SEED_STRIDE = 1000  # stage i is seeded with seed + STAGE_SEED_STRIDE * i (module docstring)
CODEBOOK_FREE_STAGES = {"fsq": FiniteScalarQuantizer, "lfq": LookupFreeQuantizer}
STAGE_WIDTH_KEYS = {"fsq": "levels", "lfq": "bits"}
STACK_OPTIONS = ("dim", "pre_norm", "channel_dim", "seed")  # set on the stack, not in a codebook-free stage


class ResidualVectorQuantizer(nn.Module):
    """``num_quantizers`` stages on successive residuals: :class:`VectorQuantizer` stages, or FSQ / LFQ ones.

    Args:
        dim: as for :class:`VectorQuantizer`.
        codebook_size: codes per VectorQuantizer stage; one number for every stage, or a list of ``num_quantizers``
            sizes.  Not with ``stage``.
        num_quantizers: number of stages.
        quantizer_dropout: probability that a training example uses a random number of stages (module docstring).
        code_dim: DAC's low-dimensional l2-normalised code space with in/out projections (module docstring).
        stage: codebook-free stages, ``{"kind": "fsq" | "lfq", ...}`` with that quantizer's options (module
            docstring); None (the default): VectorQuantizer stages.
        pre_norm: masked BatchNorm on the input, once, before the first stage.
        channel_dim: where the channels are (-1 = channel-last).
        **vq_kwargs: every other :class:`VectorQuantizer` option, applied to each stage (``seed`` offset per stage,
            module docstring); only ``seed`` with ``stage``.

    Codes are ``(..., num_quantizers)`` (``(..., num_quantizers, G)`` with ``num_codebooks = G > 1``).
    Metrics: each stage's under ``"stage{i}/<name>"``, their mean under ``"<name>"``, and
    ``"residual_error"``, the mean squared error of the whole stack's output (at the stage width with ``stage``).
    """

    def __init__(self, dim: int, codebook_size: int | list[int] | None = None, num_quantizers: int | None = None, *,
                 pre_norm: bool = False, channel_dim: int = -1, quantizer_dropout: float = 0.0,
                 code_dim: int | None = None, stage: dict | None = None, **vq_kwargs):
        super().__init__()
        if num_quantizers is None or num_quantizers < 1:
            raise ValueError(f"ResidualVectorQuantizer: num_quantizers must be >= 1, got {num_quantizers}")
        if not 0.0 <= quantizer_dropout <= 1.0:
            raise ValueError(f"ResidualVectorQuantizer: quantizer_dropout must be in [0, 1], got {quantizer_dropout}")
        self.dim, self.channel_dim, self.quantizer_dropout = dim, channel_dim, quantizer_dropout
        self.norm = MaskedBatchNorm(dim) if pre_norm else None
        seed = vq_kwargs.pop("seed", 0)
        self.project_in = self.project_out = self.project_to_width = self.project_from_width = None
        if stage is None:
            self._build_vector_quantizer_stages(dim, codebook_size, num_quantizers, code_dim, seed, vq_kwargs)
        else:
            self._build_codebook_free_stages(dim, num_quantizers, stage, seed,
                                             dict(vq_kwargs, codebook_size=codebook_size, code_dim=code_dim))
        if quantizer_dropout:
            self.dropout_rng = BufferedGenerator(seed + 5)

    def _build_vector_quantizer_stages(self, dim, codebook_size, num_quantizers, code_dim, seed, vq_kwargs) -> None:
        if codebook_size is None:
            raise ValueError("ResidualVectorQuantizer: VectorQuantizer stages need codebook_size (or give stage, "
                             "e.g. stage={'kind': 'fsq', 'levels': [...]}, for codebook-free ones)")
        sizes = list(codebook_size) if isinstance(codebook_size, (list, tuple)) else [codebook_size] * num_quantizers
        if len(sizes) != num_quantizers:
            raise ValueError(f"ResidualVectorQuantizer: {len(sizes)} codebook sizes for {num_quantizers} stages; "
                             "give one size or one per stage")
        _check_stage_options(vq_kwargs, projected=code_dim is not None)
        if code_dim is not None:
            vq_kwargs = {**vq_kwargs, "distance": "cosine"}
        self.stages = nn.ModuleList(VectorQuantizer(code_dim or dim, size, pre_norm=False, channel_dim=-1,
                                                    seed=seed + STAGE_SEED_STRIDE * index, **vq_kwargs)
                                    for index, size in enumerate(sizes))
        self.project_in = (nn.ModuleList(nn.Linear(dim, code_dim) for _ in sizes) if code_dim is not None else None)
        self.project_out = (nn.ModuleList(nn.Linear(code_dim, dim) for _ in sizes) if code_dim is not None else None)

    def _build_codebook_free_stages(self, dim, num_quantizers, stage, seed, other_options) -> None:
        kind, options = _check_codebook_free_stage(stage, other_options)
        width = len(options["levels"]) if kind == "fsq" else int(options["bits"])
        if kind == "fsq":
            self.stages = nn.ModuleList(FiniteScalarQuantizer(width, seed=seed + STAGE_SEED_STRIDE * index, **options)
                                        for index in range(num_quantizers))
            shrink = 1.0 / (self.stages[0].levels - 1).double()  # per channel: one level step / 2
        else:
            self.stages = nn.ModuleList(LookupFreeQuantizer(width, **options) for _ in range(num_quantizers))
            shrink = torch.full((width,), 0.5, dtype=torch.float64)
        # stage i works at s^i (module docstring); a constant of the configuration, so not in the state_dict
        self.register_buffer("stage_scales", torch.stack([shrink**index for index in range(num_quantizers)]).float(),
                             persistent=False)
        if width != dim:
            self.project_to_width, self.project_from_width = nn.Linear(dim, width), nn.Linear(width, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                num_quantizers: int | None = None) -> QuantizedResult:
        """Quantize ``x`` (any floating dtype; computed in the codebooks' dtype — for codebook-free stages the
        parameters' dtype, see :mod:`.precision`) with the first ``num_quantizers`` stages (default: all)."""
        with autocast_disabled(x.device):
            result = self._forward(x.to(self._computing_dtype(x)), mask, lengths, num_quantizers)
        return result.with_output_dtype(x.dtype)

    def _computing_dtype(self, x: torch.Tensor) -> torch.dtype:
        if isinstance(self.stages[0], VectorQuantizer):
            return self.stages[0].codebook.dtype
        parameter = next(self.parameters(), None)
        return parameter.dtype if parameter is not None else torch.promote_types(x.dtype, torch.float32)

    def _forward(self, x: torch.Tensor, mask: torch.Tensor | None, lengths: torch.Tensor | None,
                 num_quantizers: int | None) -> QuantizedResult:
        channel_dim = self.channel_dim % x.dim()
        x_last, mask = channel_last_with_mask(x, self.dim, self.channel_dim, mask, lengths)
        if self.norm is not None:
            x_last = self.norm(x_last, mask)
        running = self._stages_to_run(num_quantizers)
        stages_per_example = self._stages_per_example(x_last, running)

        # Padded positions enter the stack as zeros: whatever they hold (-inf, NaN) meets no projection or residual
        # arithmetic and reaches no gradient (0 x inf = NaN in a projection's weight gradient).  The stack still
        # runs on the whole grid, so the projections' matmuls keep their shapes and the valid figures their bits.
        stack_input = x_last if mask is None else x_last.masked_fill(~mask.unsqueeze(-1), 0.0)
        coded = stack_input if self.project_to_width is None else self.project_to_width(stack_input)
        residual, total = coded, torch.zeros_like(coded)
        loss, losses, metrics, codes = 0.0, {}, {}, []
        for index, stage in enumerate(self.stages[:running]):
            stage_mask, used = mask, None
            if stages_per_example is not None:
                used = (stages_per_example > index).view(-1, *[1] * (x_last.dim() - 2)).expand(x_last.shape[:-1])
                stage_mask = used if mask is None else mask & used
            if not isinstance(stage, VectorQuantizer):  # residual FSQ / LFQ: stage i at scale s^i
                scale = self.stage_scales[index].to(residual.dtype)
                result = stage(residual / scale, mask=stage_mask)
                stage_output = result.quantized * scale
            elif self.project_in is None:
                result = stage(residual, mask=stage_mask)
                stage_output = result.quantized.detach()  # the codes (input passed through at padded positions)
            else:
                result = stage(self.project_in[index](residual), mask=stage_mask)
                stage_output = self.project_out[index](result.quantized)
            if used is not None:  # a dropped stage adds nothing to its examples
                stage_output = stage_output * used.unsqueeze(-1)
            total = total + stage_output
            residual = residual - stage_output
            codes.append(result.codes)
            loss = loss + result.loss
            for name, value in result.losses.items():
                losses[name] = losses.get(name, 0.0) + value
            for name, value in result.metrics.items():
                metrics[f"stage{index}/{name}"] = value
                metrics[name] = metrics.get(name, 0.0) + value / running
        codes += [torch.full_like(codes[0], -1)] * (len(self.stages) - running)  # the stages not run

        valid_x = coded.flatten(0, -2) if mask is None else coded[mask]
        valid_total = total.flatten(0, -2) if mask is None else total[mask]
        metrics["residual_error"] = squared_error(valid_x.detach(), valid_total)
        if isinstance(self.stages[0], VectorQuantizer) and self.project_out is None:
            quantized = stack_input + (total - stack_input).detach()  # one straight-through estimator on the sum
        else:  # the stage outputs carry the gradients
            quantized = total if self.project_from_width is None else self.project_from_width(total)
        if mask is not None:  # padded positions pass the input through, bit for bit (-inf - -inf would be NaN)
            quantized = torch.where(mask.unsqueeze(-1), quantized, x_last)
        codes = torch.stack(codes, dim=x_last.dim() - 1)
        return QuantizedResult(quantized.movedim(-1, channel_dim), codes, loss, losses, metrics)

    def codes_to_vectors(self, codes: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        """Decode ``(..., num_quantizers[, G])`` codes to ``(..., dim)`` vectors: the sum of the first
        ``num_quantizers`` (default all) stages' codes (code -1 decodes to zeros)."""
        axis = -1 if getattr(self.stages[0], "num_codebooks", 1) == 1 else -2
        if codes.dim() == 0 or codes.shape[axis] != len(self.stages):
            raise ValueError(f"codes of shape {tuple(codes.shape)} need a num_quantizers={len(self.stages)} axis "
                             f"at dim {axis}")
        running = self._stages_to_run(num_quantizers)
        total = 0.0
        for index, stage in enumerate(self.stages[:running]):
            stage_codes = codes.select(axis, index)
            vectors = stage.codes_to_vectors(stage_codes)
            if not isinstance(stage, VectorQuantizer):
                vectors = vectors * self.stage_scales[index]
            elif self.project_out is not None:
                used = stage_codes >= 0 if axis == -1 else (stage_codes >= 0).all(dim=-1)
                vectors = self.project_out[index](vectors) * used.unsqueeze(-1)
            total = total + vectors
        return total if self.project_from_width is None else self.project_from_width(total)

    def _stages_to_run(self, num_quantizers: int | None) -> int:
        if num_quantizers is None:
            return len(self.stages)
        if not 1 <= num_quantizers <= len(self.stages):
            raise ValueError(f"ResidualVectorQuantizer: num_quantizers must be in 1..{len(self.stages)}, "
                             f"got {num_quantizers}")
        return num_quantizers

    def _stages_per_example(self, x_last: torch.Tensor, running: int) -> torch.Tensor | None:
        """Quantizer dropout: the number of stages each example (first axis) uses, or None for all of them."""
        pass_kind = getattr(self.stages[0], "pass_kind", PassKind.STEP)  # codebook-free stages: every pass
        if not (self.quantizer_dropout and self.training and pass_kind in STATE_UPDATING_PASSES):
            return None
        with self.dropout_rng.generator() as generator:
            dropped = torch.rand(x_last.shape[0], generator=generator) < self.quantizer_dropout
            drawn = torch.randint(1, running + 1, (x_last.shape[0],), generator=generator)
        return torch.where(dropped, drawn, torch.full_like(drawn, running)).to(x_last.device)


def _check_stage_options(options: dict, projected: bool) -> None:
    """Refuse the stage options the module docstring explains, naming each."""
    if projected:
        if options.get("reestimate"):
            raise ValueError("ResidualVectorQuantizer does not support reestimate: during the pass-through warm-up "
                             "the later stages would sample residuals of a stack that does not quantize")
        if options.get("distance", "cosine") != "cosine":
            raise ValueError("ResidualVectorQuantizer: code_dim is DAC's l2-normalised code space, so not "
                             f"distance={options['distance']!r}; drop code_dim or distance")
        return
    reasons = {
        "sync_nu": "the stage outputs are detached, so the sync term has no gradient to carry",
        "rotation_trick": "the stage outputs are detached (one straight-through estimator on the sum), so the "
                          "rotated gradient would reach nothing",
        "reestimate": "stages >= 1 would see zero residuals during the pass-through warm-up",
        "diveq": "the stage outputs are detached, so DiVeQ's reparameterized error would reach nothing",
    }
    for name, reason in reasons.items():
        if options.get(name):
            raise ValueError(f"ResidualVectorQuantizer does not support {name}: {reason}")
    if options.get("assignment") == "gumbel":
        raise ValueError("ResidualVectorQuantizer does not support assignment='gumbel': the stage outputs are "
                         "detached, so the Gumbel-softmax gradients would reach nothing")
    if options.get("assignment") == "index_backprop":
        raise ValueError("ResidualVectorQuantizer does not support assignment='index_backprop': the stage outputs are "
                         "detached, so IBQ's softmax gradients would reach nothing")
    if options.get("distance") == "cosine":
        raise ValueError("ResidualVectorQuantizer does not support distance='cosine': normalising the residuals "
                         "discards the norms the later stages code")


def _check_codebook_free_stage(stage: dict, other_options: dict) -> tuple[str, dict]:
    """The kind and options of ``stage``, after refusing what a codebook-free stack cannot take, naming both."""
    if not isinstance(stage, dict) or "kind" not in stage:
        raise ValueError(f"ResidualVectorQuantizer: stage needs a kind, 'fsq' or 'lfq', e.g. stage={{'kind': 'fsq', "
                         f"'levels': [5, 5, 5]}}; got {stage!r}")
    options = dict(stage)
    kind = options.pop("kind")
    if kind == "bsq":
        raise ValueError("ResidualVectorQuantizer: stage kind 'bsq' puts each residual on the unit sphere, which "
                         "discards the norms the later stages code; use stage kind 'lfq' or 'fsq'")
    if kind == "vq":
        raise ValueError("ResidualVectorQuantizer: stage kind 'vq' is the default stack; drop stage and give "
                         "codebook_size and the VectorQuantizer options directly")
    if kind not in CODEBOOK_FREE_STAGES:
        raise ValueError(f"ResidualVectorQuantizer: stage kind must be 'fsq' or 'lfq', got {kind!r}")
    for name in STACK_OPTIONS:
        if name in options:
            raise ValueError(f"ResidualVectorQuantizer: stage option {name!r} is the stack's own (set it on the "
                             f"stack, not in stage kind {kind!r})")
    if STAGE_WIDTH_KEYS[kind] not in options:
        raise ValueError(f"ResidualVectorQuantizer: stage kind {kind!r} needs {STAGE_WIDTH_KEYS[kind]!r}")
    for name, value in other_options.items():
        if value is not None:
            raise ValueError(f"ResidualVectorQuantizer: {name} is an option of VectorQuantizer stages, and stage "
                             f"kind {kind!r} has none; drop {name} or stage")
    return kind, options
