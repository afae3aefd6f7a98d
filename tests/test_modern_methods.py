"""The remedies since 2023 inside the one quantizer: rotation trick, usage regularizer, SimVQ's linear
codebook map.  Each: its gradient against a hand-derived case, and, combined with every remedy of
test_remedy_combinations (refused pairs raise naming both options), padded == unpadded, exact resume and no NaN.
"""
import math

import pytest
import torch

import seqvq
from seqvq import demo
from seqvq.demo import run_method
from seqvq.quantize.rotation import rotation_trick
from seqvq.quantize.usage import kl_to_uniform, mean_soft_assignment
from test_remedy_combinations import REMEDIES, STEPS, SAME_OPTION, Run, assert_pads_and_resumes

MODERN = {
    "rotation": {"rotation_trick": True},
    "usage": {"usage_regularizer": {"weight": 0.5}},
    "linear": {"affine": {"mode": "linear"}},
}
MODERN_REFUSED = {
    frozenset({"rotation", "gumbel"}): "rotation_trick.*assignment='gumbel'.*use one or the other",
    frozenset({"linear", "ema"}): "affine='linear'.*codebook_update='ema'.*use",
}
MODERN_SAME_OPTION = [{"linear", "affine_learned"}, {"linear", "affine_ema"}]


# ------------------------------------------------------------------------------------------------ rotation trick
def test_rotation_trick_gradient_is_the_rotated_rescaled_gradient_at_z_q():
    # e = (1, 0), q = (0, 2): R is the rotation by +90 degrees, lambda = 2, so dL/de = 2 R^T g = 2 (g_y, -g_x).
    e = torch.tensor([[1.0, 0.0]], requires_grad=True)
    q = torch.tensor([[0.0, 2.0]], requires_grad=True)
    out = rotation_trick(e, q)
    torch.testing.assert_close(out, q.detach())
    g = torch.tensor([[3.0, 5.0]])
    out.backward(g)
    torch.testing.assert_close(e.grad, torch.tensor([[10.0, -6.0]]))
    assert q.grad is None or torch.equal(q.grad, torch.zeros_like(q))


def test_rotation_trick_in_3d_preserves_angles_and_scales_norms():
    generator = torch.Generator().manual_seed(0)
    e = torch.randn(5, 3, generator=generator, dtype=torch.float64).requires_grad_()
    q = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    g = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    rotation_trick(e, q).backward(g)
    scale = q.norm(dim=1) / e.detach().norm(dim=1)
    # |dL/de| = lambda |g|; the angle between dL/de and e equals the angle between g and q (R^T maps q^ to e^).
    torch.testing.assert_close(e.grad.norm(dim=1), scale * g.norm(dim=1))
    cos_e = torch.cosine_similarity(e.grad, e.detach(), dim=1)
    torch.testing.assert_close(cos_e, torch.cosine_similarity(g, q, dim=1))


def test_rotation_trick_degenerate_vectors_fall_back_to_straight_through():
    e = torch.tensor([[1.0, 0.0], [0.0, 0.0]], requires_grad=True)
    q = torch.tensor([[-2.0, 0.0], [1.0, 1.0]])  # opposite direction; zero input
    out = rotation_trick(e, q)
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(out, q)
    torch.testing.assert_close(e.grad, torch.tensor([[2.0, 2.0], [1.0, 1.0]]))


def test_rotation_trick_quantizer_gradient_at_input():
    quantizer = seqvq.VectorQuantizer(2, 1, alpha=0.0, rotation_trick=True)
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[[0.0, 2.0]]]))
    x = torch.tensor([[[1.0, 0.0]]], requires_grad=True)
    result = quantizer(x)
    (result.quantized * torch.tensor([3.0, 5.0])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([[[10.0, -6.0]]]))
    assert quantizer.codebook.grad is None or not quantizer.codebook.grad.any()  # the task reaches no code


# ------------------------------------------------------------------------------------------- combination matrix
def _pairs():
    pairs = []
    for name in MODERN:
        pairs += [{name, other} for other in REMEDIES]
        pairs += [{name, other} for other in MODERN if other < name]
    return [pair for pair in pairs if pair not in SAME_OPTION + MODERN_SAME_OPTION]


def _run(remedies, **overrides):
    old = [r for r in remedies if r in REMEDIES]
    options = {}
    for name in sorted(r for r in remedies if r in MODERN):
        options.update(MODERN[name])
    return Run(set(old), **options, **overrides)


PAIRS = _pairs()


@pytest.mark.parametrize("remedies", [p for p in PAIRS if frozenset(p) in MODERN_REFUSED],
                         ids=lambda p: "+".join(sorted(p)))
def test_refused_modern_pairs_name_both_options(remedies):
    with pytest.raises(ValueError, match=MODERN_REFUSED[frozenset(remedies)]):
        _run(remedies)


@pytest.mark.parametrize("remedies", [p for p in PAIRS if frozenset(p) not in MODERN_REFUSED],
                         ids=lambda p: "+".join(sorted(p)))
def test_modern_combination_pads_resumes_and_stays_finite(remedies, one_thread):
    steps = range(1, STEPS + 1)
    run = _run(remedies).train(steps)
    assert all(torch.isfinite(loss) for loss in run.losses)
    assert int(run.model.quantizer.step) == STEPS
    assert_pads_and_resumes(lambda **options: _run(remedies, **options), run)


# -------------------------------------------------------------------------------------------- usage regularizer
def test_usage_kl_gradient_matches_hand_derivation():
    # 1-D, codes +1 and -1, tau = 1: p_1 = sigmoid(4 z), KL = p log p + (1-p) log(1-p) + log 2,
    # dKL/dz = log(p / (1 - p)) * 4 p (1 - p) = 4 z * 4 p (1 - p).
    z = torch.tensor([[[0.25]]], requires_grad=True)
    codebook = torch.tensor([[[1.0], [-1.0]]])
    kl = kl_to_uniform(mean_soft_assignment(z, codebook, 1.0, reduce_over_ranks=False))
    p = torch.sigmoid(torch.tensor(1.0))
    expected = p * torch.log(p) + (1 - p) * torch.log(1 - p) + math.log(2)
    torch.testing.assert_close(kl, expected)
    kl.backward()
    torch.testing.assert_close(z.grad.reshape(()), 1.0 * 4 * p * (1 - p))


def test_usage_chunked_equals_dense_and_keeps_no_n_by_k_tensor():
    generator = torch.Generator().manual_seed(0)
    n, k = 300, 40
    z = torch.randn(n, 2, 3, generator=generator, dtype=torch.float64).requires_grad_()
    codebook = torch.randn(2, k, 3, generator=generator, dtype=torch.float64).requires_grad_()
    dense_p = torch.stack([torch.softmax(-torch.cdist(z[:, g], codebook[g]).pow(2) / 0.7, dim=1).mean(0)
                           for g in range(2)])
    dense = ((dense_p * dense_p.log()).sum(-1) + math.log(k)).mean()
    dense_grads = torch.autograd.grad(dense, (z, codebook))
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        chunked = kl_to_uniform(mean_soft_assignment(z, codebook, 0.7, reduce_over_ranks=False,
                                                     block_elements=32 * k))
    assert max(saved) < n * k  # only inputs and (K,) sums are kept for backward
    torch.testing.assert_close(chunked, dense)
    for a, b in zip(torch.autograd.grad(chunked, (z, codebook)), dense_grads):
        torch.testing.assert_close(a, b)


def test_usage_regularizer_reported_weighted_and_only_in_training():
    torch.manual_seed(0)
    quantizer = seqvq.VectorQuantizer(4, 8, usage_regularizer={"weight": 0.5, "temperature": 2.0})
    torch.manual_seed(0)
    plain = seqvq.VectorQuantizer(4, 8)
    x = torch.randn(2, 5, 4)
    result, plain_result = quantizer(x), plain(x)
    assert result.losses["usage"] > 0
    torch.testing.assert_close(result.loss, plain_result.loss + 0.5 * result.losses["usage"])
    quantizer.eval()
    assert "usage" not in quantizer(x).losses
    with pytest.raises(ValueError, match="usage_regularizer takes 'weight' and 'temperature'"):
        seqvq.VectorQuantizer(4, 8, usage_regularizer={"tau": 1.0})


def test_usage_regularizer_spreads_a_collapsed_codebook():
    # The collapse toy of Huh Fig. 10 (seqvq.demo): the regularizer brings unused codes into use.
    plain = run_method({})
    regularized = run_method({"usage_regularizer": {"weight": 5.0, "temperature": 0.1}})
    assert regularized["active_codes"] > plain["active_codes"] + 5
    assert regularized["perplexity"] > plain["perplexity"]


# ----------------------------------------------------------------------------------------- SimVQ linear map
def test_simvq_one_step_moves_every_code():
    torch.manual_seed(0)
    quantizer = seqvq.VectorQuantizer(3, 16, affine={"mode": "linear"})
    assert not quantizer.codebook.requires_grad  # the basis is frozen
    before = quantizer.effective_codebook().detach().clone()
    x = before[0, :2].reshape(1, 2, 3) + 0.1  # two inputs: at most two codes selected
    optimizer = torch.optim.SGD(seqvq.param_groups(quantizer, 0.1), lr=0.1)
    result = quantizer(x)
    assert result.codes.unique().numel() <= 2
    result.loss.backward()
    optimizer.step()
    moved = (quantizer.effective_codebook().detach() - before).norm(dim=-1)
    assert (moved > 0).all()  # every code, selected or not


def test_simvq_rewrites_land_exactly_through_the_map():
    torch.manual_seed(0)
    quantizer = seqvq.VectorQuantizer(4, 8, num_codebooks=2, affine={"mode": "linear"})
    with torch.no_grad():
        quantizer.affine.weight.add_(0.3 * torch.randn_like(quantizer.affine.weight))
    wanted = torch.randn(2, 8, 2)
    rows = torch.zeros(2, 8, dtype=torch.bool)
    rows[0, 3] = rows[1, 5] = True
    kept = quantizer.effective_codebook().detach().clone()
    quantizer.rewrite_codes(wanted, rows)
    effective = quantizer.effective_codebook().detach()
    torch.testing.assert_close(effective[rows], wanted[rows])
    torch.testing.assert_close(effective[~rows], kept[~rows])
    quantizer.rewrite_codes(wanted)
    torch.testing.assert_close(quantizer.effective_codebook().detach(), wanted)


def test_simvq_refusals():
    with pytest.raises(ValueError, match="affine='linear'.*codebook_update='ema'"):
        seqvq.VectorQuantizer(4, 8, affine={"mode": "linear"}, codebook_update="ema")
    with pytest.raises(ValueError, match="'linear' .SimVQ. takes no other option"):
        seqvq.VectorQuantizer(4, 8, affine={"mode": "linear", "lr_scale": 2.0})
    with pytest.raises(ValueError, match="'learned', 'ema' or 'linear'"):
        seqvq.VectorQuantizer(4, 8, affine={"mode": "full"})


def test_collapse_toy_rows_of_the_modern_methods():
    plain = run_method({})
    assert run_method(demo.METHODS["SimVQ linear map"])["active_codes"] > plain["active_codes"]
    for name in ("rotation trick + stochastic sampling", "SimVQ + rotation trick"):
        result = run_method(demo.ENCODER_METHODS[name], train_embeddings=True)
        assert math.isfinite(result["reconstruction_error"]) and result["active_codes"] > 0


def test_collapse_toy_rows_of_the_codebook_free_extras():
    """The rows of symmetric FSQ, LFQ and residual FSQ (one code per vector: the stages' codes as one number) and,
    with trained embeddings, FSQ's noise substitution and residual FSQ: finite, within their implicit codebooks."""
    for name, size in (("FSQ, symmetric levels (16 x 8)", 128), ("LFQ (7 bits, entropy penalty)", 128),
                       ("residual FSQ (2 stages of 4 x 4)", 256)):
        result = run_method(demo.METHODS[name])
        assert result["codebook_size"] == size and 0 < result["active_codes"] <= size, name
        assert result["selected"].shape == (result["active_codes"], 2)
    assert run_method(demo.METHODS["LFQ (7 bits, entropy penalty)"])["active_codes"] <= 29  # 7 lines cut 2-D in 29
    plain = run_method({}, train_embeddings=True)["reconstruction_error"]
    for name in ("FSQ + noise substitution (p 0.5)", "residual FSQ (2 stages of 4 x 4)"):
        result = run_method(demo.ENCODER_METHODS[name], train_embeddings=True)
        assert math.isfinite(result["reconstruction_error"]) and result["reconstruction_error"] < plain, name
