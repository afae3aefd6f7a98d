"""Task registry: a run config's ``task:`` name -> the module implementing it, imported lazily.

A task module provides ``CONFIG: seqvq.options.Section`` (the run-config keys it reads besides ``task``,
``exp_dir`` and ``train``; every run config is checked against it before anything runs), ``build_task(config:
dict) -> seqvq.train.TaskBundle`` (model, train dataset, collate function, evaluate callback, and the
``evaluation_state`` the checkpoint carries) and ``evaluate_cli(checkpoint: str, data: str, config: dict,
out_dir: Path, use_polyak: bool = True) -> dict`` (used by ``seqvq evaluate``; ``out_dir`` is where it writes its
files; ``use_polyak=False`` evaluates the live parameters of a run that kept a Polyak average).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from seqvq.errors import UserError
from seqvq.train.types import TaskBundle

TASKS: dict[str, str] = {
    "speech_ctc": "seqvq.tasks.speech",
    "handwriting_ae": "seqvq.tasks.handwriting",
    "cifar_ae": "seqvq.tasks.cifar_ae",
    "vqvae": "seqvq.tasks.vqvae",
    "image_classification": "seqvq.tasks.classification",
}


def get_task(name: str) -> ModuleType:
    """Import the module registered as ``name``."""
    if name not in TASKS:
        known = ", ".join(sorted(TASKS))
        raise UserError(f"task: unknown task {name!r}; set it to one of {known}")
    return importlib.import_module(TASKS[name])


__all__ = ["TASKS", "TaskBundle", "get_task"]
