"""Log-mel filterbank features with Kaldi's conventions, in plain torch (Łańcucki 2020 §IV-A inputs).

``fbank`` follows Kaldi's ``compute-fbank-feats`` defaults: 25 ms windows every 10 ms, frames that fit the signal
only (snip edges), per-frame DC removal, raw log energy taken before pre-emphasis (0.97) and the Povey window, an
FFT of the next power of two, a power spectrum, triangular mel filters (mel = 1127 ln(1 + f / 700), 20 Hz to
Nyquist) and a log floored at float32 epsilon. With ``use_energy`` the log energy is column 0, as in Kaldi.
Dither is off by default so that features are reproducible; pass ``dither=1.0`` (Kaldi's default) and a
generator to add it.

``add_deltas`` is Kaldi's ``add-deltas`` (window 2, order 2: ΔΔ uses the 9-tap self-convolved kernel, edges
replicated). :class:`GlobalCMVN` holds global mean/variance statistics in Kaldi's 2 x (D + 1) layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from seqvq.errors import UserError

FLOAT32_EPS = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class FbankOptions:
    """Kaldi frame extraction and mel-bank options (names follow Kaldi's flags)."""

    sample_rate: int = 16000
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    num_mel_bins: int = 80
    low_freq: float = 20.0
    high_freq: float = 0.0          # <= 0: offset from Nyquist, as in Kaldi
    preemphasis: float = 0.97
    window_power: float = 0.85     # Povey window = Hann ** 0.85
    use_energy: bool = True
    dither: float = 0.0
    remove_dc_offset: bool = True

    @property
    def window_size(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def window_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def fft_size(self) -> int:
        return 1 << (self.window_size - 1).bit_length()

    @property
    def dim(self) -> int:
        return self.num_mel_bins + int(self.use_energy)


def num_frames(num_samples: int, options: FbankOptions) -> int:
    """Frames Kaldi extracts with snip_edges: only windows that lie fully inside the signal."""
    if num_samples < options.window_size:
        return 0
    return 1 + (num_samples - options.window_size) // options.window_shift


def mel_filterbank(options: FbankOptions) -> torch.Tensor:
    """Triangular filters on Kaldi's mel scale, shape ``(fft_size // 2 + 1, num_mel_bins)``; Nyquist gets 0."""
    nyquist = options.sample_rate / 2
    high = options.high_freq if options.high_freq > 0 else nyquist + options.high_freq
    mel = lambda hz: 1127.0 * torch.log1p(torch.as_tensor(hz, dtype=torch.float64) / 700.0)
    edges = torch.linspace(float(mel(options.low_freq)), float(mel(high)), options.num_mel_bins + 2,
                           dtype=torch.float64)
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    bins = options.fft_size // 2
    bin_mel = mel(torch.arange(bins, dtype=torch.float64) * options.sample_rate / options.fft_size)[:, None]
    rising = (bin_mel - left) / (center - left)
    falling = (right - bin_mel) / (right - center)
    weights = torch.where(bin_mel <= center, rising, falling)
    weights = torch.where((bin_mel > left) & (bin_mel < right), weights, torch.zeros_like(weights))
    return torch.cat([weights, weights.new_zeros(1, options.num_mel_bins)]).float()


def povey_window(size: int, power: float) -> torch.Tensor:
    n = torch.arange(size, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2 * math.pi * n / (size - 1))).pow(power).float()


class Fbank(torch.nn.Module):
    """Waveform ``(num_samples,)`` in Kaldi's int16 scale -> features ``(num_frames, dim)``.

    A module so that the window and filters are built once and follow ``.to(device)``.
    """

    def __init__(self, options: FbankOptions = FbankOptions()):
        super().__init__()
        self.options = options
        self.register_buffer("window", povey_window(options.window_size, options.window_power), persistent=False)
        self.register_buffer("filters", mel_filterbank(options), persistent=False)

    def forward(self, waveform: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        opts = self.options
        frames_count = num_frames(waveform.shape[-1], opts)
        if frames_count == 0:
            return waveform.new_zeros(0, opts.dim)
        frames = waveform.float().unfold(0, opts.window_size, opts.window_shift)[:frames_count]
        if opts.dither > 0:
            noise = torch.randn(frames.shape, generator=generator, device=frames.device, dtype=frames.dtype)
            frames = frames + opts.dither * noise
        if opts.remove_dc_offset:
            frames = frames - frames.mean(dim=1, keepdim=True)
        log_energy = frames.pow(2).sum(dim=1).clamp_min(FLOAT32_EPS).log()
        if opts.preemphasis:
            previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
            frames = frames - opts.preemphasis * previous
        frames = frames * self.window
        spectrum = torch.fft.rfft(frames, n=opts.fft_size).abs().pow(2)
        mel = (spectrum @ self.filters).clamp_min(FLOAT32_EPS).log()
        return torch.cat([log_energy[:, None], mel], dim=1) if opts.use_energy else mel


def delta_kernels(order: int = 2, window: int = 2) -> list[torch.Tensor]:
    """Kaldi's DeltaFeatures scales: order 0 is [1]; order i convolves order i-1 with n / sum(n^2)."""
    base = torch.arange(-window, window + 1, dtype=torch.float64)
    base = base / base.pow(2).sum()
    kernels = [torch.ones(1, dtype=torch.float64)]
    for _ in range(order):
        previous = kernels[-1]
        kernels.append(F.conv1d(F.pad(previous, (2 * window, 2 * window))[None, None],
                                base.flip(0)[None, None])[0, 0])
    return kernels


def add_deltas(features: torch.Tensor, order: int = 2, window: int = 2) -> torch.Tensor:
    """``(T, D) -> (T, D * (order + 1))``: features, Δ, ΔΔ with replicated edges (Kaldi ``add-deltas``)."""
    kernels = delta_kernels(order, window)
    widest = (len(kernels[-1]) - 1) // 2
    padded = F.pad(features.T[:, None, :], (widest, widest), mode="replicate")  # (D, 1, T + 2w)
    outputs = [features]
    for kernel in kernels[1:]:
        half = (len(kernel) - 1) // 2
        trimmed = padded[..., widest - half: padded.shape[-1] - (widest - half)]
        outputs.append(F.conv1d(trimmed, kernel.to(features)[None, None])[:, 0].T)
    return torch.cat(outputs, dim=1)


def check_features(matrix: np.ndarray, utterance: str, where: str, dim: int | None = None) -> np.ndarray:
    """``matrix`` as float32 ``(T, D)`` if it is one with finite values (and ``D == dim`` when given); else a
    :class:`~seqvq.errors.UserError` naming the utterance and ``where`` it was read from. NaN or Inf in input
    features would make the CMVN statistics, the loss and every weight NaN."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise UserError(f"{where}: utterance {utterance} holds a {matrix.ndim}-d array, not a (frames, dims) "
                        f"feature matrix; recompute its features")
    if dim is not None and matrix.shape[1] != dim:
        raise UserError(f"{where}: utterance {utterance} has {matrix.shape[1]}-dim features but {dim} are "
                        f"expected (the training features'); compute its features with the same settings")
    finite = np.isfinite(matrix)
    if not finite.all():
        bad_frames = np.flatnonzero(~finite.all(axis=1))
        raise UserError(f"{where}: utterance {utterance} has {int((~finite).sum())} NaN/Inf values in "
                        f"{len(bad_frames)} frame(s) (first: frame {bad_frames[0]}); recompute its features or drop "
                        f"the utterance")
    return matrix


class GlobalCMVN:
    """Global cepstral mean and variance normalization from accumulated statistics.

    ``stats`` is Kaldi's layout: row 0 = per-dimension sums followed by the frame count, row 1 = sums of
    squares followed by 0, so Kaldi's ``apply-cmvn --norm-vars=true`` reads the same file.
    """

    def __init__(self, stats: np.ndarray):
        stats = np.asarray(stats, dtype=np.float64)
        if stats.ndim != 2 or stats.shape[0] != 2 or not stats[0, -1] > 0:
            raise UserError(f"CMVN stats must be a 2 x (D + 1) matrix with a positive count, got "
                            f"{stats.shape}; recompute them with data_prep/make_targets.py --cmvn FILE")
        if not np.isfinite(stats).all():
            raise UserError("CMVN stats hold NaN/Inf values (features with NaN/Inf went into them); fix the "
                            "features and recompute the statistics with data_prep/make_targets.py --cmvn FILE --force")
        count = stats[0, -1]
        self.stats = stats
        self.mean = stats[0, :-1] / count
        variance = np.maximum(stats[1, :-1] / count - self.mean ** 2, 1e-10)
        self.inv_std = 1.0 / np.sqrt(variance)

    @staticmethod
    def accumulate(feature_matrices) -> np.ndarray:
        """Sum statistics over an iterable of ``(T, D)`` arrays (use the training set only)."""
        stats = None
        for matrix in feature_matrices:
            matrix = np.asarray(matrix, dtype=np.float64)
            if stats is None:
                stats = np.zeros((2, matrix.shape[1] + 1))
            stats[0, :-1] += matrix.sum(axis=0)
            stats[1, :-1] += (matrix ** 2).sum(axis=0)
            stats[0, -1] += matrix.shape[0]
        if stats is None:
            raise ValueError("no feature matrices to accumulate CMVN statistics from")
        return stats

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) * self.inv_std).astype(np.float32)
