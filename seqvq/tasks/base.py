"""The task protocol of ``seqvq train`` and ``seqvq evaluate``: :class:`Task`, which every task subclasses.

Written once here: the run config's sections read into the task's typed options, the model built from the checked
``model:`` section (an option value the model refuses is one line), the training and evaluated splits, the
trainer's :class:`~seqvq.train.TaskBundle`, and :meth:`Task.evaluate_checkpoint`, which loads a checkpoint (its
Polyak average or its live weights), picks the device, runs the task's evaluation and writes ``figures.json``
(atomically) with the names every task shares: ``step``, ``data``, ``out_dir``, ``code_perplexity``, ``codes_used``
and ``quantized`` (:func:`seqvq.train.warmup.quantized_figure`), and the task's own (its error figure:
``per``/``cer``/``wer``, ``bpd``, ``mse``, ``accuracy``...).

A task declares only what differs: its ``name`` (the run config's ``task:``), the dataclasses of its ``data:`` and
``eval:`` sections, its ``model:`` keys (:meth:`Task.model_section`), and the hooks :meth:`Task.build_network`,
:meth:`Task.open_split`, :meth:`Task.evaluate` and :meth:`Task.training_collate`. A task whose model's shape
depends on its data (speech: feature dimension and units; classification: classes) reads it from the training data
(:meth:`Task.read_training_data`), and every checkpoint carries it: in :meth:`Task.evaluation_state`, read back by
:meth:`Task.restore`, or in the run config.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable, ClassVar

import torch
from torch import nn

from seqvq.errors import UserError
from seqvq.options import Section
from seqvq.train.checkpoint import load_checkpoint, read_checkpoint
from seqvq.train.logs import atomic_write_text
from seqvq.train.types import TaskBundle
from seqvq.train.warmup import quantized_figure

TRAIN, EVAL = "train", "eval"  # the splits open_split opens: the training split and the evaluated one


class Task:
    """A task for the shared trainer, built from a checked run config (``seqvq.train.config.check_run_config``
    with :meth:`schema`); ``data`` and ``eval`` hold its sections as the task's option dataclasses."""

    name: ClassVar[str]  # the run config's ``task:``
    data_options: ClassVar[type]  # the dataclass of the ``data:`` section
    eval_options: ClassVar[type | None] = None  # the dataclass of the ``eval:`` section, for a task that has one

    def __init__(self, config: dict):
        self.config = config
        self.data = self._options("data", self.data_options)
        self.eval = self._options("eval", self.eval_options) if self.eval_options is not None else None

    # ---- what a task declares ---------------------------------------------------------------------------------
    @classmethod
    def model_section(cls) -> Section:
        """The keys of the ``model:`` section (the network's keywords, less those the task passes itself)."""
        raise NotImplementedError

    def build_network(self, options: dict) -> nn.Module:
        """The trainer-facing model (``forward(batch) -> StepOutput``) from the checked ``model:`` options."""
        raise NotImplementedError

    def open_split(self, split: str, model: nn.Module, path: str | None = None):
        """The dataset of ``split`` (:data:`TRAIN` or :data:`EVAL`) of the config's data, or of the data set at
        ``path`` (``seqvq evaluate``'s DATA, always :data:`EVAL`) for ``model``; None when the config names no
        evaluated split (the run then logs no evaluation)."""
        raise NotImplementedError

    def training_collate(self) -> Callable:
        """items -> a training batch."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, dataset, out_dir: Path | None) -> dict:
        """The figures of ``model`` (in eval mode, under no_grad) on ``dataset``; with ``out_dir`` (``seqvq
        evaluate``), also the task's files there (hypotheses, reconstructions...)."""
        raise NotImplementedError

    def evaluate_during_training(self, model: nn.Module, dataset) -> dict:
        """The figures logged every ``train.eval_every`` steps: those of :meth:`evaluate`, no files written."""
        return self.evaluate(model, dataset, None)

    def read_training_data(self) -> None:
        """Read what the model's shape depends on from the training data, before the model is built."""

    def evaluation_state(self) -> dict:
        """What evaluating a checkpoint needs besides its weights and run config (e.g. CMVN statistics), in types
        ``torch.load(weights_only=True)`` reads; every checkpoint carries it."""
        return {}

    def data_files(self) -> list[str] | None:
        """The files the training and evaluated splits are read from (the run's data fingerprint,
        :class:`~seqvq.train.TaskBundle`); None: every file under the paths of the ``data:`` section."""
        return None

    def restore(self, checkpoint: dict, path: str) -> None:
        """Read back what :meth:`read_training_data` read, from the checkpoint at ``path``, before the model is
        built for evaluation."""

    # ---- written once -----------------------------------------------------------------------------------------
    @classmethod
    @functools.cache
    def schema(cls) -> Section:
        """The run-config keys the task reads besides ``task``, ``exp_dir`` and ``train``; every run config is
        checked against them before anything runs."""
        sections = {"data": Section.of(cls.data_options), "model": cls.model_section()}
        if cls.eval_options is not None:
            sections["eval"] = Section.of(cls.eval_options)
        return Section.keys(cls.name, **sections)

    def _options(self, section: str, options_class: type):
        return options_class(**self.schema().sections[section].check(self.config.get(section) or {}, section))

    def build_model(self) -> nn.Module:
        """The model of the config's ``model:`` section; an option value the network refuses is a one-line
        UserError naming the section."""
        options = self.schema().sections["model"].check(dict(self.config.get("model") or {}), "model")
        try:
            return self.build_network(options)
        except UserError:
            raise
        except ValueError as error:  # an option value the model refuses (the keys and types are checked above)
            raise UserError(f"model: {error}; fix the model section of the config") from None

    def build_task(self) -> TaskBundle:
        """What the trainer needs: the model, the training split and its collate function, the evaluation of the
        evaluated split, and the evaluation state."""
        self.read_training_data()
        model = self.build_model()
        train, evaluated = self.open_split(TRAIN, model), self.open_split(EVAL, model)
        evaluate = None if evaluated is None else lambda trained: self.evaluate_during_training(trained, evaluated)
        return TaskBundle(model, train, self.training_collate(), evaluate, self.evaluation_state(),
                          data_files=self.data_files())

    def evaluate_checkpoint(self, checkpoint: str | Path, data: str | Path, out_dir: str | Path,
                            use_polyak: bool = True) -> dict:
        """``seqvq evaluate CHECKPOINT DATA``: the figures of the checkpoint (its Polyak-averaged weights when it
        holds them and ``use_polyak``, else its live ones) on the evaluated split of ``data``, written with the
        task's files to ``out_dir``/figures.json, and returned."""
        self.restore(read_checkpoint(checkpoint), str(checkpoint))
        model = self.build_model()
        saved = load_checkpoint(checkpoint, model, use_polyak=use_polyak)
        model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        dataset = self.open_split(EVAL, model, str(data))
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            figures = self.evaluate(model, dataset, out_dir)
        figures = {"step": saved.get("step"), "data": str(Path(data).resolve()), "out_dir": str(out_dir), **figures,
                   **quantized_figure(model)}
        atomic_write_text(out_dir / "figures.json", json.dumps(figures, indent=1) + "\n")
        return figures
