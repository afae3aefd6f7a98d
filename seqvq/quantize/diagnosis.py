"""``diagnose(model, batches)``: the state of every bottleneck of a model, measured on a few batches, and the cause
of a collapse named with its remedy (:mod:`seqvq.quantize.causes`).

Per bottleneck (each :class:`VectorQuantizer`, and each codebook-free one: FSQ, LFQ, BSQ), over the valid encoder
outputs of the batches, in the space codes are compared in (after ``pre_norm``, l2-normalised for cosine):

* ``perplexity`` ``2^H`` of the codes' distribution and ``codes_used`` (per codebook, averaged; Huh §3), and
  ``dead_codes`` (unused on the batches) with their ages in steps when the quantizer keeps LRU clocks (Huh §3);
* ``encoder_norm`` and ``code_norm``: the mean norm of the encoder outputs and of the codes (Łańcucki §III-A: codes
  at another scale than the inputs leave most of them unused);
* ``data_to_codes`` D(P, C) and ``codes_to_data`` D(C, P), Huh eq. 13 both ways (:func:`codebook_divergence`), and
  ``relative_error``, D(P, C) over the outputs' variance: how far the encoder's outputs lie from the codes, in
  units of their own spread;
* ``used_code_motion``: how far the used codes moved from the initial codebook (``initial_codebooks``), relative to
  the initial codes' norm — 0 for codes nothing trained;
* ``gradient_gap``: the STE gradient gap of Huh eq. 14 (:func:`gradient_gap`), on the first batch, when asked;
* ``quantizing``: False while the pass-through warm-up of re-estimation (Łańcucki Algorithm 1) has not ended;
  ``reservoir_filled`` and ``reservoir_size`` of that re-estimation.

The batches are run through ``model(batch)`` in evaluation mode under ``no_grad`` (forward hooks read each
bottleneck's input and codes), so no state of the model changes.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from .codebook_free import CodebookFreeQuantizer
from .core import STATE_UPDATING_PASSES, PassKind, VectorQuantizer, channel_last_with_mask, perplexity
from .diagnostics import codebook_divergence, gradient_gap as measure_gradient_gap

MAX_VECTORS = 20000  # encoder outputs kept per bottleneck for the distances (the first ones seen)


@dataclass
class BottleneckState:
    """What :func:`diagnose` measured on one bottleneck (module docstring); None where it does not apply."""

    name: str
    kind: str  # "vq" or the codebook-free quantizer's class name
    step: int | None
    codebook_size: int
    num_codebooks: int = 1
    perplexity: float = 0.0
    codes_used: float = 0.0
    dead_codes: float = 0.0
    dead_code_ages: list[int] | None = None  # steps since each dead code was last used (LRU clocks), oldest first
    encoder_norm: float | None = None
    code_norm: float | None = None
    data_to_codes: float | None = None
    codes_to_data: float | None = None
    relative_error: float | None = None
    used_code_motion: float | None = None
    gradient_gap: float | None = None
    quantizing: bool = True
    reservoir_filled: int | None = None
    reservoir_size: int | None = None
    vectors: int = 0

    @property
    def usage(self) -> float:
        """Codes used over the codes the batches' ``vectors`` could reach: ``K (1 - (1 - 1/K)^N)``, the distinct
        codes N draws from K equally likely ones give on average (K when N >> K; about 0.63 K when N = K). So a
        16,384-code bottleneck seen on one batch of 906 vectors is judged against 881 codes, not 16,384; without a
        vector count (``vectors`` 0), against the whole codebook."""
        size = max(self.codebook_size, 1)
        reachable = size * -math.expm1(self.vectors * math.log1p(-1 / size)) if self.vectors and size > 1 else size
        return self.codes_used / max(reachable, 1.0)

    def figures(self) -> dict:
        """The numbers, for a log record (the dead codes' ages summarised by the oldest and the median)."""
        figures = {key: value for key, value in asdict(self).items()
                   if key not in ("name", "kind", "dead_code_ages") and value is not None}
        figures["quantizing"] = bool(self.quantizing)
        if self.dead_code_ages:
            figures["dead_code_oldest_age"] = self.dead_code_ages[0]
            figures["dead_code_median_age"] = self.dead_code_ages[len(self.dead_code_ages) // 2]
        return figures


@dataclass
class Diagnosis:
    """:func:`diagnose`'s report: one :class:`BottleneckState` per bottleneck and the cause named for each
    (:class:`~seqvq.quantize.causes.Finding`)."""

    bottlenecks: list[BottleneckState]
    findings: list = field(default_factory=list)

    def __str__(self) -> str:
        from .causes import describe

        return describe(self)


def bottlenecks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's bottlenecks by module name: every VectorQuantizer (a residual stack's stages each count) and
    codebook-free quantizer."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, (VectorQuantizer, CodebookFreeQuantizer))]


def initial_codebooks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the effective codebooks of ``model``'s VectorQuantizers, by module name (take them before
    training, for ``used_code_motion``)."""
    with torch.no_grad():
        return {name: module.effective_codebook().detach().clone() for name, module in bottlenecks(model)
                if isinstance(module, VectorQuantizer)}


class _Collector:
    """Valid bottleneck inputs (in the comparison space) and codes of the passes it sees: a forward hook on the
    quantizer and one on its ``pre_norm`` (whose output it reads, so that no moment is updated twice)."""

    def __init__(self):
        self.vectors, self.kept, self.counts, self.normalised = [], 0, None, None

    def read_norm(self, norm, args, output) -> None:
        self.normalised = output

    @torch.no_grad()
    def __call__(self, module, args, kwargs, output) -> None:
        normalised, self.normalised = self.normalised, None
        if module.training and getattr(module, "pass_kind", PassKind.STEP) not in STATE_UPDATING_PASSES:
            return  # an inner or bypass pass: the step's own pass is the one to read
        x = args[0]
        mask, lengths = kwargs.get("mask", args[1] if len(args) > 1 else None), kwargs.get("lengths")
        x_last, mask = channel_last_with_mask(x, module.dim, module.channel_dim, mask, lengths)
        if normalised is not None:
            x_last = normalised
        x_last = x_last.float()
        z = x_last.reshape(-1, module.dim) if mask is None else x_last[mask]
        if isinstance(module, VectorQuantizer):
            z = module._comparison_space(z.view(z.shape[0], module.num_codebooks, module.code_dim))
        else:
            z = z.unsqueeze(1)
        if self.kept < MAX_VECTORS:
            self.vectors.append(z[: MAX_VECTORS - self.kept].detach())
            self.kept += min(z.shape[0], MAX_VECTORS - self.kept)
        codes = output.codes.reshape(-1, getattr(module, "num_codebooks", 1))
        self.counts = _merge_counts(self.counts, codes[(codes >= 0).all(dim=1)])


class Watch:
    """Within ``with Watch(model) as watch:`` the passes of ``model``'s bottlenecks are recorded (the state-updating
    pass of a training step, or every evaluation pass); ``watch.states(initial)`` measures them.  Reading changes
    nothing in the model, so a training step watched is the same step."""

    def __init__(self, model: nn.Module):
        self.found = bottlenecks(model)
        if not self.found:
            raise ValueError("diagnose: the model holds no quantizer")
        self.collectors = {name: _Collector() for name, _ in self.found}
        self.handles = []

    def __enter__(self) -> "Watch":
        for name, module in self.found:
            collector = self.collectors[name]
            if module.norm is not None:
                self.handles.append(module.norm.register_forward_hook(collector.read_norm))
            self.handles.append(module.register_forward_hook(collector, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def states(self, initial: dict[str, torch.Tensor] | None = None) -> list[BottleneckState]:
        return [_state(name, module, self.collectors[name], (initial or {}).get(name))
                for name, module in self.found]


def _merge_counts(counts: dict | None, codes: torch.Tensor) -> dict:
    """Usage counts per codebook as {code: count} dicts (an FSQ's implicit codebook may be too large to count
    densely)."""
    counts = counts or [dict() for _ in range(codes.shape[1])]
    for group in range(codes.shape[1]):
        values, numbers = codes[:, group].unique(return_counts=True)
        for value, number in zip(values.tolist(), numbers.tolist()):
            counts[group][value] = counts[group].get(value, 0) + number
    return counts


@torch.no_grad()
def _state(name: str, module: nn.Module, collector: _Collector, initial: torch.Tensor | None) -> BottleneckState:
    vq = isinstance(module, VectorQuantizer)
    size = module.codebook_size
    groups = module.num_codebooks if vq else 1
    state = BottleneckState(name, "vq" if vq else type(module).__name__, int(module.step) if vq else None, size,
                            groups, vectors=collector.kept)
    counts = collector.counts or [dict() for _ in range(groups)]
    used = [len(group) for group in counts]
    state.codes_used = sum(used) / groups
    state.dead_codes = size - state.codes_used
    state.perplexity = sum(float(perplexity(torch.tensor(list(group.values()) or [0], dtype=torch.float64)))
                           for group in counts) / groups
    if not collector.vectors:
        return state
    z = torch.cat(collector.vectors)  # (N, G, d)
    state.encoder_norm = float(z.norm(dim=-1).mean())
    spread = float((z - z.mean(dim=0)).pow(2).sum(dim=-1).mean())
    if not vq:
        return state
    codebook = module._comparison_space(module.effective_codebook().detach().float())  # (G, K, d)
    state.code_norm = float(codebook.norm(dim=-1).mean())
    divergences = [codebook_divergence(z[:, g].contiguous(), codebook[g]) for g in range(groups)]
    state.data_to_codes = sum(float(d.data_to_codes) for d in divergences) / groups
    state.codes_to_data = sum(float(d.codes_to_data) for d in divergences) / groups
    state.relative_error = state.data_to_codes / max(spread, 1e-12)
    used_mask = torch.zeros(groups, size, dtype=torch.bool, device=codebook.device)
    for group, group_counts in enumerate(counts):
        used_mask[group, list(group_counts)] = True
    if initial is not None:
        start = module._comparison_space(initial.float().to(codebook.device))
        if used_mask.any():
            moved = (codebook - start).norm(dim=-1)[used_mask].mean()
            state.used_code_motion = float(moved / start.norm(dim=-1).mean().clamp_min(1e-12))
    if module.replacement is not None:
        ages = (int(module.step) - module.replacement.last_used)[~used_mask.to(module.replacement.last_used.device)]
        state.dead_code_ages = sorted(ages.tolist(), reverse=True)
    if module.reestimation is not None:
        state.quantizing = not module.reestimation.passes_through(int(module.step))
        state.reservoir_size = module.reestimation.reservoir.size
        state.reservoir_filled = module.reestimation.reservoir.filled
    return state


@torch.no_grad()
def measure(model: nn.Module, batches: Iterable, initial: dict[str, torch.Tensor] | None = None
            ) -> list[BottleneckState]:
    """The :class:`BottleneckState` of every bottleneck of ``model`` on ``batches`` (each passed as
    ``model(batch)`` in evaluation mode; no state changes), without the gradient gap or the rules."""
    was_training = model.training
    model.eval()
    try:
        with Watch(model) as watch:
            for batch in batches:
                model(batch)
    finally:
        model.train(was_training)
    return watch.states(initial)


def diagnose(model: nn.Module, batches: Iterable, loss_fn: Callable | None = None,
             initial: dict[str, torch.Tensor] | None = None, with_gradient_gap: bool = False,
             settings: dict | None = None, history: list[dict] | None = None) -> Diagnosis:
    """The state of every bottleneck of ``model`` on ``batches`` (each passed as ``model(batch)``) and the cause
    named for each (module docstring; :func:`seqvq.quantize.causes.name_cause`).

    ``initial``: the codebooks before training (:func:`initial_codebooks`), for ``used_code_motion``.
    ``with_gradient_gap``: also the STE gradient gap on the first batch, of ``loss_fn(model, batch)`` (default
    ``model(batch)``, a scalar or an object with ``.loss``).  ``settings`` (the run's options, as
    :func:`seqvq.quantize.causes.settings_of` reads them; default read from each quantizer) and ``history`` (the
    run's logged records, oldest first) let the rules see the run's options and trends."""
    from .causes import name_cause, settings_of

    batches = list(batches)
    states = measure(model, batches, initial)
    if with_gradient_gap and batches:
        loss_fn = loss_fn or (lambda network, batch: network(batch))
        gap = float(measure_gradient_gap(model, loss_fn, batches[0]).total)
        for state in states:
            state.gradient_gap = gap if math.isfinite(gap) else None
    modules = dict(bottlenecks(model))
    findings = [name_cause(state, settings if settings is not None else settings_of(modules[state.name]),
                           history or []) for state in states]
    return Diagnosis(states, findings)
