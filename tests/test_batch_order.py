"""The trainer's data order (seqvq.train.data.EpochBatchSampler): plain shuffled batches and length-bucketed ones."""
import pytest
import torch

from seqvq.train.data import EpochBatchSampler, derived_seed

LENGTHS = (10 + torch.randperm(490, generator=torch.Generator().manual_seed(0))[:203]).tolist()  # distinct lengths


def batches(**options):
    defaults = dict(dataset_size=len(LENGTHS), batch_size=8, seed=0, epoch=3, lengths=LENGTHS, bucket_batches=5)
    return [[index for index, _ in batch] for batch in EpochBatchSampler(**{**defaults, **options})]


def padded_frames(order):
    return sum(max(LENGTHS[i] for i in batch) * len(batch) for batch in order)


def test_plain_batches_are_consecutive_slices_of_the_epoch_permutation():
    order = torch.randperm(len(LENGTHS), generator=torch.Generator().manual_seed(derived_seed(0, 3))).tolist()
    assert batches(bucket_batches=0) == [order[i:i + 8] for i in range(0, len(order), 8)]


@pytest.mark.parametrize("bucket_batches", [1, 5, 1000])
def test_bucketed_epoch_visits_every_example_once(bucket_batches):
    order = batches(bucket_batches=bucket_batches)
    assert sorted(i for batch in order for i in batch) == list(range(len(LENGTHS)))
    assert len(order) == len(EpochBatchSampler(len(LENGTHS), 8, 0, 3)) == 26
    assert sorted(len(batch) for batch in order)[0] == 203 % 8  # one short batch, as without bucketing


def test_bucketing_cuts_padding_and_keeps_batches_random():
    plain, bucketed = padded_frames(batches(bucket_batches=0)), padded_frames(batches(bucket_batches=5))
    assert bucketed < 0.85 * plain
    real = sum(LENGTHS)
    assert padded_frames(batches(bucket_batches=1000)) < 1.05 * real  # one sorted run: little padding
    for batch in batches(bucket_batches=5):  # each batch is a contiguous slice of a length-sorted run
        assert [LENGTHS[i] for i in batch] == sorted(LENGTHS[i] for i in batch)
    assert batches(epoch=4) != batches(epoch=3) and batches(seed=1) != batches()
    assert batches() == batches()
    # one sorted run of 1000 batches would put the shortest examples in one batch every epoch; runs of 5 do not
    shortest = sorted(range(len(LENGTHS)), key=LENGTHS.__getitem__)[:8]
    assert sorted(shortest) in [sorted(b) for b in batches(bucket_batches=1000)]
    assert sorted(shortest) not in [sorted(b) for b in batches(bucket_batches=5)]


def test_bucketed_order_resumes_mid_epoch_and_shards_evenly():
    full = batches()
    assert batches(start_batch=7) == full[7:]
    ranks = [batches(rank=rank, world_size=2) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])
    seen = [i for rank in ranks for batch in rank for i in batch]
    assert set(seen) == set(range(len(LENGTHS))) and len(seen) == 204  # padded by one repeat to split evenly


def test_bucketing_needs_a_length_per_example():
    with pytest.raises(ValueError, match="one length per training example"):
        batches(lengths=None)
    with pytest.raises(ValueError, match="one length per training example"):
        batches(lengths=LENGTHS[:-1])
    with pytest.raises(ValueError, match="bucket_batches must be >= 0"):
        batches(bucket_batches=-1)
