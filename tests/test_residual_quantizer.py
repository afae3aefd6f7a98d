"""Residual VQ: stages on successive residuals, one straight-through estimator, VectorQuantizer's padding rules."""
import copy

import pytest
import torch

from seqvq.quantize.residual import ResidualVectorQuantizer
from helpers import padded_batch

# Every value of every stage option a residual stack supports, each paired with several others.
OPTIONS = [
    dict(codebook_update="gradient", pre_norm=False, num_codebooks=1),
    dict(codebook_update="ema", pre_norm=True, num_codebooks=2),
    dict(codebook_update="gradient", pre_norm=True, num_codebooks=1, affine="learned", kmeans_init=True),
    dict(codebook_update="ema", pre_norm=False, num_codebooks=2, affine="ema", replace_dead_after=2),
    dict(codebook_update="gradient", pre_norm=True, num_codebooks=2, assignment="stochastic", temperature=0.5),
    dict(codebook_update="ema", pre_norm=True, num_codebooks=1, kmeans_init=True, replace_dead_after=1),
]


def option_id(options):
    return "-".join(f"{k}={v}" for k, v in options.items())


@pytest.mark.parametrize("options", OPTIONS, ids=option_id)
def test_padded_batch_equals_the_same_frames_unpadded(options):
    torch.manual_seed(0)
    padded_rvq = ResidualVectorQuantizer(8, 16, 3, **options)
    packed_rvq = copy.deepcopy(padded_rvq)
    x, mask = padded_batch([5, 2, 7], 8)
    x_packed = x[mask].unsqueeze(0).clone()
    x.requires_grad_(True)
    x_packed.requires_grad_(True)
    for _ in range(3):
        padded, packed = padded_rvq(x, mask=mask), packed_rvq(x_packed)
        torch.testing.assert_close(padded.quantized[mask], packed.quantized[0])
        assert torch.equal(padded.codes[mask], packed.codes[0])
        assert (padded.codes[~mask] == -1).all()
        assert torch.equal(padded.quantized[~mask].detach(), x[~mask].detach())
        torch.testing.assert_close(padded.loss, packed.loss)
        for key in padded.metrics:
            torch.testing.assert_close(padded.metrics[key], packed.metrics[key], msg=key)
        (padded.quantized[mask].pow(2).sum() + padded.loss).backward()
        (packed.quantized.pow(2).sum() + packed.loss).backward()
        torch.testing.assert_close(x.grad[mask], x_packed.grad[0])
        for (name, a), b in zip(padded_rvq.state_dict().items(), packed_rvq.state_dict().values()):
            torch.testing.assert_close(a, b, msg=name)
        x.grad = x_packed.grad = None


def test_each_stage_quantizes_what_the_previous_stages_left():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(6, 10, 3).eval()  # eval: the codebooks stay put, so codes decode as used
    reference = copy.deepcopy(rvq.stages)
    x, mask = padded_batch([4, 6], 6)
    result = rvq(x, mask=mask)
    residual, total, loss = x, torch.zeros_like(x), 0.0
    for index, stage in enumerate(reference):
        stage_result = stage(residual, mask=mask)
        assert torch.equal(result.codes[..., index], stage_result.codes)
        residual = residual - stage_result.quantized
        total = total + stage_result.quantized
        loss = loss + stage_result.loss
        torch.testing.assert_close(result.metrics[f"stage{index}/perplexity"], stage_result.metrics["perplexity"])
    torch.testing.assert_close(result.quantized[mask], total[mask])
    torch.testing.assert_close(result.loss, loss)
    torch.testing.assert_close(rvq.codes_to_vectors(result.codes)[mask], result.quantized[mask])
    error = (x[mask] - total[mask]).pow(2).mean()
    torch.testing.assert_close(result.metrics["residual_error"], error)


def test_one_stage_is_a_plain_vector_quantizer():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(4, 8, 1, alpha=5.0, beta=0.9)
    vq = copy.deepcopy(rvq.stages[0])
    x, mask = padded_batch([3, 5], 4)
    a, b = rvq(x, mask=mask), vq(x, mask=mask)
    assert torch.equal(a.codes[..., 0], b.codes)
    torch.testing.assert_close(a.quantized, b.quantized)
    torch.testing.assert_close(a.loss, b.loss)


def test_straight_through_on_the_total_and_every_stage_commitment_reaches_the_encoder():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(4, 8, 3)
    x = torch.randn(2, 5, 4, requires_grad=True)
    upstream = torch.randn(2, 5, 4)
    (rvq(x).quantized * upstream).sum().backward()
    assert torch.equal(x.grad, upstream)  # d output / d x is the identity
    x.grad = None
    result = rvq(x)
    result.losses["commitment"].backward()
    # The sum of all stages' commitment gradients: stage i pulls its residual x - sum_{j<i} q_j toward q_i.
    codes = result.codes
    expected = torch.zeros_like(x)
    residual = x.detach()
    for index, stage in enumerate(rvq.stages):
        q = stage.codes_to_vectors(codes[..., index])
        expected += 2 * (residual - q) / residual.numel()
        residual = residual - q
    torch.testing.assert_close(x.grad, expected)
    assert all(stage.codebook.grad is None for stage in rvq.stages)
    result.losses["codebook"].backward()
    assert all(stage.codebook.grad.abs().sum() > 0 for stage in rvq.stages)


def test_channel_first_and_lengths_match_channel_last_and_mask():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(4, 8, 2, num_codebooks=2).eval()
    first = copy.deepcopy(rvq)
    first.channel_dim = 1
    x, mask = padded_batch([3, 5], 4)
    a = rvq(x, lengths=torch.tensor([3, 5]))
    b = first(x.transpose(1, 2), mask=mask)
    assert a.codes.shape == (2, 5, 2, 2)
    assert torch.equal(a.codes, b.codes)
    torch.testing.assert_close(a.quantized, b.quantized.transpose(1, 2))
    with pytest.raises(ValueError, match="either mask or lengths"):
        rvq(x, mask=mask, lengths=torch.tensor([3, 5]))
    with pytest.raises(ValueError, match="num_quantizers=2"):
        rvq.codes_to_vectors(torch.zeros(3, 2, dtype=torch.long))


@pytest.mark.parametrize("option, message", [
    ({"sync_nu": 0.5}, "does not support sync_nu: the stage outputs are detached"),
    ({"assignment": "gumbel"}, "does not support assignment='gumbel'"),
    ({"distance": "cosine"}, "does not support distance='cosine'"),
    ({"reestimate": {"init_steps": 2}}, "does not support reestimate: stages >= 1 would see zero residuals"),
])
def test_options_meaningless_on_residuals_are_refused(option, message):
    with pytest.raises(ValueError, match=message):
        ResidualVectorQuantizer(4, 8, 2, **option)


RANDOM_OPTIONS = dict(kmeans_init=True, replace_dead_after=1, assignment="stochastic", temperature=0.5, seed=3)


def test_every_stage_draws_its_own_random_numbers_and_stage_0_those_of_a_plain_quantizer():
    """k-means++, replacement and sampling: two stages fed the same data draw differently; stage 0 is seeded as a
    lone VectorQuantizer with the same seed."""
    from seqvq.quantize import VectorQuantizer

    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(4, 8, 2, **RANDOM_OPTIONS)
    lone = VectorQuantizer(4, 8, **RANDOM_OPTIONS)
    generators = [name for name in lone.state_dict() if name.endswith("rng.state")]
    assert generators == ["replacement.rng.state", "sampling_rng.state", "init_rng.state"]
    for name in generators:
        assert torch.equal(rvq.stages[0].state_dict()[name], lone.state_dict()[name]), name
        assert not torch.equal(rvq.stages[0].state_dict()[name], rvq.stages[1].state_dict()[name]), name
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(1)) * 3
    for options in (dict(kmeans_init=True), dict(replace_dead_after=1), dict(assignment="stochastic")):
        first, second = ResidualVectorQuantizer(4, 8, 2, seed=3, **options).stages
        with torch.no_grad():
            second.codebook.copy_(first.codebook)
        for batch in (x, x[:3]):  # k-means++ on the first batch; three vectors leave dead codes to replace
            a, b = first(batch), second(batch)
        assert not torch.equal(first.codebook, second.codebook) or not torch.equal(a.codes, b.codes), options


def test_a_residual_stack_resumes_exactly():
    torch.manual_seed(0)
    straight = ResidualVectorQuantizer(4, 8, 3, quantizer_dropout=0.5, **RANDOM_OPTIONS)
    batches = [padded_batch([5, 3, 4], 4, seed=seed) for seed in range(6)]
    for x, mask in batches[:3]:
        straight(x, mask=mask)
    resumed = ResidualVectorQuantizer(4, 8, 3, quantizer_dropout=0.5, **RANDOM_OPTIONS)
    resumed.load_state_dict(copy.deepcopy(straight.state_dict()))
    for x, mask in batches[3:]:
        a, b = straight(x, mask=mask), resumed(x, mask=mask)
        assert torch.equal(a.codes, b.codes)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
