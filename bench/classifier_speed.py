#!/usr/bin/env python
"""Training-step speed (images/s) of the VQ classifiers of recipes/imagenet100 (Huh et al. 2023 §5.1), with and
without the VQ layer.

For each model (resnet18, alexnet, vit_tiny) and each row (default: novq = the network without VQ, none = plain
VQ, all = affine + sync + alternating + replacement) builds the recipe's config (conf/<model>/<row>.yaml, with
conf/<model>/mini.overrides when --mini) and times the shared trainer's own training step (`Trainer.train_step`:
forward, backward, optimizer step, the alternating step where the row has it) on a batch of random images of the
config's size, median over --steps steps after one warm-up step (which runs the k-means initialisation).

    PYTHONPATH=. python bench/classifier_speed.py --threads 1 --batch 8            # paper scale, 224 px
    PYTHONPATH=. python bench/classifier_speed.py --threads 1 --mini               # the built-set models
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

from seqvq.data.class_folder import ImageBatch
from seqvq.tasks.classification import ClassificationTask
from seqvq.train import Trainer, TrainConfig, load_config

CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "recipes", "imagenet100", "conf")
sys.path.insert(0, os.path.join(CONF, os.pardir, os.pardir, "common"))
from row_overrides import row_overrides  # noqa: E402  (recipes/common/row_overrides.py, as run.sh --mini)


def recipe_config(model: str, row: str, mini: bool) -> dict:
    """The row's config; with ``mini``, plus the mini.overrides lines run.sh --mini gives it (row_overrides.py)."""
    path = os.path.join(CONF, model, f"{row}.yaml")
    return load_config(path, row_overrides(os.path.join(CONF, model, "mini.overrides"), path) if mini else [])


def images_per_second(config: dict, batch_size: int, steps: int, num_classes: int, device: str) -> float:
    config["data"]["classes"] = [str(label) for label in range(num_classes)]
    task = ClassificationTask(config).build_model()
    train = TrainConfig.from_dict({**config["train"], "batch_size": batch_size, "device": device})
    size = int(config["data"]["image_size"])
    generator = torch.Generator().manual_seed(0)
    batch = ImageBatch(torch.randn(batch_size, 3, size, size, generator=generator),
                       torch.randint(0, num_classes, (batch_size,), generator=generator))
    with tempfile.TemporaryDirectory() as exp_dir:
        trainer = Trainer(task, train, [], None, exp_dir=exp_dir)
        batch = ImageBatch(batch.images.to(trainer.device), batch.labels.to(trainer.device))
        times = []
        for step in range(steps + 1):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            trainer.train_step(batch)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            if step:
                times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "alexnet", "vit_tiny"])
    parser.add_argument("--rows", nargs="+", default=["novq", "none", "all"])
    parser.add_argument("--mini", action="store_true", help="the --mini models and image sizes")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, {args.threads} thread(s), batch {args.batch}, median of {args.steps} steps, "
          f"{'mini' if args.mini else 'paper'} configs")
    print("| model | image px | " + " | ".join(f"{row} img/s" for row in args.rows) + " |")
    print("|---|---|" + "---|" * len(args.rows))
    for model in args.models:
        figures = []
        for row in args.rows:
            config = recipe_config(model, row, args.mini)
            figures.append(images_per_second(config, args.batch, args.steps, args.classes, args.device))
        size = recipe_config(model, args.rows[0], args.mini)["data"]["image_size"]
        print(f"| {model} | {size} | " + " | ".join(f"{value:.1f}" for value in figures) + " |", flush=True)


if __name__ == "__main__":
    main()
