"""Task `image_classification`: the VQ classifiers of Huh et al. 2023 §5.1 (Table 2) for the shared trainer.

Run config keys read here (besides `train:`):

    data:   root: a folder with <train_split>/<class>/*.JPEG and <val_split>/<class>/*.JPEG (ImageNet100 layout)
            train_split: train, val_split: val, image_size: 224, resize_size: 256 (eval: resize, centre crop),
            crop_scale: [0.08, 1.0] and flip: true (the random resized crop + flip of training),
            classes: the training class names (written here from the training folder when absent, so that the
            checkpoint's config labels any evaluation folder the same way)
    model:  arch: resnet18 | alexnet | vit_tiny, num_classes (default: the number of training classes),
            quantizer: VectorQuantizer keywords (codebook_size, alpha, beta, affine, sync_nu, kmeans_init,
            replace_dead_after...), kind: fsq / bsq with theirs (levels; bits), or null for the network without
            VQ, and the architecture's own keywords
            (resnet18: width; alexnet: dropout, hidden, pooled_size; vit_tiny: patch_size, embed_dim, depth,
            num_heads, mlp_ratio, quantize_after; its image_size is data.image_size)
    eval:   batch_size, max_images (null = the whole validation split)

Evaluation (Table 2): top-1 accuracy (%) and code perplexity 2^H over every quantized vector of the validation
split, with the number of codes used.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seqvq.data.class_folder import ClassFolderDataset, EvalCollate, ImageBatch, TrainCollate
from seqvq.metrics.bits import code_perplexity
from seqvq.models.alexnet import AlexNet
from seqvq.models.quantized_classifier import QuantizedClassifier
from seqvq.models.resnet import ResNet18
from seqvq.models.vit import VisionTransformer
from seqvq.options import Section
from seqvq.quantize import quantizer_section
from seqvq.train.types import StepOutput, TaskBundle
from seqvq.train.warmup import quantized_figure

ARCHITECTURES = {"resnet18": ResNet18, "alexnet": AlexNet, "vit_tiny": VisionTransformer}


class ClassificationTask(nn.Module):
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


def _model_section() -> Section:
    """``model:``: ``arch`` plus the constructor keys of any architecture (each checks its own on construction)."""
    union = Section("model", {"arch": str}, {})
    for architecture in ARCHITECTURES.values():
        union = union.merged(Section.of(architecture, skip=("num_classes",), quantizer=quantizer_section()))
    return union


# The keys a run config of this task may hold (checked by ``seqvq train`` / ``seqvq evaluate``).
CONFIG = Section.keys(
    "image_classification", model=_model_section(),
    data=Section.keys("data", root=str | None, classes=list | None, train_split=str, val_split=str, image_size=int,
                      resize_size=int, crop_scale=list, flip=bool),
    eval=Section.keys("eval", batch_size=int, max_images=int | None))


def build_classifier(model_config: dict, num_classes: int, image_size: int) -> QuantizedClassifier:
    options = dict(model_config)
    arch = options.pop("arch", None)
    if arch not in ARCHITECTURES:
        raise ValueError(f"model.arch must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
    options.pop("num_classes", None)
    if arch == "vit_tiny":
        if options.setdefault("image_size", image_size) != image_size:
            raise ValueError(f"model.image_size={options['image_size']} differs from data.image_size={image_size}; "
                             f"set only data.image_size")
    return ARCHITECTURES[arch](num_classes=num_classes, **options)


def _data(config: dict) -> dict:
    return {"train_split": "train", "val_split": "val", "image_size": 224, "resize_size": 256,
            "crop_scale": [0.08, 1.0], "flip": True, **(config.get("data") or {})}


def _root(data: dict, root: str | None = None) -> str:
    root = root or data.get("root")
    if not root:
        raise ValueError("the config has no data.root: pass --data DIR or --mini to the recipe, or set it")
    return root


def build_model(config: dict) -> ClassificationTask:
    """The classifier of ``config`` (``model.num_classes`` or ``data.classes`` must be known)."""
    data, model = _data(config), config.get("model") or {}
    num_classes = model.get("num_classes") or len(data.get("classes") or [])
    if not num_classes:
        raise ValueError("set model.num_classes (or data.classes) to build the classifier")
    return ClassificationTask(build_classifier(model, int(num_classes), int(data["image_size"])))


@torch.no_grad()
def evaluate_images(model: nn.Module, images: ClassFolderDataset, collate: EvalCollate, batch_size: int = 100,
                    max_images: int | None = None) -> dict:
    """Top-1 accuracy (%), code perplexity and codes used of a classifier (in eval mode) on ``images``."""
    classifier = getattr(model, "module", model)
    classifier = classifier.classifier if isinstance(classifier, ClassificationTask) else classifier
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
        figures.update(perplexity=code_perplexity(codes, classifier.quantizer.codebook_size),
                       codes_used=float(len(codes.unique())))
    return figures


def build_task(config: dict) -> TaskBundle:
    """Model, training images, augmenting collate function and the validation evaluation for the trainer.
    Records the training classes in ``config["data"]["classes"]`` (saved with the checkpoints)."""
    data = _data(config)
    root = _root(data)
    train_images = ClassFolderDataset(os.path.join(root, data["train_split"]), data.get("classes"))
    config.setdefault("data", {})["classes"] = train_images.classes
    val_images = ClassFolderDataset(os.path.join(root, data["val_split"]), train_images.classes)
    model = build_model(config)
    size = int(data["image_size"])
    train_collate = TrainCollate(size, tuple(data["crop_scale"]), flip=bool(data["flip"]))
    eval_collate = EvalCollate(size, int(data["resize_size"]))
    options = config.get("eval") or {}

    def evaluate(trained: nn.Module) -> dict:
        return evaluate_images(trained, val_images, eval_collate, int(options.get("batch_size", 100)),
                               options.get("max_images"))

    return TaskBundle(model, train_images, train_collate, evaluate)


def evaluate_cli(checkpoint: str, data_root: str, config: dict, out_dir: Path, use_polyak: bool = True) -> dict:
    """`seqvq evaluate CKPT DATA [--out DIR]`: Table 2 figures on DATA's validation split (Polyak weights when
    saved and ``use_polyak``), also written to out_dir/metrics.json."""
    from seqvq.train.checkpoint import load_checkpoint

    model = build_model(config)
    load_checkpoint(checkpoint, model, use_polyak=use_polyak)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    data, options = _data(config), config.get("eval") or {}
    images = ClassFolderDataset(os.path.join(_root(data, data_root), data["val_split"]), data.get("classes"))
    figures = evaluate_images(model, images, EvalCollate(int(data["image_size"]), int(data["resize_size"])),
                              int(options.get("batch_size", 100)), options.get("max_images"))
    figures = {**figures, **quantized_figure(model)}
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_path = out_dir / "metrics.json.tmp"
    tmp_path.write_text(json.dumps(figures, indent=1) + "\n")
    os.replace(tmp_path, out_dir / "metrics.json")
    return figures
