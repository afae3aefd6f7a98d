#!/usr/bin/env python
"""Overhead of ``train.doctor_every``: the median time of a plain training step and of a watched one (the step the
trainer runs every ``doctor_every`` steps: its bottlenecks' passes read by :class:`seqvq.quantize.diagnosis.Watch`,
then their figures computed), interleaved so that both see the same machine load; the overhead at
``doctor_every=k`` is the watched step's extra time (at least the figures' time) / (k x step).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python3 bench/doctor_overhead.py --data data/mini_images [--steps 30]

Runs the VQ-VAE recipe's mini row (recipes/vqvae/conf/vqvae.yaml with its mini.overrides: 64 channels, 1,024
codes, batch 32) for ``--steps`` steps in a temporary directory.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from seqvq.quantize.diagnosis import Watch, initial_codebooks
from seqvq.tasks import get_task
from seqvq.train import Trainer, TrainConfig, seed_everything
from seqvq.train.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/mini_images")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--every", type=int, nargs="*", default=[25, 50, 100])
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = [line.split(": ", 1)[1] for line in open("recipes/vqvae/conf/mini.overrides")
                 if line.startswith("*: ")]
    config = load_config("recipes/vqvae/conf/vqvae.yaml", overrides + [f"data.corpus={args.data}"])
    train = TrainConfig.from_dict(config["train"])
    seed_everything(train.seed)
    bundle = get_task(config["task"])(config).build_task()
    with tempfile.TemporaryDirectory() as exp_dir:
        trainer = Trainer(bundle.model, train, bundle.train_dataset, bundle.collate_fn, exp_dir=exp_dir)
        initial = initial_codebooks(trainer.model)
        batches = trainer._batches()
        steps, watched, checks = [], [], []
        for index in range(2 * args.steps):
            batch = next(batches)
            start = time.perf_counter()
            if index % 2:
                with Watch(trainer.model) as watch:
                    trainer.train_step(batch)
                middle = time.perf_counter()
                watch.states(initial)
                checks.append(time.perf_counter() - middle)
                watched.append(time.perf_counter() - start)
            else:
                trainer.train_step(batch)
                steps.append(time.perf_counter() - start)
    step, check = statistics.median(steps), statistics.median(checks)
    extra = statistics.median(watched) - step
    print(f"median step {step * 1000:.1f} ms; watched step {extra * 1000:+.1f} ms, of which the doctor's figures "
          f"{check * 1000:.1f} ms ({args.steps} plain and {args.steps} watched steps, interleaved, 1 thread)")
    for every in args.every:
        print(f"doctor_every={every}: overhead {100 * max(extra, check) / (every * step):.2f}% of step time")

if __name__ == "__main__":
    main()
