"""The rotation trick (Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation Trick",
arXiv 2410.06424).

Instead of the identity of the straight-through estimator, the output is ``q~ = sg(lambda R) e`` where ``R`` is the
rotation that takes the direction of ``e`` onto that of ``q`` and ``lambda = ||q|| / ||e||``: the value is ``q``,
and the gradient reaching ``e`` is ``lambda R^T`` times the gradient at ``q`` — rotated and rescaled as ``e`` is
mapped onto ``q``.  With ``e^ = e / ||e||``, ``q^ = q / ||q||`` and ``r = (e^ + q^) / ||e^ + q^||``,

    R e = e - 2 r (r . e) + 2 q^ (e^ . e),

two reflections in closed form: no D x D matrix is built, only dot products per vector.  Everything but the
``e`` that ``R`` acts on is detached, so the formula is ordinary detach arithmetic in the forward pass (as the
paper writes it); no custom backward.  The value is made exactly ``q`` by adding the detached rounding
difference, so the rotation changes gradients only.

Choices where the paper is silent: a zero ``e`` or ``q`` (no direction) and ``q^ = -e^`` (no unique rotation)
fall back to the identity for that vector's rotation (the rescaling stays, except for a zero ``e``, whose gradient
is the straight-through one).
"""
from __future__ import annotations

import torch


def rotation_trick(z_e: torch.Tensor, z_q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Output with the value of ``z_q`` and gradient ``lambda R^T g`` at ``z_e`` (vectors on the last dim); no
    gradient reaches ``z_q`` through it."""
    e_norm = z_e.detach().norm(dim=-1, keepdim=True)
    q_norm = z_q.detach().norm(dim=-1, keepdim=True)
    e_hat = z_e.detach() / e_norm.clamp_min(eps)
    q_hat = z_q.detach() / q_norm.clamp_min(eps)
    sum_norm = (e_hat + q_hat).norm(dim=-1, keepdim=True)
    rotates = (e_norm > eps) & (q_norm > eps) & (sum_norm > eps)
    r = torch.where(rotates, (e_hat + q_hat) / sum_norm.clamp_min(eps), torch.zeros_like(e_hat))
    q_hat = torch.where(rotates, q_hat, torch.zeros_like(q_hat))
    e_hat = torch.where(rotates, e_hat, torch.zeros_like(e_hat))
    rotated = (z_e - 2.0 * r * (r * z_e).sum(-1, keepdim=True) + 2.0 * q_hat * (e_hat * z_e).sum(-1, keepdim=True))
    scale = torch.where(e_norm > eps, q_norm / e_norm.clamp_min(eps), torch.ones_like(e_norm))
    scaled = rotated * scale
    return scaled + (z_q.detach() - scaled).detach()
