#!/usr/bin/env python
"""Build the `--mini` image set for the autoencoder recipes: 32x32 crops of real photos, in CIFAR-10's format.

The photos are the ones bundled with scikit-learn (`load_sample_images`: china, flower) and, when scikit-image
is installed, its bundled colour photos (astronaut, coffee, chelsea, rocket, hubble_deep_field,
immunohistochemistry). Each photo is resized so its shorter side is each of `--scales` pixels and cut into 32x32
tiles. Train and test come from disjoint parts of every photo: tiles lying wholly in the left
`1 - test_fraction` of the width are training tiles (every `train_stride` pixels, overlapping), tiles lying wholly
in the right `test_fraction` are test tiles (every 32 pixels); tiles across the border are dropped. The label of
a tile is the index of its photo. Writes `<out>/data_batch_1..5`, `test_batch` and `batches.meta` exactly as
`cifar-10-batches-py/` (read by `seqvq.data.cifar.CifarImages`), each file atomically.

    python data_prep/make_mini_images.py --out data/mini_images
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from seqvq.data.cifar import SIDE, write_cifar_batches  # noqa: E402

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def bundled_photos(use_skimage: bool = True) -> list[tuple[str, np.ndarray]]:
    """(name, (H, W, 3) uint8) of the photos shipped inside scikit-learn and, if importable, scikit-image."""
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    photos = [(os.path.splitext(os.path.basename(name))[0], image)
              for name, image in zip(sample.filenames, sample.images)]
    if use_skimage:
        try:
            import skimage.data
        except ImportError:
            print("make_mini_images: scikit-image is not installed; using scikit-learn's 2 photos only",
                  file=sys.stderr)
            return photos
        photos += [(name, getattr(skimage.data, name)()[..., :3]) for name in SKIMAGE_PHOTOS]
    return photos


def tiles(photo: np.ndarray, shorter_side: int, test_fraction: float, train_stride: int):
    """Train and test tiles (N, 3, 32, 32) uint8 of `photo` resized to `shorter_side`; see the module docstring."""
    height, width = photo.shape[:2]
    scale = shorter_side / min(height, width)
    size = (max(SIDE, round(width * scale)), max(SIDE, round(height * scale)))
    image = np.asarray(Image.fromarray(photo).resize(size, Image.LANCZOS))
    border = int(size[0] * (1.0 - test_fraction))
    out = {"train": [], "test": []}
    for split, stride, lo, hi in (("train", train_stride, 0, border), ("test", SIDE, border, size[0])):
        for top in range(0, size[1] - SIDE + 1, stride):
            for left in range(lo, hi - SIDE + 1, stride):
                out[split].append(image[top:top + SIDE, left:left + SIDE].transpose(2, 0, 1))
    return [np.stack(out[s]) if out[s] else np.zeros((0, 3, SIDE, SIDE), np.uint8) for s in ("train", "test")]


def build(photos, scales=(48, 64, 96, 128, 192, 256), test_fraction: float = 0.25, train_stride: int = 16,
          seed: int = 0):
    """(train (images, labels), test (images, labels), names): tiles of every photo at every scale, shuffled."""
    splits = {"train": ([], []), "test": ([], [])}
    for label, (_, photo) in enumerate(photos):
        for shorter_side in scales:
            for split, images in zip(("train", "test"), tiles(photo, shorter_side, test_fraction, train_stride)):
                splits[split][0].append(images)
                splits[split][1].append(np.full(len(images), label, dtype=np.int64))
    rng = np.random.default_rng(seed)
    result = []
    for split in ("train", "test"):
        images, labels = np.concatenate(splits[split][0]), np.concatenate(splits[split][1])
        order = rng.permutation(len(labels))
        result.append((images[order], labels[order]))
    return result[0], result[1], [name for name, _ in photos]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (the cifar-10-batches-py layout)")
    parser.add_argument("--scales", type=int, nargs="+", default=[48, 64, 96, 128, 192, 256],
                        help="shorter sides, in pixels, each photo is resized to before tiling")
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--train-stride", type=int, default=16)
    parser.add_argument("--no-skimage", action="store_true", help="scikit-learn's two photos only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 0.0 < args.test_fraction < 1.0:
        parser.error(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    photos = bundled_photos(not args.no_skimage)
    train, test, names = build(photos, tuple(args.scales), args.test_fraction, args.train_stride, args.seed)
    write_cifar_batches(args.out, train, test, names)
    print(f"{args.out}: {len(train[1])} training and {len(test[1])} test 32x32 crops of {len(names)} photos "
          f"({', '.join(names)})")


if __name__ == "__main__":
    main()
