#!/usr/bin/env python
"""Training-step speed (images/s) of the image autoencoders, with and without their VQ bottleneck.

For the CIFAR-10 autoencoder (recipes/cifar10, Łańcucki §IV-C) and the VQ-VAE (recipes/vqvae, Huh §5.2), builds
the model of the recipe's common.yaml (with conf/mini.overrides' model and batch settings unless --full), and
times forward + backward + Adam step on a batch of random 32x32 images: median over --steps after one warm-up
step, as images/s of wall time and of this process's CPU time (on a shared machine the wall figure includes the
time other jobs hold the cores; with one thread the CPU-time figure does not). "VQ" is the recipe's plain VQ row (conf/vqvae.yaml in both recipes); "no VQ" is the same
network with the quantizer removed (encoder output straight to the decoder).

    PYTHONPATH=. python bench/images_step.py --threads 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from seqvq import param_groups, reset_optimizer_state
from seqvq.models.cifar_ae import CifarAutoencoder
from seqvq.models.vqvae import VQVAE
from seqvq.train.config import load_config

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.insert(0, os.path.join(REPO, "recipes", "common"))
from row_overrides import row_overrides  # noqa: E402  (recipes/common/row_overrides.py, as run.sh --mini)
MODELS = {"cifar10": CifarAutoencoder, "vqvae": VQVAE}


def recipe_config(recipe: str, row: str, full: bool) -> dict:
    """The row's config; unless ``full``, plus the mini.overrides lines run.sh --mini gives it (row_overrides.py)."""
    conf = os.path.join(REPO, "recipes", recipe, "conf")
    path = os.path.join(conf, f"{row}.yaml")
    return load_config(path, [] if full else row_overrides(os.path.join(conf, "mini.overrides"), path))


def images_per_second(model: torch.nn.Module, batch_size: int, steps: int, device: str) -> tuple[float, float]:
    """(images/s of wall time, images/s of process CPU time), medians over `steps` after a warm-up step."""
    images = torch.randint(0, 256, (batch_size, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0)).to(device)
    model.to(device).train()
    optimizer = torch.optim.Adam(param_groups(model, 1e-3, None))
    wall, cpu = [], []
    for step in range(steps + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        loss = model(images).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        reset_optimizer_state(model, optimizer)
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if step:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return batch_size / statistics.median(wall), batch_size / statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="paper-scale models instead of the mini ones")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="default: each config's train.batch_size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, {args.threads} thread(s), {'paper' if args.full else 'mini'} models, "
          f"median of {args.steps} steps")
    print("| model | variant | batch | images/s (wall) | images/s (CPU time) |")
    print("|---|---|---|---|---|")
    for recipe, model_class in MODELS.items():
        config = recipe_config(recipe, "vqvae", args.full)
        batch_size = args.batch or int(config["train"]["batch_size"])
        for variant in ("no VQ", "VQ"):
            model_args = dict(config["model"])
            if variant == "no VQ":
                model_args["quantizer"] = None
            torch.manual_seed(0)
            wall, cpu = images_per_second(model_class(**model_args), batch_size, args.steps, args.device)
            print(f"| {recipe} | {variant} | {batch_size} | {wall:.1f} | {cpu:.1f} |", flush=True)

if __name__ == "__main__":
    main()
