"""Half-precision inputs (Łańcucki / Huh train in float32; users train with AMP): the quantizer takes float16 and
bfloat16 tensors, also under ``torch.autocast``, keeps its statistics, search and codebook in float32, returns the
input dtype, and passes gradients back in the input dtype.  Its state and codes equal those of a float32 run on the
same (upcast) values, so nothing is lost but the rounding of the output."""
from __future__ import annotations

import pytest
import torch

import seqvq

REESTIMATE = {"init_steps": 1, "every": 1, "steps": 2, "reservoir_size": 16, "kmeans_iterations": 2}
OPTIONS = {
    "plain": {},
    "pre_norm": {"pre_norm": True},
    "ema": {"codebook_update": "ema"},
    "affine_learned": {"affine": "learned"},
    "affine_ema": {"affine": "ema"},
    "reestimate": {"reestimate": REESTIMATE},
    "replacement": {"replace_dead_after": 1},
    "kmeans_init": {"kmeans_init": True},
    "stochastic": {"assignment": "stochastic"},
    "gumbel": {"assignment": "gumbel"},
    "sync_nu": {"sync_nu": 0.5},
    "residual": {"num_quantizers": 2, "pre_norm": True, "codebook_update": "ema"},
    "optimal_transport": {"assignment": "optimal_transport"},
    "index_backprop": {"assignment": "index_backprop"},
    "diveq": {"diveq": {"noise": 1e-3}},
    "sf_diveq": {"diveq": {"space_filling": True}},
    "bridge": {"bridge": {"group": 4, "width": 8, "heads": 2}},
}

TOLERANCE = {torch.float16: {"rtol": 2e-3, "atol": 2e-3}, torch.bfloat16: {"rtol": 1.6e-2, "atol": 1.6e-2}}

pytestmark = pytest.mark.usefixtures("one_thread")


def make_quantizer(options: dict):
    torch.manual_seed(0)
    options = dict(options)
    if "num_quantizers" in options:
        return seqvq.ResidualVectorQuantizer(8, 16, options.pop("num_quantizers"), **options)
    return seqvq.VectorQuantizer(8, 16, **options)


def batches(dtype: torch.dtype, steps: int = 3):
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        yield (torch.randn(3, 7, 8, generator=generator) * 2 + 0.5).to(dtype), torch.tensor([7, 4, 2])


def train(quantizer, dtype: torch.dtype, upcast: bool = False):
    """Three training steps on inputs of ``dtype`` (upcast to float32 first when ``upcast``); returns per step
    (output, codes, gradient of the input)."""
    steps = []
    for x, lengths in batches(dtype):
        x = (x.float() if upcast else x).requires_grad_(True)
        result = quantizer(x, lengths=lengths)
        ((result.quantized.float() * torch.linspace(-1, 1, 8)).sum() + result.loss).backward()
        steps.append((result.quantized.detach(), result.codes, x.grad))
    return steps


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_half_precision_input_equals_a_float32_run_on_the_same_values(name, dtype):
    half = make_quantizer(OPTIONS[name])
    steps = train(half, dtype)
    reference = make_quantizer(OPTIONS[name])
    expected = train(reference, dtype, upcast=True)  # float32 on exactly the half-precision values
    for (quantized, codes, grad), (quantized32, codes32, grad32) in zip(steps, expected):
        assert quantized.dtype == dtype and grad.dtype == dtype
        assert torch.equal(codes, codes32)
        assert torch.equal(quantized, quantized32.to(dtype))
        # The output's gradient arrives rounded to the input dtype: equal up to that rounding.
        torch.testing.assert_close(grad.float(), grad32, **TOLERANCE[dtype])
    for (key, value), value32 in zip(half.state_dict().items(), reference.state_dict().values()):
        assert value.dtype == value32.dtype and torch.equal(value, value32), key
    assert all(p.dtype == torch.float32 for p in half.parameters())


@pytest.mark.parametrize("name", list(OPTIONS))
def test_bfloat16_autocast(name):
    """Under autocast the quantizer's matmuls run in float32 (autocast is off inside): the codes are those of the
    exact float32 search on the input's values, and the output has the input's dtype."""
    encoder = torch.nn.Linear(8, 8)
    quantizer, reference = make_quantizer(OPTIONS[name]), make_quantizer(OPTIONS[name])
    for x, lengths in batches(torch.float32):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features = encoder(x)
            assert features.dtype == torch.bfloat16
            result = quantizer(features, lengths=lengths)
            loss = result.quantized.float().sum() + result.loss
        loss.backward()
        expected = reference(features.detach().float(), lengths=lengths)
        assert result.quantized.dtype == torch.bfloat16 and result.loss.dtype == torch.float32
        assert torch.equal(result.codes, expected.codes)
        assert torch.equal(result.quantized, expected.quantized.to(torch.bfloat16))
        assert encoder.weight.grad is not None and torch.isfinite(encoder.weight.grad).all()
    for (key, value), value32 in zip(quantizer.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(value, value32), key


def test_counts_are_exact_for_bfloat16_inputs():
    """1001 vectors on one code: bfloat16 would count 1000 (its spacing at 1000 is 8)."""
    quantizer = seqvq.VectorQuantizer(4, 1, codebook_update="ema", ema_decay=0.5, affine={"mode": "ema",
                                                                                           "momentum": 1.0})
    x = torch.randn(1001, 4, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    quantizer(x)
    assert float(quantizer.ema.cluster_size[0, 0]) == 0.5 * 1 + 0.5 * 1001
    expected_mean = x.double().mean(0)
    torch.testing.assert_close(quantizer.affine.embedding_mean[0, 0].double(), expected_mean, rtol=0, atol=1e-6)


@pytest.mark.parametrize("autocast", [False, True])
def test_masked_batch_norm_takes_bfloat16(autocast):
    """The "+BN" layer used on its own (e.g. an encoder's output norm) under AMP: float32 moments, input dtype out."""
    norm, reference = seqvq.quantize.norm.MaskedBatchNorm(8), seqvq.quantize.norm.MaskedBatchNorm(8)
    x = (torch.randn(4, 5, 8, generator=torch.Generator().manual_seed(0)) * 3 + 100).to(torch.bfloat16)
    mask = torch.arange(5).unsqueeze(0) < torch.tensor([5, 3, 1, 4]).unsqueeze(1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = norm(x, mask)
    expected = reference(x.float(), mask)
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected.to(torch.bfloat16))
    assert norm.running_mean.dtype == torch.float32 and torch.equal(norm.running_var, reference.running_var)


@pytest.mark.parametrize("name", ["plain", "stochastic", "gumbel", "residual"])
def test_unmasked_half_precision_input_keeps_its_dtype(name):
    quantizer = make_quantizer(OPTIONS[name])
    x = torch.randn(2, 5, 8, dtype=torch.bfloat16, requires_grad=True)
    result = quantizer(x)
    result.quantized.float().sum().backward()
    assert result.quantized.dtype == x.grad.dtype == torch.bfloat16
