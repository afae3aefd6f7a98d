"""k-means units of feature frames, fitted from a stream of padded batches that never has to fit in memory.

The fit reads the stream once per pass and holds one batch of it at a time:

0. seeding pass: every valid frame is offered to a uniform reservoir sample (Algorithm R, Vitter 1985;
   seqvq.quantize.reservoir); seqvq's in-memory ``kmeans`` on the sample — greedy k-means++ (Arthur &
   Vassilvitskii 2007; the best of ``seeding_trials`` D^2 draws per centroid, by default scikit-learn's
   ``2 + ln K``; batched in rounds by ``growth``) and ``sample_iterations`` Lloyd iterations — gives the first
   centroids.
   (FAISS trains on such a subsample only; here the passes over every frame follow, and a few Lloyd iterations on
   the sample spare many of those where the corpus is much larger than the sample.)
1. ``passes`` Lloyd passes (Lloyd 1982).  ``update="full"``: every frame goes to its nearest centroid (the exact
   chunked search of seqvq.quantize.distance), per-centroid sums (float32 within a batch, as ``lloyd`` sums,
   float64 across batches) and counts accumulate over the whole pass, and each centroid becomes the mean of its
   frames: one step of seqvq's in-memory ``lloyd`` per pass, so the fit is ``kmeans`` on the same frames with
   ``sample_iterations + passes`` iterations and the same seed (``seed + 1`` for k-means++, as the quantizer's
   re-estimation) whenever the reservoir holds every frame, up to the order of float summation.  A pass that moves
   no centroid is a fixed point and ends the fit.  ``update="mini_batch"``: after every batch each centroid moves
   to the running mean of all frames assigned to it so far (Sculley 2010, Algorithm 1: learning rate 1 / count,
   counts kept over the whole fit).
2. Empty clusters: a centroid that no frame chose during a pass moves to the reservoir frame farthest from its
   nearest centroid (among the centroids the pass assigned to), farthest first — ``lloyd``'s rule with the
   reservoir for the data; in mini-batch mode its count restarts from zero.

Memory is bounded whatever the corpus: the reservoir (``reservoir_size`` x D float32, by default 64 frames per
unit: 128,000 x 768 x 4 B = 0.4 GB for 2,000 units), the sums (K x D float64),
one batch and the search's fixed-size block.  A finished fit drops the reservoir and the sums, so ``state_dict()``
and ``save`` hold the centroids and the inertia per pass only.

Inertia: the mean squared distance of a frame to its nearest centroid, in ``inertia`` per pass (of the centroids
the pass started from: its assignment step's distances).

Under torch.distributed (torchrun) every rank streams its own shard: the reservoir gathers every rank's frames
(one sample, the same on every rank), sums, counts and inertia are summed over ranks, rank 0's centroids are
broadcast after each update, and every rank ends with the same centroids: those one process fits on the
rank-ordered union of the ranks' batches (step i: rank 0's batch i, then rank 1's, ...), up to the order of float
summation.  Ranks may hold different numbers of batches (see ``lockstep``).

Resume: all state is in buffers: the pass (``stage``, 0 for the seeding pass), the batches of it consumed
(``position``), its partial sums, the reservoir and the generators.  ``fit(stream, checkpoint=path)`` writes the
state_dict after every pass (and every ``checkpoint_every`` batches); ``KMeansTokenizer.load(path).fit(stream,
checkpoint=path)`` goes on where it stopped, bit-identically, drawing and dropping the batches of the pass it had
consumed (so the stream must yield the same batches in the same order on every pass).  Under DDP a mid-pass
checkpoint first sums the ranks' partial totals into rank 0's (the others restart theirs from zero), so the one file
rank 0 writes holds the whole fit.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from seqvq.errors import UserError
from seqvq.quantize.distance import nearest_codes
from seqvq.quantize.distributed import all_reduce_sum, broadcast, is_distributed, rank
from seqvq.quantize.kmeans import DEFAULT_SEEDING_GROWTH, kmeans
from seqvq.quantize.reservoir import Reservoir
from seqvq.quantize.rng import BufferedGenerator

from .stream import lockstep, valid_frames

UPDATES = ("full", "mini_batch")
# Default reservoir: frames per unit (FAISS trains on at most 256 per centroid; this sample only seeds).
SAMPLE_PER_UNIT = 64
# Reservoir rows per distance block when an empty cluster is re-seeded (bounded memory for any reservoir size).
RESEED_BLOCK = 8192


class KMeansTokenizer(nn.Module):
    """``num_units`` k-means centroids of ``dim``-dimensional frames: ``fit(stream)``, then ``encode``.

    ``passes``: Lloyd passes over the stream after the seeding pass; ``update``: ``"full"`` (one Lloyd step a pass)
    or ``"mini_batch"`` (Sculley's update after every batch); ``reservoir_size``: frames sampled for seeding (default
    64 per unit); ``sample_iterations``: Lloyd iterations on that sample before the passes; ``seeding_trials``:
    greedy k-means++ draws per centroid (default ``2 + ln K``; 1 = plain k-means++); ``seed``: the reservoir's
    generator (k-means++ draws from ``seed + 1``); ``growth``: k-means++ rounds (see ``kmeans_plus_plus``).
    """

    def __init__(self, num_units: int, dim: int, *, passes: int = 10, update: str = "full",
                 reservoir_size: int | None = None, sample_iterations: int = 0, seeding_trials: int | None = None,
                 seed: int = 0, growth: float = DEFAULT_SEEDING_GROWTH):
        super().__init__()
        if update not in UPDATES:
            raise ValueError(f"KMeansTokenizer: update must be one of {UPDATES}, got {update!r}")
        trials = 2 + int(math.log(num_units)) if seeding_trials is None and num_units >= 1 else seeding_trials
        if num_units < 1 or dim < 1 or passes < 0 or sample_iterations < 0 or trials < 1:
            raise ValueError(f"KMeansTokenizer: needs num_units >= 1, dim >= 1, passes >= 0, sample_iterations >= 0 "
                             f"and seeding_trials >= 1; got {num_units}, {dim}, {passes}, {sample_iterations}, "
                             f"{seeding_trials}")
        if reservoir_size is None:
            reservoir_size = SAMPLE_PER_UNIT * num_units
        if reservoir_size < num_units:
            raise ValueError(f"KMeansTokenizer: reservoir_size ({reservoir_size}) must be at least num_units "
                             f"({num_units}): k-means++ seeds the centroids from the reservoir")
        self.register_buffer("centroids", torch.zeros(num_units, dim))
        self.register_buffer("inertia", torch.full((passes,), float("nan"), dtype=torch.float64))
        self.register_buffer("mini_batch", torch.tensor(update == "mini_batch"))
        self.register_buffer("growth", torch.tensor(float(growth), dtype=torch.float64))
        self.register_buffer("sample_iterations", torch.tensor(sample_iterations))
        self.register_buffer("seeding_trials", torch.tensor(trials))
        self.register_buffer("stage", torch.zeros((), dtype=torch.long))  # 0: seeding pass; p: Lloyd pass p
        self.register_buffer("position", torch.zeros((), dtype=torch.long))  # batches of this pass consumed
        self.register_buffer("converged", torch.tensor(False))
        # This pass's totals (this rank's, until shared): full-mode sums and counts per centroid, squared distances
        # and frames; frames_assigned: mini-batch mode's counts over the whole fit (Sculley's per-centre counts).
        self.register_buffer("sums", torch.zeros(num_units, dim, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(num_units, dtype=torch.long))
        self.register_buffer("frames_assigned", torch.zeros(num_units, dtype=torch.long))
        self.register_buffer("distance_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("frames", torch.zeros((), dtype=torch.long))
        self.reservoir = Reservoir(reservoir_size, dim, seed=seed)
        self.seeding_rng = BufferedGenerator(seed + 1)

    @property
    def num_units(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @property
    def passes(self) -> int:
        return self.inertia.numel()

    @property
    def finished(self) -> bool:
        return bool(self.converged) or int(self.stage) > self.passes

    # ------------------------------------------------------------------------------------------------- fit
    @torch.no_grad()
    def fit(self, stream: Iterable, *, checkpoint: str | Path | None = None, checkpoint_every: int = 0,
            log: Callable[[str], None] | None = None) -> KMeansTokenizer:
        """Fit (or go on fitting) on ``stream``: an iterable of ``(features (B, T, D), lengths (B,) or None)``
        batches, iterated once per pass (a DataLoader, a list; not a one-shot iterator).  ``checkpoint``: a file
        the state_dict is written to after every pass and every ``checkpoint_every`` batches (0: passes only).
        ``log``: called with one line per pass (its inertia)."""
        if isinstance(stream, Iterator):
            raise UserError("KMeansTokenizer.fit: the stream is a one-shot iterator (a generator?), but k-means "
                            "reads it once per pass; give something that can be iterated again, e.g. a DataLoader "
                            "or a list")
        if checkpoint is not None and os.path.exists(checkpoint) and not int(self.stage) and not int(self.position):
            raise UserError(f"{checkpoint}: exists; to resume that fit, KMeansTokenizer.load it and fit with the "
                            "same checkpoint, or choose another path")
        device = self.centroids.device
        while not self.finished:
            batches = iter(stream)
            for _ in range(int(self.position)):
                next(batches, None)
            for batch in lockstep(batches, device):
                if batch is None:  # this rank's stream has ended, another's goes on
                    frames = self.centroids.new_zeros(0, self.dim)
                else:
                    frames = valid_frames(batch[0], batch[1], self.dim)[0].to(device, self.centroids.dtype)
                self._step(frames)
                self.position += 1
                if checkpoint is not None and checkpoint_every and int(self.position) % checkpoint_every == 0:
                    self._share_totals()
                    self._write(checkpoint)
                    if rank() != 0:
                        self._restart_totals()
            self._end_pass(log)
            if checkpoint is not None:
                self._write(checkpoint)
        return self

    @torch.no_grad()
    def partial_fit(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> KMeansTokenizer:
        """One batch (features (B, T, D), lengths (B,) or None) of an online fit, scikit-learn's ``partial_fit``:
        the first call seeds from its own batch (the seeding pass on that batch alone), then every call moves the
        centroids by Sculley's update (``update="mini_batch"`` only).  Passes, their inertia and the re-seeding of
        empty clusters are ``fit``'s; under DDP every rank calls it once per step."""
        if not bool(self.mini_batch):
            raise ValueError("KMeansTokenizer.partial_fit moves the centroids after every batch, "
                             "update='mini_batch', but this tokenizer has update='full'")
        if not self.passes:
            raise ValueError("KMeansTokenizer.partial_fit needs passes >= 1 (with passes=0 a fit ends at its "
                             "seeding and keeps no running counts)")
        if int(self.position):
            raise UserError("KMeansTokenizer.partial_fit: a fit is under way (interrupted mid-pass); go on with fit "
                            "or start a new tokenizer")
        frames = valid_frames(features, lengths, self.dim)[0].to(self.centroids.device, self.centroids.dtype)
        if not int(self.stage):
            self._step(frames)
            self._end_pass(None)
        self._step(frames)
        return self

    def _step(self, frames: torch.Tensor) -> None:
        """Fold one batch's valid frames (this rank's) into the pass."""
        if not int(self.stage):
            self.reservoir.add(frames)
            return
        codes, distances = nearest_codes(frames, self.centroids)
        self.distance_sum += distances.double().sum()
        self.frames += frames.shape[0]
        counts = torch.bincount(codes, minlength=self.num_units)
        sums = torch.zeros_like(self.centroids).index_add_(0, codes, frames).double()
        if not bool(self.mini_batch):
            self.sums += sums
            self.counts += counts
            return
        sums, counts = all_reduce_sum(sums), all_reduce_sum(counts)
        self.counts += counts
        self.frames_assigned += counts
        hit = counts > 0
        before = self.centroids[hit].double()
        earlier = (self.frames_assigned[hit] - counts[hit]).unsqueeze(1)
        self.centroids[hit] = ((before * earlier + sums[hit]) / self.frames_assigned[hit].unsqueeze(1)).float()

    def _local_totals(self) -> list[torch.Tensor]:
        """The pass totals each rank accumulates on its own (mini-batch mode sums its counts every batch)."""
        local = [self.distance_sum, self.frames]
        return local if bool(self.mini_batch) else local + [self.sums, self.counts]

    def _share_totals(self) -> None:
        """Sum the pass totals over ranks, so that rank 0's hold all (every rank's at the end of a pass)."""
        for total in self._local_totals():
            all_reduce_sum(total)

    def _restart_totals(self) -> None:
        for total in self._local_totals():
            total.zero_()

    def _end_pass(self, log: Callable[[str], None] | None) -> None:
        stage = int(self.stage)
        if not stage:
            sample = self.reservoir.contents()
            if not sample.shape[0]:
                raise UserError("KMeansTokenizer.fit: the stream has no valid frame (are all lengths 0?)")
            with self.seeding_rng.generator() as generator:
                self.centroids.copy_(kmeans(sample, self.num_units, int(self.sample_iterations), generator,
                                            float(self.growth), int(self.seeding_trials)))
            broadcast(self.centroids)
            message = (f"seeding: k-means++ ({int(self.seeding_trials)} trials) and {int(self.sample_iterations)} "
                       f"Lloyd iterations on a uniform sample of {sample.shape[0]} of {int(self.reservoir.seen)} "
                       "frames")
        else:
            self._share_totals()
            frames = int(self.frames)
            if not frames:
                raise UserError(f"KMeansTokenizer.fit: pass {stage} saw no valid frame, the seeding pass "
                                f"{int(self.reservoir.seen)}: the stream must yield the same batches on every pass")
            assigned_to = self.centroids.clone()
            if not bool(self.mini_batch):
                occupied = self.counts > 0
                self.centroids[occupied] = (self.sums[occupied] / self.counts[occupied].unsqueeze(1)).float()
            self._reseed_empty(assigned_to)
            broadcast(self.centroids)
            self.inertia[stage - 1] = self.distance_sum / frames
            self.converged.fill_(not bool(self.mini_batch) and torch.equal(self.centroids, assigned_to))
            message = (f"pass {stage}/{self.passes}: inertia {float(self.inertia[stage - 1]):.6g} per frame over "
                       f"{frames} frames" + (" (converged: no centroid moved)" if bool(self.converged) else ""))
            self._restart_totals()
            self.counts.zero_()
        self.stage += 1
        self.position.zero_()
        if self.finished:
            self._release_fit_state()
        if log is not None:
            log(message)

    def _reseed_empty(self, assigned_to: torch.Tensor) -> None:
        """Move the centroids no frame chose this pass to the reservoir frames farthest from their nearest centroid
        of ``assigned_to``, farthest first."""
        empty = (self.counts == 0).nonzero().squeeze(1)
        sample = self.reservoir.contents()
        if not empty.numel():
            return
        nearest = nearest_codes(sample, assigned_to, with_distances=False)[0]
        distances = torch.cat([(sample[start:start + RESEED_BLOCK] - assigned_to[nearest[start:start + RESEED_BLOCK]])
                               .pow(2).sum(dim=1) for start in range(0, sample.shape[0], RESEED_BLOCK)])
        farthest = distances.topk(min(empty.numel(), sample.shape[0])).indices
        moved = empty[: farthest.numel()]
        self.centroids[moved] = sample[farthest]
        self.frames_assigned[moved] = 0

    def _release_fit_state(self) -> None:
        """A finished fit keeps what encoding needs: the reservoir and the pass totals go."""
        self.reservoir = Reservoir(0, self.dim).to(self.centroids.device)
        self.sums = self.sums.new_zeros(0, self.dim)
        self.counts = self.counts.new_zeros(0)
        self.frames_assigned = self.frames_assigned.new_zeros(0)

    # ---------------------------------------------------------------------------------------------- encode
    @torch.no_grad()
    def encode(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (B, T): the index of the exact nearest centroid of every valid frame of ``features`` (B, T, D),
        -1 at padding (frames past ``lengths``; none where it is None)."""
        if not int(self.stage):
            raise UserError("KMeansTokenizer.encode before fit: fit the tokenizer or load a fitted one")
        frames, mask = valid_frames(features, lengths, self.dim)
        codes = torch.full(mask.shape, -1, dtype=torch.long, device=features.device)
        codes[mask] = nearest_codes(frames.to(self.centroids), self.centroids,
                                    with_distances=False)[0].to(features.device)
        return codes

    # ----------------------------------------------------------------------------------------------- files
    @classmethod
    def from_centroids(cls, centroids) -> KMeansTokenizer:
        """A fitted tokenizer with these centroids (a (K, D) tensor or array), e.g. another toolkit's."""
        centroids = torch.as_tensor(centroids, dtype=torch.float32)
        if centroids.dim() != 2:
            raise ValueError(f"centroids must be (K, D); got shape {tuple(centroids.shape)}")
        tokenizer = cls(centroids.shape[0], centroids.shape[1], passes=0, reservoir_size=centroids.shape[0])
        tokenizer.centroids.copy_(centroids)
        tokenizer.stage.fill_(1)
        tokenizer._release_fit_state()
        return tokenizer

    def save(self, path: str | Path) -> None:
        """Write the state_dict (a plain dict of tensors, ``torch.load(path, weights_only=True)``) to a new file."""
        if os.path.exists(path):
            raise UserError(f"{path}: exists; choose another path or remove it")
        self._write(path)

    def _write(self, path: str | Path) -> None:
        """Write the state_dict to ``path`` (rank 0 only under DDP), replacing it atomically."""
        if rank() != 0:
            return
        partial = f"{path}.partial"
        torch.save(self.state_dict(), partial)
        os.replace(partial, path)

    @classmethod
    def load(cls, path: str | Path) -> KMeansTokenizer:
        """The tokenizer ``save`` or a ``fit`` checkpoint wrote to ``path`` (a finished fit or one to go on with).
        Under DDP every rank loads the file rank 0 wrote; the ranks but 0 restart the pass totals from zero."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError(f"{path}: no such file") from None
        except Exception as error:  # not a file of ours: a pickle, a truncated file
            raise UserError(f"{path}: not a KMeansTokenizer file ({type(error).__name__}: {error})".splitlines()[0]) \
                from None
        return cls.from_state_dict(state, where=str(path))

    @classmethod
    def from_state_dict(cls, state: dict, where: str = "state_dict") -> KMeansTokenizer:
        """The tokenizer whose ``state_dict()`` is ``state`` (``where``: what to name in an error)."""
        try:
            num_units, dim = state["centroids"].shape
            sample = state["reservoir.samples"].shape[0]
            tokenizer = cls(num_units, dim, passes=state["inertia"].numel(),
                            update="mini_batch" if bool(state["mini_batch"]) else "full",
                            reservoir_size=max(num_units, sample))  # (the rest of the settings are buffers)
            if not sample:
                tokenizer._release_fit_state()
            tokenizer.load_state_dict(state)
        except Exception as error:  # another model's state
            raise UserError(f"{where}: not a KMeansTokenizer file ({type(error).__name__}: {error})".splitlines()[0]) \
                from None
        if rank() != 0:  # rank 0 wrote the file: its pass totals hold every rank's (see _share_totals)
            tokenizer._restart_totals()
        return tokenizer
