"""Gradient accumulation: k micro-batches then one optimizer step leave every statistic as one k-times-larger batch
(seqvq.quantize.accumulation); without the accumulated step they do not."""
import contextlib
import copy

import pytest
import torch

from seqvq.quantize import MaskedBatchNorm, VectorQuantizer
from seqvq.quantize.accumulation import accumulated_step
from helpers import padded_batch

STATISTICS = {
    "ema counts and sums": dict(codebook_update="ema"),
    "batchnorm moments": dict(pre_norm=True),  # running moments; each micro-batch is normalised by its own
    "affine statistics": dict(affine="ema", codebook_update="ema"),
    "reservoir": dict(reestimate={"init_steps": 100, "every": 10, "steps": 100, "reservoir_size": 40}),
    "replacement clocks": dict(replace_dead_after=2, codebook_update="ema", codebook_size=64),
}
LENGTHS = [7, 3, 6, 5, 2, 7]  # one large batch of 6 sequences = 3 micro-batches of 2


def large_and_micro_batches(step):
    x, mask = padded_batch(LENGTHS, 8, seed=step, scale=2.0)
    x = x + 1.0
    return (x, mask), [(x[i:i + 2], mask[i:i + 2]) for i in range(0, len(LENGTHS), 2)]


def train(quantizer, steps, accumulate, micro=True):
    optimizer = torch.optim.SGD([p for p in quantizer.parameters() if p.requires_grad] or [torch.zeros(1)], lr=0.1)
    for step in range(steps):
        large, micro_batches = large_and_micro_batches(step)
        optimizer.zero_grad()
        if not micro:
            result = quantizer(large[0].requires_grad_(), mask=large[1])
            result.loss.backward()
        else:
            with accumulated_step(quantizer) if accumulate else contextlib.nullcontext():
                for x, mask in micro_batches:
                    result = quantizer(x.requires_grad_(), mask=mask)
                    (result.loss / len(micro_batches)).backward()
        optimizer.step()
    return quantizer


def differing_buffers(a, b):
    return [name for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()) if not torch.equal(x, y)]


@pytest.mark.parametrize("name", STATISTICS)
def test_micro_batches_in_an_accumulated_step_equal_one_large_batch(name):
    torch.manual_seed(0)
    quantizer = VectorQuantizer(8, **{"codebook_size": 6, **STATISTICS[name]})
    large = train(copy.deepcopy(quantizer), 4, accumulate=False, micro=False)
    accumulated = train(copy.deepcopy(quantizer), 4, accumulate=True)
    compared = list(quantizer.state_dict())
    if name == "batchnorm moments":  # the running moments; the codes are those of micro-batches' own normalisation
        compared = [key for key in compared if key.startswith("norm.running")]
    assert [key for key in differing_buffers(large, accumulated) if key in compared] == []
    if name == "replacement clocks":
        assert int(large.rewrites) > 0  # codes were replaced, the same ones with the same vectors
    naive = train(copy.deepcopy(quantizer), 4, accumulate=False)  # micro-batches as steps of their own
    assert differing_buffers(large, naive) != []


def test_a_model_batchnorm_outside_the_quantizer_accumulates_too():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"norm": MaskedBatchNorm(8), "vq": VectorQuantizer(8, 6, codebook_update="ema")})

    def forward(module, x, mask):  # the quantizer sees a normalised batch; its own statistics are compared above
        return module["vq"](module["norm"](x, mask), mask=mask)

    large_model, accumulated_model = copy.deepcopy(model), copy.deepcopy(model)
    for step in range(3):
        (x, mask), micro_batches = large_and_micro_batches(step)
        forward(large_model, x, mask)
        with accumulated_step(accumulated_model):
            for micro_x, micro_mask in micro_batches:
                forward(accumulated_model, micro_x, micro_mask)
    assert [key for key in differing_buffers(large_model, accumulated_model) if key.startswith("norm.")] == []
    assert int(accumulated_model["vq"].step) == 3


def test_an_exception_in_the_block_takes_no_step():
    quantizer = VectorQuantizer(8, 6, codebook_update="ema")
    before = copy.deepcopy(quantizer.state_dict())
    with pytest.raises(ValueError), accumulated_step(quantizer):
        quantizer(torch.randn(5, 8))
        raise ValueError("bad batch")
    assert all(torch.equal(before[name], value) for name, value in quantizer.state_dict().items())
    assert quantizer.micro_batches is None


class Quantized(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(4, 4)
        self.quantizer = VectorQuantizer(4, 8, codebook_update="ema", replace_dead_after=2)
        self.head = torch.nn.Linear(4, 1)

    def forward(self, batch):
        from seqvq.train import StepOutput

        out = self.quantizer(self.encoder(batch["x"]).unsqueeze(1))
        mse = (self.head(out.quantized).squeeze(-1).squeeze(-1) - batch["y"]).pow(2).mean()
        return StepOutput(loss=mse + out.loss, metrics={"mse": mse}, weight=len(batch["x"]))


def test_the_trainer_accumulates_micro_batches_into_one_step(tmp_path):
    import toy_task
    from seqvq.train import TrainConfig, Trainer

    def train(directory, **options):
        torch.manual_seed(0)
        config = TrainConfig(steps=5, batch_size=6, lr=0.01, checkpoint_every=100, eval_every=100, log_every=1,
                             seed=1, device="cpu", **options)
        trainer = Trainer(Quantized(), config, toy_task.make_dataset(), toy_task.collate, exp_dir=tmp_path / directory)
        trainer.fit()
        return trainer.model

    whole, accumulated = train("whole"), train("accumulated", accumulation_steps=3)
    assert int(accumulated.quantizer.step) == int(whole.quantizer.step) == 5
    assert int(whole.quantizer.rewrites) > 0  # codes were replaced, the same ones
    # Counts, clocks and generator states exactly; floats up to the rounding of matmuls over 2 rows, not 6.
    for (name, a), b in zip(whole.state_dict().items(), accumulated.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, msg=name)
        else:
            assert torch.equal(a, b), name


def test_accumulation_steps_and_alternating_optimization_are_refused_together(tmp_path):
    import toy_task
    from seqvq.errors import UserError
    from seqvq.train import TrainConfig, Trainer

    config = TrainConfig(accumulation_steps=2, alternating_inner_steps=2, device="cpu")
    with pytest.raises(UserError, match="accumulation_steps.*alternating_inner_steps"):
        Trainer(Quantized(), config, toy_task.make_dataset(), toy_task.collate, exp_dir=tmp_path)
