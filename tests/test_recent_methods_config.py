"""OptVQ, IBQ, DiVeQ and VQBridge are selected from a config (the quantizer section of build.py's schema), and a
residual stack takes those that act on a stage's codes or codebook and refuses those that act through a stage's
(detached) output, naming the option."""
import pytest
import torch

import seqvq
from seqvq.quantize import quantizer_section

CONFIGS = {
    "optvq": ({"assignment": "optimal_transport", "sinkhorn": {"epsilon": 5.0, "iterations": 3}},
              lambda q: q.sinkhorn.iterations == 3),
    "ibq": ({"assignment": "index_backprop", "temperature": 0.5}, lambda q: q.assignment == "index_backprop"),
    "diveq": ({"diveq": {"space_filling": True, "noise": 0.01}, "alpha": 0.0},
              lambda q: q.diveq.space_filling and q.diveq.noise == 0.01),
    "bridge": ({"bridge": {"group": 4, "width": 8, "heads": 2}}, lambda q: q.affine.group == 4),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_selects_the_method(name):
    config, built_as_asked = CONFIGS[name]
    checked = quantizer_section().check({"codebook_size": 16, **config}, "model.quantizer")
    quantizer = seqvq.build_quantizer(8, **checked)
    assert built_as_asked(quantizer)
    result = quantizer(torch.randn(2, 5, 8), lengths=torch.tensor([5, 3]))
    assert torch.isfinite(result.quantized).all()


def test_unknown_key_of_a_method_is_named():
    with pytest.raises(ValueError, match="bridge"):
        seqvq.build_quantizer(8, codebook_size=16, **quantizer_section().check({"bridge": {"size": 4}}, "q"))


@pytest.mark.parametrize("name", ["optvq", "bridge"])
def test_residual_stack_takes_code_and_codebook_methods(name):
    config, _ = CONFIGS[name]
    stack = seqvq.ResidualVectorQuantizer(8, 16, 2, **config)
    assert torch.isfinite(stack(torch.randn(2, 5, 8)).quantized).all()


@pytest.mark.parametrize("option, pattern", [({"assignment": "index_backprop"}, "assignment='index_backprop'"),
                                             ({"diveq": {"noise": 1e-3}}, "diveq")])
def test_residual_stack_refuses_output_methods(option, pattern):
    with pytest.raises(ValueError, match=f"ResidualVectorQuantizer does not support {pattern}"):
        seqvq.ResidualVectorQuantizer(8, 16, 2, **option)
