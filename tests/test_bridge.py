"""VQBridge (seqvq/quantize/bridge.py): the codebook is frozen and the bridge alone is trained; it starts as the
identity; one step moves every code, selected or not (the paper's remedy for sparse codebook gradients); refusals
name both options; padded == unpadded with exact resume."""
import pytest
import torch

import seqvq
from seqvq import demo
from seqvq.demo import run_method
from test_remedy_combinations import STEPS, Run, assert_pads_and_resumes

BRIDGE = {"bridge": {"group": 4, "width": 16, "heads": 2}}


def test_bridge_starts_as_the_frozen_codebook_and_one_step_moves_every_code():
    torch.manual_seed(0)
    quantizer = seqvq.VectorQuantizer(3, 32, **BRIDGE)
    assert not quantizer.codebook.requires_grad
    before, frozen = quantizer.effective_codebook().detach().clone(), quantizer.codebook.detach().clone()
    assert (before - quantizer.codebook.detach()).abs().max() < 0.1  # nearly the frozen codes
    optimizer = torch.optim.Adam(seqvq.param_groups(quantizer, 1e-2), lr=1e-2)
    x = before[0, :2].reshape(1, 2, 3) + 0.1  # two inputs: at most two codes selected
    result = quantizer(x)
    assert result.codes.unique().numel() <= 2
    optimizer.zero_grad()
    result.loss.backward()
    optimizer.step()
    moved = (quantizer.effective_codebook().detach() - before).norm(dim=-1)
    assert (moved > 0).all()  # every code, selected or not
    assert torch.equal(quantizer.codebook.detach(), frozen)  # the codebook itself stays frozen


def test_codes_decode_through_the_bridge():
    torch.manual_seed(0)
    quantizer = seqvq.VectorQuantizer(4, 16, num_codebooks=2, **BRIDGE)
    with torch.no_grad():
        quantizer.affine.recover.weight.normal_()
    quantizer.eval()
    x = torch.randn(2, 5, 4)
    result = quantizer(x)
    torch.testing.assert_close(result.quantized, quantizer.codes_to_vectors(result.codes))


def test_refusals_name_both_options():
    for options, name in (({"affine": "learned"}, "affine"), ({"codebook_update": "ema"}, "codebook_update='ema'"),
                          ({"kmeans_init": True}, "kmeans_init"), ({"replace_dead_after": 2}, "replace_dead_after"),
                          ({"reestimate": {"init_steps": 1}}, "reestimate")):
        with pytest.raises(ValueError, match=f"bridge.*{name}.*use one or the other"):
            seqvq.VectorQuantizer(4, 8, **BRIDGE, **options)
    with pytest.raises(ValueError, match="bridge group=3 must divide codebook_size=8"):
        seqvq.VectorQuantizer(4, 8, bridge={"group": 3})
    with pytest.raises(ValueError, match="bridge takes 'group', 'width', 'depth' and 'heads'"):
        seqvq.VectorQuantizer(4, 8, bridge={"layers": 3})


@pytest.mark.parametrize("extra", [{}, {"pre_norm": True}, {"rotation_trick": True}, {"num_codebooks": 2},
                                   {"assignment": "optimal_transport"}, {"assignment": "index_backprop"},
                                   {"diveq": {"noise": 1e-3}, "alpha": 0.0}, {"sync_nu": 0.5},
                                   {"usage_regularizer": {"weight": 0.5}}],
                         ids=["alone", "pre_norm", "rotation", "groups", "optvq", "ibq", "diveq", "sync", "usage"])
def test_pads_and_resumes(extra, one_thread):
    run = Run(set(), **BRIDGE, **extra).train(range(1, STEPS + 1))
    assert all(torch.isfinite(loss) for loss in run.losses)
    assert_pads_and_resumes(lambda **options: Run(set(), **BRIDGE, **extra, **options), run)


def test_collapse_toy_row():
    plain = run_method({})
    assert run_method(demo.METHODS["VQBridge (FVQ)"])["active_codes"] > plain["active_codes"]


def test_alternating_optimization_pads_and_resumes(one_thread):
    run = Run({"alternating"}, **BRIDGE).train(range(1, STEPS + 1))
    assert all(torch.isfinite(loss) for loss in run.losses)
    assert_pads_and_resumes(lambda **options: Run({"alternating"}, **BRIDGE, **options), run)
