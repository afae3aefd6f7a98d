"""Helpers shared by several test files: the ``seqvq`` command line run in-process, a Kaldi data dir of tone
recordings, a padded batch with garbage padding, and the entropy terms' spreading of a collapsed batch."""
from __future__ import annotations

import numpy as np
import soundfile
import torch

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


def padded_batch(lengths, dim, seed=0, scale=1.0):
    """(B, T, dim) standard normal vectors times ``scale`` with sequence ``lengths``, and the (B, T) mask; padded
    positions hold 1e3, garbage that must not matter."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), dim, generator=generator) * scale
    mask = torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    x[~mask] = 1e3
    return x, mask


def entropy_spreads_a_collapsed_batch(kind, temperature):
    """Gradient steps on 16 vectors that share one code: the entropy term (gamma 2) spreads them over most of the
    8 codes; the commitment loss alone keeps them on one."""
    for options, least, most in (({"weight": 1.0, "gamma": 2.0, "temperature": temperature}, 6, 8), (None, 1, 1)):
        torch.manual_seed(0)
        quantizer = kind(3, 3, entropy_regularizer=options)
        x = (torch.tensor([1.0, 1.0, 1.0]) + 0.3 * torch.randn(1, 16, 3)).requires_grad_()
        assert quantizer(x).codes.unique().numel() == 1
        optimizer = torch.optim.SGD([x], lr=0.5)
        for _ in range(200):
            optimizer.zero_grad()
            quantizer(x).loss.backward()
            optimizer.step()
        assert least <= quantizer(x).codes.unique().numel() <= most, options


def raise_at_step(trainer, step: int, error: type[BaseException]) -> None:
    """Make ``trainer`` raise ``error`` when it starts training step ``step + 1`` (after ``step`` steps): a kill or
    Ctrl-C in the middle of a run."""
    original_step = trainer.train_step

    def train_step(batch):
        if trainer.step == step:
            raise error
        return original_step(batch)

    trainer.train_step = train_step
