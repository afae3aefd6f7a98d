"""Collapse diagnostics of Huh et al. 2023: code usage (§3), codebook divergence (eq. 13) and the STE gradient gap
(eq. 14, Appendix A.3).  Each is cheap enough to log every few hundred steps and is summed over ranks under DDP.

* :class:`UsageTracker` — running perplexity ``2^H``, active and dead codes over the last ``window`` updates
  (Huh §3 calls a code dead when it went unused for 20 iterations), and the usage histogram.
* :func:`codebook_divergence` — ``D(P, C)`` of eq. 13 (mean over encoder outputs of the distance to the nearest
  code) and the reverse ``D(C, P)`` (mean over codes of the distance to the nearest encoder output).  A large
  ``D(C, P)`` with a small ``D(P, C)`` is the "bifurcated" codebook of Fig. 2: codes far from every input.
* :func:`gradient_gap` — ``sum_l ||g_l - g_hat_l||^2`` between the gradients of the task loss with every
  quantizer bypassed (``g``) and with quantization (``g_hat``), from two forward/backward passes that leave the
  model exactly as they found it.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, Iterable, NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from .core import VectorQuantizer, perplexity, quantizer_passes
from .distance import nearest_codes
from .distributed import all_reduce_sum, is_distributed
from .groups import flat_code_index
from .optim import codebook_parameters


# ------------------------------------------------------------------------------------------------ code usage
class UsageTracker(nn.Module):
    """Code usage over the last ``window`` updates, kept in a ring buffer of per-update counts (all buffers, so
    a checkpoint restores it exactly).

    ``update(codes)`` takes the codes of one step: ``(N,)`` (any shape) for one codebook, ``(..., G)`` for
    ``num_codebooks = G``; entries of -1 (padded positions in :class:`VectorQuantizer` output) are dropped.  The
    counts are summed over ranks, so every rank reports the same figures.  Until ``window`` updates have been
    seen, the figures cover the updates so far.
    """

    def __init__(self, num_codebooks: int, codebook_size: int, window: int = 20):
        super().__init__()
        if window < 1:
            raise ValueError(f"UsageTracker: window must be >= 1, got {window}")
        self.num_codebooks, self.codebook_size, self.window = num_codebooks, codebook_size, window
        self.register_buffer("history", torch.zeros(window, num_codebooks, codebook_size, dtype=torch.long))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, codes: torch.Tensor) -> None:
        groups, size = self.num_codebooks, self.codebook_size
        if groups == 1:
            codes = codes.reshape(-1, 1)
        elif codes.dim() == 0 or codes.shape[-1] != groups:
            raise ValueError(f"UsageTracker.update: codes of shape {tuple(codes.shape)} need a trailing axis of "
                             f"num_codebooks={groups}")
        codes = codes.reshape(-1, groups).to(self.history.device)
        if codes.numel() and (codes.max() >= size or codes.min() < -1):
            raise ValueError(f"UsageTracker.update: codes must be in [-1, {size - 1}], got "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        flat = flat_code_index(codes, size)[codes >= 0]
        counts = torch.bincount(flat, minlength=groups * size).view(groups, size)
        slot = int(self.updates) % self.window
        self.history[slot] = all_reduce_sum(counts)
        self.updates += 1

    forward = update

    def counts(self) -> torch.Tensor:
        """Usage counts (G, K) summed over the window — the usage histogram."""
        return self.history.sum(dim=0)

    def running_perplexity(self) -> torch.Tensor:
        """``2^H`` of the code distribution over the window, per codebook (G,)."""
        return perplexity(self.counts().double()).float()

    def active_codes(self) -> torch.Tensor:
        """Codes used at least once in the window, per codebook (G,)."""
        return (self.counts() > 0).sum(dim=-1)

    def dead_codes(self) -> torch.Tensor:
        """Codes unused over the whole window, per codebook (G,)."""
        return self.codebook_size - self.active_codes()

    def metrics(self) -> dict[str, torch.Tensor]:
        """Figures to log, averaged over codebooks (0-d float tensors)."""
        return {
            "running_perplexity": self.running_perplexity().mean(),
            "window_active_codes": self.active_codes().float().mean(),
            "dead_codes": self.dead_codes().float().mean(),
        }


def plot_usage_histogram(counts: torch.Tensor, path: str | os.PathLike, title: str = "code usage") -> None:
    """Save a PNG of usage ``counts`` ((K,) or (G, K), e.g. ``UsageTracker.counts()``), codes sorted by use —
    collapse shows as a short head and a long flat tail at zero.  Written atomically (temp file + os.replace)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = counts.detach().cpu().reshape(-1, counts.shape[-1]).double()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for group, row in enumerate(counts):
        label = f"codebook {group}" if counts.shape[0] > 1 else None
        axis.plot(torch.sort(row, descending=True).values.numpy(), drawstyle="steps-mid", label=label)
    axis.set_xlabel("code rank")
    axis.set_ylabel("count")
    axis.set_yscale("symlog")
    axis.set_title(title)
    if counts.shape[0] > 1:
        axis.legend()
    figure.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(suffix=".png", dir=directory)
    os.close(handle)
    try:
        figure.savefig(temporary, format="png")
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        if os.path.exists(temporary):
            os.remove(temporary)


# ------------------------------------------------------------------------------------------- divergence, eq. 13
class CodebookDivergence(NamedTuple):
    data_to_codes: torch.Tensor  # D(P, C): mean over inputs of min over codes of ||z - c||^2 (Huh eq. 13)
    codes_to_data: torch.Tensor  # D(C, P): mean over codes of min over inputs of ||c - z||^2


@torch.no_grad()
def codebook_divergence(z_e: torch.Tensor, codebook: torch.Tensor) -> CodebookDivergence:
    """Both directions of the average divergence of Huh eq. 13, squared l2, chunked (never N x K in memory).

    ``z_e`` (N, d) are valid encoder outputs and ``codebook`` (K, d) the effective codes (for a
    :class:`VectorQuantizer` with several codebooks or cosine distance, pass one codebook's slice of the inputs in
    the comparison space).  Under DDP ``D(P, C)`` averages over the inputs of every rank and ``D(C, P)`` takes
    the minimum over every rank's inputs.
    """
    if z_e.dim() != 2 or codebook.dim() != 2 or z_e.shape[1] != codebook.shape[1]:
        raise ValueError(f"codebook_divergence expects z_e (N, d) and codebook (K, d); got {tuple(z_e.shape)} "
                         f"and {tuple(codebook.shape)}")
    z_e, codebook = z_e.float(), codebook.float()
    _, to_codes = nearest_codes(z_e, codebook)
    totals = all_reduce_sum(torch.stack([to_codes.sum(), to_codes.new_tensor(float(z_e.shape[0]))]))
    data_to_codes = totals[0] / totals[1].clamp_min(1)
    if z_e.shape[0]:
        _, to_data = nearest_codes(codebook, z_e)
    else:
        to_data = torch.full((codebook.shape[0],), float("inf"), device=codebook.device)
    if is_distributed():
        dist.all_reduce(to_data, op=dist.ReduceOp.MIN)
    return CodebookDivergence(data_to_codes, to_data.mean())


# ------------------------------------------------------------------------------------- gradient gap, eq. 14
class GradientGap(NamedTuple):
    total: torch.Tensor  # sum over parameters of ||g - g_hat||^2
    per_parameter: dict[str, torch.Tensor]  # name -> ||g - g_hat||^2


def quantizers_bypassed(model: nn.Module):
    """Within the block every :class:`VectorQuantizer` in ``model`` returns its input unchanged (identity) with
    zero loss and detached ``losses``; codes and metrics are still computed (so task code that reads them runs),
    and no quantizer state changes (the ``"bypass"`` pass of :mod:`seqvq.quantize.core`)."""
    return quantizer_passes(model, "bypass")


def _loss_value(output) -> torch.Tensor:
    loss = getattr(output, "loss", output)
    if not torch.is_tensor(loss) or loss.dim() != 0:
        raise TypeError("gradient_gap: loss_fn must return a scalar tensor or an object with a scalar .loss")
    return loss


def gradient_gap(model: nn.Module, loss_fn: Callable, batch, parameters: Iterable[nn.Parameter] | None = None,
                 include_quantizer_loss: bool = False) -> GradientGap:
    """STE gradient gap of Huh eq. 14 / Appendix A.3: ``sum_l ||g_l - g_hat_l||^2``.

    ``g`` is the gradient of ``loss_fn(model, batch)`` (a scalar tensor or an object with ``.loss``, e.g. a
    :class:`seqvq.train.StepOutput`) with every quantizer bypassed (identity), ``g_hat`` the gradient with
    quantization.  ``parameters`` defaults to every trainable non-codebook parameter (the codebook does not exist
    in the unquantized model).  By default the quantizers' own losses are left out of both passes, so ``g`` and
    ``g_hat`` are gradients of the task loss alone, as in eq. 14; ``include_quantizer_loss=True`` keeps the
    commitment loss in the quantized pass.

    Side-effect free: both passes start from the same RNG state (dropout draws the same masks), every buffer and
    quantizer state (EMA statistics, step counters, BatchNorm running moments, codebooks) and the RNG are
    restored afterwards, and each parameter's ``.grad`` is what it was before the call.  The model's train/eval
    mode is used as is.  Under DDP every rank must call it (each pass runs a backward).
    """
    if not any(isinstance(module, VectorQuantizer) for module in model.modules()):
        raise ValueError("gradient_gap: the model holds no VectorQuantizer to bypass")
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    if parameters is None:
        codebook_ids = {id(p) for p in codebook_parameters(model)}
        parameters = [p for p in model.parameters() if p.requires_grad and id(p) not in codebook_ids]
    parameters = list(parameters)
    all_parameters = list(model.parameters())
    saved_grads = [p.grad for p in all_parameters]
    saved_state = _mutable_state(model)
    saved_rng = _rng_state()
    try:
        gradients = []
        for bypass in (True, False):
            _set_rng_state(saved_rng)
            for parameter in all_parameters:
                parameter.grad = None
            # Neither pass changes quantizer state, so both see the same codebook (with the quantizer loss kept,
            # the stateless pass with loss is the "codebook_fit" one).
            kind = "bypass" if bypass else "codebook_fit" if include_quantizer_loss else "zero_loss"
            with quantizer_passes(model, kind):
                _loss_value(loss_fn(model, batch)).backward()
            gradients.append([p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                              for p in parameters])
            model.load_state_dict(saved_state, strict=False)
    finally:
        _set_rng_state(saved_rng)
        model.load_state_dict(saved_state, strict=False)
        for parameter, grad in zip(all_parameters, saved_grads):
            parameter.grad = grad
    per_parameter = {}
    for index, (parameter, g, g_hat) in enumerate(zip(parameters, *gradients)):
        per_parameter[names.get(id(parameter), f"parameter_{index}")] = (g - g_hat).double().pow(2).sum().float()
    total = torch.stack(list(per_parameter.values())).sum() if per_parameter else torch.zeros(())
    return GradientGap(total, per_parameter)


def _mutable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of what a forward pass may change: every buffer and all of every quantizer's state."""
    state = model.state_dict(keep_vars=True)
    buffers = {name for name, _ in model.named_buffers()}
    quantizer_prefixes = tuple(f"{name}." if name else "" for name, module in model.named_modules()
                               if isinstance(module, VectorQuantizer))
    return {name: value.detach().clone() for name, value in state.items()
            if name in buffers or name.startswith(quantizer_prefixes)}


def _rng_state():
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
