"""AlexNet with a VQ layer after the convolutional features (Huh et al. 2023 §5.1, App. A.1 "AlexNet
quantization": after the convolutional layers, before the fully-connected ones).

Written layer for layer after torchvision's ``torchvision/models/alexnet.py`` with the same module names, so a
torchvision ``alexnet().state_dict()`` loads into ``AlexNet(quantizer=None)`` unchanged: ``features`` (conv
11x11/4 -> 64, max-pool, conv 5x5 -> 192, max-pool, conv 3x3 -> 384, 256, 256, max-pool; ReLU after each conv at
indices 0, 3, 6, 8, 10), ``avgpool`` (adaptive, 6 x 6), ``classifier`` (dropout, 9216 -> 4096, ReLU, dropout,
4096 -> 4096, ReLU, 4096 -> classes at indices 1, 4, 6); PyTorch's default initialisation, as torchvision.

The quantizer sees the output of ``features`` (256 channels; 6 x 6 = 36 vectors per 224 px image), channels at
dim 1, i.e. before the adaptive pooling (an identity at 224 px).  ``hidden`` (4096 = torchvision) and
``pooled_size`` (6) shrink the fully-connected part for the CPU-sized built-set recipe.
"""
from __future__ import annotations

import torch
from torch import nn

from .quantized_classifier import QuantizedClassifier, build_quantizer


class AlexNet(QuantizedClassifier):
    """torchvision's AlexNet; ``quantizer`` (VectorQuantizer keywords, or FSQ / BSQ ones with ``kind``; None: no
    VQ) quantizes ``features``' output."""

    def __init__(self, num_classes: int = 1000, quantizer: dict | None = None, dropout: float = 0.5,
                 hidden: int = 4096, pooled_size: int = 6):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.quantizer = build_quantizer(256, 1, quantizer)
        self.avgpool = nn.AdaptiveAvgPool2d((pooled_size, pooled_size))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * pooled_size * pooled_size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> ``features`` output (B, 256, h, w): what the quantizer sees."""
        return self.features(images)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(features), 1))
