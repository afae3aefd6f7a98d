"""FSQ's extras (seqvq/quantize/fsq.py, residual.py): symmetric bounds, noise substitution while training, and
residual FSQ / LFQ stacks through ResidualVectorQuantizer — values, the papers' properties, padded == unpadded,
exact resume and the refusals."""
import copy

import pytest
import torch

from seqvq import FiniteScalarQuantizer, LookupFreeQuantizer, ResidualVectorQuantizer
from seqvq.errors import UserError
from seqvq.quantize import quantizer_section
from helpers import padded_batch


# ------------------------------------------------------------------------------------------- symmetric bounds
def test_symmetric_levels_are_symmetric_about_zero_and_span_minus_one_to_one():
    """Parker et al. 2024 §3.2: level k of L is 2k/(L - 1) - 1, so even L has no level at 0 (FSQ's even levels
    -L/2 .. L/2 - 1 are not symmetric)."""
    levels = [4, 5, 2, 6]
    symmetric, plain = FiniteScalarQuantizer(4, levels, symmetric=True), FiniteScalarQuantizer(4, levels)
    codebook = symmetric.codes_to_vectors(torch.arange(symmetric.codebook_size))
    for channel, level in enumerate(levels):
        values = codebook[:, channel].unique()
        torch.testing.assert_close(values, torch.linspace(-1, 1, level))
        torch.testing.assert_close(values, -values.flip(0))
    torch.testing.assert_close(codebook.mean(dim=0), torch.zeros(4))
    assert plain.codes_to_vectors(torch.arange(plain.codebook_size))[:, 0].unique().tolist() == [-1.0, -0.5, 0.0, 0.5]
    result = symmetric(torch.randn(1, 20000, 4, generator=torch.Generator().manual_seed(0)))
    assert result.codes.unique().numel() == symmetric.codebook_size  # every code reachable
    assert torch.equal(symmetric.codes_to_vectors(result.codes), result.quantized)


def test_symmetric_value_and_hand_derived_gradient():
    quantizer = FiniteScalarQuantizer(2, [4, 3], symmetric=True)
    z = torch.tensor([[[0.2, -0.9]]], requires_grad=True)
    result = quantizer(z)
    # L = 4: tanh(0.2) = 0.197 -> level index 1.5 (1 + 0.197) = 1.80 rounds to 2 -> 2 * 2/3 - 1 = 1/3.
    # L = 3: tanh(-0.9) = -0.716 -> index (1 - 0.716) = 0.28 rounds to 0 -> -1.
    torch.testing.assert_close(result.quantized, torch.tensor([[[1 / 3, -1.0]]]))
    assert int(result.codes) == 2 + 0 * 4
    result.quantized.sum().backward()
    torch.testing.assert_close(z.grad, 1 - torch.tanh(z.detach()) ** 2)  # straight through tanh(z)


def test_symmetric_odd_levels_are_fsqs_levels():
    x = torch.randn(1, 200, 3) * 2
    symmetric, plain = FiniteScalarQuantizer(3, [3, 5, 7], symmetric=True), FiniteScalarQuantizer(3, [3, 5, 7])
    assert (symmetric(x).codes != plain(x).codes).float().mean() < 0.01  # FSQ's 1 + eps widening aside
    codes = torch.arange(plain.codebook_size)
    assert torch.equal(symmetric.codes_to_vectors(codes), plain.codes_to_vectors(codes))


# ------------------------------------------------------------------------------------------- noise substitution
@pytest.mark.parametrize("symmetric", [False, True])
def test_noise_is_uniform_over_one_bin_while_training_and_absent_in_evaluation(symmetric):
    """Ballé et al. 2017: training replaces rounding by additive uniform noise of one bin's width; with p = 1 every
    vector is noised: the output minus the bounded input is U(-w/2, w/2), w the bin width (mean 0, mean |noise| =
    w/4, variance w^2/12); gradients as without noise; evaluation is FSQ, deterministic."""
    levels = [4, 5, 8]
    quantizer = FiniteScalarQuantizer(3, levels, symmetric=symmetric, noise_dropout=1.0, seed=1)
    z = torch.randn(1, 40000, 3).requires_grad_()
    result = quantizer(z)
    continuous = quantizer.bound(z.detach()) / quantizer.centre(torch.float32)
    width = 1 / quantizer.centre(torch.float32)  # one level step at the output
    noise = (result.quantized.detach() - continuous)[0]
    assert (noise.abs() <= width / 2 + 1e-6).all()
    torch.testing.assert_close(noise.mean(dim=0), torch.zeros(3), atol=0.01 * width.max(), rtol=0)
    torch.testing.assert_close(noise.abs().mean(dim=0), width / 4, rtol=0.02, atol=0)
    torch.testing.assert_close(noise.pow(2).mean(dim=0), width**2 / 12, rtol=0.03, atol=0)
    result.quantized.sum().backward()
    reference = z.detach().requires_grad_()
    FiniteScalarQuantizer(3, levels, symmetric=symmetric)(reference).quantized.sum().backward()
    assert torch.equal(z.grad, reference.grad)

    quantizer.eval()
    state = copy.deepcopy(quantizer.state_dict())
    first, second = quantizer(z[:, :500]), quantizer(z[:, :500])
    plain = FiniteScalarQuantizer(3, levels, symmetric=symmetric).eval()(z[:, :500])
    assert torch.equal(first.quantized, second.quantized) and torch.equal(first.quantized, plain.quantized)
    for key, value in quantizer.state_dict().items():
        assert torch.equal(value, state[key]), key  # evaluation draws nothing


def test_noise_dropout_noises_that_fraction_of_vectors_and_keeps_their_codes():
    quantizer = FiniteScalarQuantizer(2, [5, 5], noise_dropout=0.3, seed=2)
    z = torch.randn(1, 20000, 2)
    result = quantizer(z)
    on_grid = (quantizer.codes_to_vectors(result.codes) == result.quantized).all(dim=-1)
    assert abs(float((~on_grid).float().mean()) - 0.3) < 0.02
    assert torch.equal(result.codes, quantizer.eval()(z).codes)  # a noised vector keeps its nearest level's code


def test_noise_padded_equals_unpadded_and_resumes_exactly():
    def make():
        return FiniteScalarQuantizer(6, [8, 5, 4], noise_dropout=0.5, seed=4, pre_norm=True)

    torch.manual_seed(0)
    padded_quantizer = make()
    packed_quantizer = copy.deepcopy(padded_quantizer)
    x, mask = padded_batch([5, 2, 7], 6)
    x_packed = x[mask].unsqueeze(0).clone().requires_grad_()
    x.requires_grad_()
    for _ in range(3):  # each pass draws new noise, the same for the same valid vectors
        padded, packed = padded_quantizer(x, mask=mask), packed_quantizer(x_packed)
        torch.testing.assert_close(padded.quantized[mask], packed.quantized[0])
        assert torch.equal(padded.codes[mask], packed.codes[0]) and (padded.codes[~mask] == -1).all()
        assert torch.equal(padded.quantized[~mask].detach(), x[~mask].detach())
        padded.quantized[mask].pow(2).sum().backward()
        packed.quantized.pow(2).sum().backward()
        torch.testing.assert_close(x.grad[mask], x_packed.grad[0])
        x.grad = x_packed.grad = None

    optimizer = torch.optim.SGD(padded_quantizer.parameters(), lr=0.1)
    batches = [padded_batch([5, 3, 4], 6, seed=seed) for seed in range(4)]
    for batch, batch_mask in batches[:2]:
        optimizer.zero_grad()
        padded_quantizer(batch, mask=batch_mask).quantized.pow(2).sum().backward()
        optimizer.step()
    torch.manual_seed(1)
    resumed = make()
    resumed.load_state_dict(copy.deepcopy(padded_quantizer.state_dict()))
    for batch, batch_mask in batches[2:]:
        straight, again = padded_quantizer(batch, mask=batch_mask), resumed(batch, mask=batch_mask)
        assert torch.equal(straight.quantized, again.quantized)


def test_fsq_extras_refusals():
    with pytest.raises(ValueError, match="noise_dropout must be in"):
        FiniteScalarQuantizer(3, [4, 4, 4], noise_dropout=1.5)
    with pytest.raises(ValueError, match="eps.*symmetric=True.*drop eps or symmetric"):
        FiniteScalarQuantizer(3, [4, 4, 4], symmetric=True, eps=1e-2)
    assert FiniteScalarQuantizer(3, [4, 4, 4]).eps == 1e-3  # FSQ's default widening
    section = quantizer_section()
    checked = section.check({"kind": "fsq", "levels": [4, 4], "symmetric": True, "noise_dropout": 0.5}, "q")
    assert checked["symmetric"] is True and checked["noise_dropout"] == 0.5


# ------------------------------------------------------------------------------------------- residual FSQ / LFQ
FSQ_STAGE = {"kind": "fsq", "levels": [5, 5, 5, 5]}


@pytest.mark.parametrize("stage", [FSQ_STAGE, {"kind": "fsq", "levels": [4, 4, 4, 4], "symmetric": True},
                                   {"kind": "lfq", "bits": 4}], ids=["fsq", "fsq_symmetric", "lfq"])
def test_residual_error_decreases_over_the_stages_on_random_data(stage):
    """Each stage codes what the previous ones left, its input scaled up by the stage's scale (levels - 1)^i (FSQ)
    or 2^i (LFQ): the mean squared error of the first k stages' sum falls with every stage."""
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(4, num_quantizers=4, stage=stage).eval()
    x = torch.randn(1, 5000, 4) * 0.5
    result = rvq(x)
    errors = [float((rvq.codes_to_vectors(result.codes, num_quantizers=k) - x).pow(2).mean()) for k in range(1, 5)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < errors[0] / 4, errors
    torch.testing.assert_close(rvq.codes_to_vectors(result.codes), result.quantized)
    torch.testing.assert_close(result.metrics["residual_error"], torch.tensor(errors[-1]))


def test_residual_fsq_stage_i_quantizes_the_residual_times_levels_minus_one_to_the_i():
    rvq = ResidualVectorQuantizer(2, num_quantizers=3, stage={"kind": "fsq", "levels": [5, 3]}).eval()
    single = FiniteScalarQuantizer(2, [5, 3]).eval()
    x = torch.randn(1, 300, 2)
    result = rvq(x)
    scale = torch.tensor([4.0, 2.0])
    residual = x
    for stage in range(3):
        expected = single(residual * scale**stage)
        assert torch.equal(result.codes[..., stage], expected.codes), stage
        residual = residual - expected.quantized / scale**stage


def test_residual_codebook_free_stages_pad_and_project():
    """A residual stack of FSQ stages with noise on a wider input (one projection in and out of the quantized
    width): padded == unpadded, state included."""
    torch.manual_seed(0)
    stage = {"kind": "fsq", "levels": [8, 5, 5], "noise_dropout": 0.5, "symmetric": True}
    padded_rvq = ResidualVectorQuantizer(6, num_quantizers=3, stage=stage, pre_norm=True)
    packed_rvq = copy.deepcopy(padded_rvq)
    x, mask = padded_batch([5, 2, 7], 6)
    x_packed = x[mask].unsqueeze(0).clone().requires_grad_()
    x.requires_grad_()
    optimizers = [torch.optim.SGD(q.parameters(), lr=0.1) for q in (padded_rvq, packed_rvq)]
    for _ in range(3):
        padded, packed = padded_rvq(x, mask=mask), packed_rvq(x_packed)
        assert padded.codes.shape == (3, 7, 3) and (padded.codes[~mask] == -1).all()
        torch.testing.assert_close(padded.quantized[mask], packed.quantized[0])
        assert torch.equal(padded.codes[mask], packed.codes[0])
        assert torch.equal(padded.quantized[~mask].detach(), x[~mask].detach())
        for key in padded.metrics:
            torch.testing.assert_close(padded.metrics[key], packed.metrics[key], msg=key)
        for optimizer in optimizers:
            optimizer.zero_grad()
        padded.quantized[mask].pow(2).sum().backward()
        packed.quantized.pow(2).sum().backward()
        # Stage 2 sees the residual x 7^2: float32 rounding of BatchNorm's sums in another order grows to ~1e-5.
        torch.testing.assert_close(x.grad[mask], x_packed.grad[0], rtol=1e-3, atol=1e-4)
        assert (x.grad[~mask] == 0).all()
        for optimizer in optimizers:
            optimizer.step()
        for (name, a), b in zip(padded_rvq.state_dict().items(), packed_rvq.state_dict().values()):
            torch.testing.assert_close(a, b, msg=name)
        x.grad = x_packed.grad = None
    assert padded_rvq.project_to_width.weight.shape == (3, 6)


def test_residual_lfq_stage_losses_add_up_and_reach_the_input():
    torch.manual_seed(0)
    stage = {"kind": "lfq", "bits": 3, "entropy_regularizer": {"weight": 0.5, "temperature": 0.5}}
    rvq = ResidualVectorQuantizer(3, num_quantizers=2, stage=stage)
    x = torch.randn(2, 6, 3, requires_grad=True)
    result = rvq(x, lengths=torch.tensor([6, 4]))
    assert set(result.losses) == {"commitment", "entropy"}
    torch.testing.assert_close(result.loss, 0.25 * result.losses["commitment"] + 0.5 * result.losses["entropy"])
    gradient, = torch.autograd.grad(result.losses["entropy"], x)  # through the residual chain
    assert gradient[0].abs().sum() > 0 and (gradient[1, 4:] == 0).all()


def test_residual_codebook_free_stack_resumes_exactly():
    stage = {"kind": "fsq", "levels": [5, 4], "noise_dropout": 0.5}
    def make():
        return ResidualVectorQuantizer(4, num_quantizers=3, stage=stage, quantizer_dropout=0.5, seed=2)

    straight = make()
    batches = [padded_batch([5, 3, 4], 4, seed=seed) for seed in range(6)]
    for x, mask in batches[:3]:
        straight(x, mask=mask)
    resumed = make()
    resumed.load_state_dict(copy.deepcopy(straight.state_dict()))
    for x, mask in batches[3:]:
        a, b = straight(x, mask=mask), resumed(x, mask=mask)
        assert torch.equal(a.codes, b.codes) and torch.equal(a.quantized, b.quantized)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    seeds = [int(stage.noise_rng.state.sum()) for stage in straight.stages]
    assert len(set(seeds)) == 3  # every stage draws its own noise


@pytest.mark.parametrize("options, message", [
    (dict(codebook_size=8, stage=FSQ_STAGE), "codebook_size.*stage kind 'fsq'"),
    (dict(code_dim=2, stage=FSQ_STAGE), "code_dim.*stage kind 'fsq'"),
    (dict(kmeans_init=True, stage=FSQ_STAGE), "kmeans_init.*stage kind 'fsq'"),
    (dict(stage={"kind": "bsq", "bits": 4}), "stage kind 'bsq'.*norms"),
    (dict(stage={"kind": "vq", "codebook_size": 8}), "stage kind 'vq'.*codebook_size"),
    (dict(stage={"kind": "fsq", "levels": [5, 5], "pre_norm": True}), "stage option 'pre_norm'.*the stack's"),
    (dict(stage={"levels": [5, 5]}), "stage needs a kind"),
    (dict(stage={"kind": "fsq"}), "stage kind 'fsq' needs 'levels'"),
    (dict(), "codebook_size"),
])
def test_residual_stage_refusals_name_both_options(options, message):
    with pytest.raises(ValueError, match=message):
        ResidualVectorQuantizer(4, num_quantizers=2, **options)


def test_residual_stage_in_the_config_schema():
    section = quantizer_section()
    config = {"kind": "residual", "num_quantizers": 3, "quantizer_dropout": 0.5,
              "stage": {"kind": "fsq", "levels": [5, 5], "symmetric": True}}
    assert section.check(config, "q") == config
    with pytest.raises(UserError, match="did you mean 'q.stage.levels'"):
        section.check({"kind": "residual", "num_quantizers": 2, "stage": {"kind": "fsq", "levls": [5]}}, "q")
    with pytest.raises(UserError, match="q.stage.pre_norm: unknown key"):
        section.check({"kind": "residual", "num_quantizers": 2, "stage": {"kind": "lfq", "pre_norm": True}}, "q")
    assert isinstance(ResidualVectorQuantizer(4, num_quantizers=2, stage={"kind": "lfq", "bits": 4}).stages[1],
                      LookupFreeQuantizer)
