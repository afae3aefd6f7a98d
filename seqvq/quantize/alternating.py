"""Alternating optimization of Huh et al. 2023, §4.2 (eq. 17-18), §5.4 and Appendix A.11 (Table 10).

A training step alternates

    eq. 17   min_h    L_commit(h(F(x)), F(x))          k inner steps, codebook parameters only
    eq. 18   min_F,G  L_task(G(h(F(x))), y)            one task step, every other parameter

so the task gradient is taken through a quantizer that has just been fitted to the current encoder outputs
(small quantization error, hence a small STE gradient gap, eq. 14).  As in §5.4 the mini-batch is split evenly
into ``k`` sub-mini-batches, one per inner step, so the inner loop sees each example once; Table 10 finds k = 8
best on AlexNet (k = 1-2 suffice with the other remedies).  A batch of fewer than ``k`` examples (an epoch's last)
takes one inner step per example; under DDP every rank takes as many inner steps as the rank with the fewest, since
each inner step averages the codebook gradient over ranks.  With k = 1 the ``fused`` variant takes both steps from
a single forward pass (the commitment loss does not depend on the task loss; 1.05x the cost of joint training).

Contract (the task supplies two callables; nothing runs ``backward()`` inside a forward):

* ``task_loss(batch)`` -> scalar tensor, or an object with a scalar ``.loss`` (e.g. ``StepOutput``): the full
  loss of the usual training step (quantizer losses included).
* ``inner_loss(part)`` -> scalar tensor: the codebook term of every quantizer on one sub-batch, with the encoder
  run under ``torch.no_grad()`` (detached ``z_e``), e.g.::

      def inner_loss(part):
          with torch.no_grad():
              z_e, mask = model.encode(part)
          return model.quantizer(z_e, mask=mask).losses["codebook"]

  Under DDP call the bare module here, not the DDP wrapper: the inner gradients are averaged over ranks by this
  helper.  Without ``inner_loss`` the helper runs the bare model's forward on each sub-batch and sums
  ``losses["codebook"]`` of every :class:`VectorQuantizer` that ran (simpler, at the cost of full forward
  passes); the fused variant sums them from the task's own forward pass.

No gradient leaks either way: inner gradients are computed with ``torch.autograd.grad`` for the codebook
optimizer's parameters alone (``seqvq.quantize.optim.codebook_parameters``: codebooks and their affine parameters),
stepped, and cleared; the task optimizer may hold no codebook parameter.

One optimizer step is one quantizer step.  The inner forward passes run as ``"codebook_fit"`` passes (see
:mod:`seqvq.quantize.core`): they change no quantizer state — no step count, reservoir, EMA or affine statistics,
re-estimation, replacement or sampler.  The task forward pass is the ``"task_step"`` pass that does all of that
once, with the codebook term weighted 0 in its loss (the inner steps train the codebook).  Set per pass for every
quantizer of the model by :func:`seqvq.quantize.core.quantizer_passes`, which also collects the codebook terms — no
hooks.

The task loss's own gradient for the codebook — ``sync_nu`` x the task gradient at z_q (Huh eq. 21), the
Gumbel-softmax gradient, or the usage regularizer's — is applied by the codebook optimizer: in the fused variant
added to the inner gradient in its one codebook step (eq. 21's update: commitment step plus the nu term); in the
k-step variant as one more codebook step after the task step (it exists only once the task forward pass has run on
the fitted codebook).

Refused at construction: EMA codebooks (``codebook_update="ema"``): eq. 17 steps the codebook by its gradient,
which an EMA codebook does not take; use one or the other.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .core import VectorQuantizer, quantizer_passes
from .distributed import all_reduce_min, all_reduce_sum, is_distributed
from .optim import codebook_parameters, param_groups, reset_optimizer_state


@dataclass
class AlternatingStepResult:
    loss: torch.Tensor  # the task step's loss, detached
    output: Any  # whatever task_loss(batch) returned (e.g. the StepOutput to log)
    inner_losses: torch.Tensor  # (k,) detached codebook losses of the inner steps
    grad_norm: torch.Tensor | None = None  # the task gradient's norm before clipping, when clipping is on


class NonFiniteStep(ArithmeticError):
    """An optimizer step's loss or gradient norm is NaN/Inf on some rank (``check_finite``); raised before that step
    is applied, with the step's earlier inner steps undone.  ``where``: the inner codebook step ("inner codebook
    step 2 of 4"), or None for the task step; ``loss`` and ``grad_norm``: this rank's values."""

    def __init__(self, where: str | None, loss: torch.Tensor, grad_norm: torch.Tensor):
        super().__init__(f"{where or 'task step'}: loss {float(loss):g}, gradient norm {float(grad_norm):g}")
        self.where, self.loss, self.grad_norm = where, loss, grad_norm


class AlternatingOptimizer:
    """Runs Huh eq. 17-18 steps with a codebook optimizer and a task optimizer.

    Args:
        model: the module holding the quantizers (the bare module, also under DDP).
        task_optimizer: optimizer of the non-codebook parameters (eq. 18).
        codebook_optimizer: optimizer of codebook-marked parameters only (eq. 17); ``None`` when the model has no
            trainable codebook parameter.
        inner_steps: ``k``, the number of inner steps and of sub-mini-batches.
        fused: take the single inner step and the task step from one forward pass (requires ``inner_steps=1``).
        split: ``split(batch, k) -> list of k sub-batches``; the default :func:`split_batch` slices every tensor
            along its first (batch) axis.
        clip_grad_norm: clip the task step's gradient to this total norm (the trainer's ``clip_grad_norm``).
        check_finite: before every optimizer step (each inner codebook step, the task step) check on every rank
            that its loss and gradient norm are finite; if not, put the codebook parameters and the codebook
            optimizer back as they were before :meth:`step` and raise :class:`NonFiniteStep`: no parameter or
            optimizer state keeps anything of the step (buffers keep the forward passes' in-place changes, as
            after any forward pass).  One collective per optimizer step.
    """

    def __init__(self, model: nn.Module, task_optimizer: torch.optim.Optimizer,
                 codebook_optimizer: torch.optim.Optimizer | None, inner_steps: int = 1, fused: bool = False,
                 split: Callable[[Any, int], list] | None = None, clip_grad_norm: float | None = None,
                 check_finite: bool = False):
        if inner_steps < 1:
            raise ValueError(f"AlternatingOptimizer: inner_steps must be >= 1, got {inner_steps}")
        if fused and inner_steps != 1:
            raise ValueError(f"AlternatingOptimizer: the fused variant takes exactly one inner step, got "
                             f"inner_steps={inner_steps}")
        task_parameters = _parameters(task_optimizer)
        self.codebook_parameters = _parameters(codebook_optimizer) if codebook_optimizer is not None else []
        codebook_ids = {id(p) for p in codebook_parameters(model)}
        if any(id(p) in codebook_ids for p in task_parameters):
            raise ValueError("AlternatingOptimizer: task_optimizer holds codebook parameters; give it only the "
                             "non-codebook ones (seqvq.param_groups' 'model' group)")
        if not all(id(p) in codebook_ids for p in self.codebook_parameters):
            raise ValueError("AlternatingOptimizer: codebook_optimizer holds parameters that are not codebook "
                             "parameters; "
                             "give it only seqvq.param_groups' 'codebook' group")
        quantizers = [module for module in model.modules() if isinstance(module, VectorQuantizer)]
        if any(quantizer.codebook_update == "ema" for quantizer in quantizers):
            raise ValueError("AlternatingOptimizer steps the codebook by its gradient (Huh eq. 17), but "
                             "codebook_update='ema' takes none; use one or the other")
        # The task loss trains the codebook itself (sync_nu, Gumbel-softmax): the codebook optimizer applies it.
        self.task_gradient_reaches_codebook = any(q.task_gradient_reaches_codebook for q in quantizers)
        self.model, self.task_optimizer, self.codebook_optimizer = model, task_optimizer, codebook_optimizer
        self.inner_steps, self.fused, self.split = inner_steps, fused, split or split_batch
        self.task_parameters, self.clip_grad_norm = task_parameters, clip_grad_norm
        self.quantizers, self.check_finite = quantizers, check_finite

    @classmethod
    def from_model(cls, model: nn.Module, lr: float, codebook_lr: float | None = None, weight_decay: float = 0.0,
                   optimizer: type[torch.optim.Optimizer] = torch.optim.Adam, **options) -> "AlternatingOptimizer":
        """Build both optimizers (``optimizer`` class, default Adam) from :func:`seqvq.param_groups`."""
        groups = {group["name"]: group for group in param_groups(model, lr, codebook_lr, weight_decay)}
        if "model" not in groups:
            raise ValueError("AlternatingOptimizer.from_model: the model has no trainable non-codebook parameter")
        codebook_optimizer = optimizer([groups["codebook"]]) if "codebook" in groups else None
        return cls(model, optimizer([groups["model"]]), codebook_optimizer, **options)

    def step(self, batch, task_loss: Callable[[Any], Any],
             inner_loss: Callable[[Any], torch.Tensor] | None = None) -> AlternatingStepResult:
        """One alternating step on ``batch``: the inner codebook steps (eq. 17), then the task step (eq. 18)."""
        inner_grads = None
        # What the inner steps change before the task step is checked (the fused variant steps after both checks).
        saved = self._saved_codebook() if self.check_finite and not self.fused else None
        if self.fused:
            with quantizer_passes(self.model, "task_step") as codebook_terms:
                output = task_loss(batch)
            codebook_loss = _summed(codebook_terms, "task_loss(batch)")
            # Gradients first, steps after: stepping the codebook now would change tensors the task backward needs.
            inner_grads = self._codebook_gradients(codebook_loss, retain_graph=True)
            self._check_finite(codebook_loss, _total_norm(inner_grads), "inner codebook step 1 of 1", saved)
            inner_losses = [codebook_loss.detach()]
        else:
            parts = self._sub_batches(batch)
            inner_losses = []
            for index, part in enumerate(parts):
                with quantizer_passes(self.model, "codebook_fit") as codebook_terms:
                    with torch.set_grad_enabled(bool(self.codebook_parameters)):
                        if inner_loss is not None:
                            loss = inner_loss(part)
                        else:  # the bare model's forward; only the quantizers' codebook terms are differentiated
                            self.model(part)
                            loss = _summed(codebook_terms, "model(part)")
                if self.codebook_parameters:
                    grads = self._codebook_gradients(loss, retain_graph=False)
                    self._check_finite(loss, _total_norm(grads), f"inner codebook step {index + 1} of {len(parts)}",
                                       saved)
                    self._codebook_step(grads)
                inner_losses.append(loss.detach().reshape(()))
            with quantizer_passes(self.model, "task_step"):
                output = task_loss(batch)
        loss = _loss_value(output)
        self.task_optimizer.zero_grad(set_to_none=True)
        for parameter in self.codebook_parameters:
            parameter.grad = None
        loss.backward()
        # What the task loss sent the codebook: the nu / Gumbel-softmax term (the codebook term has weight 0).
        task_grads = [parameter.grad for parameter in self.codebook_parameters]
        grad_norm = _total_norm([parameter.grad for parameter in self.task_parameters])
        self._check_finite(loss, _total_norm([grad_norm, *task_grads]), None, saved)
        if self.clip_grad_norm is not None:
            nn.utils.clip_grads_with_norm_(self.task_parameters, self.clip_grad_norm, grad_norm)
        self.task_optimizer.step()
        for parameter in self.codebook_parameters:
            parameter.grad = None
        if inner_grads is not None:
            if self.task_gradient_reaches_codebook:
                inner_grads = [_added(a, b) for a, b in zip(inner_grads, task_grads)]
            self._codebook_step(inner_grads)
        elif self.task_gradient_reaches_codebook:
            self._codebook_step(task_grads)
        return AlternatingStepResult(loss.detach(), output, torch.stack(inner_losses),
                                     grad_norm if self.clip_grad_norm is not None else None)

    def _check_finite(self, loss: torch.Tensor, grad_norm: torch.Tensor, where: str | None, saved) -> None:
        """With ``check_finite``: unless ``loss`` and ``grad_norm`` are finite on every rank, put back what this
        step changed (``saved``), clear the gradients and raise :class:`NonFiniteStep`."""
        if not self.check_finite:
            return
        finite = (torch.isfinite(loss.detach()) & torch.isfinite(grad_norm.to(loss.device))).to(torch.int32)
        if int(all_reduce_min(finite)):
            return
        if saved is not None:
            self._restore_codebook(saved)
        self.task_optimizer.zero_grad(set_to_none=True)
        for parameter in self.codebook_parameters:
            parameter.grad = None
        raise NonFiniteStep(where, loss.detach(), grad_norm)

    def _saved_codebook(self):
        """Copies of what an inner step changes: the codebook parameters, the codebook optimizer's state and the
        quantizers' record of the rewrites its moments were reset for."""
        optimizer_state = self.codebook_optimizer.state_dict() if self.codebook_optimizer is not None else None
        return ([parameter.detach().clone() for parameter in self.codebook_parameters], copy.deepcopy(optimizer_state),
                [quantizer.optimizer_synced_rewrites.clone() for quantizer in self.quantizers])

    @torch.no_grad()
    def _restore_codebook(self, saved) -> None:
        values, optimizer_state, synced_rewrites = saved
        for parameter, value in zip(self.codebook_parameters, values):
            parameter.copy_(value)
        if optimizer_state is not None:
            self.codebook_optimizer.load_state_dict(optimizer_state)
        for quantizer, value in zip(self.quantizers, synced_rewrites):
            quantizer.optimizer_synced_rewrites.copy_(value)

    def _sub_batches(self, batch) -> list:
        """The inner steps' sub-batches: ``split(batch, k)``, or fewer when a rank's batch is short — then as many
        on every rank as on the one with the fewest (each inner step all-reduces its gradient)."""
        parts = self._checked_split(batch, self.inner_steps)
        if is_distributed():
            count = torch.tensor(len(parts), device=self.task_parameters[0].device)
            fewest = int(all_reduce_min(count))
            if fewest != len(parts):
                parts = self._checked_split(batch, fewest)
                if len(parts) != fewest:
                    raise ValueError(f"AlternatingOptimizer: split returned {len(parts)} parts for {fewest}, the "
                                     "inner steps of the rank with the fewest; under DDP every rank takes as many")
        return parts

    def _checked_split(self, batch, parts: int) -> list:
        split = self.split(batch, parts)
        if not 1 <= len(split) <= parts:
            raise ValueError(f"AlternatingOptimizer: split returned {len(split)} parts for {parts}")
        return split

    def _codebook_gradients(self, loss: torch.Tensor, retain_graph: bool) -> list[torch.Tensor | None]:
        """Gradients of ``loss`` for the codebook parameters alone (nothing else receives any), averaged over
        ranks."""
        trainable = [p for p in self.codebook_parameters if p.requires_grad]
        if not trainable:
            return [None] * len(self.codebook_parameters)
        found = dict(zip(map(id, trainable),
                         torch.autograd.grad(loss, trainable, retain_graph=retain_graph, allow_unused=True)))
        grads = [found.get(id(parameter)) for parameter in self.codebook_parameters]
        if is_distributed():  # every rank joins the same collectives, used or not
            world_size = torch.distributed.get_world_size()
            grads = [all_reduce_sum(torch.zeros_like(p) if g is None else g.clone()) / world_size
                     for p, g in zip(self.codebook_parameters, grads)]
        return grads

    def _codebook_step(self, grads: list[torch.Tensor | None]) -> None:
        if not self.codebook_parameters:
            return
        for parameter, grad in zip(self.codebook_parameters, grads):
            parameter.grad = grad
        reset_optimizer_state(self.model, self.codebook_optimizer)
        self.codebook_optimizer.step()
        for parameter in self.codebook_parameters:
            parameter.grad = None

    def state_dict(self) -> dict:
        return {"task": self.task_optimizer.state_dict(),
                "codebook": self.codebook_optimizer.state_dict() if self.codebook_optimizer is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.task_optimizer.load_state_dict(state["task"])
        if self.codebook_optimizer is not None:
            self.codebook_optimizer.load_state_dict(state["codebook"])


def _parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [parameter for group in optimizer.param_groups for parameter in group["params"]]


def _loss_value(output) -> torch.Tensor:
    loss = getattr(output, "loss", output)
    if not torch.is_tensor(loss) or loss.dim() != 0:
        raise TypeError("AlternatingOptimizer: task_loss must return a scalar tensor or an object with a scalar "
                        ".loss")
    return loss


def _summed(codebook_terms: list[torch.Tensor], call: str) -> torch.Tensor:
    if not codebook_terms:
        raise RuntimeError(f"AlternatingOptimizer: no VectorQuantizer ran during {call}")
    return torch.stack([term.reshape(()) for term in codebook_terms]).sum()


def _total_norm(tensors: list[torch.Tensor | None]) -> torch.Tensor:
    return nn.utils.get_total_norm([tensor for tensor in tensors if tensor is not None])


def _added(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return b if a is None else a if b is None else a + b


# --------------------------------------------------------------------------------------------- sub-batches
def split_batch(batch, parts: int) -> list:
    """Split ``batch`` into ``parts`` near-equal sub-batches along the batch axis (Huh §5.4); a batch of fewer
    than ``parts`` items gives one sub-batch per item.

    Tensors (in any nesting of dicts, lists, tuples, named tuples and dataclasses) are sliced along dim 0, which
    must be the batch size (the leading size of the first tensor found); 0-d tensors and non-tensors are shared
    by every part.  Batches with other layouts (e.g. concatenated targets) need their own ``split``.
    """
    size = _batch_size(batch)
    if size is None:
        raise ValueError("split_batch: the batch holds no tensor with a batch axis; pass split= to "
                         "AlternatingOptimizer")
    parts = min(parts, size)  # e.g. an epoch's last, short batch: fewer inner steps on it
    return [_slice(batch, index, parts, size, "batch") for index in range(parts)]


def _batch_size(value) -> int | None:
    if torch.is_tensor(value):
        return value.shape[0] if value.dim() > 0 else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = [getattr(value, field.name) for field in dataclasses.fields(value)]
    elif isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for item in value:
            size = _batch_size(item)
            if size is not None:
                return size
    return None


def _slice(value, index: int, parts: int, size: int, path: str):
    if torch.is_tensor(value):
        if value.dim() == 0:
            return value
        if value.shape[0] != size:
            raise ValueError(f"split_batch: {path} has leading size {value.shape[0]}, not the batch size {size}; "
                             f"pass split= to AlternatingOptimizer for this batch layout")
        return torch.tensor_split(value, parts)[index]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{
            field.name: _slice(getattr(value, field.name), index, parts, size, f"{path}.{field.name}")
            for field in dataclasses.fields(value) if field.init})
    if isinstance(value, dict):
        return type(value)((key, _slice(item, index, parts, size, f"{path}[{key!r}]")) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        items = [_slice(item, index, parts, size, f"{path}[{i}]") for i, item in enumerate(value)]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return value
