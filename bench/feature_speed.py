"""Feature extraction speed: fbank (80 mel + energy) + Δ + ΔΔ, frames per second on one thread.

Usage: PYTHONPATH=. python bench/feature_speed.py [--seconds 600] [--threads 1]
"""
import argparse
import time

import torch

from seqvq.data.features import Fbank, add_deltas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="total audio to process")
    parser.add_argument("--utterance-seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    wave = torch.randn(int(16000 * args.utterance_seconds), generator=generator) * 3000
    fbank = Fbank()
    add_deltas(fbank(wave))  # warm-up
    count = int(args.seconds / args.utterance_seconds)
    frames = 0
    start = time.perf_counter()
    for _ in range(count):
        frames += add_deltas(fbank(wave)).shape[0]
    elapsed = time.perf_counter() - start
    print(f"{frames} frames ({args.seconds:.0f} s of audio) in {elapsed:.2f} s: {frames / elapsed:,.0f} frames/s "
          f"on {args.threads} thread(s), {args.seconds / elapsed:,.0f}x real time")


if __name__ == "__main__":
    main()
