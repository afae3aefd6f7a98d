"""ResNet18 with a VQ layer after ``layer2`` (Huh et al. 2023 §5.1, App. A.1 "ResNet18 quantization").

Written layer for layer after torchvision's ``torchvision/models/resnet.py`` (``resnet18``: ``BasicBlock``,
layers [2, 2, 2, 2]) with the same module names, so a torchvision ``resnet18().state_dict()`` loads into
``ResNet18(quantizer=None)`` unchanged (and into a quantized one with only ``quantizer.*`` missing): ``conv1``,
``bn1``, ``layer1``-``layer4`` of ``BasicBlock`` (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample.0/1``),
``fc``; the same initialisation (Kaiming-normal fan-out convolutions, BatchNorm weight 1 / bias 0).

The quantizer sees the output of ``layer2`` (128 channels at 1/8 of the input resolution: 28 x 28 = 784 vectors
per 224 px image), channels at dim 1.  ``width`` scales every stage (64 = torchvision; the built-set recipe uses a
narrower network to train on a CPU).
"""
from __future__ import annotations

import torch
from torch import nn

from .quantized_classifier import QuantizedClassifier, build_quantizer


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a residual connection (1x1 conv + BN when the shape changes)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(QuantizedClassifier):
    """torchvision's ResNet18; ``quantizer`` (VectorQuantizer keywords, or FSQ / BSQ ones with ``kind``; None: no
    VQ) quantizes ``layer2``'s output."""

    def __init__(self, num_classes: int = 1000, quantizer: dict | None = None, width: int = 64):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(widths[0], widths[0], stride=1)
        self.layer2 = self._make_layer(widths[0], widths[1], stride=2)
        self.quantizer = build_quantizer(widths[1], 1, quantizer)
        self.layer3 = self._make_layer(widths[1], widths[2], stride=2)
        self.layer4 = self._make_layer(widths[2], widths[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @staticmethod
    def _make_layer(inplanes: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> ``layer2`` output (B, 2 * width, H / 8, W / 8): what the quantizer sees."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer2(self.layer1(x))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(features))
        return self.fc(torch.flatten(self.avgpool(x), 1))
