"""Trainer-owned data order: a seeded, rank-sharded batch order that can resume mid-epoch, and per-batch
random generators for collate functions that draw random crops.

Randomness contract: if the task's ``collate_fn`` accepts a keyword argument ``generator``, it is called as
``collate_fn(items, generator=g)`` with a ``torch.Generator`` seeded from (seed, epoch, batch index in epoch,
rank). Draw all data randomness (random chunks, jitter) from ``g``; then a resumed run sees the same batches as
an uninterrupted one, with any ``num_workers``.
"""
from __future__ import annotations

import inspect
import math

import numpy as np
import torch


def derived_seed(*keys: int) -> int:
    """A 63-bit seed mixed from non-negative integer keys, e.g. (seed, epoch, batch index, rank)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class EpochBatchSampler:
    """Batches of ``(dataset index, batch seed)`` for one epoch: a permutation seeded by (seed, epoch), padded
    by repetition to a multiple of ``world_size`` and sharded so that every rank gets the same number of
    batches. ``start_batch`` skips the batches an interrupted run already consumed.

    Length bucketing (``bucket_batches`` > 0, with the examples' ``lengths``): each rank cuts its shuffled shard
    into runs of ``bucket_batches`` batches, sorts each run by length, batches it, and shuffles the order of all
    the epoch's batches (seeded by (seed, epoch, rank)). A batch then holds examples of similar length, so padding
    costs little; its members are still drawn at random from the epoch. ASR toolkits batch by length likewise
    (ESPnet's length-sorted batches, the bucketing samplers icefall takes from Lhotse); the papers do not say
    how they batch.
    """

    def __init__(self, dataset_size: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                 world_size: int = 1, start_batch: int = 0, lengths=None, bucket_batches: int = 0):
        if dataset_size < 1:
            raise ValueError("the training dataset is empty: check the data directory in the config")
        if batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {batch_size}")
        if bucket_batches < 0:
            raise ValueError(f"train.bucket_batches must be >= 0 (0: no length bucketing), got {bucket_batches}")
        if bucket_batches and (lengths is None or len(lengths) != dataset_size):
            raise ValueError("length bucketing needs one length per training example")
        self.dataset_size, self.batch_size = dataset_size, batch_size
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.start_batch = start_batch
        self.lengths, self.bucket_batches = lengths, bucket_batches

    def __len__(self) -> int:
        return math.ceil(math.ceil(self.dataset_size / self.world_size) / self.batch_size)

    def __iter__(self):
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
        order = torch.randperm(self.dataset_size, generator=generator)
        padded_size = math.ceil(self.dataset_size / self.world_size) * self.world_size
        order = order.repeat(math.ceil(padded_size / self.dataset_size))[:padded_size]
        shard = order[self.rank :: self.world_size].tolist()
        if self.bucket_batches:
            batches = self._bucketed(shard)
        else:
            batches = [shard[start : start + self.batch_size] for start in range(0, len(shard), self.batch_size)]
        for batch_index in range(self.start_batch, len(self)):
            seed = derived_seed(self.seed, self.epoch, batch_index, self.rank)
            yield [(index, seed) for index in batches[batch_index]]

    def _bucketed(self, shard: list[int]) -> list[list[int]]:
        run = self.bucket_batches * self.batch_size
        batches = []
        for start in range(0, len(shard), run):
            by_length = sorted(shard[start : start + run], key=lambda index: self.lengths[index])
            batches += [by_length[i : i + self.batch_size] for i in range(0, len(by_length), self.batch_size)]
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch, self.rank, 1))
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


class SeededItems:
    """Dataset view indexed by ``(index, batch seed)`` pairs; returns ``(item, batch seed)``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, key):
        index, seed = key
        return self.dataset[index], seed

    def __len__(self) -> int:
        return len(self.dataset)


class SeededCollate:
    """Wraps a task's collate function, passing it the batch's generator when it takes ``generator``."""

    def __init__(self, collate_fn):
        self.collate_fn = collate_fn
        self.wants_generator = "generator" in inspect.signature(collate_fn).parameters

    def __call__(self, keyed_items):
        items = [item for item, _ in keyed_items]
        if not self.wants_generator:
            return self.collate_fn(items)
        return self.collate_fn(items, generator=torch.Generator().manual_seed(keyed_items[0][1]))
