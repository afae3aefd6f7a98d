"""seqvq.units.KMeansTokenizer: k-means units fitted from a stream of padded batches.

* the streaming fit (reservoir pass, k-means++, full Lloyd passes) equals seqvq's in-memory ``kmeans`` on the same
  frames with the same seed, empty clusters included;
* padding (zeros, NaN, inf) never matters, in the fit or in ``encode``;
* two gloo ranks with different shards (and different numbers of batches) end with the same centroids, those of
  one process fed the rank-ordered union;
* a fit interrupted anywhere (seeding pass, mid-pass, pass end) and resumed from its checkpoint is bit-identical to
  an uninterrupted one, also under DDP;
* scikit-learn joblib models and FAISS centroids round-trip both ways with the same codes;
* dedup / run lengths.

Test data sit on a grid of 1/64 (``grid``): every float sum over them is exact in any order, so summation order
(per batch, per rank, float64 against kmeans' float32) cannot make results differ, and equality is ``torch.equal``.
"""
from __future__ import annotations

import math
import os

import joblib
import numpy as np
import pytest
import torch
import torch.distributed as dist

from distributed_helpers import init_rank, run_ranks
from seqvq.errors import UserError
from seqvq.integrations.speechbrain import KMeansUnits
from seqvq.quantize.kmeans import kmeans
from seqvq.units import KMeansTokenizer, dedup, expand_runs, read_faiss, read_sklearn, write_faiss, write_sklearn

DIM = 6


def grid(values: torch.Tensor) -> torch.Tensor:
    return torch.round(values * 64) / 64


def clustered(frames: int, seed: int, clusters: int = 12) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, DIM, generator=torch.Generator().manual_seed(1234)) * 4
    labels = torch.randint(clusters, (frames,), generator=generator)
    return grid(centres[labels] + 0.7 * torch.randn(frames, DIM, generator=generator))


def batches_of(frames: torch.Tensor, seed: int, pad_value: float = float("nan"), batch: int = 3):
    """The frames cut into utterances of random lengths, in order, batched and padded with ``pad_value``: a list
    of (features (B, T, D), lengths (B,))."""
    generator = torch.Generator().manual_seed(seed)
    utterances, start = [], 0
    while start < frames.shape[0]:
        length = int(torch.randint(1, 40, (1,), generator=generator))
        utterances.append(frames[start:start + length])
        start += length
    out = []
    for first in range(0, len(utterances), batch):
        group = utterances[first:first + batch]
        longest = max(u.shape[0] for u in group)
        features = torch.full((len(group), longest, DIM), pad_value)
        for row, utterance in enumerate(group):
            features[row, : utterance.shape[0]] = utterance
        out.append((features, torch.tensor([u.shape[0] for u in group])))
    return out


def union(per_rank: list[list]) -> list:
    """What one process sees of the ranks' lockstep batches: step i is rank 0's i-th batch stacked on rank 1's."""
    steps = max(len(b) for b in per_rank)
    out = []
    for step in range(steps):
        present = [b[step] for b in per_rank if step < len(b)]
        longest = max(f.shape[1] for f, _ in present)
        features = torch.cat([torch.nn.functional.pad(f, (0, 0, 0, longest - f.shape[1]), value=float("inf"))
                              for f, _ in present])
        out.append((features, torch.cat([lengths for _, lengths in present])))
    return out


def state(tokenizer: KMeansTokenizer) -> dict:
    return {name: value.clone() for name, value in tokenizer.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    """Every tensor bit-identical (NaN where the other has NaN: the inertia of passes a converged fit skipped)."""
    assert a.keys() == b.keys()
    for name in a:
        same_nan = not a[name].is_floating_point() or torch.equal(a[name].isnan(), b[name].isnan())
        assert same_nan and torch.equal(a[name].nan_to_num(), b[name].nan_to_num()), name


class Interrupting:
    """The batches of ``stream``, pass after pass; the ``after``-th draw over all passes (a draw past the end of a
    pass counts, as the lockstep step of a finished rank does) raises KeyboardInterrupt, as Ctrl-C would."""

    def __init__(self, stream: list, after: int):
        self.stream, self.after, self.draws = stream, after, 0

    def __iter__(self):
        return _Counted(self)


class _Counted:
    def __init__(self, owner: Interrupting):
        self.owner, self.batches = owner, iter(owner.stream)

    def __next__(self):
        self.owner.draws += 1
        if self.owner.draws == self.owner.after:
            raise KeyboardInterrupt
        return next(self.batches)


# --------------------------------------------------------------------------------------------- streaming fit
@pytest.mark.parametrize("sample_iterations", [0, 3])
@pytest.mark.parametrize("data", ["clustered", "three distinct frames"])
def test_streaming_fit_equals_in_memory_kmeans(data, sample_iterations):
    if data == "clustered":
        frames, units = clustered(1500, seed=0), 16
    else:  # k-means++ must reuse frames, and Lloyd empties clusters every pass: the empty-cluster rule is used
        which = torch.randint(3, (200,), generator=torch.Generator().manual_seed(5))
        frames, units = grid(torch.randn(3, DIM, generator=torch.Generator().manual_seed(6)))[which], 5
    stream = batches_of(frames, seed=1)
    tokenizer = KMeansTokenizer(units, DIM, passes=8, reservoir_size=frames.shape[0],
                                sample_iterations=sample_iterations, seed=3).fit(stream)
    # k-means++ (greedy: 2 + ln K trials) draws from seed + 1; Lloyd's iterations on the sample, then the passes
    expected = kmeans(frames, units, sample_iterations + 8, torch.Generator().manual_seed(4),
                      trials=2 + int(math.log(units)))
    assert torch.equal(tokenizer.centroids, expected)
    ran = tokenizer.inertia[~tokenizer.inertia.isnan()]
    assert ran.numel() >= 1 and bool((ran[1:] <= ran[:-1] * (1 + 1e-6)).all())  # Lloyd never increases it


def test_padding_values_never_matter():
    frames = clustered(900, seed=2)
    fits = {}
    for pad in (0.0, float("nan"), float("inf"), -1e30):
        for update in ("full", "mini_batch"):
            fits[pad, update] = state(KMeansTokenizer(10, DIM, passes=3, update=update, reservoir_size=500,
                                                      seed=0).fit(batches_of(frames, seed=3, pad_value=pad)))
    for (pad, update), fitted in fits.items():
        assert_same_state(fitted, fits[0.0, update])
    tokenizer = KMeansTokenizer(10, DIM, passes=3, reservoir_size=500).fit(batches_of(frames, seed=3))
    features, lengths = batches_of(frames, seed=4, pad_value=float("nan"))[0]
    codes = tokenizer.encode(features, lengths)
    for row, length in enumerate(lengths.tolist()):
        assert (codes[row, length:] == -1).all() and (codes[row, :length] >= 0).all()
        alone = tokenizer.encode(features[row:row + 1, :length])
        assert torch.equal(codes[row, :length], alone[0])
    assert torch.equal(tokenizer.encode(features.nan_to_num(posinf=7.0), lengths), codes)


def test_a_dataloader_is_a_stream():
    stream = batches_of(clustered(600, seed=4), seed=5)
    loader = torch.utils.data.DataLoader(stream, batch_size=None)
    assert_same_state(state(KMeansTokenizer(6, DIM, passes=2, reservoir_size=200).fit(loader)),
                      state(KMeansTokenizer(6, DIM, passes=2, reservoir_size=200).fit(stream)))


def test_mini_batch_fit_reaches_the_full_fits_inertia():
    frames = clustered(3000, seed=6)
    stream = batches_of(frames, seed=7, batch=4)
    full = KMeansTokenizer(12, DIM, passes=6, reservoir_size=2000).fit(stream)
    mini = KMeansTokenizer(12, DIM, passes=3, update="mini_batch", reservoir_size=2000).fit(stream)

    def inertia(tokenizer):
        codes = tokenizer.encode(frames[None])[0]
        return float((frames - tokenizer.centroids[codes]).pow(2).sum(dim=1).mean())

    assert inertia(mini) < 1.05 * inertia(full)
    assert not torch.equal(mini.centroids, full.centroids)


def test_logged_inertia_per_pass():
    lines = []
    KMeansTokenizer(4, DIM, passes=2, reservoir_size=100).fit(batches_of(clustered(200, seed=1), seed=2),
                                                               log=lines.append)
    assert lines[0].startswith("seeding") and lines[1].startswith("pass 1/2: inertia")


# -------------------------------------------------------------------------------------------------- resume
def test_partial_fit_seeds_from_its_first_batch_then_moves_the_centroids_batch_by_batch():
    stream = batches_of(clustered(600, seed=7), seed=8)
    first = stream[0]
    # scikit-learn's partial_fit: the first batch seeds (here: the seeding pass on that batch alone), then every
    # batch, the first included, moves the centroids by Sculley's update
    online = KMeansTokenizer(4, DIM, update="mini_batch", reservoir_size=64, seed=3)
    online.partial_fit(*first)
    one_pass = KMeansTokenizer(4, DIM, passes=1, update="mini_batch", reservoir_size=64, seed=3).fit([first])
    assert torch.equal(online.centroids, one_pass.centroids)
    for features, lengths in stream[1:3]:
        before, counts = online.centroids.double(), online.frames_assigned.clone()
        online.partial_fit(features, lengths)
        frames = torch.cat([f[:n] for f, n in zip(features, lengths)])
        codes = torch.cdist(frames.double(), before).argmin(dim=1)
        hit = torch.bincount(codes, minlength=4)
        sums = torch.zeros(4, DIM, dtype=torch.float64).index_add_(0, codes, frames.double())
        expected = torch.where((hit > 0).unsqueeze(1),
                               (before * counts.unsqueeze(1) + sums) / (counts + hit).clamp(min=1).unsqueeze(1), before)
        assert torch.allclose(online.centroids.double(), expected, atol=1e-6)


def test_partial_fit_ignores_padding_and_refuses_the_full_update():
    features, lengths = batches_of(clustered(300, seed=9), seed=10)[0]
    fits = []
    for pad_value in (float("nan"), 0.0):
        padded = features.clone()
        padded[torch.arange(padded.shape[1]) >= lengths.unsqueeze(1)] = pad_value
        fits.append(KMeansTokenizer(3, DIM, update="mini_batch", reservoir_size=32).partial_fit(padded, lengths))
    assert torch.equal(fits[0].centroids, fits[1].centroids) and not fits[0].centroids.isnan().any()
    with pytest.raises(ValueError, match="partial_fit.*update='mini_batch'.*update='full'"):
        KMeansTokenizer(3, DIM).partial_fit(features, lengths)
    with pytest.raises(ValueError, match="partial_fit needs passes >= 1"):
        KMeansTokenizer(3, DIM, passes=0, update="mini_batch").partial_fit(features, lengths)


@pytest.mark.parametrize("update", ["full", "mini_batch"])
@pytest.mark.parametrize("where", ["seeding pass", "mid-pass 1", "end of pass 1", "start of pass 2"])
def test_resume_after_interruption_is_bit_identical(tmp_path, update, where):
    stream = batches_of(clustered(1200, seed=8), seed=9)
    draws = len(stream) + 1  # per pass: the last draw finds the end
    after = {"seeding pass": draws // 2, "mid-pass 1": draws + draws // 2, "end of pass 1": 2 * draws,
             "start of pass 2": 2 * draws + 1}[where]
    options = dict(passes=3, update=update, reservoir_size=300, sample_iterations=2, seed=2)
    whole = KMeansTokenizer(10, DIM, **options).fit(stream, checkpoint=tmp_path / "whole.pt", checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        KMeansTokenizer(10, DIM, **options).fit(Interrupting(stream, after), checkpoint=tmp_path / "cut.pt",
                                                checkpoint_every=2)
    resumed = KMeansTokenizer.load(tmp_path / "cut.pt").fit(stream, checkpoint=tmp_path / "cut.pt",
                                                              checkpoint_every=2)
    assert_same_state(state(resumed), state(whole))
    assert_same_state(torch.load(tmp_path / "cut.pt", weights_only=True), state(whole))


def test_a_fresh_fit_does_not_overwrite_an_existing_checkpoint(tmp_path):
    checkpoint = tmp_path / "units.pt"
    checkpoint.write_bytes(b"someone's file")
    with pytest.raises(UserError, match="units.pt: exists"):
        KMeansTokenizer(4, DIM, reservoir_size=10).fit(batches_of(clustered(50, seed=1), seed=1),
                                                       checkpoint=checkpoint)
    assert checkpoint.read_bytes() == b"someone's file"


# --------------------------------------------------------------------------------------------------- DDP
def rank_stream(rank: int) -> list:
    """Different shards: rank 1's frames are shifted and it has more batches than rank 0."""
    frames = clustered(300 + 200 * rank, seed=20 + rank) + 3.0 * rank
    return batches_of(frames, seed=30 + rank)


DDP_OPTIONS = dict(passes=3, reservoir_size=150, seed=1)


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    init_rank(rank, init_file, timeout_s=30.0)
    stream = rank_stream(rank)
    results = {}
    for update in ("full", "mini_batch"):
        checkpoint = os.path.join(out_dir, f"{update}-whole.pt")
        results[update] = state(KMeansTokenizer(8, DIM, update=update, **DDP_OPTIONS).fit(
            stream, checkpoint=checkpoint, checkpoint_every=3))
        cut = os.path.join(out_dir, f"{update}-cut.pt")
        try:  # both ranks stop at the same lockstep step (rank 0's stream ended already: it draws past its end)
            KMeansTokenizer(8, DIM, update=update, **DDP_OPTIONS).fit(Interrupting(stream, 15), checkpoint=cut,
                                                                       checkpoint_every=3)
        except KeyboardInterrupt:
            pass
        dist.barrier()
        results[update + " resumed"] = state(KMeansTokenizer.load(cut).fit(stream, checkpoint=cut, checkpoint_every=3))
    # the SpeechBrain drop-in fits the same union from (x, relative lengths) batches
    relative = [(x, lengths / x.shape[1]) for x, lengths in stream]
    units = KMeansUnits(8, random_state=DDP_OPTIONS["seed"], max_iter=DDP_OPTIONS["passes"], update="full",
                        reservoir_size=DDP_OPTIONS["reservoir_size"]).fit_stream(relative)
    results["KMeansUnits full"] = state(units.tokenizer)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_gloo_ranks_fit_the_rank_ordered_union(tmp_path):
    assert len(rank_stream(0)) < len(rank_stream(1))
    run_ranks(_ddp_worker, (str(tmp_path / "init"), str(tmp_path)), timeout_s=300)
    rank0, rank1 = (torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2))
    together = union([rank_stream(0), rank_stream(1)])
    for update in ("full", "mini_batch"):
        one_process = state(KMeansTokenizer(8, DIM, update=update, **DDP_OPTIONS).fit(together))
        for result in (rank0[update], rank1[update], rank0[update + " resumed"], rank1[update + " resumed"]):
            assert_same_state(result, one_process)
        if update == "full":
            for result in (rank0["KMeansUnits full"], rank1["KMeansUnits full"]):
                assert_same_state(result, one_process)


# --------------------------------------------------------------------------------------------- encode & I/O
def fitted(units: int = 12) -> tuple[KMeansTokenizer, torch.Tensor]:
    frames = clustered(1000, seed=11)
    return KMeansTokenizer(units, DIM, passes=4, reservoir_size=1000).fit(batches_of(frames, seed=12)), frames


def test_encode_is_the_exact_nearest_centroid():
    tokenizer, _ = fitted()
    frames = torch.randn(500, DIM) * 5
    codes = tokenizer.encode(frames.view(5, 100, DIM)).view(-1)
    distances = torch.cdist(frames.double(), tokenizer.centroids.double())
    assert torch.equal(codes, distances.argmin(dim=1))


def test_save_and_load_a_plain_state_dict_file(tmp_path):
    tokenizer, frames = fitted()
    tokenizer.save(tmp_path / "units.pt")
    saved = torch.load(tmp_path / "units.pt", weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in saved.values())
    assert saved["reservoir.samples"].numel() == 0 and saved["sums"].numel() == 0  # a finished fit keeps no sample
    loaded = KMeansTokenizer.load(tmp_path / "units.pt")
    assert torch.equal(loaded.centroids, tokenizer.centroids) and torch.equal(loaded.inertia, tokenizer.inertia)
    assert torch.equal(loaded.encode(frames[None]), tokenizer.encode(frames[None]))
    with pytest.raises(UserError, match="units.pt: exists"):
        tokenizer.save(tmp_path / "units.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt: not a KMeansTokenizer file"):
        KMeansTokenizer.load(tmp_path / "junk.pt")


@pytest.mark.parametrize("estimator", ["KMeans", "MiniBatchKMeans"])
def test_sklearn_joblib_models_round_trip_with_the_same_codes(tmp_path, estimator):
    from sklearn.cluster import KMeans, MiniBatchKMeans

    tokenizer, frames = fitted()
    queries = frames.numpy()
    write_sklearn(tokenizer, tmp_path / "ours.joblib", estimator=estimator)
    theirs = joblib.load(tmp_path / "ours.joblib")
    assert type(theirs).__name__ == estimator
    assert np.array_equal(theirs.cluster_centers_, tokenizer.centroids.numpy())
    assert np.array_equal(theirs.predict(queries), tokenizer.encode(frames[None])[0].numpy())

    cls = {"KMeans": KMeans, "MiniBatchKMeans": MiniBatchKMeans}[estimator]
    model = cls(n_clusters=9, n_init=1, random_state=0).fit(queries)
    joblib.dump(model, tmp_path / "theirs.joblib")
    read = read_sklearn(tmp_path / "theirs.joblib")
    assert np.array_equal(read.centroids.numpy(), model.cluster_centers_)
    assert np.array_equal(read.encode(frames[None])[0].numpy(), model.predict(queries))
    assert torch.equal(read_sklearn(model).centroids, read.centroids)


def test_sklearn_reader_refuses_what_is_not_a_kmeans_model(tmp_path):
    joblib.dump({"a": 1}, tmp_path / "other.joblib")
    with pytest.raises(UserError, match="other.joblib: no cluster_centers_"):
        read_sklearn(tmp_path / "other.joblib")


def test_faiss_centroids_round_trip_with_the_same_codes(tmp_path):
    faiss = pytest.importorskip("faiss")
    tokenizer, frames = fitted()
    codes = tokenizer.encode(frames[None])[0]
    write_faiss(tokenizer, tmp_path / "units.index")
    index = faiss.read_index(str(tmp_path / "units.index"))
    assert index.ntotal == 12 and index.metric_type == faiss.METRIC_L2
    assert np.array_equal(index.search(frames.numpy(), 1)[1][:, 0], codes.numpy())
    write_faiss(tokenizer, tmp_path / "units.npy")
    assert np.array_equal(np.load(tmp_path / "units.npy"), tokenizer.centroids.numpy())
    for source in (tmp_path / "units.index", tmp_path / "units.npy", index):
        assert torch.equal(read_faiss(source).centroids, tokenizer.centroids)
    trained = faiss.Kmeans(DIM, 7, niter=5, seed=1)
    trained.train(frames.numpy())
    from_kmeans = read_faiss(trained)
    faiss_codes = trained.index.search(frames.numpy(), 1)[1][:, 0]
    assert np.array_equal(from_kmeans.encode(frames[None])[0].numpy(), faiss_codes)
    inner_product = faiss.IndexFlatIP(DIM)
    with pytest.raises(UserError, match="not an L2"):
        read_faiss(inner_product)


# ------------------------------------------------------------------------------------------------ helpers
def test_dedup_and_run_lengths():
    codes = torch.tensor([3, 3, 5, 5, 5, 3, 7, -1, -1])
    units, durations = dedup(codes)
    assert units.tolist() == [3, 5, 3, 7] and durations.tolist() == [2, 3, 1, 1]
    assert torch.equal(expand_runs(units, durations), codes[:7])
    empty_units, empty_durations = dedup(torch.full((4,), -1))
    assert empty_units.numel() == 0 and empty_durations.numel() == 0


# --------------------------------------------------------------------------------------------- user errors
def test_user_errors_are_one_line():
    frames = clustered(50, seed=1)
    with pytest.raises(UserError, match="one-shot iterator"):
        KMeansTokenizer(4, DIM, reservoir_size=10).fit(iter(batches_of(frames, seed=1)))
    with pytest.raises(UserError, match="no valid frame"):
        KMeansTokenizer(4, DIM, reservoir_size=10).fit([(torch.zeros(2, 5, DIM), torch.zeros(2, dtype=torch.long))])
    with pytest.raises(UserError, match=f"features of dimension {DIM}"):
        KMeansTokenizer(4, DIM, reservoir_size=10).fit([(torch.zeros(2, 5, DIM + 1), None)])
    with pytest.raises(UserError, match="lengths"):
        KMeansTokenizer(4, DIM, reservoir_size=10).fit([(torch.zeros(2, 5, DIM), torch.tensor([6, 1]))])
    with pytest.raises(UserError, match="before fit"):
        KMeansTokenizer(4, DIM, reservoir_size=10).encode(torch.zeros(1, 3, DIM))
    with pytest.raises(ValueError, match="update must be"):
        KMeansTokenizer(4, DIM, update="online")
    with pytest.raises(ValueError, match="seeding_trials >= 1"):
        KMeansTokenizer(4, DIM, seeding_trials=0)
    with pytest.raises(ValueError, match="reservoir_size .* num_units"):
        KMeansTokenizer(40, DIM, reservoir_size=10)
