"""ImageNet-style class folders (``<root>/<split>/<class>/<image>``, e.g. ImageNet100's ``train/n01558993/*.JPEG``)
read with Pillow, and the standard augmentation of the classification tables of Huh et al. 2023 (App. A.1,
Tables 4-6; the PyTorch ImageNet example they follow) in plain torch / Pillow / numpy:

* training: random resized crop (area fraction ``scale`` = (0.08, 1), aspect ratio (3/4, 4/3), torchvision's
  ``RandomResizedCrop`` sampling: 10 tries, then a central crop of clamped ratio), bilinear resize to ``size``,
  horizontal flip with probability 1/2;
* evaluation: resize the shorter side to ``resize_size`` (256 for 224 crops), centre crop ``size``;
* both: RGB in [0, 1], normalised by the ImageNet mean and standard deviation.

Randomness comes from the ``generator`` the shared trainer passes to the collate function (seeded per batch), so
a resumed run sees the same crops.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from seqvq.errors import UserError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ClassFolderDataset(Dataset):
    """``root/<class>/<image>`` -> ``(PIL RGB image, label)``; labels index the sorted class folder names (as
    torchvision's ``ImageFolder``), or ``classes`` when given (a validation split uses the training classes)."""

    def __init__(self, root: str, classes: list[str] | None = None):
        if not os.path.isdir(root):
            raise UserError(f"{root}: no such image folder (expected {root}/<class>/<image files>)")
        found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
        if not found:
            raise UserError(f"{root}: no class folders (expected {root}/<class>/<image files>)")
        if classes is None:
            classes = found
        else:
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise UserError(f"{root}: class folder(s) {', '.join(unknown[:5])} are not among the "
                                 f"{len(classes)} training classes")
        self.root, self.classes = root, list(classes)
        self.samples: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            folder = os.path.join(root, name)
            if not os.path.isdir(folder):
                continue
            self.samples.extend((os.path.join(folder, file), label) for file in sorted(os.listdir(folder))
                                if file.lower().endswith(IMAGE_EXTENSIONS))
        if not self.samples:
            raise UserError(f"{root}: no images with extensions {', '.join(IMAGE_EXTENSIONS)} in its class folders")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return read_rgb(path), label


def read_rgb(path: str) -> Image.Image:
    """The image at ``path`` decoded as RGB; a one-line error naming the file when Pillow cannot read it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UserError(f"{path}: not a readable image ({error}); replace or delete the file") from None


# ------------------------------------------------------------------------------------------------ transforms
def random_resized_crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
                            generator: torch.Generator) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) sampled as torchvision's ``RandomResizedCrop.get_params``: an area
    fraction uniform in ``scale`` and a log-uniform aspect ratio in ``ratio``, 10 tries, then the whole image
    centre-cropped to the nearest allowed ratio."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * float(torch.rand((), generator=generator)))
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * float(torch.rand((), generator=generator)))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
            top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
            return left, top, crop_w, crop_h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        crop_w, crop_h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        crop_w, crop_h = int(round(height * ratio[1])), height
    else:
        crop_w, crop_h = width, height
    return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h


def normalized_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float32: RGB / 255 normalised by the ImageNet mean and standard deviation."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - np.asarray(IMAGENET_MEAN, dtype=np.float32)) / np.asarray(IMAGENET_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def train_view(image: Image.Image, size: int, generator: torch.Generator, scale=(0.08, 1.0),
               ratio=(3 / 4, 4 / 3), flip: bool = True) -> torch.Tensor:
    """Random resized crop to ``size`` x ``size``, random horizontal flip, normalised tensor."""
    left, top, crop_w, crop_h = random_resized_crop_box(image.width, image.height, scale, ratio, generator)
    view = image.resize((size, size), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    if flip and float(torch.rand((), generator=generator)) < 0.5:
        view = view.transpose(Image.FLIP_LEFT_RIGHT)
    return normalized_tensor(view)


def eval_view(image: Image.Image, size: int, resize_size: int) -> torch.Tensor:
    """Shorter side resized to ``resize_size``, centre crop ``size`` x ``size``, normalised tensor."""
    shorter = min(image.width, image.height)
    width = max(size, int(round(image.width * resize_size / shorter)))
    height = max(size, int(round(image.height * resize_size / shorter)))
    image = image.resize((width, height), Image.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    return normalized_tensor(image.crop((left, top, left + size, top + size)))


@dataclass
class ImageBatch:
    images: torch.Tensor  # (B, 3, size, size) normalised
    labels: torch.Tensor  # (B,) int64


class TrainCollate:
    """Collate ``(image, label)`` items into an :class:`ImageBatch` of augmented training views."""

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip: bool = True):
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
        self.size, self.scale, self.ratio, self.flip = size, tuple(scale), tuple(ratio), flip

    def __call__(self, items: list, generator: torch.Generator | None = None) -> ImageBatch:
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        images = [train_view(image, self.size, generator, self.scale, self.ratio, self.flip) for image, _ in items]
        return ImageBatch(torch.stack(images), torch.tensor([label for _, label in items], dtype=torch.long))


class EvalCollate:
    """Collate ``(image, label)`` items into an :class:`ImageBatch` of centre crops."""

    def __init__(self, size: int, resize_size: int):
        if resize_size < size:
            raise ValueError(f"resize_size={resize_size} must be >= the crop size {size}")
        self.size, self.resize_size = size, resize_size

    def __call__(self, items: list) -> ImageBatch:
        images = [eval_view(image, self.size, self.resize_size) for image, _ in items]
        return ImageBatch(torch.stack(images), torch.tensor([label for _, label in items], dtype=torch.long))
