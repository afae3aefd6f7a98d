"""Index backpropagation quantization (IBQ: Shi et al. 2024, "Taming Scalable Visual Tokenizer for Autoregressive
Image Generation", arXiv 2412.02692, the index backpropagation quantizer; its equations written out below).

IBQ passes the straight-through estimator over the one-hot *index* instead of over the vector: with logits
``l = z C^T`` against all K codes,

    ind = onehot(argmax l) - sg(softmax(l)) + softmax(l),    z_q = ind C,

so the value is the selected code and the gradient reaches z and *every* code through the softmax — the remedy for
codes that are never selected and so never trained.  The output carries no identity path from z_q to z (no
straight-through of Huh eq. 7); the selected code also receives the upstream gradient directly (the ``ind C`` product).

Here the logits are ``-||z - c||^2 / tau`` rather than IBQ's inner products: the same softmax as ``z . c`` up to each
code's squared norm, and its argmax is the nearest code, so training and evaluation select alike (with
``distance="cosine"`` the two agree exactly up to the scale 2 / tau).  ``tau`` is the quantizer's ``temperature``.

Memory: the softmax is N x K; it is taken one block of rows at a time, each block under activation checkpointing,
so the forward keeps only the inputs and the (N, d) output, and backward recomputes each block's softmax.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .distance import DEFAULT_BLOCK_ELEMENTS, centred_scores


def _block_soft_code(rows: torch.Tensor, codebook: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(-||z - c||^2 / tau) @ sg(C)`` for a block of rows (n, d) -> (n, d)."""
    return F.softmax(-centred_scores(rows, codebook) / temperature, dim=1) @ codebook.detach()


def index_backprop_output(z_e: torch.Tensor, codebook: torch.Tensor, codes: torch.Tensor, temperature: float,
                          block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> torch.Tensor:
    """IBQ's ``z_q = ind C`` for ``z_e`` (N, d), ``codebook`` (K, d) and the selected ``codes`` (N,): the value of
    ``codebook[codes]``, gradients through the softmax of the logits to ``z_e`` and every code (module docstring)."""
    if temperature <= 0:
        raise ValueError(f"index_backprop_output: temperature must be > 0, got {temperature}")
    rows_per_block = max(1, block_elements // max(codebook.shape[0], 1))
    blocks = [checkpoint(_block_soft_code, z_e[start:start + rows_per_block], codebook, temperature,
                         use_reentrant=False)
              for start in range(0, z_e.shape[0], rows_per_block)]
    soft = torch.cat(blocks) if blocks else z_e.new_zeros(0, codebook.shape[1])
    return F.embedding(codes, codebook) + (soft - soft.detach())  # a deterministic lookup (groups.code_vectors)


def check_index_backprop(assignment: str, codebook_update: str, sync_nu: float, rotation_trick: bool) -> None:
    """Refuse what cannot work with ``assignment="index_backprop"``, naming both options."""
    if assignment != "index_backprop":
        return
    if codebook_update == "ema":
        raise ValueError("assignment='index_backprop' trains every code through the softmax, but "
                         "codebook_update='ema' takes no codebook gradient; use one or the other")
    for name, value in (("sync_nu", sync_nu), ("rotation_trick", rotation_trick)):
        if value:
            raise ValueError(f"{name} acts through the straight-through output, which assignment='index_backprop' "
                             "replaces by the index one (IBQ); use one or the other")
