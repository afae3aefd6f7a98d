"""Task registry: a run config's ``task:`` name -> the :class:`~seqvq.tasks.base.Task` subclass implementing it
(``"module:Class"``, imported lazily). :class:`~seqvq.tasks.base.Task` is the protocol every task follows."""
from __future__ import annotations

import importlib

from seqvq.errors import UserError
from seqvq.tasks.base import Task
from seqvq.train.types import TaskBundle

TASKS: dict[str, str] = {
    "speech_ctc": "seqvq.tasks.speech:SpeechCTCTask",
    "handwriting_ae": "seqvq.tasks.handwriting:HandwritingTask",
    "cifar_ae": "seqvq.tasks.cifar_ae:CifarAutoencoderTask",
    "vqvae": "seqvq.tasks.vqvae:VQVAETask",
    "image_classification": "seqvq.tasks.classification:ClassificationTask",
    "maskgit": "seqvq.tasks.maskgit:MaskGITTask",
}


def get_task(name: str) -> type[Task]:
    """The Task class registered as ``name``."""
    if name not in TASKS:
        raise UserError(f"task: unknown task {name!r}; set it to one of {', '.join(sorted(TASKS))}")
    module, _, class_name = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), class_name)


__all__ = ["TASKS", "Task", "TaskBundle", "get_task"]
