"""FSQ, BSQ and LFQ (seqvq/quantize/fsq.py, bsq.py, lfq.py): hand-derived gradients, codes and decoding, padded ==
unpadded, channel-first layouts, state_dict round trip, BSQ's entropy regularizer, mixed precision (residual FSQ /
LFQ stacks included), and the config constructor."""
import math

import pytest
import torch

import seqvq
from seqvq import BinarySphericalQuantizer, FiniteScalarQuantizer, LookupFreeQuantizer, ResidualVectorQuantizer
from helpers import entropy_spreads_a_collapsed_batch


def test_fsq_values_codes_and_hand_derived_gradient():
    quantizer = FiniteScalarQuantizer(2, [5, 4])
    h = torch.tensor([[[0.3, 0.0]]], requires_grad=True)
    result = quantizer(h)
    half = 2 * (1 + quantizer.eps)  # (L - 1)(1 - eps) / 2 for L = 5
    first = math.tanh(0.3) * half  # 0.58 -> rounds to 1 -> 1 / floor(5/2)
    shift = math.atanh(0.5 / (1.5 * (1 + quantizer.eps)))  # even L = 4: offset 0.5
    second = math.tanh(shift) * 1.5 * (1 + quantizer.eps) - 0.5  # 0 -> rounds to 0
    assert round(first) == 1 and round(second) == 0
    torch.testing.assert_close(result.quantized, torch.tensor([[[0.5, 0.0]]]))
    assert int(result.codes) == (1 + 2) + (0 + 2) * 5  # mixed radix: digit_0 + digit_1 * L_0
    result.quantized.sum().backward()
    expected = [half * (1 - math.tanh(0.3) ** 2) / 2,
                1.5 * (1 + quantizer.eps) * (1 - math.tanh(shift) ** 2) / 2]
    torch.testing.assert_close(h.grad, torch.tensor([[expected]]))
    torch.testing.assert_close(quantizer.codes_to_vectors(result.codes), result.quantized.detach())


def test_fsq_every_code_is_reachable_and_decodes():
    quantizer = FiniteScalarQuantizer(3, [3, 4, 2])
    grid = torch.cartesian_prod(*[torch.linspace(-6, 6, 25)] * 3)
    result = quantizer(grid.unsqueeze(0))
    assert result.codes.unique().numel() == quantizer.codebook_size == 24
    torch.testing.assert_close(quantizer.codes_to_vectors(result.codes), result.quantized)
    assert int(result.metrics["active_codes"]) == 24


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fsq_saturated_inputs_give_codes_in_range_that_decode_to_the_output(dtype):
    """Every level count up to 4096: saturated inputs reach the outer levels, never one past them (the bound's
    1 + eps widening alone would round there from L = 1001 on, from 511 on in bfloat16)."""
    x = torch.tensor([-float("inf"), float("inf"), -1e30, 1e30, -40.0, 40.0, -3.0, 0.0, 0.3, 3.0], dtype=dtype)
    for level in range(2, 4097):
        quantizer = FiniteScalarQuantizer(1, [level])
        result = quantizer(x.view(1, -1, 1))
        assert int(result.codes.min()) == 0 and int(result.codes.max()) == level - 1, level
        decoded = quantizer.codes_to_vectors(result.codes).to(dtype)
        assert torch.equal(decoded, result.quantized.detach()), level
    corners = torch.cartesian_prod(*[torch.tensor([-float("inf"), float("inf")])] * 3)
    for levels in ([8, 1024], [1024, 1024, 1024], [4096, 3, 2049], [2**20, 2**20, 2**20]):
        quantizer = FiniteScalarQuantizer(len(levels), levels)
        result = quantizer(corners[:, : len(levels)].to(dtype).unsqueeze(0))
        assert int(result.codes.min()) == 0 and int(result.codes.max()) == quantizer.codebook_size - 1, levels
        decoded = quantizer.codes_to_vectors(result.codes).to(dtype)
        assert torch.equal(decoded, result.quantized.detach()), levels


@pytest.mark.parametrize("make", [lambda: FiniteScalarQuantizer(6, [8, 5, 5], pre_norm=True),
                                  lambda: FiniteScalarQuantizer(3, [1024, 600, 7]),
                                  lambda: BinarySphericalQuantizer(6, 5, entropy_regularizer={"weight": 0.5}),
                                  lambda: BinarySphericalQuantizer(6, 6, pre_norm=True),
                                  lambda: LookupFreeQuantizer(6, 5, entropy_regularizer={"weight": 0.5}),
                                  lambda: LookupFreeQuantizer(6, 6, pre_norm=True, entropy_regularizer={
                                      "weight": 0.5, "temperature": 0.3}, codebook_entropy="per_bit"),
                                  lambda: FiniteScalarQuantizer(6, [8, 5, 4], symmetric=True),
                                  lambda: FiniteScalarQuantizer(6, [8, 5, 4], noise_dropout=0.5, seed=3),
                                  lambda: ResidualVectorQuantizer(6, num_quantizers=3, stage={
                                      "kind": "fsq", "levels": [8, 5, 5], "noise_dropout": 0.5, "symmetric": True}),
                                  lambda: ResidualVectorQuantizer(6, num_quantizers=2, pre_norm=True, stage={
                                      "kind": "lfq", "bits": 4, "entropy_regularizer": {"weight": 0.5}})],
                         ids=["fsq_bn", "fsq_wide_levels", "bsq_entropy", "bsq_bn", "lfq_entropy", "lfq_bn_per_bit",
                              "fsq_symmetric", "fsq_noise", "residual_fsq", "residual_lfq"])
def test_bfloat16_autocast_computes_what_a_float32_copy_does(make):
    """Like VectorQuantizer, the codebook-free quantizers compute in float32 whatever autocast would do, and
    return the output in the input's dtype: the same codes, losses and parameters as a float32 copy, step after
    step."""
    torch.manual_seed(0)
    autocast, reference = make(), make()
    reference.load_state_dict(autocast.state_dict())
    optimizers = [torch.optim.SGD(q.parameters(), lr=0.5) if list(q.parameters()) else None
                  for q in (autocast, reference)]
    generator = torch.Generator().manual_seed(1)
    for step in range(4):
        x = (torch.randn(3, 7, autocast.dim, generator=generator) * 2).to(torch.bfloat16)
        lengths = torch.tensor([7, 3, 5])
        weights = torch.randn(3, 7, autocast.dim, generator=generator).to(torch.bfloat16).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = autocast(x.clone().requires_grad_(), lengths=lengths)
        full = reference(x.float().requires_grad_(), lengths=lengths)
        assert low.quantized.dtype == torch.bfloat16
        assert torch.equal(low.codes, full.codes), step
        assert torch.equal(low.quantized, full.quantized.to(torch.bfloat16)), step
        assert torch.equal(low.loss, full.loss), step
        for result, optimizer in zip((low, full), optimizers):
            if optimizer is not None:
                optimizer.zero_grad()
                (result.loss + (result.quantized.float() * weights).sum()).backward()
                optimizer.step()
        for (key, a), b in zip(autocast.state_dict().items(), reference.state_dict().values()):
            assert torch.equal(a, b), (key, step)


def test_bsq_values_codes_and_hand_derived_gradient():
    quantizer = BinarySphericalQuantizer(2, 2, commitment=0.0)
    h = torch.tensor([[[3.0, -4.0]]], requires_grad=True)
    result = quantizer(h)
    torch.testing.assert_close(result.quantized, torch.tensor([[[1.0, -1.0]]]) / math.sqrt(2))
    assert int(result.codes) == 1  # bit 0 set (positive), bit 1 clear
    (result.quantized * torch.tensor([1.0, 0.0])).sum().backward()
    # d u / d h = (I - u u^T) / ||h||, u = (0.6, -0.8): g = (1, 0) -> ((1 - 0.36), 0.48) / 5.
    torch.testing.assert_close(h.grad, torch.tensor([[[0.128, 0.096]]]))
    torch.testing.assert_close(quantizer.codes_to_vectors(result.codes), result.quantized.detach())


def test_bsq_commitment_loss():
    quantizer = BinarySphericalQuantizer(2, 2, commitment=0.5)
    result = quantizer(torch.tensor([[[3.0, -4.0]]]))
    u, q = torch.tensor([0.6, -0.8]), torch.tensor([1.0, -1.0]) / math.sqrt(2)
    torch.testing.assert_close(result.losses["commitment"], (u - q).pow(2).mean())
    torch.testing.assert_close(result.loss, 0.5 * result.losses["commitment"])


def test_bsq_entropy_by_hand_for_two_bits_and_two_vectors():
    """The soft assignment written out over the four codes: softmax(-||u - c||^2 / t) (module docstring)."""
    quantizer = BinarySphericalQuantizer(2, 2, commitment=0.0,
                                         entropy_regularizer={"weight": 2.0, "gamma": 0.5, "temperature": 0.5})
    result = quantizer(torch.tensor([[[3.0, -4.0], [0.0, 2.0]]]))
    corners = [(a / math.sqrt(2), b / math.sqrt(2)) for a in (1, -1) for b in (1, -1)]

    def soft_assignment(u):
        weights = [math.exp(-((u[0] - c[0]) ** 2 + (u[1] - c[1]) ** 2) / 0.5) for c in corners]
        return [w / sum(weights) for w in weights]

    def entropy(probabilities):
        return -sum(p * math.log(p) for p in probabilities if p > 0)

    first, second = soft_assignment((0.6, -0.8)), soft_assignment((0.0, 1.0))
    per_sample = (entropy(first) + entropy(second)) / 2  # exact: the full 4-code entropies
    mean = [(a + b) / 2 for a, b in zip(first, second)]
    bit0, bit1 = mean[0] + mean[1], mean[0] + mean[2]  # marginals of the mean: P(bit 0 = +), P(bit 1 = +)
    codebook = entropy([bit0, 1 - bit0]) + entropy([bit1, 1 - bit1])  # eq. 8: sum of the per-bit entropies
    assert codebook >= entropy(mean)  # the approximation bounds the exact codebook entropy from above
    torch.testing.assert_close(result.losses["entropy"], torch.tensor(per_sample - 0.5 * codebook))
    torch.testing.assert_close(result.loss, 2.0 * result.losses["entropy"])


def test_bsq_entropy_ignores_padding_and_its_gradient_reaches_the_input():
    torch.manual_seed(0)
    quantizer = BinarySphericalQuantizer(6, 4, entropy_regularizer={"weight": 1.0, "gamma": 2.0})
    x = torch.randn(3, 7, 6)
    lengths = torch.tensor([7, 3, 5])
    mask = torch.arange(7) < lengths.unsqueeze(1)
    garbage = x.clone()
    garbage[~mask] = 1e6
    garbage.requires_grad_()
    padded = quantizer(garbage, lengths=lengths)
    packed = quantizer(x[mask].unsqueeze(0))
    torch.testing.assert_close(padded.losses["entropy"], packed.losses["entropy"])
    torch.testing.assert_close(padded.loss, packed.loss)
    padded.losses["entropy"].backward()
    assert (garbage.grad[~mask] == 0).all() and (garbage.grad[mask].abs().sum(dim=-1) > 0).all()

    regularized = BinarySphericalQuantizer(3, 3, entropy_regularizer={"gamma": 2.0, "temperature": 0.7})
    h = torch.randn(1, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h: regularized(h).losses["entropy"], h)


def test_bsq_without_entropy_keeps_the_old_loss():
    torch.manual_seed(0)
    x, lengths = torch.randn(2, 5, 6), torch.tensor([5, 2])
    plain = BinarySphericalQuantizer(6, 4, commitment=0.5)
    result = plain(x, lengths=lengths)
    assert set(result.losses) == {"commitment"}
    assert torch.equal(result.loss, 0.5 * result.losses["commitment"])
    off = BinarySphericalQuantizer(6, 4, commitment=0.5, entropy_regularizer={"weight": 0.0})
    off.load_state_dict(plain.state_dict())
    weightless = off(x, lengths=lengths)
    assert torch.equal(weightless.loss, result.loss) and weightless.losses["entropy"] != 0
    off.eval()  # a training loss: evaluation passes neither compute nor add it
    assert set(off(x, lengths=lengths).losses) == {"commitment"}
    with pytest.raises(ValueError, match="takes 'weight', 'gamma' and 'temperature'"):
        BinarySphericalQuantizer(6, 4, entropy_regularizer={"tau": 1.0})
    with pytest.raises(ValueError, match="temperature > 0"):
        BinarySphericalQuantizer(6, 4, entropy_regularizer={"temperature": 0.0})


def test_bsq_entropy_spreads_a_collapsed_batch():
    entropy_spreads_a_collapsed_batch(BinarySphericalQuantizer, temperature=0.5)


@pytest.mark.parametrize("make", [lambda: FiniteScalarQuantizer(6, [8, 5, 5]),
                                  lambda: FiniteScalarQuantizer(6, [8, 5, 5], pre_norm=True),
                                  lambda: BinarySphericalQuantizer(6, 5, pre_norm=True),
                                  lambda: BinarySphericalQuantizer(6, 5, entropy_regularizer={"weight": 0.5}),
                                  lambda: LookupFreeQuantizer(6, 5, entropy_regularizer={"weight": 0.5}),
                                  lambda: LookupFreeQuantizer(6, 4, pre_norm=True, entropy_regularizer={
                                      "weight": 0.5, "temperature": 0.3}, codebook_entropy="per_bit"),
                                  lambda: FiniteScalarQuantizer(6, [8, 5, 4], symmetric=True, pre_norm=True)],
                         ids=["fsq", "fsq_bn", "bsq_bn", "bsq_entropy", "lfq_entropy", "lfq_bn_per_bit",
                              "fsq_symmetric_bn"])
def test_padded_equals_unpadded_channel_first_and_resume(make):
    torch.manual_seed(0)
    quantizer = make()
    x = torch.randn(3, 7, 6)
    lengths = torch.tensor([7, 3, 5])
    padded = quantizer(x, lengths=lengths)
    mask = torch.arange(7) < lengths.unsqueeze(1)
    assert (padded.codes[~mask] == -1).all()
    assert torch.equal(padded.quantized[~mask], x[~mask])  # padding passes through (BatchNorm or not)
    packed = quantizer(x[mask].unsqueeze(0))
    torch.testing.assert_close(padded.quantized[mask], packed.quantized[0])
    assert torch.equal(padded.codes[mask], packed.codes[0])
    torch.testing.assert_close(padded.loss, packed.loss)
    assert torch.equal(padded.metrics["perplexity"], packed.metrics["perplexity"])
    assert int(padded.metrics["active_codes"]) == packed.codes.unique().numel()
    garbage = x.clone()
    garbage[~mask] = 1e6
    torch.testing.assert_close(quantizer(garbage, mask=mask).quantized[mask], padded.quantized[mask])

    channel_first = make()
    channel_first.channel_dim = 1
    channel_first.load_state_dict(quantizer.state_dict())
    result = channel_first(x.transpose(1, 2), lengths=lengths)
    torch.testing.assert_close(result.quantized.transpose(1, 2), padded.quantized)

    # One optimizer step, a state_dict round trip into a fresh module, then the same next step.
    optimizer = torch.optim.SGD(quantizer.parameters(), lr=0.1, momentum=0.9)
    for step in range(2):
        optimizer.zero_grad()
        out = quantizer(x, lengths=lengths)
        (out.quantized.pow(2).sum() + out.loss).backward()
        optimizer.step()
    torch.manual_seed(1)
    resumed = make()
    resumed.load_state_dict(quantizer.state_dict())
    assert torch.equal(resumed(x, lengths=lengths).quantized, quantizer(x, lengths=lengths).quantized)


def test_config_constructor_and_refusals():
    assert isinstance(seqvq.build_quantizer(4, kind="fsq", levels=[8, 8]), FiniteScalarQuantizer)
    assert isinstance(seqvq.build_quantizer(4, kind="bsq", bits=4), BinarySphericalQuantizer)
    assert isinstance(seqvq.build_quantizer(4, codebook_size=8), seqvq.VectorQuantizer)
    with pytest.raises(ValueError, match="kind must be one of"):
        seqvq.build_quantizer(4, kind="gfq")
    with pytest.raises(ValueError, match="levels must be"):
        FiniteScalarQuantizer(4, [8, 1])
    with pytest.raises(ValueError, match="do not fit int64"):
        FiniteScalarQuantizer(4, [2**16] * 4)
    with pytest.raises(ValueError, match="bits must be in 1..62"):
        BinarySphericalQuantizer(4, 63)


def test_modern_recipe_configs_build_and_run(one_thread):
    """recipes/wsj/conf/modern_*.yaml each build their model and run a forward pass."""
    from pathlib import Path

    from seqvq.models.deepspeech2 import DeepSpeech2CTC
    from seqvq.train.config import load_config

    paths = sorted(Path(__file__).parent.parent.glob("recipes/wsj/conf/modern_*.yaml"))
    assert len(paths) == 9
    for path in paths:
        model = DeepSpeech2CTC(input_dim=243, num_classes=40, **load_config(path)["model"])
        out = model(torch.randn(2, 30, 243), torch.tensor([30, 21]))
        assert torch.isfinite(out.log_probs).all(), path.name
        assert (out.codes[1, out.lengths[1]:] == -1).all() and (out.codes[0] >= 0).all(), path.name
