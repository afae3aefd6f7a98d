"""What the VQ image classifiers of Huh et al. 2023 §5.1 share: one quantizer (a `VectorQuantizer`, or FSQ / BSQ
with ``kind:``) between an encoder (the layers before the quantization point) and the rest of the network, and a
typed output.

A model subclasses :class:`QuantizedClassifier` and implements ``encode(images)`` (the layers up to the paper's
quantization point) and ``classify(features)`` (the layers after it); the quantizer, when there is one, sits
between the two.  ``quantizer: None`` builds the same network without VQ (the "no VQ" reference row).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seqvq.quantize.build import build_quantizer as make_quantizer
from seqvq.quantize.core import QuantizedResult


@dataclass
class ClassifierOutput:
    logits: torch.Tensor  # (B, num_classes)
    quantized: QuantizedResult | None  # the quantizer's result (codes, loss, metrics); None without VQ


def build_quantizer(dim: int, channel_dim: int, options: dict | None) -> nn.Module | None:
    """The quantizer over ``dim`` channels at ``channel_dim`` from the config's ``quantizer:`` keywords: by ``kind``
    (default ``vq``: a `VectorQuantizer` with ``codebook_size`` and the remedies; ``fsq`` / ``bsq`` / ``lfq``: the
    codebook-free quantizers, see `seqvq.build_quantizer`); None when ``options`` is None."""
    if options is None:
        return None
    options = dict(options)
    for fixed in ("dim", "channel_dim"):
        if fixed in options:
            raise ValueError(f"quantizer option {fixed!r} is set by the model (the channels at the quantization "
                             f"point); remove it from the config")
    kind = options.pop("kind", "vq")
    if kind == "residual":
        raise ValueError("quantizer kind 'residual' gives several codes per vector, which the classifiers' "
                         "evaluation (one code per vector) does not count; use kind vq, fsq, bsq or lfq")
    if kind == "vq" and "codebook_size" not in options:
        raise ValueError("quantizer options need codebook_size (Huh et al. A.1 use 1024)")
    return make_quantizer(dim, kind, channel_dim=channel_dim, **options)


class QuantizedClassifier(nn.Module):
    """``encode`` -> optional ``quantizer`` -> ``classify``; see the module docstring."""

    quantizer: nn.Module | None  # VectorQuantizer, FSQ or BSQ; subclasses define encode(images), classify(features)

    def forward(self, images: torch.Tensor) -> ClassifierOutput:
        features = self.encode(images)
        if self.quantizer is None:
            return ClassifierOutput(self.classify(features), None)
        result = self.quantizer(features)
        # (B, C, H, W) quantizer outputs are channel-last in memory; contiguous() gives the following convolutions
        # (and DDP's gradient buckets) the layout of the unquantized network.
        return ClassifierOutput(self.classify(result.quantized.contiguous()), result)

    def codebook_loss(self, images: torch.Tensor) -> torch.Tensor:
        """The quantizer's codebook term with the encoder under no_grad: the inner loss (eq. 17) of Huh's
        alternating optimization."""
        if self.quantizer is None:
            raise ValueError("codebook_loss: this classifier has no quantizer (quantizer: null)")
        with torch.no_grad():
            features = self.encode(images)
        return self.quantizer(features).losses["codebook"]
