"""Optimizer helpers: the "codebook learning rate" method and optimizer state that follows rewritten codes.

Łańcucki et al. 2020 (§III-C, §IV-A) show that EMA is SGD with a rescaled codebook learning rate, and that simply
giving the codebook its own, larger learning rate (10x the model's, their rule of thumb) recovers much of the
codebook usage.  ``param_groups`` puts every codebook parameter (marked ``_seqvq_codebook``) in its own group,
without weight decay (Huh et al. A.1 apply none to codebooks).
"""
from __future__ import annotations

import torch
from torch import nn


def is_codebook_parameter(parameter: torch.Tensor) -> bool:
    return bool(getattr(parameter, "_seqvq_codebook", False))


def param_groups(model: nn.Module, lr: float, codebook_lr: float | None = None,
                 weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups: ``"model"`` at ``lr`` and ``"codebook"`` at ``codebook_lr`` (default ``lr``).

    Frozen parameters (e.g. an EMA-updated codebook) are left out; an empty group is dropped.
    """
    model_params, codebook_params = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (codebook_params if is_codebook_parameter(parameter) else model_params).append(parameter)
    groups = [
        {"name": "model", "params": model_params, "lr": lr, "weight_decay": weight_decay},
        {"name": "codebook", "params": codebook_params, "lr": lr if codebook_lr is None else codebook_lr,
         "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


@torch.no_grad()
def reset_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Zero the optimizer moments of codes rewritten since the last call (re-estimation, replacement, k-means).

    Stale Adam moments would otherwise push a freshly placed code along its predecessor's direction.  A codebook
    rewritten entirely loses its whole optimizer state (so Adam's bias correction restarts too).  Call it after
    ``backward()`` and before ``optimizer.step()``; the bookkeeping lives in the quantizers' buffers, so it
    survives checkpoints.
    """
    from .core import VectorQuantizer

    for module in model.modules():
        if not isinstance(module, VectorQuantizer):
            continue
        stale = module.code_rewritten_at > module.optimizer_synced_rewrites
        module.optimizer_synced_rewrites.copy_(module.rewrites)
        parameter = module.codebook
        if not stale.any() or parameter not in optimizer.state:
            continue
        if stale.all():
            del optimizer.state[parameter]
            continue
        for value in optimizer.state[parameter].values():
            if torch.is_tensor(value) and value.shape == parameter.shape:
                value[stale] = 0.0
