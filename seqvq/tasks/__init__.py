"""Task registry: a run config's ``task:`` name -> the module implementing it, imported lazily.

A task module provides ``CONFIG: seqvq.options.Section`` (the run-config keys it reads besides ``task``,
``exp_dir`` and ``train``; every run config is checked against it before anything runs), ``build_task(config:
dict) -> seqvq.train.TaskBundle`` (model, train dataset, collate function, evaluate callback, and the
``evaluation_state`` the checkpoint carries) and ``evaluate_cli(checkpoint: str, data: str, config: dict,
out_dir: Path, use_polyak: bool = True) -> dict`` (used by ``seqvq evaluate``; ``out_dir`` is where it writes its
files; ``use_polyak=False`` evaluates the live parameters of a run that kept a Polyak average).
"""
from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

from seqvq.errors import UserError
from seqvq.options import KindSection, Section
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


def quantizer_section() -> KindSection:
    """The keys of a ``quantizer:`` mapping: by its ``kind`` (default ``vq``, see :func:`seqvq.build_quantizer`),
    :class:`seqvq.VectorQuantizer`'s keyword arguments with the fields of its remedies' options
    (``reestimate``, ``affine``, ``usage_regularizer``, ``temperature``), or those of the residual, FSQ and BSQ
    quantizers."""
    from seqvq.quantize import BinarySphericalQuantizer, FiniteScalarQuantizer, ResidualVectorQuantizer, VectorQuantizer

    vq = Section.of(VectorQuantizer, skip=("dim",))  # the remedies' options dataclasses are nested sections
    # A residual stack passes every other option on to its VectorQuantizer stages (its **vq_kwargs).
    residual = dataclasses.replace(Section.of(ResidualVectorQuantizer, skip=("dim",)).merged(vq), open=False)
    return KindSection.of_kinds("vq", vq=vq, residual=residual,
                                fsq=Section.of(FiniteScalarQuantizer, skip=("dim",)),
                                bsq=Section.of(BinarySphericalQuantizer, skip=("dim",)))


__all__ = ["TASKS", "TaskBundle", "get_task", "quantizer_section"]
