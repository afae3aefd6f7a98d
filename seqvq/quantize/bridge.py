"""VQBridge, the codebook projector of FVQ (Chang et al. 2025, "Scalable Training for Vector-Quantized Networks with
100% Codebook Utilization", arXiv 2509.10140; its VQBridge projector as the paper's abstract and overview describe
it — the layer sizes and initialisation below are this library's choices, not checked against the paper's text).

The codes are a learned function of a frozen codebook: VQBridge *compresses* the K codes into K / s tokens (each the
s consecutive codes concatenated, one linear map s d -> w), *processes* the tokens with transformer blocks (so every
token, and through it every code, depends on the whole codebook), and *recovers* s codes from each token (one linear
map w -> s d).  The codebook gradient reaches the bridge's weights only, and every step of them moves every code,
selected or not — the paper's remedy for sparse codebook gradients, claimed to keep 100 % of up to 262,144 codes in
use.  (FVQ's other half, learning-rate annealing, is a training schedule, not part of the quantizer.)

Choices where the paper is silent for our setting: the recovered vectors are added to the frozen codes and the
recover map starts small (weights N(0, 0.02^2), bias 0), so the initial codes are the frozen ones up to a small
perturbation (nearly the start without the bridge, as SimVQ's map in ``linear_map.py``).  Not zero: the recover map
has its own rows for each of the s positions in a token, and a zero row would stay zero until a code at that
position is selected — the codes there would not move (tested).  The blocks are pre-norm transformer encoder layers
without dropout.  There is no
inverse: k-means, re-estimation, replacement and the EMA update cannot write codes through a map of the whole
codebook, so they are refused with it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class BridgeOptions:
    """``VectorQuantizer(bridge=...)``: codes per token ``group`` (s), token ``width`` (w), transformer ``depth``
    and ``heads``."""

    group: int = 16
    width: int = 256
    depth: int = 1
    heads: int = 4

    def __post_init__(self):
        if min(self.group, self.width, self.depth, self.heads) < 1 or self.width % self.heads:
            raise ValueError(f"bridge needs group, width, depth, heads >= 1 and width divisible by heads; got {self}")


class CodebookBridge(nn.Module):
    """``effective = signal + recover(process(compress(signal)))`` per codebook; ``signal`` (G, K, d)."""

    def __init__(self, codebook_size: int, dim: int, options: BridgeOptions):
        super().__init__()
        self.group = options.group
        self.compress = nn.Linear(options.group * dim, options.width)
        layer = nn.TransformerEncoderLayer(options.width, options.heads, dim_feedforward=4 * options.width,
                                           dropout=0.0, batch_first=True, norm_first=True)
        self.process = nn.TransformerEncoder(layer, options.depth, enable_nested_tensor=False)
        self.recover = nn.Linear(options.width, options.group * dim)
        nn.init.normal_(self.recover.weight, std=0.02)
        nn.init.zeros_(self.recover.bias)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        """Effective codes (G, K, d) from the frozen ones."""
        groups, size, dim = signal.shape
        tokens = self.compress(signal.reshape(groups, size // self.group, self.group * dim))
        return signal + self.recover(self.process(tokens)).reshape(groups, size, dim)

    def inverse(self, effective: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the bridge maps the whole codebook at once and has no inverse (refused writers)")


def check_bridge(bridge: BridgeOptions | None, codebook_size: int, affine, codebook_update: str, kmeans_init: bool,
                 reestimate, replace_dead_after) -> None:
    """Refuse what cannot work with ``bridge``, naming both options."""
    if bridge is None:
        return
    if codebook_size % bridge.group:
        raise ValueError(f"bridge group={bridge.group} must divide codebook_size={codebook_size}")
    writers = {"affine": affine is not None, "codebook_update='ema'": codebook_update == "ema",
               "kmeans_init": kmeans_init, "reestimate": reestimate is not None,
               "replace_dead_after": bool(replace_dead_after)}
    for name, present in writers.items():
        if present:
            raise ValueError(f"bridge computes every code from the whole frozen codebook, which {name} would have to "
                             "write through; use one or the other")
