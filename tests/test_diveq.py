"""DiVeQ and SF-DiVeQ (seqvq/quantize/diveq.py): the output is the input plus an error vector as long as the
quantization error and pointing at the code (up to the noise); with no auxiliary loss the task gradient trains the
selected code (hand-derived); SF-DiVeQ's output lies on the segment between consecutive codes and trains both
endpoints; refusals name both options; padded == unpadded with exact resume."""
import math

import pytest
import torch

import seqvq
from seqvq import demo
from seqvq.demo import run_method
from seqvq.quantize.diveq import diveq_output, space_filling_quantize
from test_remedy_combinations import REMEDIES, STEPS, Run, assert_pads_and_resumes

DIVEQ = {"diveq": {"noise": 1e-3}}
SF_DIVEQ = {"diveq": {"space_filling": True}}


def test_error_vector_has_the_quantization_error_length_and_points_at_the_code():
    generator = torch.Generator().manual_seed(0)
    z, code = torch.randn(50, 4, generator=generator), torch.randn(50, 4, generator=generator)
    noise = 1e-3 * torch.randn(50, 4, generator=generator)
    out = diveq_output(z, code, noise)
    torch.testing.assert_close((out - z).norm(dim=1), (code - z).norm(dim=1))
    assert (out - code).norm(dim=1).max() < 1e-2  # the hard code up to the directional noise
    torch.testing.assert_close(diveq_output(z, code, torch.zeros_like(z)), code)  # exactly c_k without noise


def test_without_auxiliary_loss_the_task_gradient_trains_the_selected_code():
    # z = (0, 0), c = (3, 4), no noise: z_q = z + ||c - z|| u with u = (0.6, 0.8) fixed, so for upstream g
    # dL/dc = (g . u) u and dL/dz = g - (g . u) u.
    z = torch.zeros(1, 2, requires_grad=True)
    code = torch.tensor([[3.0, 4.0]], requires_grad=True)
    g = torch.tensor([[1.0, 2.0]])
    diveq_output(z, code, torch.zeros(1, 2)).backward(g)
    u = torch.tensor([[0.6, 0.8]])
    torch.testing.assert_close(code.grad, 2.2 * u)
    torch.testing.assert_close(z.grad, g - 2.2 * u)

    torch.manual_seed(0)
    quantizer = seqvq.VectorQuantizer(3, 16, alpha=0.0, **DIVEQ)
    x = torch.randn(2, 5, 3, requires_grad=True)
    result = quantizer(x)
    assert result.loss == 0
    result.quantized.pow(2).sum().backward()
    used = torch.zeros(16, dtype=torch.bool)
    used[result.codes.unique()] = True
    grad_norm = quantizer.codebook.grad[0].norm(dim=-1)
    assert (grad_norm[used] > 0).all() and not grad_norm[~used].any()
    assert x.grad.abs().sum() > 0
    quantizer.eval()
    evaluated = quantizer(x)
    torch.testing.assert_close(evaluated.quantized, quantizer.codes_to_vectors(evaluated.codes))


def test_space_filling_output_lies_on_the_segment_and_trains_both_endpoints():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    z = torch.tensor([[0.3, 0.1], [1.1, 0.8]], requires_grad=True)
    dither = torch.tensor([0.25, 0.5])
    codes, out = space_filling_quantize(z, codebook, dither, torch.zeros(2, 2, 2))
    torch.testing.assert_close(out, torch.tensor([[0.25, 0.0], [1.0, 0.5]]))  # the dithered points
    assert codes.tolist() == [0, 2]  # the nearer endpoint of each segment
    out.sum().backward()
    assert (codebook.grad.norm(dim=1) > 0).all()


def test_space_filling_quantizer_trains_and_evaluates_to_codes():
    torch.manual_seed(0)
    quantizer = seqvq.VectorQuantizer(2, 8, alpha=0.0, **SF_DIVEQ)
    x = torch.randn(3, 4, 2)
    result = quantizer(x)
    assert result.codes.min() >= 0 and result.codes.max() < 8 and torch.isfinite(result.quantized).all()
    quantizer.eval()
    evaluated = quantizer(x)
    torch.testing.assert_close(evaluated.quantized, quantizer.codes_to_vectors(evaluated.codes))


def test_alternating_optimization_applies_the_task_gradient_to_the_codebook(one_thread):
    """DiVeQ's codebook is trained by the task loss, so AlternatingOptimizer's codebook optimizer applies the task
    pass's codebook gradient too (as for the sync term); the run pads and resumes."""
    assert seqvq.VectorQuantizer(4, 8, **DIVEQ).task_gradient_reaches_codebook
    assert not seqvq.VectorQuantizer(4, 8, **DIVEQ, codebook_update="ema").task_gradient_reaches_codebook
    run = Run({"alternating"}, **DIVEQ).train(range(1, STEPS + 1))
    assert run.model.quantizer.task_gradient_reaches_codebook and run.optimizer.task_gradient_reaches_codebook
    assert_pads_and_resumes(lambda **options: Run({"alternating"}, **DIVEQ, **options), run)


def test_refusals_name_both_options():
    cases = (({"rotation_trick": True, **DIVEQ}, "diveq and rotation_trick.*use one"),
             ({"assignment": "gumbel", **DIVEQ}, "diveq.*assignment='gumbel'.*use one"),
             ({"assignment": "index_backprop", **DIVEQ}, "diveq.*assignment='index_backprop'.*use one"),
             ({"assignment": "stochastic", **SF_DIVEQ}, "space_filling.*assignment='stochastic'.*use one"))
    for options, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            seqvq.VectorQuantizer(4, 8, **options)
    with pytest.raises(ValueError, match="codebook_size >= 2"):
        seqvq.VectorQuantizer(4, 1, **SF_DIVEQ)


@pytest.mark.parametrize("extra", [DIVEQ, {**DIVEQ, "alpha": 0.0}, {**DIVEQ, "pre_norm": True},
                                   {**DIVEQ, "replace_dead_after": 1}, {**DIVEQ, "codebook_update": "ema"},
                                   {**DIVEQ, "assignment": "stochastic", "temperature": 2.0},
                                   {**DIVEQ, "affine": {"mode": "linear"}}, {**DIVEQ, "num_codebooks": 2},
                                   {**DIVEQ, **REMEDIES["sync_nu"]}, {**DIVEQ, **REMEDIES["reestimate"]},
                                   SF_DIVEQ, {**SF_DIVEQ, "num_codebooks": 2, "alpha": 0.0},
                                   {**SF_DIVEQ, **REMEDIES["reestimate"]}],
                         ids=["diveq", "no-loss", "pre_norm", "replacement", "ema", "stochastic", "linear", "groups",
                              "sync", "reestimate", "sf", "sf-groups", "sf-reestimate"])
def test_pads_and_resumes(extra, one_thread):
    run = Run(set(), **extra).train(range(1, STEPS + 1))
    assert all(torch.isfinite(loss) for loss in run.losses)
    assert_pads_and_resumes(lambda **options: Run(set(), **extra, **options), run)


def test_collapse_toy_rows():
    plain = run_method({}, train_embeddings=True)["reconstruction_error"]
    for name in ("DiVeQ (no auxiliary loss)", "SF-DiVeQ (no auxiliary loss)"):
        result = run_method(demo.ENCODER_METHODS[name], train_embeddings=True)
        assert math.isfinite(result["reconstruction_error"]) and result["active_codes"] > 0, name
