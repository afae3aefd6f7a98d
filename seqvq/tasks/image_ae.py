"""What the image-autoencoder tasks (`cifar_ae`, Łańcucki et al. 2020 §IV-C; `vqvae`, Huh et al. 2023 §5.2) share:
the ``data:`` and ``eval:`` sections, the CIFAR-10 (or built) image sets and the model's ``model:`` section.

    data:   corpus: cifar-10-python.tar.gz, its cifar-10-batches-py/ folder (or the folder holding it), or a
            built set in the same layout (data_prep/make_mini_images.py); max_train_images (null = all)
    eval:   batch_size, max_images (null = the whole test split)

A task subclasses :class:`ImageAutoencoderTask` with its network, its :class:`ImageAutoencoderModel` (the
reconstruction metric of a training step) and its test figures (``evaluate``, built on :func:`summed_over_images`).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from seqvq.data.cifar import CifarImages, ImageBatch, collate_images
from seqvq.errors import UserError
from seqvq.options import Section
from seqvq.quantize import quantizer_section
from seqvq.tasks.base import TRAIN, Task
from seqvq.train.types import StepOutput


@dataclass
class ImageData:
    """The ``data:`` section."""

    corpus: str | None = None  # cifar-10-python.tar.gz, cifar-10-batches-py/ (or its parent), or a built set
    max_train_images: int | None = None  # None = all


@dataclass
class ImageEval:
    """The ``eval:`` section."""

    batch_size: int = 100
    max_images: int | None = None  # None = the whole test split


class ImageAutoencoderModel(nn.Module, abc.ABC):
    """Wraps an image autoencoder for the trainer: batch -> StepOutput (loss per sub-pixel, weight = sub-pixels).

    The network's output has ``loss``, ``vq_loss``, ``vq_metrics`` and ``num_dims``; the network is held under the
    subclass's ``network_name`` (the prefix of its state_dict keys)."""

    network_name: str

    def __init__(self, network: nn.Module):
        super().__init__()
        self.add_module(self.network_name, network)

    @property
    def network(self) -> nn.Module:
        return getattr(self, self.network_name)

    @abc.abstractmethod
    def reconstruction_metrics(self, out) -> dict[str, torch.Tensor]:
        """The logged reconstruction figure of a step's network output (detached)."""

    def forward(self, batch: ImageBatch) -> StepOutput:
        out = self.network(batch.images)
        metrics = {**self.reconstruction_metrics(out), "vq_loss": out.vq_loss.detach(), **out.vq_metrics}
        return StepOutput(out.loss, metrics, weight=out.num_dims)

    def codebook_loss(self, batch: ImageBatch) -> torch.Tensor:
        """The quantizer's codebook term with the encoder under no_grad (Huh eq. 17's inner loss)."""
        with torch.no_grad():
            latents = self.network.encode(batch.images)
        return self.network.quantizer(latents).losses["codebook"]


def unwrap_network(model: nn.Module) -> nn.Module:
    """The network inside a (DDP-wrapped) task, or `model` itself when it is a bare network."""
    model = getattr(model, "module", model)
    return model.network if isinstance(model, ImageAutoencoderModel) else model


@torch.no_grad()
def summed_over_images(model: nn.Module, images: CifarImages, batch_size: int,
                       figure: str) -> tuple[nn.Module, float, int, torch.Tensor]:
    """Run the network in `model` (in eval mode) over `images`, in order, `batch_size` at a time: the network, the
    sum of its outputs' `figure` (e.g. "nll"), of their ``num_dims`` (sub-pixels) and their codes, (B, H, W, ...)
    each, concatenated over images and positions to (latents, ...)."""
    network = unwrap_network(model)
    device = next(network.parameters()).device
    total, dims, codes = 0.0, 0, []
    for start in range(0, len(images), batch_size):
        batch = collate_images([images[i] for i in range(start, min(len(images), start + batch_size))])
        out = network(batch.images.to(device))
        total, dims = total + float(getattr(out, figure)), dims + out.num_dims
        codes.append(out.codes.flatten(0, 2).cpu())
    return network, total, dims, torch.cat(codes)


class ImageAutoencoderTask(Task):
    """An image-autoencoder task: the network of the ``model:`` section (which needs a ``quantizer:``) on the
    train and test splits of ``data.corpus``."""

    data_options = ImageData
    eval_options = ImageEval
    network_class: ClassVar[type[nn.Module]]  # built from the checked model section
    model_class: ClassVar[type[ImageAutoencoderModel]]  # wraps it for the trainer
    title: ClassVar[str]  # the task in the message for a missing quantizer

    @classmethod
    def model_section(cls) -> Section:
        return Section.of(cls.network_class, quantizer=quantizer_section())

    def build_network(self, options: dict) -> ImageAutoencoderModel:
        if options.get("quantizer") is None:
            raise UserError(f"model.quantizer: empty; the {self.title} task needs a VQ bottleneck (codebook_size: K)")
        return self.model_class(self.network_class(**options))

    def open_split(self, split: str, model: nn.Module, path: str | None = None) -> CifarImages:
        """The train or test images of ``data.corpus`` (or of the set at ``path``)."""
        corpus = path or self.data.corpus
        if not corpus:
            raise UserError("data.corpus: not set; pass --data CIFAR or --mini to the recipe, or set it")
        name, limit = ("train", self.data.max_train_images) if split == TRAIN else ("test", self.eval.max_images)
        try:
            return CifarImages(corpus, name, limit)
        except (OSError, ValueError) as error:  # a missing, truncated or foreign file: one line, naming it
            raise UserError(str(error)) from None

    def training_collate(self):
        return collate_images
