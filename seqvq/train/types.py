"""Typed values exchanged between a task and the trainer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn


@dataclass
class StepOutput:
    """What a task model's ``forward(batch)`` returns.

    loss: scalar tensor to minimise (quantizer losses already added by the task).
    metrics: name -> float or 0-d tensor, logged as weighted averages.
    weight: number of items ``loss`` averages over (utterances, frames, pixels...), the weight of this step in the
        logged averages.
    """

    loss: torch.Tensor
    metrics: dict[str, float | torch.Tensor] = field(default_factory=dict)
    weight: float = 1.0


@dataclass
class TaskBundle:
    """What a task's ``build_task()`` (:class:`seqvq.tasks.Task`) returns: everything the trainer needs.

    evaluation_state: what evaluating a checkpoint needs besides the weights and the run config (e.g. CMVN
        statistics, feature settings, the label or unit inventory), in types ``torch.load(weights_only=True)``
        reads (tensors, numbers, strings, bytes, lists, dicts); every checkpoint carries it as
        ``checkpoint["evaluation_state"]``.
    data_files: the files the training (and evaluation) data is read from; ``seqvq train`` records their
        fingerprint in every checkpoint and resumes only on the same (:mod:`seqvq.train.stamps`). None: every
        file under the paths the config's ``data:`` section names.
    """

    model: nn.Module
    train_dataset: Any
    collate_fn: Callable
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None
    evaluation_state: dict = field(default_factory=dict)
    data_files: list[str] | None = None
