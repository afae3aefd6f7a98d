"""Fbank / deltas / CMVN: hand-checked properties, and parity with torchaudio where it imports."""
import math

import numpy as np
import pytest
import torch

from seqvq.data.features import (Fbank, FbankOptions, GlobalCMVN, add_deltas, delta_kernels, mel_filterbank,
                                 num_frames, povey_window)


def test_frame_count_snips_edges():
    opts = FbankOptions()
    assert (opts.window_size, opts.window_shift, opts.fft_size) == (400, 160, 512)
    assert num_frames(399, opts) == 0
    assert num_frames(400, opts) == 1
    assert num_frames(400 + 160 * 7 + 159, opts) == 8
    assert Fbank()(torch.zeros(16000)).shape == (98, 81)


def test_mel_filters_are_triangles_on_kaldi_mel_scale():
    opts = FbankOptions()
    filters = mel_filterbank(opts)
    assert filters.shape == (257, 80)
    assert torch.all(filters >= 0) and torch.all(filters <= 1)
    assert torch.all(filters[-1] == 0)  # Nyquist bin unused, as in Kaldi
    # Each filter rises then falls: a single peak.
    for column in filters.T:
        nonzero = column.nonzero().flatten()
        peak = int(column.argmax())
        assert torch.all(column[nonzero[0]:peak].diff() >= 0) and torch.all(column[peak:nonzero[-1] + 1].diff() <= 0)
    # No filter reaches below 20 Hz (bin 0 = 0 Hz, bin 1 = 31.25 Hz).
    assert torch.all(filters[0] == 0)


def test_povey_window_is_hann_to_085():
    window = povey_window(400, 0.85)
    n = 123
    assert window[n].item() == pytest.approx((0.5 - 0.5 * math.cos(2 * math.pi * n / 399)) ** 0.85, rel=1e-6)
    assert window[0].item() == 0.0


def test_energy_column_is_raw_log_energy_after_dc_removal():
    torch.manual_seed(0)
    wave = torch.randn(1200) * 100 + 50  # DC offset must not count
    features = Fbank()(wave)
    first = wave[:400] - wave[:400].mean()
    assert features[0, 0].item() == pytest.approx(math.log(float((first ** 2).sum())), rel=1e-5)


def test_sine_peaks_in_the_right_mel_band():
    opts = FbankOptions()
    t = torch.arange(16000) / 16000
    features = Fbank(opts)(1000 * torch.sin(2 * math.pi * 1000 * t))
    band = int(features[:, 1:].mean(0).argmax())
    filters = mel_filterbank(opts)
    assert filters[round(1000 * 512 / 16000), band] > 0  # the 1 kHz bin lies in the loudest filter


def test_dither_off_is_deterministic_and_on_uses_generator():
    wave = torch.randn(4000)
    assert torch.equal(Fbank()(wave), Fbank()(wave))
    dithered = Fbank(FbankOptions(dither=1.0))
    a = dithered(wave, torch.Generator().manual_seed(1))
    b = dithered(wave, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, Fbank()(wave))


def test_delta_kernels_match_kaldi():
    _, delta, delta_delta = delta_kernels()
    assert torch.allclose(delta, torch.tensor([-2, -1, 0, 1, 2], dtype=torch.float64) / 10)
    expected = torch.tensor([4, 4, 1, -4, -10, -4, 1, 4, 4], dtype=torch.float64) / 100
    assert torch.allclose(delta_delta, expected)


def test_deltas_of_a_ramp_and_edges():
    ramp = torch.arange(20, dtype=torch.float32)[:, None].repeat(1, 3)
    out = add_deltas(ramp)
    assert out.shape == (20, 9)
    assert torch.equal(out[:, :3], ramp)
    assert torch.allclose(out[5:-5, 3:6], torch.ones(10, 3))   # slope 1 in the interior
    assert torch.allclose(out[5:-5, 6:], torch.zeros(10, 3), atol=1e-6)  # no curvature
    # Edge frame 0 sees replicated values: delta = (0*-2 + 0*-1 + 0 + 1 + 2*2)/10.
    assert out[0, 3].item() == pytest.approx(0.5)
    constant = add_deltas(torch.full((7, 2), 3.0))
    assert torch.allclose(constant[:, 2:], torch.zeros(7, 4), atol=1e-6)


def test_global_cmvn_normalizes_and_uses_kaldi_layout():
    rng = np.random.default_rng(0)
    mats = [rng.normal(5, 3, size=(n, 4)) for n in (10, 30, 7)]
    stats = GlobalCMVN.accumulate(mats)
    assert stats.shape == (2, 5) and stats[0, -1] == 47 and stats[1, -1] == 0
    cmvn = GlobalCMVN(stats)
    normalized = np.concatenate([cmvn(m) for m in mats])
    assert np.allclose(normalized.mean(0), 0, atol=1e-5) and np.allclose(normalized.std(0), 1, atol=1e-4)
    with pytest.raises(ValueError):
        GlobalCMVN(np.zeros((2, 5)))


def test_parity_with_torchaudio_kaldi_fbank():
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    torch.manual_seed(0)
    wave = torch.randn(16000) * 3000
    ours = Fbank()(wave)
    theirs = kaldi.fbank(wave[None], num_mel_bins=80, use_energy=True, dither=0.0, energy_floor=0.0,
                         sample_frequency=16000)
    assert torch.allclose(ours, theirs, atol=1e-3)
