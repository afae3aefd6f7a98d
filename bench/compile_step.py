"""Training step time with and without ``train.compile`` (seqvq.quantize.compiled.compile_model) on CPU.

The speech recipe's model (recipes/wsj/conf/base.yaml, +BN +EMA bottleneck of 512 codes; synthetic padded batch,
as bench/speech_step.py) and the CIFAR-10 autoencoder's mini VQ row (as bench/images_step.py): forward + loss +
backward + Adam step, eager and compiled copies of the same model alternating step by step so that load from other
processes affects both alike.  Reports the first compiled step (mostly compilation) and medians over ``--steps``
after ``--warmup`` steps.

    PYTHONPATH=. python bench/compile_step.py --threads 1 [--backend inductor] [--steps 10]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from images_step import recipe_config  # noqa: E402
from speech_step import synthetic_batch  # noqa: E402

from seqvq import param_groups, reset_optimizer_state  # noqa: E402
from seqvq.data.units import UnitInventory  # noqa: E402
from seqvq.models.cifar_ae import CifarAutoencoder  # noqa: E402
from seqvq.quantize.compiled import compile_model  # noqa: E402
from seqvq.tasks.speech import SpeechCTCTask  # noqa: E402
from seqvq.train.config import load_config  # noqa: E402


def speech_setup(batch_size: int, frames: int):
    config = load_config("recipes/wsj/conf/base.yaml")
    config["model"]["quantizer"] = {"codebook_size": 512, "pre_norm": True, "codebook_update": "ema"}
    task = SpeechCTCTask(config)
    task.feature_dim, task.deltas, task.inventory = 81, True, UnitInventory.phones()  # 243 inputs
    batch = synthetic_batch(batch_size, frames, 243, torch.Generator().manual_seed(0))
    return task.build_model().train(), batch, lambda out: out.loss


def image_setup(batch_size: int | None):
    config = recipe_config("cifar10", "vqvae", full=False)
    model = CifarAutoencoder(**config["model"]).train()
    images = torch.randint(0, 256, (batch_size or int(config["train"]["batch_size"]), 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    return model, images, lambda out: out.loss


def step_times(model, batch, loss_of, backend, steps, warmup):
    """{variant: [seconds per step]} for an eager and a compiled copy of ``model``, alternating."""
    compiled = compile_model(copy.deepcopy(model), backend=backend)
    setups = {"eager": model, "compiled": compiled}
    optimizers = {name: torch.optim.Adam(param_groups(m, 1e-3, 1e-2)) for name, m in setups.items()}
    times = {name: [] for name in setups}
    for _ in range(warmup + steps):
        for name, m in setups.items():
            start = time.perf_counter()
            loss = loss_of(m(batch))
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            reset_optimizer_state(m, optimizers[name])
            optimizers[name].step()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--speech-batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--image-batch", type=int, default=None, help="default: the config's train.batch_size")
    parser.add_argument("--only", choices=("speech", "images"), default=None)
    args = parser.parse_args()
    # Every step has the same shapes; without this a recompilation made dynamic shapes that inductor failed to
    # compile for the image model (TypeError: cannot determine truth value of Relational).
    torch._dynamo.config.automatic_dynamic_shapes = False
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    setups = {"speech (wsj base, +BN +EMA)": lambda: speech_setup(args.speech_batch, args.frames),
              "images (cifar10 mini VQ)": lambda: image_setup(args.image_batch)}
    print(f"backend {args.backend}, {args.threads} thread(s), median of {args.steps} steps after {args.warmup}")
    print("| model | first compiled step (s) | eager ms/step | compiled ms/step | speed-up |")
    print("|---|---|---|---|---|")
    for name, setup in setups.items():
        if args.only and not name.startswith(args.only):
            continue
        times = step_times(*setup(), args.backend, args.steps, args.warmup)
        eager, compiled = (statistics.median(times[v][args.warmup:]) for v in ("eager", "compiled"))
        print(f"| {name} | {times['compiled'][0]:.1f} | {1000 * eager:.1f} | {1000 * compiled:.1f} | "
              f"{eager / compiled:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
