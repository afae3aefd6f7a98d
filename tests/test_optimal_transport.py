"""OptVQ's assignment by optimal transport (seqvq/quantize/optimal_transport.py): the plan's marginals, its
chunking (never N x K), balanced usage where the nearest code collapses, nearest code in evaluation, refusals, and
padded == unpadded with exact resume."""
import math

import pytest
import torch

import seqvq
from seqvq.quantize import nearest_codes, optimal_transport
from seqvq.quantize.optimal_transport import SinkhornOptions, optimal_transport_codes, sinkhorn_potentials
from test_remedy_combinations import REMEDIES, STEPS, Run, assert_pads_and_resumes

OT = {"assignment": "optimal_transport"}


def dense_plan(z, codebook, options):
    f, g, scale, mean = sinkhorn_potentials(z, codebook, options)
    distances = torch.cdist(z.double(), codebook.double())
    return torch.exp(f.double()[:, None] + g.double()[None] - scale * (distances - mean))


def test_transport_plan_has_uniform_marginals():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(300, 4, generator=generator) + 3.0  # data far from the (random) codes: nearest would collapse
    codebook = torch.randn(16, 4, generator=generator)
    plan = dense_plan(z, codebook, SinkhornOptions(epsilon=10.0, iterations=200))
    torch.testing.assert_close(plan.sum(1), torch.full((300,), 1 / 300, dtype=torch.float64))
    torch.testing.assert_close(plan.sum(0), torch.full((16,), 1 / 16, dtype=torch.float64), rtol=1e-3, atol=0)
    few = dense_plan(z, codebook, SinkhornOptions())  # OptVQ's 5 iterations: rows exact, columns near 1/K
    torch.testing.assert_close(few.sum(1), torch.full((300,), 1 / 300, dtype=torch.float64))
    assert (few.sum(0) * 16 - 1).abs().max() < 0.5


@pytest.mark.parametrize("epsilon", [10.0, 500.0], ids=["optvq", "columns-underflow"])
def test_potentials_equal_a_dense_float64_sinkhorn(epsilon):
    """Both ways of a block's column sums: one exp per entry, and the exact log-sum-exp where a column underflows
    (epsilon = 500 spreads the costs over thousands of nats)."""
    generator = torch.Generator().manual_seed(3)
    z, codebook = torch.randn(120, 3, generator=generator), torch.randn(24, 3, generator=generator)
    options = SinkhornOptions(epsilon=epsilon, iterations=4)
    f, g, scale, mean = sinkhorn_potentials(z, codebook, options, block_elements=40 * 24)
    cost = scale * (torch.cdist(z.double(), codebook.double()) - mean)
    log_rows, log_columns = -math.log(120), -math.log(24)
    dense_g = torch.zeros(24, dtype=torch.float64)
    for _ in range(4):
        dense_f = log_rows - torch.logsumexp(dense_g - cost, dim=1)
        dense_g = log_columns - torch.logsumexp(dense_f[:, None] - cost, dim=0)
    dense_f = log_rows - torch.logsumexp(dense_g - cost, dim=1)
    torch.testing.assert_close(g.double(), dense_g, rtol=1e-4, atol=1e-3 * epsilon / 10)
    torch.testing.assert_close(f.double(), dense_f, rtol=1e-4, atol=1e-3 * epsilon / 10)


def test_chunked_potentials_equal_one_block_and_each_block_holds_at_most_its_rows():
    generator = torch.Generator().manual_seed(1)
    z, codebook = torch.randn(200, 3, generator=generator), torch.randn(32, 3, generator=generator)
    whole = sinkhorn_potentials(z, codebook)
    chunked = sinkhorn_potentials(z, codebook, block_elements=7 * 32)
    for a, b in zip(whole[:2], chunked[:2]):
        torch.testing.assert_close(a, b)
    assert torch.equal(optimal_transport_codes(z, codebook), optimal_transport_codes(z, codebook, block_elements=224))
    blocks = optimal_transport._Blocks(z, codebook, 10.0, 7 * 32, False)
    assert all(cost.shape[0] <= 7 for cost in blocks.costs())


def test_codes_drawn_from_the_plan_balance_the_usage_that_the_nearest_code_collapses():
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(512, 2, generator=generator) * 0.1 + 4.0
    codebook = torch.randn(32, 2, generator=generator)
    nearest = nearest_codes(z, codebook)[0]
    drawn = optimal_transport_codes(z, codebook, generator=torch.Generator().manual_seed(0))
    argmax = optimal_transport_codes(z, codebook)
    assert nearest.unique().numel() <= 3
    assert drawn.unique().numel() >= 28 and torch.bincount(drawn, minlength=32).max() <= 3 * 512 // 32
    assert argmax.unique().numel() < drawn.unique().numel()  # why the codes are drawn (module docstring)


def test_quantizer_uses_the_plan_in_training_and_the_nearest_code_in_evaluation():
    torch.manual_seed(0)
    quantizer = seqvq.VectorQuantizer(2, 32, **OT)
    x = torch.randn(4, 128, 2) * 0.1 + 4.0
    trained = quantizer(x).codes
    assert trained.unique().numel() >= 24
    quantizer.eval()
    nearest = nearest_codes(x.reshape(-1, 2), quantizer.codebook[0])[0]
    assert torch.equal(quantizer(x).codes.reshape(-1), nearest)
    argmax = seqvq.VectorQuantizer(2, 32, **OT, sinkhorn={"sample": False})  # the released configs' use_prob: false
    argmax.load_state_dict(quantizer.state_dict())
    expected = optimal_transport_codes(x.reshape(-1, 2), argmax.codebook[0])
    assert torch.equal(argmax.train()(x).codes.reshape(-1), expected)


def test_refusals_name_both_options():
    with pytest.raises(ValueError, match="sinkhorn.*assignment='optimal_transport'.*assignment='nearest'.*use one"):
        seqvq.VectorQuantizer(4, 8, sinkhorn={"iterations": 3})
    with pytest.raises(ValueError, match="sinkhorn takes 'epsilon', 'iterations' and 'sample'"):
        seqvq.VectorQuantizer(4, 8, sinkhorn={"eps": 3}, **OT)
    with pytest.raises(ValueError, match="'optimal_transport'"):
        seqvq.VectorQuantizer(4, 8, assignment="sinkhorn")


@pytest.mark.parametrize("extra", [{}, {"pre_norm": True}, {"replace_dead_after": 1}, {"rotation_trick": True},
                                   {"codebook_update": "ema"}, {"num_codebooks": 2}, REMEDIES["reestimate"],
                                   REMEDIES["kmeans_init"], REMEDIES["affine_ema"]],
                         ids=["alone", "pre_norm", "replacement", "rotation", "ema", "groups", "reestimate", "kmeans",
                              "affine_ema"])
def test_pads_and_resumes(extra, one_thread):
    run = Run(set(), **OT, **extra).train(range(1, STEPS + 1))
    assert all(torch.isfinite(loss) for loss in run.losses)
    assert_pads_and_resumes(lambda **options: Run(set(), **OT, **extra, **options), run)


def test_alternating_optimization_pads_and_resumes(one_thread):
    run = Run({"alternating"}, **OT).train(range(1, STEPS + 1))
    assert all(torch.isfinite(loss) for loss in run.losses)
    assert_pads_and_resumes(lambda **options: Run({"alternating"}, **OT, **options), run)
