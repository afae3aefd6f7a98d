"""What the image-autoencoder tasks (`cifar_ae`, Łańcucki et al. 2020 §IV-C; `vqvae`, Huh et al. 2023 §5.2) share:
the ``data:`` and ``eval:`` sections, the CIFAR-10 (or built) image sets, model construction from the checked
``model:`` section, the trainer's bundle and `seqvq evaluate` with its metrics.json.

    data:   corpus: cifar-10-python.tar.gz, its cifar-10-batches-py/ folder (or the folder holding it), or a
            built set in the same layout (data_prep/make_mini_images.py); max_train_images (null = all)
    eval:   batch_size, max_images (null = the whole test split)

A task module declares its :class:`ImageTask`: the network, its :class:`ImageAutoencoderTask` (the reconstruction
metric of a training step) and its evaluation ``evaluate(model, images, batch_size) -> figures`` (built on
:func:`summed_over_images`); the registry's ``build_model``, ``build_task`` and ``evaluate_cli`` are its methods.
"""
from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from seqvq.data.cifar import CifarImages, ImageBatch, collate_images
from seqvq.errors import UserError
from seqvq.options import Section
from seqvq.quantize import quantizer_section
from seqvq.train.logs import atomic_write_text
from seqvq.train.types import StepOutput, TaskBundle
from seqvq.train.warmup import quantized_figure

Evaluate = Callable[[nn.Module, CifarImages, int], dict]


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


def image_options(config: dict) -> tuple[ImageData, ImageEval]:
    """The config's ``data:`` and ``eval:`` sections, checked."""
    return (ImageData(**Section.of(ImageData).check(config.get("data") or {}, "data")),
            ImageEval(**Section.of(ImageEval).check(config.get("eval") or {}, "eval")))


def open_images(config: dict, split: str, corpus: str | None = None) -> CifarImages:
    """`split` ("train" / "test") of the config's `data.corpus` (or of `corpus`)."""
    data, options = image_options(config)
    corpus = corpus or data.corpus
    if not corpus:
        raise UserError("data.corpus: not set; pass --data CIFAR or --mini to the recipe, or set it")
    try:
        return CifarImages(corpus, split, data.max_train_images if split == "train" else options.max_images)
    except (OSError, ValueError) as error:  # a missing, truncated or foreign file: one line, naming it
        raise UserError(str(error)) from None


class ImageAutoencoderTask(nn.Module, abc.ABC):
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
    return model.network if isinstance(model, ImageAutoencoderTask) else model


def image_config(task: str, network: type[nn.Module]) -> Section:
    """The run config of an image task: the ``data:`` and ``eval:`` sections, and ``model:`` the keywords of
    `network` with a ``quantizer:`` of any kind."""
    return Section.keys(task, data=Section.of(ImageData), eval=Section.of(ImageEval),
                        model=Section.of(network, quantizer=quantizer_section()))


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


@dataclass(frozen=True)
class ImageTask:
    """An image-autoencoder task: `build_model`, `build_task` and `evaluate_cli` for the registry."""

    config: Section  # image_config(task name, network)
    network: Callable[..., nn.Module]  # built from the checked model section
    wrapper: Callable[[nn.Module], ImageAutoencoderTask]
    name: str  # the task in the message for a missing quantizer
    evaluate: Evaluate  # the test figures of a model on images

    def build_model(self, config: dict) -> ImageAutoencoderTask:
        """The wrapped network from the config's ``model:`` section; a missing quantizer or an option value the
        network refuses is a UserError naming the model section."""
        options = self.config.sections["model"].check(dict(config.get("model") or {}), "model")
        if options.get("quantizer") is None:
            raise UserError(f"model.quantizer: empty; the {self.name} task needs a VQ bottleneck (codebook_size: K)")
        try:
            return self.wrapper(self.network(**options))
        except ValueError as error:  # an option value the model refuses (the keys and types are checked above)
            raise UserError(f"model: {error}; fix the model section of the config") from None

    def build_task(self, config: dict) -> TaskBundle:
        """Model, training images, collate function and the test-split evaluation for the trainer."""
        model = self.build_model(config)
        train_images, test_images = open_images(config, "train"), open_images(config, "test")
        batch_size = image_options(config)[1].batch_size
        return TaskBundle(model, train_images, collate_images,
                          lambda trained: self.evaluate(trained, test_images, batch_size))

    def evaluate_cli(self, checkpoint: str, data: str, config: dict, out_dir: str | Path | None = None,
                     use_polyak: bool = True) -> dict:
        """`seqvq evaluate CKPT DATA`: the test figures on DATA's test split with the Polyak weights when saved and
        ``use_polyak``; also written to `out_dir`/metrics.json (default:
        :func:`seqvq.train.checkpoint.evaluation_dir`)."""
        from seqvq.train.checkpoint import evaluation_dir, load_checkpoint

        model = self.build_model(config)
        load_checkpoint(checkpoint, model, use_polyak=use_polyak)
        model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        images = open_images(config, "test", corpus=data)
        figures = {**self.evaluate(model, images, image_options(config)[1].batch_size), **quantized_figure(model)}
        write_metrics(Path(out_dir) if out_dir is not None else evaluation_dir(checkpoint, data), figures)
        return figures


def write_metrics(out_dir: Path, figures: dict) -> None:
    """`out_dir`/metrics.json, written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(figures, indent=1) + "\n")
