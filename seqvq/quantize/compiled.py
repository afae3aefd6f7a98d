"""``torch.compile`` of the quantizers, with the passes that must run eagerly falling back by themselves.

A quantizer's ordinary pass — training step or evaluation — traces as one graph (``fullgraph=True``, no graph
break) for :class:`~.core.VectorQuantizer` with pre_norm, EMA, the affine maps, rotation trick, sync term, usage
regularizer, cosine distance and several codebooks, and for FSQ, BSQ and LFQ.  Masked input is traced too: the
number of valid vectors is a size known only at run time (``capture_dynamic_output_shape_ops``), and the nearest
code search is one block of scores (no Python loop over that size; it holds N x K scores, where eager search keeps
a fixed-size buffer, and never calls FAISS).

Some phases decide in Python on the values of buffers, which a graph cannot do.  Those passes run eagerly, chosen
before each pass by reading the buffers (:meth:`~.core.VectorQuantizer.python_phases_idle_next_pass`):

* re-estimation (Łańcucki Algorithm 1): every training pass up to the last re-estimation (the reservoir is fed,
  k-means runs), and evaluation before M_init (the input passes through);
* ``kmeans_init``: the first training pass;
* dead-code replacement (Huh §3): a training pass in which some code has gone unused for its life span (the
  replacement may draw and rewrite codes);
* sampled assignments (``assignment="stochastic"`` / ``"gumbel"``) and FSQ's ``noise_dropout``: every training pass
  (the seed is drawn from a buffered CPU generator).

A compiled pass that needs none of these skips them knowing they would change nothing, so compiled and eager
training reach the same state (codes equal up to float32 rounding of the fused arithmetic; ties may break
differently, e.g. where eager search goes through FAISS).

Under DDP (``torch.distributed`` with more than one rank) every pass of the quantizer runs eagerly, the rest of a
compiled model staying compiled: traced, the differentiable all-reduce of ``torch.distributed.nn`` is refused, and
its functional replacement gave the usage term's gradient off by up to 14 % from the eager (and single-process)
one on two gloo ranks, so the quantizer's collectives are kept out of graphs (tests/test_compile.py).
"""
from __future__ import annotations

import contextlib
import types

import torch
import torch._dynamo
from torch import nn

from .codebook_free import CodebookFreeQuantizer
from .core import VectorQuantizer
from .distributed import is_distributed
from .fsq import FiniteScalarQuantizer

COMPILABLE = (VectorQuantizer, CodebookFreeQuantizer)
# The number of valid vectors of masked input is data-dependent: trace it as a size known at run time.
TRACE_CONFIG = {"capture_dynamic_output_shape_ops": True, "capture_scalar_outputs": True}


def compile_config():
    """The dynamo settings the quantizers' graphs are traced under (also for ``torch._dynamo.explain``)."""
    return torch._dynamo.config.patch(**TRACE_CONFIG)


def runs_eagerly(quantizer: nn.Module) -> bool:
    """Whether ``quantizer``'s next pass must run eagerly (module docstring)."""
    if is_distributed():
        return True
    if isinstance(quantizer, VectorQuantizer):
        return not quantizer.python_phases_idle_next_pass()
    if isinstance(quantizer, FiniteScalarQuantizer):
        return quantizer.training and bool(quantizer.noise_dropout)
    return False


@contextlib.contextmanager
def idle_python_phases(quantizer: nn.Module):
    """Within the block the quantizer skips the phases that decide in Python (a compiled pass)."""
    if not isinstance(quantizer, VectorQuantizer):
        yield
        return
    quantizer.python_phases_idle = True
    try:
        yield
    finally:
        quantizer.python_phases_idle = False


@torch.compiler.disable  # a compiled model's graph stops at the quantizer, which runs its own (compile_model)
def _dispatching_forward(self, *args, **kwargs):
    """The compiled forward, or the eager one for a pass that needs it (bound to a compiled quantizer)."""
    if runs_eagerly(self):
        return type(self).forward(self, *args, **kwargs)
    with compile_config(), idle_python_phases(self):
        return self.compiled_forward(self, *args, **kwargs)


def compile_quantizer(quantizer: nn.Module, **options) -> nn.Module:
    """Compile ``quantizer`` in place (``torch.compile`` of its class's forward with ``fullgraph=True`` and
    ``options``, e.g. ``backend``), falling back to eager for the passes listed in the module docstring; returns it.
    Its state dict, checkpoints and copies are unchanged."""
    if not isinstance(quantizer, COMPILABLE):
        raise TypeError(f"compile_quantizer takes a VectorQuantizer, FSQ, BSQ or LFQ; got {type(quantizer).__name__} "
                        "(compile_quantizers(model) compiles every quantizer inside a model)")
    quantizer.compiled_forward = torch.compile(type(quantizer).forward, fullgraph=True, **options)
    quantizer.forward = types.MethodType(_dispatching_forward, quantizer)
    return quantizer


def compile_quantizers(model: nn.Module, **options) -> list[nn.Module]:
    """:func:`compile_quantizer` on every quantizer in ``model`` (a residual stack's stages one by one); returns
    them."""
    quantizers = [module for module in model.modules() if isinstance(module, COMPILABLE)]
    for quantizer in quantizers:
        compile_quantizer(quantizer, **options)
    return quantizers


def compile_model(model: nn.Module, **options) -> nn.Module:
    """Compile ``model`` in place (``train.compile``): every quantizer by :func:`compile_quantizer`, and the model's
    forward (``nn.Module.compile``, graph breaks allowed): its graph stops at each quantizer, whose own graph is
    whole and which chooses compiled or eager per pass.  Returns the model, its state dict unchanged."""
    compile_quantizers(model, **options)
    model.compile(**options)
    return model
