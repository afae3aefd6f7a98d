"""The shared trainer of the seqvq recipes (Łańcucki 2020 §IV: Adam with the codebook in its own LR group,
LR schedules, gradient clipping, Polyak averaging for evaluation).

Contract
--------
* A task is an ``nn.Module`` whose ``forward(batch)`` returns a :class:`~seqvq.train.types.StepOutput`:
  ``loss`` (scalar tensor, quantizer ``res.loss`` already added by the task), ``metrics`` (name -> float or
  0-d tensor) and ``weight`` (how many items ``loss`` averages). Logged figures are weight-averaged over the
  ``log_every`` steps (and over ranks under DDP).
* ``Trainer(model, config, train_dataset, collate_fn, evaluate=None, exp_dir=...)``; ``fit()`` trains to
  ``config.steps``. ``train_dataset`` is indexable with ``len`` (and has ``lengths``, one int per example, for
  ``bucket_batches``); batches are ``collate_fn(items)`` moved to the device (tensors inside dicts, lists, tuples
  and dataclasses). Data randomness: if ``collate_fn`` takes a ``generator`` keyword it gets a ``torch.Generator``
  seeded per (seed, epoch, batch, rank) — see :mod:`seqvq.train.data`.
* ``evaluate(model) -> dict[str, float]`` runs every ``eval_every`` steps and at the end, on rank 0, under
  ``model.eval()`` and ``torch.no_grad()``, with the Polyak-averaged parameters swapped in when
  ``polyak_decay`` is set, and with the training RNG state saved and restored around it. Its figures are
  logged with ``split="dev"``.
* Optimizer: ``Adam(seqvq.param_groups(model, lr, codebook_lr, weight_decay))`` (``optimizer: adamw`` or
  ``sgd`` with ``momentum`` pick another; see :func:`build_optimizer`);
  ``seqvq.reset_optimizer_state_on_step(model, optimizer)`` clears rewritten codes' moments at each step.  With
  ``alternating_inner_steps: k`` (or ``alternating_fused: true``) the step is Huh et al.'s alternating one
  (:class:`seqvq.AlternatingOptimizer`: k codebook-only steps on sub-batches, then the task step) with one
  optimizer for the codebook group and one for the rest.  A model may provide ``codebook_loss(part)`` (its quantizers'
  codebook terms with the encoder under no_grad; else the whole forward pass runs per inner step) and
  ``split_batch(batch, parts)`` (for batch layouts that slicing every tensor along dim 0 cannot split).
* Non-finite values: a step whose loss or gradient norm is NaN/Inf stops training with an error naming the step,
  before the optimizer step and before any checkpoint is written, so ``last.pt`` keeps the last good state (a
  checkpoint is never written from parameters or buffers that hold NaN/Inf). With ``skip_nonfinite`` such a
  batch is skipped instead: no update, the forward pass's in-place changes (BatchNorm moments, EMA codebooks,
  reservoirs, rewritten codes) undone from a copy of the model state taken before each step, counted in
  ``skipped_nonfinite`` (logged and checkpointed). Under alternating optimization every optimizer step of the
  training step (each inner codebook step, the task step) is checked before it is applied and the error names the
  inner step; a stop or a skip leaves parameters and optimizer states as they were before the batch.
* Checkpoints: ``exp_dir/checkpoints/step_NNNNNN.pt`` every ``checkpoint_every`` steps and at the end, plus
  ``last.pt``, written atomically; each carries the task's ``evaluation_state`` (see
  :class:`~seqvq.train.types.TaskBundle`), the run config and the ``data_fingerprint`` given (what ``seqvq train``
  compares before resuming: :mod:`seqvq.train.resume`). A trainer whose ``exp_dir`` holds ``last.pt`` resumes from
  it exactly: model, optimizer, schedule, Polyak shadow, step, epoch and position in the epoch, Python/numpy/torch
  RNG states of every rank, and says so on stderr ("resuming from step M", or "already trained" when ``last.pt``
  is at ``steps``); with ``start_over`` it deletes that run's checkpoints and logs first. The temporary file of a
  save that a killed run never finished is deleted on the next start. Ctrl-C during ``fit()`` raises
  :class:`seqvq.errors.Interrupted` naming the step reached and the last checkpoint. Evaluate a checkpoint with
  :func:`seqvq.train.checkpoint.load_checkpoint`.
* Logs: ``exp_dir/metrics.jsonl`` and ``metrics.csv``; PNGs from :func:`seqvq.train.logs.plot_metrics` at the end.
  With ``doctor_every`` > 0, every that many steps one ``doctor`` record per bottleneck: its state as the step's own
  training pass saw it (:class:`seqvq.quantize.diagnosis.Watch`; nothing in the step changes), which
  ``seqvq doctor`` reads (:mod:`seqvq.train.doctor`).
* DDP: under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised (nccl on CUDA, gloo on CPU),
  the model is wrapped in ``DistributedDataParallel``, each rank reads its shard with ``batch_size`` items
  per step, and only rank 0 writes files.  DDP broadcasts rank 0's buffers before every forward pass (for the
  task's own buffers); the quantizers' buffers are already identical on every rank — their statistics are
  reduced and their reservoir is fed with every rank's vectors — so the broadcast changes none of them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

import seqvq
from seqvq.errors import Interrupted, UserError
from seqvq.quantize import AlternatingOptimizer
from seqvq.quantize.accumulation import accumulated_step
from seqvq.quantize.alternating import NonFiniteStep
from seqvq.quantize.compiled import compile_model
from seqvq.quantize.diagnosis import Watch, bottlenecks, initial_codebooks
from seqvq.train.checkpoint import (atomic_save, checkpoint_path, prune_checkpoints, read_checkpoint,
                                    remove_unfinished_saves, rng_state, set_rng_state)
from seqvq.train.config import TrainConfig
from seqvq.train.data import EpochBatchSampler, SeededCollate, SeededItems
from seqvq.train.logs import MetricsLog, plot_metrics
from seqvq.train.polyak import PolyakAverage
from seqvq.train.schedule import LRFactor
from seqvq.train.types import StepOutput


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Initialise the process group when launched by torchrun with ``WORLD_SIZE`` > 1; returns (rank, world)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def resolve_device(name: str | None) -> torch.device:
    """``name`` (None -> cuda if available else cpu); a bare "cuda" means this process's ``LOCAL_RANK`` GPU."""
    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def move_to(value, device: torch.device):
    """Move every tensor inside (nested) dicts, lists, tuples and dataclasses to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {key: move_to(item, device) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: move_to(getattr(value, f.name), device)
                                             for f in dataclasses.fields(value) if f.init})
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(move_to(item, device) for item in value))
    if isinstance(value, (list, tuple)):
        return type(value)(move_to(item, device) for item in value)
    return value


OPTIMIZERS = ("adam", "adamw", "sgd")


def build_optimizer(config: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` names over the parameter ``groups`` (each carries its lr and weight
    decay; the codebook group has none, Huh A.1)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer in ("adam", "adamw"):
        betas = tuple(config.betas) if config.betas is not None else (0.9, 0.999)
        kind = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
        return kind(groups, lr=config.lr, betas=betas, weight_decay=config.weight_decay)
    raise ValueError(f"unknown train.optimizer {config.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")


class Trainer:
    """Trains a task model; see the module docstring for the contract."""

    def __init__(self, model: nn.Module, config: TrainConfig, train_dataset, collate_fn, evaluate=None,
                 exp_dir: str | Path = "exp", run_config: dict | None = None, evaluation_state: dict | None = None,
                 data_fingerprint: dict | None = None, start_over: bool = False):
        self.config, self.exp_dir, self.run_config = config, Path(exp_dir), run_config
        self.evaluation_state, self.data_fingerprint = evaluation_state or {}, data_fingerprint
        if config.bucket_batches and getattr(train_dataset, "lengths", None) is None:
            raise UserError(f"train.bucket_batches: this task's training data ({type(train_dataset).__name__}) has "
                            f"no example lengths to bucket by; set train.bucket_batches=0")
        self.train_dataset, self.collate_fn, self.evaluate = train_dataset, collate_fn, evaluate
        self.device = resolve_device(config.device)
        self.rank, self.world_size = init_distributed(self.device)
        self.model = model.to(self.device)
        if config.compile:
            compile_model(self.model, backend=config.compile_backend)
        groups = seqvq.param_groups(self.model, config.lr, config.codebook_lr, weight_decay=config.weight_decay)
        self.alternating = None
        if config.accumulation_steps < 1:
            raise UserError(f"train.accumulation_steps must be >= 1, got {config.accumulation_steps}")
        if config.accumulation_steps > 1 and (config.alternating_inner_steps or config.alternating_fused):
            raise UserError("train.accumulation_steps splits each batch into micro-batches of one step, and "
                            "train.alternating_inner_steps / alternating_fused into inner codebook steps; use one "
                            "or the other")
        if config.alternating_inner_steps or config.alternating_fused:
            # Huh §4.2: the codebook (eq. 17) and the rest (eq. 18) are stepped by separate optimizers.
            by_name = {group["name"]: group for group in groups}
            self.optimizers = [build_optimizer(config, [by_name["model"]])]
            if "codebook" in by_name:
                self.optimizers.append(build_optimizer(config, [by_name["codebook"]]))
            self.alternating = AlternatingOptimizer(
                self.model, self.optimizers[0], self.optimizers[1] if len(self.optimizers) > 1 else None,
                inner_steps=max(1, config.alternating_inner_steps), fused=config.alternating_fused,
                split=getattr(model, "split_batch", None), clip_grad_norm=config.clip_grad_norm, check_finite=True)
        else:
            self.optimizers = [build_optimizer(config, groups)]
            seqvq.reset_optimizer_state_on_step(self.model, self.optimizers[0])
        self.optimizer = self.optimizers[0]
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(
            config.schedule, config.steps, config.step_size, config.gamma, config.warmup_steps,
            config.min_lr_ratio)) for optimizer in self.optimizers]
        self.ddp_model = self.model
        if self.world_size > 1:  # wrapping broadcasts rank 0's parameters and buffers to every rank
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.model, device_ids=ids,
                                                     find_unused_parameters=config.find_unused_parameters)
        self.polyak = PolyakAverage(self.model, config.polyak_decay) if config.polyak_decay is not None else None
        self.step = self.epoch = self.batch_in_epoch = self.skipped_nonfinite = 0
        seed_everything(config.seed + self.rank)
        self.last_path = self.exp_dir / "checkpoints" / "last.pt"
        self.saved_step: int | None = None  # the step of last.pt
        if self.rank == 0:
            unfinished = remove_unfinished_saves(self.last_path.parent)
            if unfinished:
                print(f"{self.last_path.parent}: removed {len(unfinished)} unfinished checkpoint file(s) a killed "
                      f"run left behind ({', '.join(path.name for path in unfinished)})", file=sys.stderr)
        if start_over:
            self._start_over()
        if config.doctor_every and not bottlenecks(self.model):
            raise UserError(f"train.doctor_every={config.doctor_every}: the model has no quantizer the doctor reads "
                            f"(seqvq's vq, residual, fsq, bsq, lfq kinds); drop train.doctor_every for this run")
        # The model as the task built it, before any resume: the initial codebooks, from which the doctor measures
        # how far the used codes moved (a resumed run rebuilds the same initial model from the same seed).
        self.initial_codebooks = initial_codebooks(self.model) if config.doctor_every else None
        if self.last_path.is_file():
            self._resume(read_checkpoint(self.last_path))
        self.log = MetricsLog(self.exp_dir, self.step) if self.rank == 0 else None

    # ---- data -----------------------------------------------------------------------------------------
    def _batches(self):
        """Batches forever, advancing ``epoch`` / ``batch_in_epoch`` as they are consumed."""
        while True:
            sampler = EpochBatchSampler(len(self.train_dataset), self.config.batch_size, self.config.seed,
                                        self.epoch, self.rank, self.world_size, start_batch=self.batch_in_epoch,
                                        lengths=getattr(self.train_dataset, "lengths", None),
                                        bucket_batches=self.config.bucket_batches)
            loader = DataLoader(SeededItems(self.train_dataset), batch_sampler=sampler,
                                collate_fn=SeededCollate(self.collate_fn), num_workers=self.config.num_workers,
                                generator=torch.Generator(), pin_memory=self.device.type == "cuda")
            for batch in loader:
                self.batch_in_epoch += 1
                yield move_to(batch, self.device)
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    # ---- training -------------------------------------------------------------------------------------
    def train_step(self, batch) -> StepOutput | None:
        """One optimizer step on ``batch``; None when ``skip_nonfinite`` skipped it."""
        self.model.train()
        before = self._forward_state() if self.config.skip_nonfinite else None
        if self.alternating is not None:
            try:  # each inner codebook step and the task step are checked before they are applied
                result = self.alternating.step(batch, self._task_output, getattr(self.model, "codebook_loss", None))
            except NonFiniteStep as nonfinite:  # no parameter or optimizer state kept anything of this step
                if before is None:
                    self._stop_nonfinite(self.step + 1, nonfinite.loss, nonfinite.grad_norm, nonfinite.where)
                self._skip_batch(before)
                return None
            out = result.output
            out.metrics = {**out.metrics, "inner_codebook_loss": result.inner_losses.mean()}
            if result.grad_norm is not None:
                out.metrics["grad_norm"] = result.grad_norm
        else:
            self.optimizer.zero_grad(set_to_none=True)
            out = self._forward_backward(batch)
            grad_norm = nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
            if not self._all_finite(out.loss, grad_norm):
                if before is None:
                    self._stop_nonfinite(self.step + 1, out.loss, grad_norm)
                self._skip_batch(before)
                return None
            if self.config.clip_grad_norm is not None:
                nn.utils.clip_grads_with_norm_(self.model.parameters(), self.config.clip_grad_norm, grad_norm)
                out.metrics = {**out.metrics, "grad_norm": grad_norm}
            self.optimizer.step()
        if self.polyak is not None:
            self.polyak.update(self.model)
        self._end_step()
        return out

    def _end_step(self) -> None:
        """A step taken (or skipped) counts: the LR schedules advance and ``step`` with them."""
        for scheduler in self.schedulers:
            scheduler.step()
        self.step += 1

    def _forward_state(self) -> dict[str, torch.Tensor]:
        """A copy of the model's state: a forward pass changes buffers in place (BatchNorm moments, EMA statistics,
        reservoirs, step counters) and may rewrite codes (re-estimation, replacement, k-means init)."""
        return {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()}

    def _all_finite(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """Whether the loss and the gradient norm are finite on every rank: one device sync per step."""
        finite = torch.isfinite(loss.detach()).all() & torch.isfinite(grad_norm)
        if self.world_size > 1:
            finite = finite.to(torch.int32)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite)

    def _stop_nonfinite(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor,
                        inner_step: str | None = None) -> None:
        what = (f"the loss is {float(loss.detach()):g}" if not torch.isfinite(loss.detach()).all()
                else f"the gradient norm is {float(grad_norm):g}" if not torch.isfinite(grad_norm)
                else "a rank's loss or gradient is not finite")
        where = f"step {step}" + (f" ({inner_step})" if inner_step else "")
        kept = (f"{self.last_path} (step {read_checkpoint(self.last_path)['step']}) is the last good checkpoint"
                if self.last_path.is_file() else "no checkpoint was written")
        raise UserError(f"{where}: {what}; training stopped and {kept}; lower train.lr, set "
                        f"train.clip_grad_norm, check the input data, or set train.skip_nonfinite=true to skip "
                        f"such batches")

    def _skip_batch(self, before: dict[str, torch.Tensor]) -> None:
        """Undo the forward pass's in-place changes and take no update; the step still counts."""
        self.model.load_state_dict(before)
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_nonfinite += 1
        if self.rank == 0:
            print(f"step {self.step + 1}: non-finite loss or gradient; batch skipped "
                  f"({self.skipped_nonfinite} so far)", file=sys.stderr)
        self._end_step()

    def _forward_backward(self, batch) -> StepOutput:
        """Forward and backward of ``batch``; with ``accumulation_steps`` k > 1 as k micro-batches of one
        accumulated step (:mod:`seqvq.quantize.accumulation`), each loss weighted by its items, the gradients then
        divided by the batch's: the output is the weighted average of the micro-batches'."""
        if self.config.accumulation_steps == 1:
            out = self._task_output(batch)
            out.loss.backward()
            return out
        split = getattr(self.model, "split_batch", None) or seqvq.quantize.split_batch
        parts = split(batch, self.config.accumulation_steps)
        outputs = []
        with accumulated_step(self.model):
            for index, part in enumerate(parts):
                last = index == len(parts) - 1
                # DDP averages the gradients over ranks once, at the last micro-batch.
                with contextlib.nullcontext() if last or self.ddp_model is self.model else self.ddp_model.no_sync():
                    out = self._task_output(part)
                    (out.loss * out.weight).backward()
                outputs.append(out)
        total = sum(out.weight for out in outputs)
        for parameter in self.model.parameters():
            if parameter.grad is not None:
                parameter.grad.div_(total)
        return StepOutput(loss=sum(out.loss.detach() * out.weight for out in outputs) / total,
                          metrics={name: sum(out.metrics[name] * out.weight for out in outputs) / total
                                   for name in outputs[0].metrics},
                          weight=total)

    def _task_output(self, batch) -> StepOutput:
        out = self.ddp_model(batch)
        if not isinstance(out, StepOutput):
            raise TypeError(f"{type(self.model).__name__}.forward must return seqvq.train.StepOutput, "
                            f"got {type(out).__name__}")
        return out

    def fit(self) -> dict[str, float]:
        """Train to ``config.steps``; returns the last evaluation's figures (empty without ``evaluate``). Ctrl-C
        stops it with :class:`~seqvq.errors.Interrupted`, whose message says where and how to resume."""
        try:
            return self._fit()
        except KeyboardInterrupt:
            if self.rank == 0 and sys.stderr.isatty():
                print(file=sys.stderr)  # past the progress bar's line
            kept = (f"last checkpoint at step {self.saved_step} ({self.last_path}); rerun the same command to resume"
                    if self.saved_step is not None else "no checkpoint yet; rerun the same command to start again")
            raise Interrupted(f"interrupted at step {self.step} of {self.config.steps}; {kept}") from None

    def _fit(self) -> dict[str, float]:
        """The training loop of :meth:`fit`."""
        cfg, dev_figures = self.config, {}
        sums: dict[str, torch.Tensor] = {}
        batches = self._batches()
        bar = tqdm(total=cfg.steps, initial=self.step, dynamic_ncols=True,
                   disable=self.rank != 0 or not sys.stderr.isatty())
        while self.step < cfg.steps:
            if cfg.doctor_every and (self.step + 1) % cfg.doctor_every == 0:
                with Watch(self.model) as watch:  # reads the step's own pass of each bottleneck
                    out = self.train_step(next(batches))
                self._log_doctor(watch)
            else:
                out = self.train_step(next(batches))
            if out is not None:
                weight = torch.as_tensor(out.weight, dtype=torch.float32, device=self.device)
                for name, value in {"loss": out.loss, **out.metrics}.items():
                    value = torch.as_tensor(value, dtype=torch.float32, device=self.device).detach()
                    sums[name] = sums.get(name, 0.0) + value * weight
                sums["_weight"] = sums.get("_weight", 0.0) + weight
            bar.update(1)
            done = self.step == cfg.steps
            if (self.step % cfg.log_every == 0 or done) and sums:
                record = self._log_train(sums)
                bar.set_postfix(loss=f"{record['loss']:.4g}")
                sums = {}
            if self.evaluate is not None and (self.step % cfg.eval_every == 0 or done):
                dev_figures = self.run_evaluation()
            if self.step % cfg.checkpoint_every == 0 or done:
                self.save_checkpoint()
        bar.close()
        if self.rank == 0:
            plot_metrics(self.exp_dir)
        return dev_figures

    def _log_train(self, sums: dict[str, torch.Tensor]) -> dict:
        names = sorted(sums)
        totals = torch.stack([torch.as_tensor(sums[name], device=self.device) for name in names])
        if self.world_size > 1:
            dist.all_reduce(totals)
        totals = dict(zip(names, totals.tolist()))
        weight = totals.pop("_weight")
        record = {"step": self.step, "split": "train", "epoch": self.epoch,
                  "lr": self.optimizer.param_groups[0]["lr"], **{k: v / weight for k, v in totals.items()}}
        if self.config.skip_nonfinite:
            record["skipped_nonfinite"] = self.skipped_nonfinite
        if self.log is not None:
            self.log.write(record)
        return record

    def _log_doctor(self, watch: Watch) -> None:
        """``doctor_every``: each bottleneck's state on this step's batch as its training pass saw it, one ``doctor``
        record per bottleneck (every rank measures: the distances are reduced over ranks; rank 0 writes)."""
        states = watch.states(self.initial_codebooks)
        if self.log is not None:
            for state in states:
                self.log.write({"step": self.step, "split": "doctor", "epoch": self.epoch,
                                "bottleneck": state.name, **state.figures()})

    def run_evaluation(self) -> dict[str, float]:
        """Evaluate on rank 0 (Polyak weights swapped in when on), log as ``dev``; other ranks wait."""
        figures: dict[str, float] = {}
        if self.rank == 0:
            saved_rng, was_training = rng_state(), self.model.training
            self.model.eval()
            try:
                with torch.no_grad():
                    if self.polyak is not None:
                        with self.polyak.swapped_in(self.model):
                            figures = dict(self.evaluate(self.model))
                    else:
                        figures = dict(self.evaluate(self.model))
            finally:
                self.model.train(was_training)
                set_rng_state(saved_rng)
            figures = {k: float(v) for k, v in figures.items()}
            self.log.write({"step": self.step, "split": "dev", "epoch": self.epoch, **figures})
        if self.world_size > 1:
            dist.barrier()
        return figures

    # ---- checkpoints ----------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Write ``step_NNNNNN.pt`` and ``last.pt`` atomically (rank 0), with every rank's RNG state."""
        for name, tensor in self.model.state_dict().items():  # every rank holds the same model: all stop
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise UserError(f"step {self.step}: {name} holds NaN/Inf values; no checkpoint written (the last "
                                f"good one stays in {self.last_path.parent}); lower train.lr, set "
                                f"train.clip_grad_norm or check the input data")
        rng_states = [rng_state()]
        if self.world_size > 1:
            rng_states = [None] * self.world_size
            dist.all_gather_object(rng_states, rng_state())
        if self.rank != 0:
            return
        state = {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "model": self.model.state_dict(), "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "polyak": self.polyak.state_dict() if self.polyak is not None else None,
            "rng": rng_states, "train_config": dataclasses.asdict(self.config), "config": self.run_config,
            "evaluation_state": self.evaluation_state, "skipped_nonfinite": self.skipped_nonfinite,
            "data_fingerprint": self.data_fingerprint,
        }
        path = checkpoint_path(self.exp_dir, self.step)
        atomic_save(state, path)
        atomic_save(state, self.last_path)
        self.saved_step = self.step
        prune_checkpoints(path.parent, self.config.keep_checkpoints)

    def _start_over(self) -> None:
        """Delete the run in ``exp_dir`` (its checkpoints, logs and plots; rank 0) so that training starts at step 0."""
        if self.rank == 0:
            last = read_checkpoint(self.last_path)["step"] if self.last_path.is_file() else None
            shutil.rmtree(self.exp_dir / "checkpoints", ignore_errors=True)
            shutil.rmtree(self.exp_dir / "plots", ignore_errors=True)
            for name in ("metrics.jsonl", "metrics.csv"):
                (self.exp_dir / name).unlink(missing_ok=True)
            print(f"{self.exp_dir}: starting over; deleted the previous run's checkpoints (last at step {last}) and "
                  f"logs", file=sys.stderr)
        if self.world_size > 1:
            dist.barrier()

    def _resume(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        # The schedule's shape comes from the current config (e.g. more steps), its position from the checkpoint.
        for optimizer, scheduler, optimizer_state, scheduler_state in zip(
                self.optimizers, self.schedulers, state["optimizers"], state["schedulers"], strict=True):
            optimizer.load_state_dict(optimizer_state)
            scheduler.load_state_dict({**scheduler_state, "lr_lambdas": [None] * len(optimizer.param_groups)})
        if self.polyak is not None and state["polyak"] is not None:
            self.polyak.load_state_dict(state["polyak"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.skipped_nonfinite = state.get("skipped_nonfinite", 0)
        rng = state["rng"]
        set_rng_state(rng[self.rank] if len(rng) == self.world_size else rng[0])
        self.saved_step = self.step
        if self.rank == 0:
            where = f"step {self.step} of {self.config.steps}"
            print(f"{self.exp_dir}: already trained ({where}, {self.last_path}); raise train.steps to train on"
                  if self.step >= self.config.steps else f"{self.exp_dir}: resuming from {where} ({self.last_path})",
                  file=sys.stderr)
