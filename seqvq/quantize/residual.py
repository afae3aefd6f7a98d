"""Residual vector quantization: a stack of quantizers, each coding what the previous ones left over (the
SoundStream / EnCodec bottleneck, Zeghidour et al. 2021).

Stage ``i`` quantizes the residual ``r_i = x - sum_{j<i} sg(q_j)``; the output is ``sum_i q_i`` with one
straight-through estimator on the total (Huh eq. 7), so ``d output / d x`` is the identity.  Every stage's
commitment term ``||r_i - sg q_i||^2`` reaches the encoder through ``r_i``, and every stage's codebook term
trains that stage's codebook towards its own residuals.  The loss is the sum of the stage losses.

Stage options that have no meaning on residuals are refused at construction (one line naming the option):
``sync_nu``, ``rotation_trick`` and ``assignment="gumbel"`` act through a stage's output gradient, but the stage
outputs are detached (only the total carries a straight-through gradient), so none would reach anything;
``distance="cosine"``
would normalise the residuals, whose norms are exactly what the later stages code; and ``reestimate`` passes the
input through for M_init steps, so stages >= 1 would see zero residuals and fill their reservoirs with zeros.
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

Randomness: stage ``i`` is built with ``seed + 1000 * i`` (``STAGE_SEED_STRIDE``), so stage 0 draws as a lone
:class:`VectorQuantizer` with ``seed`` would, and no two stages share a generator (a quantizer seeds its own with
``seed + 0`` to ``seed + 4``, the stack its quantizer dropout with ``seed + 5``): k-means++, dead-code replacement
and sampling draw differently in every stage.

Padding follows :class:`VectorQuantizer`: padded positions pass the input through, get code -1 at every stage,
and touch no loss, statistic, codebook or projection (they enter the stack as zeros, so -inf or NaN there reaches
no gradient).  ``pre_norm=True`` normalises the input once, before the first stage
(normalising each residual separately would make the stage outputs live in different spaces).
"""
from __future__ import annotations

import torch
from torch import nn

from .core import STATE_UPDATING_PASSES, QuantizedResult, VectorQuantizer, channel_last_with_mask, squared_error
from .norm import MaskedBatchNorm
from .precision import autocast_disabled
from .rng import BufferedGenerator

STAGE_SEED_STRIDE = 1000  # stage i is seeded with seed + STAGE_SEED_STRIDE * i (module docstring)


class ResidualVectorQuantizer(nn.Module):
    """``num_quantizers`` :class:`VectorQuantizer` stages on successive residuals.

    Args:
        dim: as for :class:`VectorQuantizer`.
        codebook_size: codes per stage; one number for every stage, or a list of ``num_quantizers`` sizes.
        num_quantizers: number of stages.
        quantizer_dropout: probability that a training example uses a random number of stages (module docstring).
        code_dim: DAC's low-dimensional l2-normalised code space with in/out projections (module docstring).
        pre_norm: masked BatchNorm on the input, once, before the first stage.
        channel_dim: where the channels are (-1 = channel-last).
        **vq_kwargs: every other :class:`VectorQuantizer` option, applied to each stage (``seed`` offset per stage,
            module docstring).

    Codes are ``(..., num_quantizers)`` (``(..., num_quantizers, G)`` with ``num_codebooks = G > 1``).
    Metrics: each stage's under ``"stage{i}/<name>"``, their mean under ``"<name>"``, and
    ``"residual_error"``, the mean squared error of the whole stack's output.
    """

    def __init__(self, dim: int, codebook_size: int | list[int], num_quantizers: int, *, pre_norm: bool = False,
                 channel_dim: int = -1, quantizer_dropout: float = 0.0, code_dim: int | None = None, **vq_kwargs):
        super().__init__()
        if num_quantizers < 1:
            raise ValueError(f"ResidualVectorQuantizer: num_quantizers must be >= 1, got {num_quantizers}")
        sizes = list(codebook_size) if isinstance(codebook_size, (list, tuple)) else [codebook_size] * num_quantizers
        if len(sizes) != num_quantizers:
            raise ValueError(f"ResidualVectorQuantizer: {len(sizes)} codebook sizes for {num_quantizers} stages; "
                             "give one size or one per stage")
        if not 0.0 <= quantizer_dropout <= 1.0:
            raise ValueError(f"ResidualVectorQuantizer: quantizer_dropout must be in [0, 1], got {quantizer_dropout}")
        _check_stage_options(vq_kwargs, projected=code_dim is not None)
        self.dim, self.channel_dim, self.quantizer_dropout = dim, channel_dim, quantizer_dropout
        self.norm = MaskedBatchNorm(dim) if pre_norm else None
        if code_dim is not None:
            vq_kwargs = {**vq_kwargs, "distance": "cosine"}
        seed = vq_kwargs.pop("seed", 0)
        self.stages = nn.ModuleList(VectorQuantizer(code_dim or dim, size, pre_norm=False, channel_dim=-1,
                                                    seed=seed + STAGE_SEED_STRIDE * index, **vq_kwargs)
                                    for index, size in enumerate(sizes))
        self.project_in = (nn.ModuleList(nn.Linear(dim, code_dim) for _ in sizes) if code_dim is not None else None)
        self.project_out = (nn.ModuleList(nn.Linear(code_dim, dim) for _ in sizes) if code_dim is not None else None)
        if quantizer_dropout:
            self.dropout_rng = BufferedGenerator(seed + 5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                num_quantizers: int | None = None) -> QuantizedResult:
        """Quantize ``x`` (any floating dtype; computed in the codebooks' dtype, see :mod:`.precision`) with the
        first ``num_quantizers`` stages (default: all)."""
        with autocast_disabled(x.device):
            result = self._forward(x.to(self.stages[0].codebook.dtype), mask, lengths, num_quantizers)
        return result.with_output_dtype(x.dtype)

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
        residual, total = stack_input, torch.zeros_like(stack_input)
        loss, losses, metrics, codes = 0.0, {}, {}, []
        for index, stage in enumerate(self.stages[:running]):
            stage_mask, used = mask, None
            if stages_per_example is not None:
                used = (stages_per_example > index).view(-1, *[1] * (x_last.dim() - 2)).expand(x_last.shape[:-1])
                stage_mask = used if mask is None else mask & used
            if self.project_in is None:
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

        valid_x = stack_input.reshape(-1, self.dim) if mask is None else stack_input[mask]
        valid_total = total.reshape(-1, self.dim) if mask is None else total[mask]
        metrics["residual_error"] = squared_error(valid_x.detach(), valid_total)
        if self.project_out is None:
            quantized = stack_input + (total - stack_input).detach()  # one straight-through estimator on the sum
        else:  # the stage outputs carry the gradients
            quantized = total
        if mask is not None:  # padded positions pass the input through, bit for bit (-inf - -inf would be NaN)
            quantized = torch.where(mask.unsqueeze(-1), quantized, x_last)
        codes = torch.stack(codes, dim=x_last.dim() - 1)
        return QuantizedResult(quantized.movedim(-1, channel_dim), codes, loss, losses, metrics)

    def codes_to_vectors(self, codes: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        """Decode ``(..., num_quantizers[, G])`` codes to ``(..., dim)`` vectors: the sum of the first
        ``num_quantizers`` (default all) stages' codes (code -1 decodes to zeros)."""
        axis = -1 if self.stages[0].num_codebooks == 1 else -2
        if codes.dim() == 0 or codes.shape[axis] != len(self.stages):
            raise ValueError(f"codes of shape {tuple(codes.shape)} need a num_quantizers={len(self.stages)} axis "
                             f"at dim {axis}")
        running = self._stages_to_run(num_quantizers)
        total = 0.0
        for index, stage in enumerate(self.stages[:running]):
            stage_codes = codes.select(axis, index)
            vectors = stage.codes_to_vectors(stage_codes)
            if self.project_out is not None:
                used = stage_codes >= 0 if axis == -1 else (stage_codes >= 0).all(dim=-1)
                vectors = self.project_out[index](vectors) * used.unsqueeze(-1)
            total = total + vectors
        return total

    def _stages_to_run(self, num_quantizers: int | None) -> int:
        if num_quantizers is None:
            return len(self.stages)
        if not 1 <= num_quantizers <= len(self.stages):
            raise ValueError(f"ResidualVectorQuantizer: num_quantizers must be in 1..{len(self.stages)}, "
                             f"got {num_quantizers}")
        return num_quantizers

    def _stages_per_example(self, x_last: torch.Tensor, running: int) -> torch.Tensor | None:
        """Quantizer dropout: the number of stages each example (first axis) uses, or None for all of them."""
        if not (self.quantizer_dropout and self.training and self.stages[0].pass_kind in STATE_UPDATING_PASSES):
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
    }
    for name, reason in reasons.items():
        if options.get(name):
            raise ValueError(f"ResidualVectorQuantizer does not support {name}: {reason}")
    if options.get("assignment") == "gumbel":
        raise ValueError("ResidualVectorQuantizer does not support assignment='gumbel': the stage outputs are "
                         "detached, so the Gumbel-softmax gradients would reach nothing")
    if options.get("distance") == "cosine":
        raise ValueError("ResidualVectorQuantizer does not support distance='cosine': normalising the residuals "
                         "discards the norms the later stages code")
