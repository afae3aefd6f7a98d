"""Speech utterances for CTC training and evaluation: a split's features and unit targets
(:func:`load_unit_split`), normalized with global CMVN (:class:`SpeechDataset`) and padded into batches
(:func:`collate_speech`)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seqvq.data.features import FbankOptions, GlobalCMVN, add_deltas
from seqvq.data.kaldi import read_data_dir
from seqvq.data.speech_corpus import FEATS_SCP, PHONES, ComputedFeatures, load_split, read_features
from seqvq.data.units import TEXT, UnitInventory, normalize_transcript, read_transcripts
from seqvq.errors import UserError

BLANK = 0  # CTC label 0 is the blank; label i > 0 is the unit ``inventory.symbols[i - 1]``


@dataclass
class SpeechBatch:
    features: torch.Tensor  # (B, T, D) float, zero-padded
    lengths: torch.Tensor  # (B,) valid frames
    targets: torch.Tensor  # (B, L) int64 phone ids, zero-padded
    target_lengths: torch.Tensor  # (B,)
    utterances: list[str]


def ctc_feasible(latent_frames: int, targets: list[int]) -> bool:
    """CTC needs a frame per label plus one blank between each pair of equal neighbours."""
    repeats = sum(a == b for a, b in zip(targets, targets[1:]))
    return latent_frames >= len(targets) + repeats


class SpeechDataset(torch.utils.data.Dataset):
    """Utterances with both features and targets, normalized with global CMVN (deltas appended first).

    ``targets`` are unit sequences of ``inventory``; ``references`` (characters and subwords) the normalized
    transcripts they are scored against. With ``output_lengths`` (the encoder's frames -> latents map; for
    training) utterances too short for their targets are left out and counted in ``skipped``: CTC could not
    align them. Without it (evaluation) every utterance counts, so one without frames is an error. ``lengths``
    holds each kept utterance's frames; ``cache`` keeps each item's normalized matrix after its first read.
    """

    def __init__(self, features: Mapping[str, np.ndarray], targets: Mapping[str, list[str]], cmvn: GlobalCMVN,
                 deltas: bool, output_lengths=None, name: str = "data", inventory: UnitInventory | None = None,
                 references: Mapping[str, str] | None = None, cache: bool = False):
        self.features, self.cmvn, self.deltas = features, cmvn, deltas
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None
        self.inventory = inventory or UnitInventory.phones()
        self.utterances, self.targets, self.references = [], [], []
        self.lengths: list[int] = []  # feature frames per utterance (length-bucketed batches)
        self.skipped = {"no_features": 0, "no_targets": 0, "too_short": 0}
        self.skipped["no_targets"] = sum(utt not in targets for utt in features)
        for utt in sorted(targets):
            if utt not in features:
                self.skipped["no_features"] += 1
                continue
            unknown = [unit for unit in targets[utt] if unit not in self.inventory.ids]
            if unknown:
                raise UserError(f"{name}: utterance {utt} has unit {unknown[0]!r}, which the model's "
                                f"{self.inventory.kind} inventory lacks; map it to one of them or drop the utterance")
            ids = [self.inventory.ids[unit] + 1 for unit in targets[utt]]
            frames = len(features[utt])
            if output_lengths is not None:
                if not ctc_feasible(int(output_lengths(torch.tensor([frames]))[0]), ids):
                    self.skipped["too_short"] += 1
                    continue
            elif frames == 0:
                where = features.where(utt) if hasattr(features, "where") else name  # its line, where known
                raise UserError(f"{where}: utterance {utt} has no feature frames (audio shorter than one 25 ms "
                                f"window); drop it from the data dir (e.g. Kaldi's utils/subset_data_dir.sh)")
            self.utterances.append(utt)
            self.lengths.append(frames)
            self.targets.append(torch.tensor(ids, dtype=torch.long))
            self.references.append(references[utt] if references is not None else None)
        if not self.utterances:
            raise UserError(f"{name}: no utterance has both features and {self.inventory.kind} targets "
                            f"({self.skipped}); check that feats.scp and the targets name the same utterances")
        if any(self.skipped.values()):
            print(f"{name}: {len(self.utterances)} utterances; left out: {self.skipped}")

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        utt = self.utterances[index]
        if self.cache is not None and index in self.cache:
            return utt, self.cache[index], self.targets[index]
        matrix = torch.from_numpy(np.array(self.features[utt], dtype=np.float32))
        if self.deltas:
            matrix = add_deltas(matrix)
        if matrix.shape[1] != self.cmvn.dim:
            raise UserError(f"{utt}: features have {matrix.shape[1]} dims but the CMVN statistics {self.cmvn.dim}; "
                            f"check data.deltas and recompute the statistics on the same features")
        normalized = torch.from_numpy(self.cmvn(matrix.numpy()))
        if self.cache is not None:
            self.cache[index] = normalized
        return utt, normalized, self.targets[index]


def collate_speech(items: list[tuple[str, torch.Tensor, torch.Tensor]]) -> SpeechBatch:
    utterances, features, targets = zip(*items)
    return SpeechBatch(
        features=nn.utils.rnn.pad_sequence(list(features), batch_first=True),
        lengths=torch.tensor([len(f) for f in features]),
        targets=nn.utils.rnn.pad_sequence(list(targets), batch_first=True),
        target_lengths=torch.tensor([len(t) for t in targets]),
        utterances=list(utterances),
    )


def load_unit_split(path: str | Path, inventory: UnitInventory, options: FbankOptions = FbankOptions(),
                    feature_dim: int | None = None):
    """``(features, targets, references)`` of a split for ``inventory``'s units; references are None for phones.

    Characters and subwords read a prepared split's ``text`` (normalized transcripts, written by
    data_prep/make_targets.py) or a raw Kaldi data dir's ``text`` (features computed in memory), and encode it
    with the unit model.
    """
    if inventory.kind == "phones":
        return (*load_split(path, options, feature_dim=feature_dim), None)
    path = Path(path)
    if (path / FEATS_SCP).exists() and (path / TEXT).exists():
        features, transcripts = read_features(path, feature_dim), read_transcripts(path / TEXT)
    else:
        data = read_data_dir(path)
        if not data.text:
            raise UserError(f"{path / 'text'}: missing; {inventory.kind} units need transcripts")
        features, transcripts = ComputedFeatures(data, options), data.text
    references = {utt: normalize_transcript(text) for utt, text in transcripts.items()}
    references = {utt: text for utt, text in references.items() if text}
    targets = {utt: inventory.encode(text) for utt, text in references.items()}
    return features, targets, references


def split_files(path: str | Path, inventory: UnitInventory) -> list[str]:
    """The files a split's utterances are read from, for ``inventory``'s units (as :func:`load_unit_split`
    reads them): a prepared split's feats.scp, its archives and its targets; a raw Kaldi dir's tables,
    transcripts and audio."""
    path = Path(path)
    targets = path / (PHONES if inventory.kind == "phones" else TEXT)
    if (path / FEATS_SCP).exists() and targets.exists():
        features = read_features(path)
        return [str(features.path), *features.files(), str(targets)]
    data = read_data_dir(path, require_text=False, check_audio=False)
    return [*map(str, data.tables()), str(path / "text"), *data.source_files()]


def stored_feature_dim(features: Mapping[str, np.ndarray], name: str) -> int:
    """Dimension of the stored features (before deltas), from the first utterance."""
    if not len(features):
        raise UserError(f"{name}: no utterances with features; check its feats.scp")
    return np.asarray(features[next(iter(features))]).shape[1]
