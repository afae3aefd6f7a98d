"""Behaviour of the VectorQuantizer core: masking, exact search, EMA, straight-through, state."""
import copy
import itertools
import re

import pytest
import torch

import seqvq
from seqvq.quantize.bridge import CodebookBridge
from seqvq.quantize import (AffineOptions, LinearCodebookMap, ReestimationOptions, TemperatureAnneal,
                            UsageRegularizerOptions, nearest_codes)
from seqvq.quantize.core import PassKind, perplexity, quantizer_passes
from helpers import padded_batch

CORE_OPTIONS = [
    dict(distance=distance, codebook_update=update, pre_norm=pre_norm, num_codebooks=groups)
    for distance, update, pre_norm, groups in itertools.product(("l2", "cosine"), ("gradient", "ema"),
                                                                (False, True), (1, 2))
]


def option_id(options):
    return "-".join(f"{k}={v}" for k, v in options.items())


@pytest.mark.parametrize("options", CORE_OPTIONS, ids=option_id)
def test_padded_batch_equals_the_same_frames_unpadded(options):
    torch.manual_seed(0)
    padded_vq = seqvq.VectorQuantizer(8, 16, **options)
    packed_vq = copy.deepcopy(padded_vq)
    x, mask = padded_batch([5, 2, 7], 8)
    x_packed = x[mask].unsqueeze(0).clone()
    x.requires_grad_(True)
    x_packed.requires_grad_(True)
    for _ in range(3):  # several steps, so state updated from padded input feeds the next step
        padded, packed = padded_vq(x, mask=mask), packed_vq(x_packed)
        torch.testing.assert_close(padded.quantized[mask], packed.quantized[0])
        assert torch.equal(padded.codes[mask], packed.codes[0])
        assert (padded.codes[~mask] == -1).all()
        assert torch.equal(padded.quantized[~mask].detach(), x[~mask].detach())
        torch.testing.assert_close(padded.loss, packed.loss)
        for key in padded.losses:
            torch.testing.assert_close(padded.losses[key], packed.losses[key])
        for key in padded.metrics:
            torch.testing.assert_close(padded.metrics[key], packed.metrics[key])
        (padded.quantized.pow(2).sum() * 0 + padded.quantized[mask].pow(2).sum() + padded.loss).backward()
        (packed.quantized.pow(2).sum() + packed.loss).backward()
        torch.testing.assert_close(x.grad[mask], x_packed.grad[0])
        for (name, a), b in zip(padded_vq.state_dict().items(), packed_vq.state_dict().values()):
            torch.testing.assert_close(a, b, msg=name)
        for a, b in zip(padded_vq.parameters(), packed_vq.parameters()):
            if a.grad is not None:
                torch.testing.assert_close(a.grad, b.grad)
        x.grad = x_packed.grad = None


def test_lengths_and_mask_are_the_same_thing():
    vq = seqvq.VectorQuantizer(4, 8).eval()
    x, mask = padded_batch([3, 1], 4)
    a, b = vq(x, mask=mask), vq(x, lengths=torch.tensor([3, 1]))
    assert torch.equal(a.codes, b.codes)
    torch.testing.assert_close(a.quantized, b.quantized)


@pytest.mark.parametrize("offset", [0.0, 10.0, 50.0])
def test_chunked_argmin_equals_float64_brute_force(offset):
    generator = torch.Generator().manual_seed(int(offset))
    z = torch.randn(3000, 32, generator=generator) + offset
    codes = torch.randn(700, 32, generator=generator) + offset
    brute = torch.cdist(z.double(), codes.double()).argmin(dim=1)
    for kwargs in (dict(), dict(block_elements=1000, code_chunk=128), dict(low_precision=True)):
        indices, distances = nearest_codes(z, codes, **kwargs)
        assert torch.equal(indices, brute), kwargs
        expected = (z.double() - codes.double()[brute]).pow(2).sum(1)
        torch.testing.assert_close(distances.double(), expected, rtol=1e-4, atol=1e-3)


def test_cosine_distance_picks_the_most_similar_code():
    torch.manual_seed(1)
    vq = seqvq.VectorQuantizer(16, 32, distance="cosine").eval()
    z = torch.randn(1, 50, 16) * 7  # the scale must not matter
    similarity = torch.nn.functional.normalize(z[0], dim=-1) @ torch.nn.functional.normalize(vq.codebook[0], dim=-1).T
    assert torch.equal(vq(z).codes[0], similarity.argmax(dim=1))


def test_ema_with_constant_counts_is_sgd_with_the_rate_of_proposition_1():
    """Łańcucki Prop. 1: EMA (N_i = 1) == SGD on ||sg e - w||^2 with lr (1 - gamma) / 2."""
    gamma, size, dim = 0.9, 6, 3
    torch.manual_seed(2)
    ema_vq = seqvq.VectorQuantizer(dim, size, codebook_update="ema", ema_decay=gamma, ema_eps=0.0)
    sgd_vq = seqvq.VectorQuantizer(dim, size, alpha=1.0, beta=1.0)
    sgd_vq.codebook.data.copy_(ema_vq.codebook.data)
    optimizer = torch.optim.SGD(sgd_vq.parameters(), lr=(1 - gamma) / 2)
    for _ in range(4):
        # one input near every code, so each code is picked exactly once and its count stays 1
        x = (ema_vq.codebook.detach()[0] + 0.05 * torch.randn(size, dim)).unsqueeze(0)
        ema_out, sgd_out = ema_vq(x), sgd_vq(x)
        assert torch.equal(ema_out.codes, sgd_out.codes)
        assert sorted(ema_out.codes[0].tolist()) == list(range(size))
        optimizer.zero_grad()
        (sgd_out.losses["codebook"] * x.numel()).backward()  # the sum-of-squares form of eq. 2
        optimizer.step()
        torch.testing.assert_close(ema_vq.ema.cluster_size, torch.ones(1, size))
        torch.testing.assert_close(ema_vq.codebook, sgd_vq.codebook)


def test_straight_through_gradient_reaches_the_encoder_unchanged():
    vq = seqvq.VectorQuantizer(8, 16, alpha=0.0)
    x = torch.randn(2, 5, 8, requires_grad=True)
    upstream = torch.randn(2, 5, 8)
    (vq(x).quantized * upstream).sum().backward()
    torch.testing.assert_close(x.grad, upstream)


def test_codebook_term_trains_the_codebook_and_commitment_trains_the_encoder():
    vq = seqvq.VectorQuantizer(4, 8, alpha=2.0, beta=0.25)
    x = torch.randn(1, 10, 4, requires_grad=True)
    out = vq(x)
    out.loss.backward()
    z_q = vq.codes_to_vectors(out.codes).detach()
    n = x.numel()
    torch.testing.assert_close(x.grad, 2.0 * 0.75 * 2 * (x.detach() - z_q) / n)
    assert vq.codebook.grad.abs().sum() > 0


def test_state_dict_round_trip_restores_every_piece_of_state():
    torch.manual_seed(3)
    vq = seqvq.VectorQuantizer(8, 16, num_codebooks=2, codebook_update="ema", pre_norm=True)
    for _ in range(3):
        vq(torch.randn(4, 6, 8))
    clone = seqvq.VectorQuantizer(8, 16, num_codebooks=2, codebook_update="ema", pre_norm=True)
    clone.load_state_dict(vq.state_dict())
    for (name, a), b in zip(vq.state_dict().items(), clone.state_dict().values()):
        assert torch.equal(a, b), name
    assert int(clone.step) == 3
    x = torch.randn(2, 3, 8)
    a, b = vq(x), clone(x)
    assert torch.equal(a.codes, b.codes) and torch.equal(vq.codebook, clone.codebook)


@pytest.mark.parametrize("options", CORE_OPTIONS, ids=option_id)
def test_no_nan_on_an_all_padded_or_constant_batch(options):
    vq = seqvq.VectorQuantizer(8, 16, **options)
    empty = vq(torch.randn(2, 4, 8), mask=torch.zeros(2, 4, dtype=torch.bool))
    assert (empty.codes == -1).all() and empty.loss.item() == 0.0
    constant = vq(torch.full((2, 4, 8), 3.0))
    for result in (empty, constant):
        assert torch.isfinite(result.loss) and torch.isfinite(result.quantized).all()
        assert all(torch.isfinite(v) for v in result.metrics.values())
    assert torch.isfinite(vq.codebook).all()
    assert all(torch.isfinite(b).all() for b in vq.buffers() if b.is_floating_point())


@pytest.mark.parametrize("channel_dim,shape", [(1, (2, 8, 5)), (1, (2, 8, 3, 4))])
def test_channel_first_layouts_match_channel_last(channel_dim, shape):
    torch.manual_seed(4)
    first = seqvq.VectorQuantizer(8, 16, channel_dim=channel_dim).eval()
    last = copy.deepcopy(first)
    last.channel_dim = -1
    x = torch.randn(*shape)
    a, b = first(x), last(x.movedim(1, -1))
    assert torch.equal(a.codes, b.codes)
    torch.testing.assert_close(a.quantized, b.quantized.movedim(-1, 1))


def test_multi_codebook_codes_have_a_trailing_axis_and_decode_back():
    vq = seqvq.VectorQuantizer(12, 5, num_codebooks=3).eval()
    out = vq(torch.randn(2, 4, 12), lengths=torch.tensor([4, 2]))
    assert out.codes.shape == (2, 4, 3) and out.codes.dtype == torch.int64
    valid = out.codes[0]
    torch.testing.assert_close(vq.codes_to_vectors(valid), out.quantized[0])
    assert (vq.codes_to_vectors(out.codes[1, 2:]) == 0).all()


def test_metrics_count_codes_of_valid_positions_only():
    vq = seqvq.VectorQuantizer(2, 4).eval()
    vq.codebook.data[0] = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = torch.tensor([[[0.1, 0.0], [9.9, 0.1], [0.0, 9.0], [10.0, 10.0]]])
    out = vq(x, lengths=torch.tensor([2]))
    assert out.codes.tolist() == [[0, 1, -1, -1]]
    assert float(out.metrics["active_codes"]) == 2.0
    torch.testing.assert_close(out.metrics["perplexity"], torch.tensor(2.0))
    torch.testing.assert_close(perplexity(torch.tensor([1.0, 1.0, 1.0, 1.0])), torch.tensor(4.0))


def test_param_groups_give_the_codebook_its_own_rate_without_weight_decay():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), seqvq.VectorQuantizer(4, 8))
    groups = seqvq.param_groups(model, lr=1e-3, codebook_lr=1e-2, weight_decay=0.1)
    by_name = {g["name"]: g for g in groups}
    assert by_name["codebook"]["lr"] == 1e-2 and by_name["codebook"]["weight_decay"] == 0.0
    assert by_name["codebook"]["params"] == [model[1].codebook]
    assert len(by_name["model"]["params"]) == 2
    ema_model = torch.nn.Sequential(torch.nn.Linear(4, 4), seqvq.VectorQuantizer(4, 8, codebook_update="ema"))
    assert [g["name"] for g in seqvq.param_groups(ema_model, 1e-3, 1e-2)] == ["model"]


def test_reset_optimizer_state_clears_moments_of_rewritten_codes_only():
    vq = seqvq.VectorQuantizer(4, 8)
    optimizer = torch.optim.Adam(seqvq.param_groups(vq, 1e-2))
    for _ in range(2):
        optimizer.zero_grad()
        vq(torch.randn(1, 32, 4)).loss.backward()
        seqvq.reset_optimizer_state(vq, optimizer)
        optimizer.step()
    rows = torch.zeros(1, 8, dtype=torch.bool)
    rows[0, 3] = True
    vq.rewrite_codes(torch.zeros(1, 8, 4), rows)
    assert torch.equal(vq.codebook[0, 3], torch.zeros(4))
    state = optimizer.state[vq.codebook]
    seqvq.reset_optimizer_state(vq, optimizer)
    assert (state["exp_avg"][0, 3] == 0).all() and (state["exp_avg_sq"][0, 3] == 0).all()
    assert state["exp_avg_sq"][0, [0, 1, 2, 4, 5, 6, 7]].abs().sum() > 0
    vq.rewrite_codes(torch.zeros(1, 8, 4))
    seqvq.reset_optimizer_state(vq, optimizer)
    assert vq.codebook not in optimizer.state


def test_codebook_parameters_are_found_by_ownership_also_in_a_deep_copy():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), seqvq.VectorQuantizer(4, 8, affine="learned"))
    clone = copy.deepcopy(model)
    for m in (model, clone):
        groups = {g["name"]: g["params"] for g in seqvq.param_groups(m, 1e-3, 1e-2)}
        assert groups["codebook"] == [m[1].codebook, m[1].affine.scale, m[1].affine.shift]
        assert len(groups["model"]) == 2


# ------------------------------------------------------------------------ pre_norm and what padding holds
PRE_NORM_QUANTIZERS = {
    "vq": dict(kind="vq", codebook_size=16, pre_norm=True),
    "vq_ema_2groups_replacement": dict(kind="vq", codebook_size=16, pre_norm=True, codebook_update="ema",
                                       num_codebooks=2, replace_dead_after=1),
    "vq_usage": dict(kind="vq", codebook_size=16, pre_norm=True, usage_regularizer={"weight": 0.5}),
    "residual": dict(kind="residual", codebook_size=16, num_quantizers=2, pre_norm=True),
    "fsq": dict(kind="fsq", levels=[8, 5, 5], pre_norm=True),
    "bsq_entropy": dict(kind="bsq", bits=5, pre_norm=True, entropy_regularizer={"weight": 0.5}),
}


def bits_of(x: torch.Tensor) -> torch.Tensor:
    """The bytes of ``x``, so that NaN == NaN and -0.0 != 0.0."""
    return x.contiguous().view(torch.uint8)


def filled_padding(x: torch.Tensor, mask: torch.Tensor, *values: float) -> torch.Tensor:
    """``x`` with its padded positions cycling through ``values``, per element."""
    x = x.clone()
    padded = x[~mask]
    cycle = torch.tensor(values, dtype=x.dtype).repeat(padded.numel() // len(values) + 1)[: padded.numel()]
    x[~mask] = cycle.view_as(padded)
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", PRE_NORM_QUANTIZERS)
def test_pre_norm_passes_padding_through_bit_for_bit(name, dtype):
    """BatchNorm normalises the valid positions only; the padded ones leave the quantizer as they came in."""
    torch.manual_seed(0)
    quantizer = seqvq.build_quantizer(6, **PRE_NORM_QUANTIZERS[name])
    x, mask = padded_batch([5, 2, 7], 6, scale=3.0)
    for padding in [(1e3,), (-float("inf"), float("nan"), float("inf"), -0.0, 7.25)]:
        padded_input = filled_padding(x, mask, *padding).to(dtype)
        for mode in ("train", "eval"):
            getattr(quantizer, mode)()
            result = quantizer(padded_input, mask=mask)
            assert torch.equal(bits_of(result.quantized[~mask]), bits_of(padded_input[~mask])), (padding, mode)
            assert torch.isfinite(result.quantized[mask]).all()
    norm = seqvq.quantize.norm.MaskedBatchNorm(6).double()
    wide = filled_padding(x, mask, -float("inf"), 1e300).double() + 1e-12
    assert torch.equal(bits_of(norm(wide, mask)[~mask]), bits_of(wide[~mask]))


# Every option that transforms the input (normalisation, code-space maps, cosine distance, gradient estimators,
# projections) of every quantizer kind; padding must reach none of them.
INPUT_TRANSFORMING_QUANTIZERS = {
    **PRE_NORM_QUANTIZERS,
    "vq_affine_learned": dict(kind="vq", codebook_size=16, affine="learned"),
    "vq_affine_ema": dict(kind="vq", codebook_size=16, affine="ema", codebook_update="ema"),
    "vq_linear_map": dict(kind="vq", codebook_size=16, affine={"mode": "linear"}),
    "vq_cosine_2groups": dict(kind="vq", codebook_size=16, distance="cosine", num_codebooks=2),
    "vq_rotation_trick_sync": dict(kind="vq", codebook_size=16, rotation_trick=True, sync_nu=0.5),
    "vq_gumbel": dict(kind="vq", codebook_size=16, assignment="gumbel"),
    "residual_affine_dropout": dict(kind="residual", codebook_size=16, num_quantizers=3, affine="learned",
                                    quantizer_dropout=0.5),
    "residual_code_dim": dict(kind="residual", codebook_size=16, num_quantizers=2, code_dim=3),
    "residual_code_dim_pre_norm_rotation": dict(kind="residual", codebook_size=16, num_quantizers=2, code_dim=3,
                                                pre_norm=True, rotation_trick=True),
    "residual_code_dim_dropout_linear_map": dict(kind="residual", codebook_size=16, num_quantizers=3, code_dim=3,
                                                 affine={"mode": "linear"}, quantizer_dropout=0.5),
    "fsq_projected": dict(kind="fsq", levels=[8, 5, 5]),
    "fsq_unprojected": dict(kind="fsq", levels=[3] * 6),
    "bsq_projected_entropy": dict(kind="bsq", bits=5, entropy_regularizer={"weight": 0.5}),
}


@pytest.mark.parametrize("name", INPUT_TRANSFORMING_QUANTIZERS)
def test_non_finite_padding_gives_the_outputs_and_gradients_of_zero_padding(name):
    """-inf (the log energy of zero padding) and NaN at padded positions pass through bit for bit and reach no
    valid output, gradient or state: everything is as with zero padding, and finite."""
    torch.manual_seed(0)
    zero_padded = seqvq.build_quantizer(6, **INPUT_TRANSFORMING_QUANTIZERS[name])
    bad_padded = copy.deepcopy(zero_padded)
    x, mask = padded_batch([5, 2, 7], 6, scale=3.0)
    inputs = [filled_padding(x, mask, 0.0).requires_grad_(),
              filled_padding(x, mask, -float("inf"), float("nan")).requires_grad_()]
    for mode in ("train", "train", "train", "eval"):
        results = []
        for quantizer, x_in in zip((zero_padded, bad_padded), inputs):
            getattr(quantizer, mode)()
            quantizer.zero_grad()
            result = quantizer(x_in, mask=mask)
            (result.quantized[mask].pow(2).sum() + result.loss).backward()
            results.append(result)
            assert torch.equal(bits_of(result.quantized[~mask]), bits_of(x_in[~mask])), mode
            assert torch.isfinite(result.quantized[mask]).all() and torch.isfinite(result.loss), mode
            assert torch.isfinite(x_in.grad).all(), mode
        assert torch.equal(results[0].quantized[mask], results[1].quantized[mask])
        assert torch.equal(results[0].codes, results[1].codes)
        assert torch.equal(results[0].loss, results[1].loss)
        for key, value in results[0].metrics.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(results[1].metrics[key])), key
        assert torch.equal(inputs[0].grad, inputs[1].grad)
        for (key, a), b in zip(zero_padded.named_parameters(), bad_padded.parameters()):
            assert (a.grad is None) == (b.grad is None), key
            if a.grad is not None:
                assert torch.isfinite(b.grad).all(), key
                assert torch.equal(a.grad, b.grad), key
        for (key, a), b in zip(zero_padded.state_dict().items(), bad_padded.state_dict().values()):
            assert torch.equal(a, b), key
        inputs[0].grad = inputs[1].grad = None


# ---- typed options: each remedy's options are a frozen dataclass; a mapping (or a shorthand) is converted --------
TYPED_OPTIONS = {
    "reestimate": ({"init_steps": 2, "every": 1, "steps": 3, "reservoir_size": 64},
                   ReestimationOptions(init_steps=2, every=1, steps=3, reservoir_size=64)),
    "affine": ({"mode": "ema", "momentum": 0.3, "codes_per_group": 4}, AffineOptions("ema", momentum=0.3,
                                                                                     codes_per_group=4)),
    "usage_regularizer": ({"weight": 0.5}, UsageRegularizerOptions(weight=0.5)),
    "temperature": ({"start": 2.0, "end": 0.5, "decay_steps": 4}, TemperatureAnneal(2.0, 0.5, 4)),
}


@pytest.mark.parametrize("option", TYPED_OPTIONS)
def test_a_mapping_and_its_options_dataclass_build_the_same_quantizer(option):
    mapping, typed = TYPED_OPTIONS[option]
    extra = {"assignment": "stochastic"} if option == "temperature" else {}
    runs = []
    for value in (mapping, typed):
        torch.manual_seed(0)
        quantizer = seqvq.VectorQuantizer(4, 8, seed=3, **{option: value}, **extra)
        x = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(1))
        results = [quantizer(x) for _ in range(5)]
        runs.append((quantizer.state_dict(), [(r.quantized, r.codes, r.loss) for r in results]))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


def test_the_shorthands_and_the_off_values():
    assert seqvq.VectorQuantizer(4, 8, affine="ema").affine.mode == "ema"
    assert isinstance(seqvq.VectorQuantizer(4, 8, affine=AffineOptions(mode="linear")).affine, LinearCodebookMap)
    assert seqvq.VectorQuantizer(4, 8, usage_regularizer={"weight": 0.5}).usage_regularizer == \
        UsageRegularizerOptions(weight=0.5, temperature=1.0)
    assert seqvq.VectorQuantizer(4, 8, temperature={"start": 2, "end": 1, "decay_steps": 4}).temperature == \
        TemperatureAnneal(2.0, 1.0, 4)
    assert seqvq.VectorQuantizer(4, 8, assignment="gumbel", temperature=0.5).current_temperature() == 0.5
    plain = seqvq.VectorQuantizer(4, 8, reestimate=None, affine=None, usage_regularizer=None, bridge=None)
    assert plain.reestimation is None and plain.affine is None and plain.usage_regularizer is None
    # an empty mapping is the method with its defaults, never silently off (a config's `bridge: {}`)
    assert seqvq.VectorQuantizer(4, 8, usage_regularizer={}).usage_regularizer == UsageRegularizerOptions()
    assert isinstance(seqvq.VectorQuantizer(4, 32, bridge={}).affine, CodebookBridge)
    assert seqvq.VectorQuantizer(4, 8, reestimate={}).reestimation is not None


@pytest.mark.parametrize("option, value, message", [
    ("reestimate", {"init_step": 2}, "reestimate takes 'init_steps', 'every', 'steps', 'reservoir_size', "
                                     "'kmeans_iterations', 'steps_per_epoch' and 'restart_reservoir'; "
                                     "got ['init_step']"),
    ("affine", {"mode": "ema", "momentun": 0.3}, "affine takes 'mode', 'lr_scale', 'momentum', 'codes_per_group', "
                                                "'eps' and 'max_ratio'; got ['momentun']"),
    ("usage_regularizer", {"tau": 1.0}, "usage_regularizer takes 'weight' and 'temperature'; got ['tau']"),
    ("temperature", {"start": 1.0, "end": 0.1, "steps": 5}, "temperature takes 'start', 'end' and 'decay_steps'; "
                                                            "got ['steps']"),
    ("temperature", {"start": 1.0, "end": 0.1}, "temperature needs 'decay_steps'"),
    ("temperature", {"start": 0.0, "end": 0.1, "decay_steps": 5}, "start and end must be > 0"),
    ("usage_regularizer", {"temperature": 0.0}, "usage_regularizer needs temperature > 0 and weight >= 0"),
    ("affine", {"mode": "ema", "momentum": 0.0}, "affine momentum must be in (0, 1]"),
    ("affine", {"mode": "ema", "max_ratio": 0.5}, "affine max_ratio must be >= 1"),
    ("reestimate", 5, "reestimate takes a mapping of 'init_steps'"),
])
def test_a_bad_option_is_refused_in_one_line_naming_it(option, value, message):
    extra = {"assignment": "stochastic"} if option == "temperature" else {}
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        seqvq.VectorQuantizer(4, 8, **{option: value}, **extra)
    assert "\n" not in str(error.value)


def test_the_pass_kind_is_an_enum_that_still_reads_as_its_string():
    model = torch.nn.Sequential(seqvq.VectorQuantizer(4, 8))
    quantizer = model[0]
    assert quantizer.pass_kind is PassKind.STEP and quantizer.pass_kind == "step"
    assert [kind.value for kind in PassKind] == ["step", "task_step", "codebook_fit", "bypass", "zero_loss"]
    assert str(PassKind.TASK_STEP) == f"{PassKind.TASK_STEP}" == "task_step"
    for kind in ("codebook_fit", PassKind.BYPASS):
        with quantizer_passes(model, kind):
            assert quantizer.pass_kind is PassKind(kind)
    assert quantizer.pass_kind is PassKind.STEP
    with pytest.raises(ValueError, match=re.escape("pass kind must be one of step, task_step, codebook_fit, bypass, "
                                                   "zero_loss; got 'inner'")):
        with quantizer_passes(model, "inner"):
            pass


def test_the_codebook_gradient_is_the_same_in_every_run_on_two_threads():
    """A code selected by many inputs sums their gradients in a fixed order (groups.code_vectors): indexing's
    backward did not on a 2-thread CPU, and two identical speech runs drifted apart from the first quantized step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(50000, 16, generator=generator, requires_grad=True)
        quantizer = seqvq.VectorQuantizer(16, 64)

        def codebook_gradient():
            quantizer.zero_grad()
            quantizer(x).loss.backward()
            return quantizer.codebook.grad.clone()

        first = codebook_gradient()
        assert all(torch.equal(first, codebook_gradient()) for _ in range(5))
    finally:
        torch.set_num_threads(threads)
