"""Task `image_classification`: the VQ classifiers of Huh et al. 2023 §5.1 (Table 2) for the shared trainer.

Run config keys read here (besides `train:`; declared by `ClassificationTask`, checked before anything runs):

    data:   root: a folder with <train_split>/<class>/*.JPEG and <val_split>/<class>/*.JPEG (ImageNet100 layout)
            train_split: train, val_split: val, image_size: 224, resize_size: 256 (eval: resize, centre crop),
            crop_scale: [0.08, 1.0] and flip: true (the random resized crop + flip of training),
            classes: the training class names (written here from the training folder when absent, so that the
            checkpoint's config labels any evaluation folder the same way)
    model:  arch: resnet18 | alexnet | vit_tiny (with one output per training class),
            quantizer: VectorQuantizer keywords (codebook_size, alpha, beta, affine, sync_nu, kmeans_init,
            replace_dead_after...), kind: fsq / bsq / lfq with theirs (levels; bits), or null for the network without
            VQ, and the architecture's own keywords
            (resnet18: width; alexnet: dropout, hidden, pooled_size; vit_tiny: patch_size, embed_dim, depth,
            num_heads, mlp_ratio, quantize_after; its image_size is data.image_size)
    eval:   batch_size, max_images (null = the whole validation split)

Evaluation (Table 2): top-1 accuracy (%) and code perplexity 2^H over every quantized vector of the validation
split, with the number of codes used.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seqvq.data.class_folder import ClassFolderDataset, EvalCollate, ImageBatch, TrainCollate
from seqvq.errors import UserError
from seqvq.metrics.bits import code_perplexity
from seqvq.models.alexnet import AlexNet
from seqvq.models.quantized_classifier import QuantizedClassifier
from seqvq.models.resnet import ResNet18
from seqvq.models.vit import VisionTransformer
from seqvq.options import Section
from seqvq.quantize import quantizer_section
from seqvq.tasks.base import TRAIN, Task
from seqvq.tasks.image_ae import ImageEval
from seqvq.train.types import StepOutput

ARCHITECTURES = {"resnet18": ResNet18, "alexnet": AlexNet, "vit_tiny": VisionTransformer}


@dataclass
class ClassificationData:
    """The ``data:`` section."""

    root: str | None = None  # <root>/<train_split>/<class>/*.JPEG and <root>/<val_split>/<class>/*.JPEG
    classes: list | None = None  # the training class names; None: the training folder's (then recorded here)
    train_split: str = "train"
    val_split: str = "val"
    image_size: int = 224
    resize_size: int = 256  # evaluation: shorter side resized to this, then the centre image_size crop
    crop_scale: list = field(default_factory=lambda: [0.08, 1.0])  # training: random resized crop's area range
    flip: bool = True  # training: random horizontal flip


class ClassificationModel(nn.Module):
    """Wraps a classifier for the trainer: batch -> StepOutput (cross-entropy + VQ loss, weight = images)."""

    def __init__(self, classifier: QuantizedClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, batch: ImageBatch) -> StepOutput:
        out = self.classifier(batch.images)
        cross_entropy = F.cross_entropy(out.logits, batch.labels)
        accuracy = (out.logits.argmax(1) == batch.labels).float().mean().detach() * 100
        metrics = {"cross_entropy": cross_entropy.detach(), "accuracy": accuracy}
        loss = cross_entropy
        if out.quantized is not None:
            loss = loss + out.quantized.loss
            metrics.update({"vq_loss": out.quantized.loss.detach(), **out.quantized.metrics})
        return StepOutput(loss, metrics, weight=len(batch.labels))

    def codebook_loss(self, batch: ImageBatch) -> torch.Tensor:
        """The inner loss (eq. 17) of Huh's alternating optimization on ``batch``."""
        return self.classifier.codebook_loss(batch.images)


def build_classifier(model_config: dict, num_classes: int, image_size: int) -> QuantizedClassifier:
    """The ``model.arch`` classifier with the other ``model:`` keys (``num_classes`` is the task's)."""
    options = dict(model_config)
    arch = options.pop("arch", None)
    if arch not in ARCHITECTURES:
        raise UserError(f"model.arch: {arch!r} is no architecture of this task; set it to one of "
                        f"{', '.join(ARCHITECTURES)}")
    options.pop("num_classes", None)
    if arch == "vit_tiny":
        if options.setdefault("image_size", image_size) != image_size:
            raise UserError(f"model.image_size={options['image_size']} differs from data.image_size={image_size}; "
                            f"set only data.image_size")
    return ARCHITECTURES[arch](num_classes=num_classes, **options)


@torch.no_grad()
def evaluate_images(model: nn.Module, images: ClassFolderDataset, collate: EvalCollate, batch_size: int = 100,
                    max_images: int | None = None) -> dict:
    """Top-1 accuracy (%), code perplexity and codes used of a classifier (in eval mode) on ``images``."""
    classifier = getattr(model, "module", model)
    classifier = classifier.classifier if isinstance(classifier, ClassificationModel) else classifier
    device = next(classifier.parameters()).device
    count = len(images) if max_images is None else min(len(images), int(max_images))
    correct, codes = 0, []
    for start in range(0, count, batch_size):
        batch = collate([images[i] for i in range(start, min(count, start + batch_size))])
        out = classifier(batch.images.to(device))
        correct += int((out.logits.argmax(1).cpu() == batch.labels).sum())
        if out.quantized is not None:
            codes.append(out.quantized.codes.reshape(-1).cpu())
    figures = {"accuracy": 100.0 * correct / count, "images": float(count)}
    if codes:
        codes = torch.cat(codes)
        figures.update(code_perplexity=code_perplexity(codes, classifier.quantizer.codebook_size),
                       codes_used=float(len(codes.unique())))
    return figures


class ClassificationTask(Task):
    """Huh's VQ classifiers: the training classes are those of ``data.root``/``train_split`` (recorded in the run
    config's ``data.classes``, so that the checkpoint labels any evaluated folder the same way)."""

    name = "image_classification"
    data_options = ClassificationData
    eval_options = ImageEval

    def __init__(self, config: dict):
        super().__init__(config)
        try:  # values the transforms refuse (the keys and types are checked by the schema)
            self.train_collate = TrainCollate(self.data.image_size, tuple(self.data.crop_scale), flip=self.data.flip)
            self.eval_collate = EvalCollate(self.data.image_size, self.data.resize_size)
        except ValueError as error:
            raise UserError(f"data: {error}; fix the data section of the config") from None

    @classmethod
    def model_section(cls) -> Section:
        """``arch`` plus the constructor keys of any architecture (each checks its own on construction)."""
        union = Section("model", {"arch": str}, {})
        for architecture in ARCHITECTURES.values():
            union = union.merged(Section.of(architecture, skip=("num_classes",), quantizer=quantizer_section()))
        return union

    def read_training_data(self) -> None:
        """The training images; their classes go to the run config's ``data.classes`` (saved with the
        checkpoints)."""
        self.train_images = ClassFolderDataset(self._folder(self.data.train_split), self.data.classes)
        self.data.classes = self.train_images.classes
        self.config.setdefault("data", {})["classes"] = self.train_images.classes

    def build_network(self, options: dict) -> ClassificationModel:
        if not self.data.classes:
            raise UserError("data.classes: not set; train with the config's data.root, or list the training "
                            "classes in data.classes")
        return ClassificationModel(build_classifier(options, len(self.data.classes), self.data.image_size))

    def open_split(self, split: str, model: nn.Module, path: str | None = None) -> ClassFolderDataset:
        """The training images, or the ``data.val_split`` images of ``data.root`` (or of the folder at
        ``path``), labelled with the training classes."""
        if split == TRAIN:
            return self.train_images
        return ClassFolderDataset(self._folder(self.data.val_split, path), self.data.classes)

    def _folder(self, split: str, root: str | None = None) -> str:
        root = root or self.data.root
        if not root:
            raise UserError("data.root: not set; pass --data DIR or --mini to the recipe, or set it")
        return os.path.join(root, split)

    def training_collate(self) -> TrainCollate:
        return self.train_collate

    def evaluate(self, model: nn.Module, dataset: ClassFolderDataset, out_dir: Path | None) -> dict:
        return evaluate_images(model, dataset, self.eval_collate, self.eval.batch_size, self.eval.max_images)
