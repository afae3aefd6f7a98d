"""seqvq.quantize.diagnose: each bottleneck's measured state (usage, norms, Huh eq. 13 both ways, code motion,
warm-up) and the cause the rules of seqvq.quantize.causes name from it."""
import dataclasses

import pytest
import torch
from torch import nn

from seqvq.quantize import FiniteScalarQuantizer, VectorQuantizer, diagnose, initial_codebooks
from seqvq.quantize.causes import name_cause
from seqvq.quantize.diagnosis import BottleneckState


class Bottlenecked(nn.Module):
    """batch -> quantizer(linear(batch)); returns the result's loss plus the squared output, as a task would."""

    def __init__(self, quantizer: nn.Module, dim: int = 4):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.quantizer = quantizer
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(dim))
            self.linear.bias.zero_()

    def forward(self, batch):
        result = self.quantizer(self.linear(batch))
        return result.loss + result.quantized.pow(2).mean()


def batches(scale: float, count: int = 3, dim: int = 4, offset: float = 0.0):
    generator = torch.Generator().manual_seed(0)
    return [scale * (torch.randn(256, dim, generator=generator) + offset) for _ in range(count)]


def test_measures_usage_norms_and_distances_without_changing_the_model():
    quantizer = VectorQuantizer(4, 32, replace_dead_after=5)
    model = Bottlenecked(quantizer)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    start = initial_codebooks(model)
    with torch.no_grad():
        quantizer.codebook[0, :3] = 0.0  # three used codes at the origin... and moved from their start
    report = diagnose(model, batches(1.0), with_gradient_gap=True, initial=start)
    state = report.bottlenecks[0]
    assert state.name == "quantizer" and state.codebook_size == 32 and state.vectors == 768
    assert 1 <= state.codes_used <= 32 and state.dead_codes == 32 - state.codes_used
    assert state.encoder_norm == pytest.approx(2.0, rel=0.15)  # E||z|| of N(0, I_4) is about 1.88
    assert state.code_norm == pytest.approx(float(quantizer.codebook.detach().norm(dim=-1).mean()), rel=1e-5)
    assert state.data_to_codes > 0 and state.codes_to_data > 0 and state.gradient_gap > 0
    assert state.used_code_motion > 0 and state.dead_code_ages is not None
    assert all(torch.equal(value, before[name]) or name == "quantizer.codebook"
               for name, value in model.state_dict().items())
    assert model.training
    assert "codes used" in str(report)


def test_names_scale_mismatch_for_inputs_far_larger_than_the_codes():
    model = Bottlenecked(VectorQuantizer(4, 64, init_scale=0.1))
    finding = diagnose(model, batches(10.0, offset=3.0)).findings[0]  # far off the codes, in one direction
    assert finding.cause == "collapse from scale mismatch"
    assert "model.quantizer.pre_norm=true" in finding.overrides and "Łańcucki" in finding.source


def test_names_a_healthy_codebook_healthy():
    data = torch.cat(batches(1.0))
    quantizer = VectorQuantizer(4, 64)
    with torch.no_grad():
        quantizer.codebook[0] = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(1))[:64]]
    finding = diagnose(Bottlenecked(quantizer), batches(1.0)).findings[0]
    assert finding.cause == "healthy" and finding.overrides == []


def test_names_a_run_that_ended_inside_the_warm_up():
    quantizer = VectorQuantizer(4, 16, pre_norm=True, reestimate={"init_steps": 100, "reservoir_size": 256})
    quantizer.step.fill_(40)
    report = diagnose(Bottlenecked(quantizer), batches(1.0))
    assert not report.bottlenecks[0].quantizing
    assert report.findings[0].cause == "warm-up longer than the run"


def test_names_fsq_without_a_norm():
    fsq = FiniteScalarQuantizer(4, [8, 5, 5, 5])
    report = diagnose(Bottlenecked(fsq), batches(100.0))
    assert report.bottlenecks[0].codes_used < 100  # tanh saturates: only the outer levels of 1,000 codes
    assert report.findings[0].cause == "FSQ without a norm before it"
    assert report.findings[0].overrides == ["model.quantizer.pre_norm=true"]


def test_names_dead_codes_growing_from_the_history():
    state = BottleneckState("q", "vq", 200, 128, codes_used=20, encoder_norm=1.0, code_norm=1.0, relative_error=0.1,
                            used_code_motion=1.0, data_to_codes=1.0, codes_to_data=10.0)
    history = [{"step": step, "split": "train", "active_codes": active}
               for step, active in ((10, 60), (50, 110), (100, 70), (150, 30), (190, 22), (200, 20))]
    finding = name_cause(state, {"prefix": "model.quantizer", "kind": "vq"}, history)
    assert finding.cause == "dead codes growing"
    assert finding.overrides == ["model.quantizer.replace_dead_after=20"]


def test_usage_counts_the_codes_a_batch_can_reach():
    """A 16,384-code speech bottleneck seen on one batch of 906 vectors (recipes/wsj, 16,384 codes, BN + re-estimation
    on 2 reservoir vectors a code, dev PER 14.8): 752 codes is most of what 906 draws reach, not a collapse."""
    settings = {"prefix": "model.quantizer", "kind": "vq", "pre_norm": True,
                "reestimate": {"reservoir_size": 32768, "restart_reservoir": True}}
    state = BottleneckState("q", "vq", 1000, 16384, perplexity=647.5, codes_used=752, vectors=906, encoder_norm=8.7,
                            code_norm=9.7, relative_error=0.085, used_code_motion=8.9, data_to_codes=7.3,
                            codes_to_data=20.9)
    assert state.usage == pytest.approx(752 / (16384 * (1 - (1 - 1 / 16384) ** 906)))
    assert 0.8 < state.usage < 0.9
    assert name_cause(state, settings, []).cause == "healthy"
    collapsed = dataclasses.replace(state, codes_used=60, perplexity=20.0)
    assert name_cause(collapsed, settings, []).cause != "healthy"
    assert dataclasses.replace(state, vectors=0).usage == 752 / 16384  # no count: the whole codebook


def test_refuses_a_model_without_quantizer():
    with pytest.raises(ValueError, match="no quantizer"):
        diagnose(nn.Linear(2, 2), [])
