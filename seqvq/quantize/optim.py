"""Optimizer helpers: the "codebook learning rate" method and optimizer state that follows rewritten codes.

Łańcucki et al. 2020 (§III-C, §IV-A) show that EMA is SGD with a rescaled codebook learning rate, and that simply
giving the codebook its own, larger learning rate (10x the model's, their rule of thumb) recovers much of the
codebook usage.  ``param_groups`` puts every codebook parameter in its own group, without weight decay (Huh et al.
A.1 apply none to codebooks).

Codebook parameters are found by ownership — the codebook and learned affine parameters of every
``VectorQuantizer`` in the model — so copies (``copy.deepcopy``, which drops Python attributes of parameters) are
classified like the original.  A custom module can add its own by setting ``parameter._seqvq_codebook = True``.
"""
from __future__ import annotations

import torch
from torch import nn


def codebook_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable codebook parameters of ``model``: those its quantizers own, and any marked
    ``_seqvq_codebook``."""
    from .core import VectorQuantizer

    found: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, VectorQuantizer):
            found.update((id(p), p) for p in module.codebook_parameters())
    found.update((id(p), p) for p in model.parameters() if getattr(p, "_seqvq_codebook", False))
    return [p for p in found.values() if p.requires_grad]


def param_groups(model: nn.Module, lr: float, codebook_lr: float | None = None,
                 weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups: ``"model"`` at ``lr`` and ``"codebook"`` at ``codebook_lr`` (default ``lr``).

    Frozen parameters (e.g. an EMA-updated codebook) are left out; an empty group is dropped.
    """
    codebook_params = codebook_parameters(model)
    codebook_ids = {id(p) for p in codebook_params}
    model_params = [p for p in model.parameters() if p.requires_grad and id(p) not in codebook_ids]
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
