"""Padding and training-step time of length-bucketed batches (``train.bucket_batches``) against plain shuffled ones.

On a prepared speech split (feats.scp + phones.txt, e.g. the built corpus's ``exp/wsj_mini/feats/train``): the
padded frames over the real ones for several ``bucket_batches`` (three epochs of the trainer's own batch order),
then the forward + CTC + backward + Adam time of the recipe's model on the first ``--steps`` batches of each
order, the orders alternating batch by batch so that other load affects both alike.

Usage: PYTHONPATH=. python bench/batch_bucketing.py exp/wsj_mini/feats/train [--config recipes/wsj/conf/base.yaml]
       [--steps 60] [--threads 1] [--buckets 0 5 10 25 50]
"""
import argparse
import statistics
import time
from pathlib import Path

import torch

from seqvq import param_groups
from seqvq.data.speech_corpus import load_cmvn, load_split
from seqvq.data.speech_dataset import SpeechDataset, collate_speech
from seqvq.data.units import UnitInventory
from seqvq.tasks.speech import SpeechCTCTask
from seqvq.train.config import load_config
from seqvq.train.data import EpochBatchSampler


def orders(dataset: SpeechDataset, batch_size: int, bucket_batches: int, epochs: int) -> list[list[int]]:
    return [[index for index, _ in batch] for epoch in range(epochs)
            for batch in EpochBatchSampler(len(dataset), batch_size, 0, epoch, lengths=dataset.lengths,
                                           bucket_batches=bucket_batches)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split", type=Path)
    parser.add_argument("--config", default="recipes/wsj/conf/base.yaml")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--buckets", type=int, nargs="+", default=[0, 5, 10, 25, 50])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    batch_size = config["train"]["batch_size"]
    features, targets = load_split(args.split)
    dataset = SpeechDataset(features, targets, load_cmvn(args.split / "cmvn.ark"), deltas=True, cache=True)
    real = 3 * sum(dataset.lengths)
    print(f"{args.split}: {len(dataset)} utterances, batches of {batch_size}")
    print("| bucket_batches | padded / real frames |\n|---|---|")
    for buckets in args.buckets:
        padded = sum(max(dataset.lengths[i] for i in batch) * len(batch)
                     for batch in orders(dataset, batch_size, buckets, 3))
        print(f"| {buckets} | {padded / real:.3f} |")
    if args.steps < 1:
        return
    compared = (0, config["train"].get("bucket_batches") or 10)
    torch.manual_seed(0)
    task = SpeechCTCTask(config)
    task.feature_dim, task.deltas, task.inventory = dataset[0][1].shape[1] // 3, True, UnitInventory.phones()
    model = task.build_model().train()
    optimizer = torch.optim.Adam(param_groups(model, 1e-3, 1e-2))
    batches = {buckets: orders(dataset, batch_size, buckets, 1)[:args.steps] for buckets in compared}
    times = {buckets: [] for buckets in compared}
    for step in range(args.steps):
        for buckets in compared:
            batch = collate_speech([dataset[i] for i in batches[buckets][step]])
            start = time.perf_counter()
            out = model(batch)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            times[buckets].append(time.perf_counter() - start)
    print(f"\n{args.steps} steps of the {'VQ' if config['model'].get('quantizer') else 'no-bottleneck'} model "
          f"({args.config}), {args.threads} thread(s):\n| bucket_batches | median step (s) | mean step (s) |\n"
          f"|---|---|---|")
    for buckets in compared:
        print(f"| {buckets} | {statistics.median(times[buckets]):.3f} | {statistics.mean(times[buckets]):.3f} |")
    print(f"mean-step ratio (bucketed / plain): {statistics.mean(times[compared[1]]) / statistics.mean(times[0]):.2f}")


if __name__ == "__main__":
    main()
