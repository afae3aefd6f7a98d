"""Training step time of the speech model with a VQ bottleneck over the same model without one (target <= 1.10x).

Runs forward + CTC loss + backward + Adam step on a synthetic batch, alternating the models step by step so that
load from other processes affects all alike, and reports medians and means (the mean includes the periodic
k-means++ of re-estimation). Model sizes from a recipe config.

Usage: PYTHONPATH=. python bench/speech_step.py [--config recipes/wsj/conf/base.yaml] [--steps 20] [--threads 2]
"""
import argparse
import statistics
import time

import torch

from seqvq import param_groups, reset_optimizer_state
from seqvq.data.speech_dataset import SpeechBatch
from seqvq.data.units import UnitInventory
from seqvq.tasks.speech import SpeechCTCTask
from seqvq.train.config import load_config

VARIANTS = {
    "no bottleneck": None,
    "vanilla VQ": {"codebook_size": 512},
    "+BN +EMA": {"codebook_size": 512, "pre_norm": True, "codebook_update": "ema"},
    # Reservoir update every step and k-means++ every 25 steps, as during Algorithm 1's re-estimation phase.
    "+BN +re-estimation": {"codebook_size": 512, "pre_norm": True,
                           "reestimate": {"init_steps": 1, "every": 25, "steps": 1000000, "reservoir_size": 8192}},
}


def synthetic_batch(batch_size: int, frames: int, dim: int, generator: torch.Generator) -> SpeechBatch:
    lengths = torch.randint(frames // 2, frames + 1, (batch_size,), generator=generator)
    lengths[0] = frames
    target_lengths = lengths // 9  # about one phone per 90 ms
    return SpeechBatch(features=torch.randn(batch_size, frames, dim, generator=generator), lengths=lengths,
                       targets=torch.randint(1, 40, (batch_size, int(target_lengths.max())), generator=generator),
                       target_lengths=target_lengths, utterances=[str(i) for i in range(batch_size)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="recipes/wsj/conf/base.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--frames", type=int, default=300, help="longest utterance in the batch (10 ms frames)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_config(args.config)
    setups = {}
    for name, quantizer in VARIANTS.items():
        config["model"]["quantizer"] = quantizer
        task = SpeechCTCTask(config)
        task.feature_dim, task.deltas, task.inventory = 81, True, UnitInventory.phones()  # 243 inputs
        model = task.build_model().train()
        optimizer = torch.optim.Adam(param_groups(model, 1e-3, 1e-2))
        setups[name] = (model, optimizer)
    batch = synthetic_batch(args.batch_size, args.frames, 243, torch.Generator().manual_seed(0))
    times = {name: [] for name in setups}
    for step in range(args.steps + 3):
        for name, (model, optimizer) in setups.items():
            start = time.perf_counter()
            out = model(batch)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            reset_optimizer_state(model, optimizer)
            optimizer.step()
            if step >= 3:  # warm-up
                times[name].append(time.perf_counter() - start)
    base_median = statistics.median(times["no bottleneck"])
    base_mean = statistics.mean(times["no bottleneck"])
    print(f"batch {args.batch_size} x {args.frames} frames, {args.threads} thread(s), {args.steps} steps")
    for name, values in times.items():
        median, mean = statistics.median(values), statistics.mean(values)
        print(f"{name:>20}: median {1000 * median:7.1f} ms/step ({median / base_median:.3f}x no bottleneck), "
              f"mean {1000 * mean:7.1f} ms ({mean / base_mean:.3f}x)")


if __name__ == "__main__":
    main()
