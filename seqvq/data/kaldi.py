"""Kaldi data directories: read, validate and load audio.

A Kaldi data directory (as prepared by ``egs/wsj/s5``, e.g. ``data/train_si284``) holds text tables of
``<key> <value>`` lines: ``wav.scp`` (recording -> path, or a ``command |`` pipe that writes a WAV to stdout),
optional ``segments`` (utterance -> recording, start, end in seconds), ``text`` (utterance -> transcript),
``utt2spk`` / ``spk2utt`` and optional ``feats.scp`` (utterance -> ark offset, read with kaldiio).

:func:`read_data_dir` checks what Kaldi's ``utils/validate_data_dir.sh`` checks -- keys unique and sorted
(``LC_ALL=C``), the same utterances in every per-utterance file, no empty transcripts, existing audio files,
one sample rate -- and raises :class:`DataDirError` naming the file, the line and the fix.
"""
from __future__ import annotations

import io
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqvq.errors import UserError

SORT_FIX = "sort it with `LC_ALL=C sort -k1,1 -u` (or run Kaldi's utils/fix_data_dir.sh)"


class DataDirError(UserError):
    """A Kaldi data directory is malformed; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Segment:
    """One line of ``segments``: the utterance spans ``[start, end)`` seconds of ``recording``."""

    recording: str
    start: float
    end: float


@dataclass
class KaldiDataDir:
    """The parsed tables of one data directory; ``utterances`` is the sorted list of utterance ids."""

    path: Path
    utterances: list[str]
    utt2spk: dict[str, str]
    spk2utt: dict[str, list[str]]
    text: dict[str, str] = field(default_factory=dict)
    wav: dict[str, str] = field(default_factory=dict)
    segments: dict[str, Segment] = field(default_factory=dict)
    feats: dict[str, str] = field(default_factory=dict)
    sample_rate: int | None = None

    def where(self, utterance: str) -> str:
        """The line its features are read from: ``feats.scp:N`` when the directory has features, else the line
        that says where its audio is, ``segments:N`` or ``wav.scp:N`` (a table's line is its key's position)."""
        for name, table in (("feats.scp", self.feats), ("segments", self.segments), ("wav.scp", self.wav)):
            if utterance in table:
                return self._line(name, table, utterance)
        return str(self.path)

    def _line(self, name: str, table: dict, key: str) -> str:
        """``PATH/name:N``, the line of ``key`` in the table read from that file (for messages: O(lines))."""
        return f"{self.path / name}:{list(table).index(key) + 1}"

    def tables(self) -> list[Path]:
        """The directory's table files that say what audio or features each utterance has."""
        return [self.path / name for name in ("utt2spk", "wav.scp", "segments", "feats.scp")
                if (self.path / name).is_file()]

    def source_files(self) -> list[str]:
        """The files the utterances' features come from: the archives of ``feats.scp`` when the directory has
        one, else the audio files of ``wav.scp`` (for a pipe, each of its words that names a file)."""
        entries = self.feats.values() if self.feats else self.wav.values()
        files = set()
        for entry in entries:
            entry = entry.strip()
            if entry.endswith("|"):
                words = entry[:-1].split()
            else:  # a file, or an ark offset (ARK:OFFSET)
                words = [entry, entry.rsplit(":", 1)[0]]
            files.update(word for word in words if os.path.isfile(word))
        return sorted(files)

    def load_audio(self, utterance: str) -> tuple[np.ndarray, int]:
        """Return the utterance's waveform as float32 in [-1, 1] (first channel) and its sample rate."""
        segment = self.segments.get(utterance)
        recording = segment.recording if segment else utterance
        samples, rate = read_wav_entry(self.wav[recording], where=f"{self.path / 'wav.scp'} ({recording})")
        if self.sample_rate is not None and rate != self.sample_rate:
            raise DataDirError(f"{self._line('wav.scp', self.wav, recording)}: recording {recording} has sample rate "
                               f"{rate} Hz but the directory uses {self.sample_rate} Hz; resample it (e.g. `sox ... "
                               f"-r {self.sample_rate}`)")
        if segment:
            start, end = int(round(segment.start * rate)), int(round(segment.end * rate))
            if end > len(samples) + rate // 100:
                raise DataDirError(f"{self._line('segments', self.segments, utterance)}: utterance {utterance} ends "
                                   f"at {segment.end}s but recording {recording} lasts {len(samples) / rate:.3f}s; "
                                   f"fix its end time")
            samples = samples[start:end]
        return samples, rate


def read_table(path: Path, min_fields: int = 2, max_fields: int | None = 2, rest_of_line: bool = False,
               allow_empty_value: bool = False) -> dict[str, list[str]]:
    """Read a ``<key> <fields...>`` table, checking field counts and that keys are unique and C-sorted.

    With ``rest_of_line`` the value is everything after the key (it may hold spaces, e.g. a pipe command).
    """
    table: dict[str, list[str]] = {}
    previous = None
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\n")
            if rest_of_line:
                parts = line.strip().split(maxsplit=1)
                if len(parts) == 1 and allow_empty_value:
                    parts.append("")
            else:
                parts = line.split()
            if not line.strip():
                raise DataDirError(f"{path}:{number}: empty line; delete it")
            if len(parts) < min_fields or (max_fields is not None and len(parts) > max_fields):
                expected = f"{min_fields}" if min_fields == max_fields else f"at least {min_fields}"
                raise DataDirError(f"{path}:{number}: expected {expected} fields, got {len(parts)} in {line!r}; "
                                   f"fix or delete this line")
            key = parts[0]
            if key in table:
                raise DataDirError(f"{path}:{number}: key {key!r} appears twice; keep one line per key")
            if previous is not None and key.encode() < previous.encode():
                raise DataDirError(f"{path}:{number}: key {key!r} comes after {previous!r}, not sorted; {SORT_FIX}")
            table[key] = parts[1:]
            previous = key
    return table


def _check_same_keys(reference: dict, reference_path: Path, other: dict, other_path: Path) -> None:
    """Both tables list the same utterances; else an error naming the first one only one of them has, with its
    line (a table's keys are unique and every line holds one, so its line is its position)."""
    missing = [key for key in reference if key not in other]
    extra = [key for key in other if key not in reference]
    fix = "run Kaldi's utils/fix_data_dir.sh on the directory"
    if missing:
        raise DataDirError(f"{other_path}: utterance {missing[0]} of {reference_path}:"
                           f"{list(reference).index(missing[0]) + 1} is missing here ({len(missing)} utterance(s) of "
                           f"{reference_path.name} missing); {fix}")
    if extra:
        raise DataDirError(f"{other_path}:{list(other).index(extra[0]) + 1}: utterance {extra[0]} is not in "
                           f"{reference_path} ({len(extra)} such utterance(s)); {fix}")


def read_wav_entry(entry: str, where: str) -> tuple[np.ndarray, int]:
    """Read one ``wav.scp`` value: a file path, a ``command |`` pipe, or an ark offset (via kaldiio)."""
    import soundfile

    entry = entry.strip()
    try:
        if entry.endswith("|"):
            result = subprocess.run(entry[:-1], shell=True, capture_output=True, check=False)
            if result.returncode != 0:
                message = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["(no stderr)"]
                raise DataDirError(f"{where}: command {entry!r} failed with exit code {result.returncode}: "
                                   f"{message[0]}; check that the program and its input exist")
            samples, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
        elif os.path.exists(entry):
            samples, rate = soundfile.read(entry, dtype="float32", always_2d=True)
        elif ".ark:" in entry:
            import kaldiio

            rate, ints = kaldiio.load_mat(entry)
            samples = np.asarray(ints, dtype=np.float32).reshape(len(ints), -1) / 32768.0
        else:
            raise DataDirError(f"{where}: audio file {entry!r} does not exist; fix the path in wav.scp")
    except DataDirError:
        raise
    except Exception as error:  # soundfile / kaldiio errors: unreadable or not audio
        raise DataDirError(f"{where}: cannot read audio {entry!r} ({error}); "
                           f"check that it is a WAV/FLAC file or a pipe that writes one") from error
    return np.ascontiguousarray(samples[:, 0]), int(rate)


def _file_sample_rate(entry: str) -> int | None:
    """Sample rate from a plain audio file's header (pipes are checked when read)."""
    import soundfile

    entry = entry.strip()
    if entry.endswith("|") or ".ark:" in entry:
        return None
    return int(soundfile.info(entry).samplerate)


def read_data_dir(path: str | os.PathLike, require_text: bool = True, check_audio: bool = True) -> KaldiDataDir:
    """Read and validate a Kaldi data directory (see the module docstring for what is checked)."""
    root = Path(path)
    if not root.is_dir():
        raise DataDirError(f"{root}: not a directory; pass a Kaldi data dir such as data/train_si284")
    utt2spk_path = root / "utt2spk"
    if not utt2spk_path.exists():
        raise DataDirError(f"{utt2spk_path}: missing; create it (one `utterance speaker` line per utterance)")
    utt2spk = {key: value[0] for key, value in read_table(utt2spk_path, 2, 2).items()}
    utterances = list(utt2spk)
    if not utterances:
        raise DataDirError(f"{utt2spk_path}: no utterances; the directory is empty")

    spk2utt: dict[str, list[str]] = {}
    for utt, spk in utt2spk.items():
        spk2utt.setdefault(spk, []).append(utt)
    spk2utt_path = root / "spk2utt"
    if spk2utt_path.exists():
        given = {key: value for key, value in read_table(spk2utt_path, 2, None).items()}
        if {k: sorted(v) for k, v in given.items()} != {k: sorted(v) for k, v in spk2utt.items()}:
            raise DataDirError(f"{spk2utt_path}: disagrees with utt2spk; regenerate it with "
                               f"`utils/utt2spk_to_spk2utt.pl utt2spk > spk2utt`")

    data = KaldiDataDir(path=root, utterances=utterances, utt2spk=utt2spk, spk2utt=spk2utt)
    text_path = root / "text"
    if text_path.exists():
        table = read_table(text_path, 1, 2, rest_of_line=True, allow_empty_value=True)
        data.text = {key: value[0].strip() for key, value in table.items()}
        for number, (utt, words) in enumerate(data.text.items(), start=1):
            if not words:
                raise DataDirError(f"{text_path}:{number}: utterance {utt} has an empty transcript; "
                                   f"remove the utterance (utils/fix_data_dir.sh) or add its words")
        _check_same_keys(utt2spk, utt2spk_path, data.text, text_path)
    elif require_text:
        raise DataDirError(f"{text_path}: missing; create it (one `utterance word word ...` line per utterance)")

    feats_path = root / "feats.scp"
    if feats_path.exists():
        data.feats = {key: value[0] for key, value in read_table(feats_path, 2, 2, rest_of_line=True).items()}
        _check_same_keys(utt2spk, utt2spk_path, data.feats, feats_path)

    wav_path = root / "wav.scp"
    if wav_path.exists():
        data.wav = {key: value[0] for key, value in read_table(wav_path, 2, 2, rest_of_line=True).items()}
        segments_path = root / "segments"
        if segments_path.exists():
            data.segments = _read_segments(segments_path, data.wav)
            _check_same_keys(utt2spk, utt2spk_path, data.segments, segments_path)
        else:
            _check_same_keys(utt2spk, utt2spk_path, data.wav, wav_path)
        if check_audio:
            data.sample_rate = _check_audio(wav_path, data.wav)
    elif not data.feats:
        raise DataDirError(f"{wav_path}: missing (and no feats.scp); create wav.scp (`recording path-or-pipe |`)")
    return data


def _read_segments(path: Path, wav: dict[str, str]) -> dict[str, Segment]:
    segments = {}
    for number, (utt, fields) in enumerate(read_table(path, 4, 4).items(), start=1):
        recording, start, end = fields
        try:
            start_s, end_s = float(start), float(end)
        except ValueError:
            raise DataDirError(f"{path}:{number}: start/end {start!r} {end!r} are not numbers; "
                               f"use `utterance recording start_seconds end_seconds`") from None
        if not 0 <= start_s < end_s:
            raise DataDirError(f"{path}:{number}: segment {utt} has start {start_s} >= end {end_s} or a negative "
                               f"start; fix the times or drop the segment")
        if recording not in wav:
            raise DataDirError(f"{path}:{number}: recording {recording!r} is not in wav.scp; add it or drop "
                               f"the segment")
        segments[utt] = Segment(recording, start_s, end_s)
    return segments


def _check_audio(wav_path: Path, wav: dict[str, str]) -> int | None:
    """Check that plain audio files exist and share one sample rate; return it (None if all are pipes)."""
    rates: dict[int, str] = {}
    for number, (recording, entry) in enumerate(wav.items(), start=1):
        entry = entry.strip()
        if not (entry.endswith("|") or ".ark:" in entry) and not os.path.exists(entry):
            raise DataDirError(f"{wav_path}:{number}: audio file {entry!r} of {recording} does not exist; "
                               f"fix the path")
        try:
            rate = _file_sample_rate(entry)
        except Exception as error:
            raise DataDirError(f"{wav_path}:{number}: cannot read the header of {entry!r} ({error}); "
                               f"check that it is a WAV/FLAC file") from error
        if rate is not None:
            rates.setdefault(rate, recording)
        if len(rates) > 1:
            (rate_a, rec_a), (rate_b, rec_b) = list(rates.items())[:2]
            raise DataDirError(f"{wav_path}:{number}: {rec_a} is {rate_a} Hz but {rec_b} is {rate_b} Hz; "
                               f"resample all recordings to one rate")
    return next(iter(rates), None)
