"""Numerics of the running statistics: the EMA affine moments of Huh A.12 far from the origin,
the bound on the affine scale ratio, and which parameters Polyak averaging averages."""
from __future__ import annotations

import torch
from torch import nn

import seqvq
from seqvq.train.polyak import PolyakAverage


def test_ema_affine_variance_is_exact_far_from_the_origin():
    """Unit-variance data at an offset of 3,000: a one-pass E[x^2] - E[x]^2 in float32 gives 0.75."""
    quantizer = seqvq.VectorQuantizer(4, 8, affine={"mode": "ema", "momentum": 1.0})
    x = torch.randn(4096, 4, generator=torch.Generator().manual_seed(0)) + 3000.0
    quantizer(x)
    expected = x.double().var(dim=0, unbiased=False)
    torch.testing.assert_close(quantizer.affine.embedding_var[0, 0].double(), expected, rtol=1e-4, atol=0)
    torch.testing.assert_close(quantizer.affine.embedding_mean[0, 0].double(), x.double().mean(0), rtol=1e-5, atol=0)


def test_ema_affine_scale_ratio_is_bounded():
    """Every input picks the same code, so the selected codes have no variance: the ratio sigma_e / sigma_q would
    be sigma_e / sqrt(eps) = 100 / 0.003 ~ 3e4; it stops at max_ratio."""
    quantizer = seqvq.VectorQuantizer(4, 8, affine={"mode": "ema", "momentum": 1.0, "max_ratio": 50.0})
    x = torch.randn(256, 4, generator=torch.Generator().manual_seed(0)) * 100.0
    with torch.no_grad():
        quantizer.codebook.zero_()
    quantizer(x)
    assert float(quantizer.affine.code_var.max()) == 0.0
    scale, _ = quantizer.affine.coefficients()
    assert float(scale.max()) == 50.0
    assert torch.isfinite(quantizer.effective_codebook()).all()


class TwoCodebooks(nn.Module):
    """An encoder, a gradient-trained codebook and an EMA codebook (a parameter without gradient)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.trained = seqvq.VectorQuantizer(4, 8)
        self.ema = seqvq.VectorQuantizer(4, 8, codebook_update="ema")


def test_polyak_averages_gradient_trained_parameters_only():
    """The EMA codebook is itself a moving average moved outside the optimizer (Łańcucki eq. 4): evaluation uses
    its live value, as for buffers; the gradient-trained codebook and the encoder are averaged."""
    model = TwoCodebooks()
    polyak = PolyakAverage(model, decay=0.5)
    assert "ema.codebook" not in polyak.shadow and {"encoder.weight", "trained.codebook"} <= set(polyak.shadow)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    polyak.update(model)
    with polyak.swapped_in(model):
        torch.testing.assert_close(model.trained.codebook, initial["trained.codebook"] + 0.5)
        torch.testing.assert_close(model.encoder.weight, initial["encoder.weight"] + 0.5)
        assert torch.equal(model.ema.codebook, initial["ema.codebook"] + 1.0)  # live value
    state = polyak.state_dict()
    restored = PolyakAverage(TwoCodebooks(), decay=0.9)
    restored.load_state_dict({**state, "shadow": {**state["shadow"], "ema.codebook": torch.zeros(1, 8, 4)}})
    assert all(torch.equal(restored.shadow[name], value) for name, value in polyak.shadow.items())
