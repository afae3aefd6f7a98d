"""The quantizers' pass-through warm-up (Łańcucki et al. 2020 Algorithm 1: a quantizer with data-dependent
re-estimation passes its input through for its first M_init - 1 steps, ``reestimate.init_steps``, and quantizes from
step M_init on). A run that ends inside it never quantizes: its code perplexity and codes used count the nearest
codes of a codebook nothing used. ``seqvq train`` warns at the start of such a run (:func:`warn_if_never_quantized`)
and every evaluation writes ``quantized`` with its figures (:func:`quantized_figure`)."""
from __future__ import annotations

import sys

from torch import nn

from seqvq.quantize import FiniteScalarQuantizer, LookupFreeQuantizer, PeerVectorQuantize, VectorQuantizer


def _warm_ups(model: nn.Module) -> list[tuple[str, VectorQuantizer]]:
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, VectorQuantizer) and module.reestimation is not None]


def warn_if_never_quantized(model: nn.Module, steps: int) -> None:
    """Warn on stderr when ``steps`` training steps end inside the longest warm-up of ``model``'s quantizers."""
    warm_ups = _warm_ups(model)
    if not warm_ups:
        return
    name, quantizer = max(warm_ups, key=lambda item: item[1].reestimation.init_steps)
    first = quantizer.reestimation.init_steps  # the first quantized step, M_init
    if steps < first:
        print(f"warning: train.steps={steps} ends inside the quantizer's pass-through warm-up ({name}: its first "
              f"{first - 1} steps, reestimate.init_steps={first}): it never quantizes, and its code perplexity and "
              f"codes used count the codes of a codebook nothing used; set train.steps above {first - 1} or lower "
              f"reestimate.init_steps", file=sys.stderr)


def quantized_figure(model: nn.Module) -> dict[str, bool]:
    """``{"quantized": False}`` when a quantizer of the (trained) model is still inside its warm-up at the step it
    was trained to, so it never quantized and evaluation passes its input through; ``{"quantized": True}`` when
    every quantizer quantizes; ``{}`` for a model without quantizers."""
    quantizers = [module for module in model.modules() if isinstance(module, VectorQuantizer)]
    without_warm_up = (FiniteScalarQuantizer, LookupFreeQuantizer, PeerVectorQuantize)
    if not quantizers and not any(isinstance(module, without_warm_up) for module in model.modules()):
        return {}
    return {"quantized": not any(quantizer.reestimation is not None
                                 and quantizer.reestimation.passes_through(int(quantizer.step))
                                 for quantizer in quantizers)}
