"""Prepared speech splits: fbank features as ark/scp, phone targets and global CMVN statistics.

A prepared split directory holds ``feats.scp`` (+ ``feats.ark`` when computed here), ``phones.txt``
(``utt PH PH ...``) and, for the training split, ``cmvn.ark`` (global statistics of the features the model sees,
deltas included; Kaldi layout). ``data_prep/compute_features.py`` and ``data_prep/make_targets.py`` write them
once; training and evaluation only read them. :func:`load_split` also accepts a raw Kaldi data directory and
then computes features and lexicon targets in memory (for ``seqvq evaluate`` on any data dir).

Every feature matrix read from a ``feats.scp`` is checked as it is read (:func:`seqvq.data.features.check_features`:
finite values, one dimension throughout), with an error naming the utterance and the file.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from seqvq.data.features import Fbank, FbankOptions, GlobalCMVN, add_deltas, check_features
from seqvq.data.kaldi import DataDirError, KaldiDataDir, read_data_dir, read_table
from seqvq.errors import UserError
from seqvq.data.lexicon import (PhoneTargets, cmudict_lexicon, read_lexicon, read_phone_transcripts,
                                words_to_phones, write_phone_transcripts)

FEATS_SCP, PHONES, CMVN = "feats.scp", "phones.txt", "cmvn.ark"


def utterance_fbank(samples: np.ndarray, fbank: Fbank) -> np.ndarray:
    """Float waveform in [-1, 1] -> fbank ``(T, D)``; Kaldi works on the int16 scale, so scale by 2^15."""
    with torch.no_grad():
        return fbank(torch.from_numpy(samples).float() * 32768.0).numpy()


def iter_fbank(data: KaldiDataDir, options: FbankOptions = FbankOptions()) -> Iterator[tuple[str, np.ndarray]]:
    """Features per utterance: the directory's own ``feats.scp`` as it is (checked), else fbank computed from
    audio."""
    if data.feats:
        features = FeatureArchive(data.path / FEATS_SCP)
        for utt in data.utterances:
            yield utt, features[utt]
        return
    fbank = Fbank(options)
    for utt in data.utterances:
        samples, rate = data.load_audio(utt)
        if rate != options.sample_rate:
            raise DataDirError(f"{data.path / 'wav.scp'}: {utt} is {rate} Hz but features expect "
                               f"{options.sample_rate} Hz; set the sample rate option or resample the audio")
        yield utt, utterance_fbank(samples, fbank)


def write_features(data: KaldiDataDir, out_dir: str | Path, options: FbankOptions = FbankOptions()) -> int:
    """Write ``out_dir/feats.{ark,scp}`` (Kaldi-compressed) or, if the data dir has features, its feats.scp.

    Returns the number of frames. Files appear atomically: written under temporary names, then renamed; a failure
    removes the temporary files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scp_tmp = out_dir / (FEATS_SCP + ".tmp")
    ark_tmp, ark = (out_dir / "feats.ark.tmp").resolve(), (out_dir / "feats.ark").resolve()
    raw_scp = out_dir / (FEATS_SCP + ".raw.tmp")
    try:
        frames = _write_features(data, options, scp_tmp, ark_tmp, ark, raw_scp)
    except BaseException:  # a failed stage leaves no temporary files behind
        for temporary in (scp_tmp, ark_tmp, raw_scp):
            temporary.unlink(missing_ok=True)
        raise
    os.replace(scp_tmp, out_dir / FEATS_SCP)
    return frames


def _write_features(data: KaldiDataDir, options: FbankOptions, scp_tmp: Path, ark_tmp: Path, ark: Path,
                    raw_scp: Path) -> int:
    import kaldiio

    frames = 0
    if data.feats:
        with open(scp_tmp, "w", encoding="utf-8") as handle:
            for utt, matrix in iter_fbank(data, options):
                handle.write(f"{utt} {data.feats[utt]}\n")
                frames += len(matrix)
    else:
        with kaldiio.WriteHelper(f"ark,scp:{ark_tmp},{raw_scp}", compression_method=2) as writer:
            for utt, matrix in iter_fbank(data, options):
                if len(matrix) == 0:
                    raise DataDirError(f"{data.where(utt)}: utterance {utt} is shorter than one 25 ms frame; drop "
                                       f"it (utils/fix_data_dir.sh after removing it from the lists)")
                writer(utt, matrix)
                frames += len(matrix)
        with open(raw_scp, encoding="utf-8") as source, open(scp_tmp, "w", encoding="utf-8") as handle:
            for line in source:
                utt, entry = line.rstrip("\n").split(" ", 1)
                handle.write(f"{utt} {ark}:{entry.rsplit(':', 1)[1]}\n")
        raw_scp.unlink()
        os.replace(ark_tmp, ark)
    return frames


class ComputedFeatures(dict):
    """``utt -> (T, D)`` features computed in memory from the audio of a Kaldi data dir; ``where(utt)`` names the
    line that gives the utterance's audio."""

    def __init__(self, data: KaldiDataDir, options: FbankOptions = FbankOptions(), dim: int | None = None):
        super().__init__()
        self.data = data
        for utt, matrix in iter_fbank(data, options):
            self[utt] = check_features(matrix, utt, str(data.path), dim)

    def where(self, utt: str) -> str:
        return self.data.where(utt)


class FeatureArchive(Mapping):
    """Lazy ``utt -> (T, D)`` float32 features of a ``feats.scp``, each matrix checked as it is read: finite, and
    of dimension ``dim`` (default: that of the first matrix read)."""

    def __init__(self, scp_path: str | Path, dim: int | None = None):
        self.path, self.dim = Path(scp_path), dim
        if not self.path.is_file():
            raise UserError(f"{self.path}: missing; compute features with data_prep/compute_features.py")
        # validates the lines with file:line errors
        self.entries = {utt: value[0] for utt, value in read_table(self.path, 2, 2, rest_of_line=True).items()}

    def __getitem__(self, utt: str) -> np.ndarray:
        import kaldiio

        entry = self.entries[utt]
        try:
            matrix = kaldiio.load_mat(entry)
        except Exception as error:  # a missing or truncated ark, a bad offset
            raise UserError(f"{self.path}: cannot read the features of utterance {utt} from {entry!r} ({error}); "
                            f"recompute the features") from error
        matrix = check_features(matrix, utt, f"{self.path} ({entry})", self.dim)
        if self.dim is None:
            self.dim = matrix.shape[1]
        return matrix

    def where(self, utt: str) -> str:
        """The line of ``feats.scp`` that holds the utterance."""
        return f"{self.path}:{list(self.entries).index(utt) + 1}"

    def files(self) -> list[str]:
        """The archives the entries point into."""
        return sorted({entry.rsplit(":", 1)[0] for entry in self.entries.values()})

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def read_features(split_dir: str | Path, dim: int | None = None) -> FeatureArchive:
    """Lazy, checked ``utt -> (T, D)`` mapping over ``split_dir/feats.scp`` (see :class:`FeatureArchive`)."""
    return FeatureArchive(Path(split_dir) / FEATS_SCP, dim)


def compute_cmvn(features: Mapping[str, np.ndarray], deltas: bool, utterances=None) -> np.ndarray:
    """Global CMVN statistics over every utterance of a (training) split, or those of it in ``utterances``, after
    optional deltas."""
    def matrices():
        for utt in features:
            if utterances is not None and utt not in utterances:
                continue
            matrix = torch.from_numpy(np.array(features[utt], dtype=np.float32))
            yield (add_deltas(matrix) if deltas else matrix).numpy()

    return GlobalCMVN.accumulate(matrices())


def save_cmvn(stats: np.ndarray, path: str | Path) -> None:
    import kaldiio

    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    try:
        kaldiio.save_mat(str(temporary), stats)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def load_cmvn(path: str | Path) -> GlobalCMVN:
    import kaldiio

    if not Path(path).is_file():
        raise UserError(f"{path}: CMVN statistics missing; write them with data_prep/make_targets.py "
                        f"--cmvn FILE (the recipe's stage 2)")
    try:
        return GlobalCMVN(kaldiio.load_mat(str(path)))
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


def make_targets(data: KaldiDataDir, phone_file: str | Path | None = None, lexicon_file: str | Path | None = None,
                 oov_policy: str = "drop_utterance") -> PhoneTargets:
    """Phone targets from a phone transcript file, else from ``text`` through a lexicon (CMUdict by default)."""
    if phone_file is not None:
        result = read_phone_transcripts(phone_file)
        missing = [utt for utt in data.utterances if utt not in result.targets]
        result.dropped_utterances = sorted(set(result.dropped_utterances) | set(missing))
        result.targets = {utt: result.targets[utt] for utt in data.utterances if utt in result.targets}
        return result
    if not data.text:
        raise DataDirError(f"{data.path / 'text'}: missing; targets need transcripts or a phone file")
    lexicon = read_lexicon(lexicon_file) if lexicon_file is not None else cmudict_lexicon()
    return words_to_phones(data.text, lexicon, oov_policy)


def save_targets(targets: PhoneTargets, split_dir: str | Path) -> None:
    """Write ``phones.txt`` and an ``oov_report.txt`` (the report, every dropped utterance, and every OOV word
    with its count)."""
    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    write_phone_transcripts(targets.targets, split_dir / PHONES)
    lines = [targets.report(), " ".join(["dropped utterances:", *targets.dropped_utterances])]
    lines += [f"{word} {count}" for word, count in targets.oov_words.most_common()]
    temporary = split_dir / "oov_report.txt.tmp"
    temporary.write_text("\n".join(lines) + "\n")
    os.replace(temporary, split_dir / "oov_report.txt")


def load_split(path: str | Path, options: FbankOptions = FbankOptions(), oov_policy: str = "drop_utterance",
               feature_dim: int | None = None) -> tuple[Mapping[str, np.ndarray], dict[str, list[str]]]:
    """``(features, targets)`` of a prepared split, or of a raw Kaldi data dir computed in memory; features of
    another dimension than ``feature_dim`` (when given) are an error naming the utterance."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such directory; pass a prepared split (feats.scp + phones.txt) or a Kaldi "
                        f"data dir")
    if (path / FEATS_SCP).exists() and (path / PHONES).exists():
        return read_features(path, feature_dim), read_phone_transcripts(path / PHONES).targets
    if (path / FEATS_SCP).exists() and not (path / "utt2spk").exists():
        raise UserError(f"{path / PHONES}: missing next to feats.scp; write the split's phone targets with "
                        f"data_prep/make_targets.py, or pass the Kaldi data dir instead")
    data = read_data_dir(path)
    targets = make_targets(data, oov_policy=oov_policy)
    print(f"{path}: {targets.report()}")
    return ComputedFeatures(data, options, feature_dim), targets.targets
