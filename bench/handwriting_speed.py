#!/usr/bin/env python
"""Speed of the handwriting recipe's model: train step time and autoregressive sampling speed (pixels/s).

Builds the model of recipes/scribblelens/conf/common.yaml (with conf/mini.overrides unless --full) and times
  * a training step (forward, backward, Adam step) on a batch of lines of the built mini corpus (or random lines
    of --width columns when the corpus is not built), median over --steps after one warm-up step;
  * sampling lines of --sample-width columns from random codes, pixel by pixel, reported as pixels/s.

    PYTHONPATH=. python bench/handwriting_speed.py --threads 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from seqvq import param_groups
from seqvq.data.lines import LineCorpus, LineSample, collate_lines
from seqvq.models.handwriting_ae import HandwritingAutoencoder
from seqvq.train.config import apply_overrides, load_config

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
CONF = os.path.join(REPO, "recipes", "scribblelens", "conf")


def recipe_model_config(full: bool) -> dict:
    config = load_config(os.path.join(CONF, "common.yaml"))
    if not full:
        with open(os.path.join(CONF, "mini.overrides")) as handle:
            lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
        config = apply_overrides(config, [line.split(": ", 1)[1] for line in lines if line.startswith("*:")])
    return config


def batch_of_lines(model: HandwritingAutoencoder, batch_size: int, width: int):
    corpus = os.path.join(REPO, "data", "mini_handwriting", "train.npz")
    if os.path.isfile(corpus) and model.height == 32:
        lines = LineCorpus(corpus)
        return collate_lines([lines[i] for i in range(batch_size)]), "mini corpus lines"
    generator = torch.Generator().manual_seed(0)
    samples = [LineSample(torch.randint(0, model.levels, (model.height, width), generator=generator), "", str(i))
               for i in range(batch_size)]
    return collate_lines(samples), f"random lines of {width} columns"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="paper-scale model instead of the mini one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="default: the config's train.batch_size")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--sample-lines", type=int, default=4)
    parser.add_argument("--sample-width", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = recipe_model_config(args.full)
    model = HandwritingAutoencoder(**config["model"]).to(args.device)
    batch_size = args.batch or int(config["train"]["batch_size"])
    batch, source = batch_of_lines(model, batch_size, args.width)
    batch = batch.to(args.device)
    optimizer = torch.optim.Adam(param_groups(model, 1e-3, None))
    times = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        out = model(batch.images, batch.mask)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - start)
    pixels = int(batch.mask.sum()) * model.height
    print(f"train step: {statistics.median(times):.3f} s median over {args.steps} steps "
          f"(batch {batch_size}, {source}, {pixels} pixels, {args.threads} threads, {args.device}, "
          f"{sum(p.numel() for p in model.parameters())} parameters)")

    model.eval()
    latents = args.sample_width // model.width_stride
    codes = torch.randint(0, model.codebook_size, (args.sample_lines, latents), device=args.device)
    widths = torch.full((args.sample_lines,), latents * model.width_stride, device=args.device)
    start = time.perf_counter()
    lines = model.sample_from_codes(codes, widths, torch.Generator(device=args.device).manual_seed(0))
    elapsed = time.perf_counter() - start
    print(f"sampling: {lines.numel() / elapsed:.0f} pixels/s ({args.sample_lines} lines x {model.height} x "
          f"{int(widths[0])} pixels in {elapsed:.1f} s; context window {model.decoder.context_columns + 1} "
          f"columns)")


if __name__ == "__main__":
    main()
