"""Helpers shared by several test files: the ``seqvq`` command line run in-process, and a Kaldi data dir of tone
recordings."""
from __future__ import annotations

import numpy as np
import soundfile

from seqvq import cli


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``seqvq ARGS`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        cli.main([str(arg) for arg in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def write_kaldi_dir(directory, texts, seed):
    """A Kaldi data dir of 0.1 s tones, one per word (pitch by word length), with its transcripts."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    wav, text, utt2spk = [], [], []
    for index, transcript in enumerate(texts):
        utt = f"s{seed}_u{index:02d}"
        words = transcript.split()
        samples = np.concatenate([0.3 * np.sin(2 * np.pi * (200 + 40 * len(w)) * np.arange(1600) / 16000)
                                  for w in words]) + rng.normal(0, 0.01, 1600 * len(words))
        soundfile.write(directory / f"{utt}.wav", samples.astype(np.float32), 16000)
        wav.append(f"{utt} {directory / f'{utt}.wav'}")
        text.append(f"{utt} {transcript}")
        utt2spk.append(f"{utt} s{seed}")
    for name, lines in (("wav.scp", wav), ("text", text), ("utt2spk", utt2spk)):
        (directory / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
