#!/usr/bin/env python
"""Overhead of ``train.doctor_every``: the median time of a training step and of the doctor's measurement of the
step's batch (:func:`seqvq.quantize.diagnosis.measure`, what the trainer runs every ``doctor_every`` steps),
interleaved so that both see the same machine load; the overhead at ``doctor_every=k`` is measure / (k x step).

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

from seqvq.quantize.diagnosis import initial_codebooks, measure
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
        steps, checks = [], []
        for _ in range(args.steps):
            batch = next(batches)
            start = time.perf_counter()
            trainer.train_step(batch)
            steps.append(time.perf_counter() - start)
            start = time.perf_counter()
            measure(trainer.model, [batch], initial)
            checks.append(time.perf_counter() - start)
    step, check = statistics.median(steps), statistics.median(checks)
    print(f"median step {step * 1000:.1f} ms, median doctor measurement {check * 1000:.1f} ms "
          f"(over {args.steps} steps, 1 thread)")
    for every in args.every:
        print(f"doctor_every={every}: overhead {100 * check / (every * step):.2f}% of step time")


if __name__ == "__main__":
    main()
