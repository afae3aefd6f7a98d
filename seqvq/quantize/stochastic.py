"""Stochastic code assignment, the collapse baselines of Huh et al. 2023 Table 3.

* :func:`stochastic_codes` — SQ-VAE-style sampling (Takida et al. 2022; Huh eq. 12):
  ``p(z_q = c_j | z_e) ∝ exp(-||z_e - c_j||^2 / tau)``, drawn with the Gumbel-max trick one block of rows at a
  time, so the N x K distance matrix never exists in full.  ``tau -> 0`` is the nearest-code assignment.
* :func:`gumbel_softmax_quantize` — Gumbel-softmax relaxation (Jang et al. 2017) with logits ``-||z_e - c_j||^2``:
  soft weights ``softmax((logits + g) / tau)`` over the codes, hard (straight-through) or soft output.
* :func:`annealed_temperature` — the exponential temperature anneal both are trained with
  (:class:`TemperatureAnneal`, ``VectorQuantizer(temperature=...)``).

All work on already flattened valid vectors ``z_e`` (N, d) and one codebook (K, d).  A ``generator`` must live on
the device of ``z_e``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .distance import DEFAULT_BLOCK_ELEMENTS, centred_scores, nearest_codes


def _check_inputs(name: str, z_e: torch.Tensor, codebook: torch.Tensor, temperature: float) -> None:
    if z_e.dim() != 2 or codebook.dim() != 2 or z_e.shape[1] != codebook.shape[1]:
        raise ValueError(f"{name} expects z_e (N, d) and codebook (K, d); got {tuple(z_e.shape)} and "
                         f"{tuple(codebook.shape)}")
    if temperature < 0:
        raise ValueError(f"{name}: temperature must be >= 0, got {temperature}")


def gumbel_noise(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard Gumbel noise of ``shape`` on the device and in the dtype of ``like``, drawn from ``generator``."""
    uniform = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return -torch.log(-torch.log(uniform.clamp_min(torch.finfo(like.dtype).tiny)))


@torch.no_grad()
def stochastic_codes(z_e: torch.Tensor, codebook: torch.Tensor, temperature: float,
                     generator: torch.Generator | None = None,
                     block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> torch.Tensor:
    """Sample one code per row of ``z_e`` from Huh eq. 12; returns int64 codes (N,).

    Rows are processed in blocks of about ``block_elements`` distances.  ``temperature = 0`` is the exact
    nearest-code search.
    """
    _check_inputs("stochastic_codes", z_e, codebook, temperature)
    if temperature == 0:
        return nearest_codes(z_e, codebook)[0]
    codes = torch.empty(z_e.shape[0], dtype=torch.long, device=z_e.device)
    rows_per_block = max(1, block_elements // max(codebook.shape[0], 1))
    work_dtype = torch.promote_types(z_e.dtype, torch.float32)
    codebook = codebook.to(work_dtype)
    for start in range(0, z_e.shape[0], rows_per_block):
        rows = z_e[start:start + rows_per_block].to(work_dtype)
        logits = -centred_scores(rows, codebook) / temperature  # -||z - c||^2 up to a per-row constant
        codes[start:start + rows.shape[0]] = (logits + gumbel_noise(logits.shape, logits, generator)).argmax(1)
    return codes


def gumbel_softmax_quantize(z_e: torch.Tensor, codebook: torch.Tensor, temperature: float, hard: bool = True,
                            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gumbel-softmax quantization; returns ``(z_q (N, d), codes (N,))``.

    ``hard=True``: ``z_q`` is exactly the sampled code ``c_k`` in value, with the gradient of the soft mixture
    ``sum_j y_j c_j`` through the weights ``y`` (straight-through Gumbel-softmax), plus the selected code's own
    gradient.  ``hard=False``: ``z_q`` is the soft mixture.  ``codes`` is the argmax of the perturbed logits.
    Gradients reach ``z_e`` and the whole codebook through the soft weights, which are (N, K) — the backward pass
    needs them all, so this is the one assignment here that stores N x K values.
    """
    if temperature <= 0:
        raise ValueError(f"gumbel_softmax_quantize: temperature must be > 0, got {temperature}")
    _check_inputs("gumbel_softmax_quantize", z_e, codebook, temperature)
    logits = -centred_scores(z_e, codebook)
    perturbed = logits + gumbel_noise(logits.shape, logits.detach(), generator)
    weights = F.softmax(perturbed / temperature, dim=1)
    codes = perturbed.detach().argmax(dim=1)
    if not hard:
        return weights @ codebook, codes
    # Value c_k; gradient d/dy = C (as y_hard - sg(y) + y would give) and d/dc_k = the upstream gradient.
    soft_part = weights @ codebook.detach()
    return F.embedding(codes, codebook) + (soft_part - soft_part.detach()), codes  # groups.code_vectors


def annealed_temperature(step: int, start: float, end: float, decay_steps: int) -> float:
    """Exponential anneal from ``start`` (step 0) to ``end`` (step ``decay_steps`` and later):
    ``start * (end / start) ** (step / decay_steps)``."""
    if start <= 0 or end <= 0:
        raise ValueError(f"annealed_temperature: start and end must be > 0, got {start}, {end}")
    if decay_steps <= 0:
        return end
    progress = min(max(step, 0), decay_steps) / decay_steps
    return start * (end / start) ** progress


@dataclass(frozen=True)
class TemperatureAnneal:
    """The temperature tau of the stochastic assignments (Huh eq. 12), annealed from ``start`` to ``end`` over
    ``decay_steps`` training steps by the geometric decay Huh A.1 uses for SQ-VAE (:func:`annealed_temperature`)."""

    start: float
    end: float
    decay_steps: int

    def __post_init__(self):
        if self.start <= 0 or self.end <= 0:
            raise ValueError(f"temperature: start and end must be > 0, got {self.start}, {self.end}")

    def at(self, step: int) -> float:
        """tau at training step ``step``."""
        return annealed_temperature(step, self.start, self.end, self.decay_steps)
