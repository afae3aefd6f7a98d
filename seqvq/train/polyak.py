"""Polyak (exponential moving) averaging of parameters for evaluation (Łańcucki 2020 §IV-C, ref. [26])."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class PolyakAverage:
    """Shadow copy ``s <- decay * s + (1 - decay) * p`` of every floating-point parameter the optimizer trains
    (``requires_grad``), updated after each optimizer step and started from the initial parameters. State moved
    outside the optimizer is not averaged and evaluation uses its live value: buffers (BatchNorm statistics, the
    EMA affine moments) and parameters without gradient — an EMA codebook (Łańcucki eq. 4) is already a moving
    average of the encoder outputs, and averaging it again would evaluate codes that lag the live ones by
    ``1 / (1 - decay)`` steps. A gradient-trained codebook rewritten by re-estimation is averaged with its old
    values for about ``1 / (1 - decay)`` steps, as any other parameter.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"polyak_decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {name: p.detach().clone() for name, p in self._params(model)}

    @staticmethod
    def _params(model: nn.Module):
        return ((name, p) for name, p in model.named_parameters() if p.dtype.is_floating_point and p.requires_grad)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, p in self._params(model):
            self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, p in self._params(model):
            p.copy_(self.shadow[name])

    @contextmanager
    def swapped_in(self, model: nn.Module):
        """Run the body with the averaged parameters in ``model``; restore the live ones afterwards."""
        live = {name: p.detach().clone() for name, p in self._params(model)}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in self._params(model):
                    p.copy_(live[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        """Restore the shadow of every averaged parameter (entries for others, e.g. an EMA codebook averaged by an
        older version, are ignored)."""
        self.decay = state["decay"]
        for name, value in self.shadow.items():
            value.copy_(state["shadow"][name])
