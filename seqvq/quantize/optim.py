"""Optimizer helpers: the "codebook learning rate" method and optimizer state that follows rewritten codes.

Łańcucki et al. 2020 (§III-C, §IV-A) show that EMA is SGD with a rescaled codebook learning rate, and that simply
giving the codebook its own, larger learning rate (10x the model's, their rule of thumb) recovers much of the
codebook usage.  ``param_groups`` puts every codebook parameter in its own group, without weight decay (Huh et al.
A.1 apply none to codebooks).

Codebook parameters are found by ownership — the codebook and learned affine parameters of every
``VectorQuantizer`` in the model — so copies (``copy.deepcopy``, which drops Python attributes of parameters) are
classified like the original.  A custom module can add its own by setting ``parameter._seqvq_codebook = True``.

Re-estimation, replacement and k-means rewrite codes; ``reset_optimizer_state`` clears the optimizer moments of
those codes, and ``reset_optimizer_state_on_step`` makes an optimizer call it itself right before each step.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


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
    ``backward()`` and before ``optimizer.step()`` (:func:`reset_optimizer_state_on_step` does so at every step);
    the bookkeeping lives in the quantizers' buffers, so it survives checkpoints.  It marks the codes as handled, so
    call it for one optimizer per model: the one that holds the codebooks.
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


def reset_optimizer_state_on_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> RemovableHandle:
    """Make ``optimizer`` run :func:`reset_optimizer_state` for ``model`` right before every step it takes, so the
    training loop is just ``backward()`` / ``step()``; ``handle.remove()`` undoes it.

    A step pre-hook (``optimizer.register_step_pre_hook``) rather than a wrapper: the optimizer stays the object
    that LR schedulers, ``GradScaler`` and toolkits' checkpointers hold (they type-check it, patch its ``step`` and
    save its ``state_dict``), so nothing has to be forwarded.  The reset happens when a step is taken, so only at
    real steps: after the last backward pass of gradient accumulation, and not for a step ``scaler.step`` skips
    (the next step taken clears those codes).  When ``step`` gets a closure (L-BFGS, Lightning), the forward pass
    runs inside the step, so the reset follows the closure.  Register it on the optimizer that holds the codebooks,
    once, after building it; ``load_state_dict`` keeps it.
    """
    def before_step(optimizer, args, kwargs):  # args[0] is the optimizer itself
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if closure is None:
            reset_optimizer_state(model, optimizer)
            return None

        def closure_then_reset():
            loss = closure()
            reset_optimizer_state(model, optimizer)
            return loss

        if "closure" in kwargs:
            return args, {**kwargs, "closure": closure_then_reset}
        return (args[0], closure_then_reset, *args[2:]), kwargs

    return optimizer.register_step_pre_hook(before_step)
