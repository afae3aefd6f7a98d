"""Differentiable VQ by the reparameterization trick (DiVeQ and SF-DiVeQ: Vali, Bäckström & Solin, "DiVeQ:
Differentiable Vector Quantization Using the Reparameterization Trick", arXiv 2509.26469; the equations as the
authors' package ``diveq`` 0.1.3 computes them, written out below).

DiVeQ writes quantization as adding an error vector to the input: its length is the quantization error and its
direction points at the selected code, up to a small directional noise (the reparameterization):

    z_q = z + ||c_k - z|| * sg(v / ||v||),    v = (c_k - z) + n,  n ~ N(0, sigma^2 I).

The value is c_k up to the noise (exactly ``||z_q - z|| = ||c_k - z||``), and the gradient of the task loss
reaches z (the identity plus the derivative of the error's length) and the selected code (through that length), so
the codebook is trained by the task alone: no auxiliary (codebook or commitment) loss — set ``alpha=0`` for the
paper's setting; the quantizer's loss terms are still reported.

SF-DiVeQ (space-filling) quantizes onto the polyline through the codes in index order: each training step
draws one lambda_j ~ U(0, 1) per segment, the input goes to the nearest of the dithered points
``(1 - lambda_j) c_j + lambda_j c_{j+1}``, and the output is the same reparameterization towards both endpoints,

    z_q = z + (1 - lambda_j) ||c_j - z|| sg(u_j) + lambda_j ||c_{j+1} - z|| sg(u_{j+1}),

so both endpoints of the chosen segment are trained.  The reported code is the segment's nearer endpoint
(j + [lambda_j >= 1/2]), so usage statistics, replacement and decoding see codes.  Evaluation is the nearest code.

Choices where the paper is silent for our setting: the noise and the dithers are drawn from the quantizer's
buffered sampling generator (exact resume); ``noise`` is the reference code's ``noise_var`` (default 1e-3), which it
passes to ``Normal`` as the standard deviation; SF-DiVeQ's custom initialisation (skip quantization, then codes from
means of consecutive latents) is not reproduced here (``reestimate`` gives a warm-up and a data-dependent start);
its evaluation output is the nearest code, not the nearest point of the curve as in the reference code, so that
codes alone decode to the output.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .distance import nearest_codes


@dataclass(frozen=True)
class DiVeQOptions:
    """``VectorQuantizer(diveq=...)``: ``space_filling`` (SF-DiVeQ) and the standard deviation ``noise`` of the
    directional noise (module docstring)."""

    space_filling: bool = False
    noise: float = 1e-3

    def __post_init__(self):
        if self.noise < 0:
            raise ValueError(f"diveq: noise must be >= 0, got {self.noise}")


def directional_error(z_e: torch.Tensor, code: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``||c - z|| sg(v / ||v||)`` with ``v = c - z + noise`` (vectors on the last dim); differentiable in ``z_e`` and
    ``code`` through the length only."""
    direction = (code - z_e).detach() + noise
    unit = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (code - z_e).norm(dim=-1, keepdim=True) * unit


def diveq_output(z_e: torch.Tensor, z_q: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """DiVeQ's ``z_q = z + ||c_k - z|| sg(v / ||v||)`` (module docstring)."""
    return z_e + directional_error(z_e, z_q, noise)


def space_filling_quantize(z_e: torch.Tensor, codebook: torch.Tensor, dither: torch.Tensor, noise: torch.Tensor):
    """SF-DiVeQ for ``z_e`` (N, d) and ``codebook`` (K, d), ``dither`` lambda (K - 1,) in [0, 1) and ``noise``
    (2, N, d): returns (codes (N,), output (N, d)) (module docstring)."""
    lam = dither.unsqueeze(1)
    points = (1.0 - lam) * codebook[:-1].detach() + lam * codebook[1:].detach()
    segment = nearest_codes(z_e.detach(), points, with_distances=False)[0]
    weight = lam[segment]
    output = (z_e + (1.0 - weight) * directional_error(z_e, codebook[segment], noise[0])
              + weight * directional_error(z_e, codebook[segment + 1], noise[1]))
    return segment + (weight.squeeze(1) >= 0.5).long(), output


def check_diveq(diveq: DiVeQOptions | None, assignment: str, rotation_trick: bool, codebook_size: int) -> None:
    """Refuse what cannot work with ``diveq``, naming both options."""
    if diveq is None:
        return
    if rotation_trick:
        raise ValueError("diveq and rotation_trick both replace the straight-through output; use one or the other")
    if assignment in ("gumbel", "index_backprop"):
        raise ValueError(f"diveq reparameterizes the straight-through output, which assignment={assignment!r} "
                         "replaces by its own; use one or the other")
    if diveq.space_filling and assignment != "nearest":
        raise ValueError(f"diveq space_filling assigns inputs to the curve through the codes, so not with "
                         f"assignment={assignment!r}; use one or the other")
    if diveq.space_filling and codebook_size < 2:
        raise ValueError(f"diveq space_filling needs codebook_size >= 2 (a segment), got {codebook_size}")
