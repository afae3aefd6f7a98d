"""Task registry: a run config's ``task:`` name -> the module implementing it, imported lazily.

A task module provides ``build_task(config: dict) -> seqvq.train.TaskBundle`` (model, train dataset, collate
function, evaluate callback) and ``evaluate_cli(checkpoint: str, data: str, config: dict) -> dict`` (used by
``seqvq evaluate``).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from seqvq.train.types import TaskBundle

TASKS: dict[str, str] = {
    "speech_ctc": "seqvq.tasks.speech",
    "handwriting_ae": "seqvq.tasks.handwriting",
    "image_classification": "seqvq.tasks.classification",
}


def get_task(name: str) -> ModuleType:
    """Import the module registered as ``name``."""
    if name not in TASKS:
        known = ", ".join(sorted(TASKS))
        raise ValueError(f"unknown task {name!r} in the config's 'task:' key; known tasks: {known}")
    return importlib.import_module(TASKS[name])


__all__ = ["TASKS", "TaskBundle", "get_task"]
