"""torch.compile of the quantizers: one graph per ordinary pass, eager fallback for the passes that need it."""
import copy

import pytest
import torch
import torch._dynamo

from seqvq.quantize import (BinarySphericalQuantizer, FiniteScalarQuantizer, LookupFreeQuantizer, VectorQuantizer,
                            distance)
from seqvq.quantize.compiled import compile_config, compile_quantizer, idle_python_phases, runs_eagerly
from helpers import padded_batch

QUANTIZERS = {
    "plain": lambda: VectorQuantizer(8, 16),
    "pre_norm+ema": lambda: VectorQuantizer(8, 16, pre_norm=True, codebook_update="ema"),
    "affine": lambda: VectorQuantizer(8, 16, affine="learned", sync_nu=0.5),
    "affine_ema": lambda: VectorQuantizer(8, 16, affine="ema", codebook_update="ema"),
    "rotation+cosine+groups": lambda: VectorQuantizer(8, 16, rotation_trick=True, distance="cosine", num_codebooks=2),
    "usage_regularizer": lambda: VectorQuantizer(8, 16, usage_regularizer={"weight": 0.1}),
    "replacement(idle)": lambda: VectorQuantizer(8, 16, replace_dead_after=20),
    "fsq": lambda: FiniteScalarQuantizer(8, levels=[5, 4, 3], pre_norm=True),
    "bsq": lambda: BinarySphericalQuantizer(8, bits=6),
    "lfq": lambda: LookupFreeQuantizer(8, bits=6),
}


def graph_breaks(quantizer, x, mask):
    def run(x, mask):
        result = quantizer(x, mask=mask)
        return result.quantized, result.codes, result.loss, result.metrics["perplexity"]
    torch._dynamo.reset()
    with compile_config(), idle_python_phases(quantizer):
        explanation = torch._dynamo.explain(run)(x, mask)
    return explanation.graph_break_count, [reason.reason.splitlines()[0] for reason in explanation.break_reasons]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", QUANTIZERS)
def test_an_ordinary_pass_traces_without_graph_breaks(name, training):
    torch.manual_seed(0)
    quantizer = QUANTIZERS[name]().train(training)
    x, mask = padded_batch([5, 2, 7], 8)
    for batch_mask in (mask, None):
        count, reasons = graph_breaks(quantizer, x, batch_mask)
        assert count == 0, reasons


def train_alongside(eager, compiled, steps, batches):
    """Train both copies on the same batches; yields whether each pass ran compiled, after checking that codes,
    gradients and every buffer agree exactly (aot_eager runs the same kernels as eager)."""
    eager_opt, compiled_opt = (torch.optim.SGD(q.parameters(), lr=0.1) for q in (eager, compiled))
    for step in range(steps):
        x, mask = batches(step)
        compiled_pass = not runs_eagerly(compiled)
        results = []
        for quantizer, optimizer in ((eager, eager_opt), (compiled, compiled_opt)):
            result = quantizer(x.clone().requires_grad_(True), mask=mask)
            optimizer.zero_grad()
            (result.loss + result.quantized.pow(2).mean()).backward()
            optimizer.step()
            results.append(result)
        assert torch.equal(results[0].codes, results[1].codes)
        for (key, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
            assert torch.equal(a, b), (step, key)
        yield compiled_pass


def test_reestimation_and_replacement_passes_fall_back_and_training_matches_eager(monkeypatch):
    monkeypatch.setattr(distance, "faiss", None)  # eager search by torch too, so ties break alike
    torch.manual_seed(0)
    eager = VectorQuantizer(8, 4, codebook_update="ema", replace_dead_after=4,
                            reestimate={"init_steps": 2, "every": 2, "steps": 3, "reservoir_size": 32})
    compiled = compile_quantizer(copy.deepcopy(eager), backend="aot_eager")

    def batches(step):
        x, mask = padded_batch([6, 3, 5], 8, seed=100 + step)
        if step in (7, 8, 9, 10):  # one region of the space only: codes die, are replaced, eagerly
            x = x.abs() + 3.0
        return x, mask

    compiled_passes = list(train_alongside(eager, compiled, 14, batches))
    # Steps 1-4 feed the reservoir (re-estimations at 2 and 4): eager; then compiled until a code may be dead.
    assert compiled_passes[:4] == [False] * 4
    assert compiled_passes[4] and not all(compiled_passes[4:])
    assert int(eager.rewrites) > 2  # two re-estimations and at least one replacement
    eager.eval(), compiled.eval()
    x = torch.randn(50, 8)
    assert torch.equal(eager(x).codes, compiled(x).codes)


def test_a_compiled_quantizer_keeps_its_state_dict_and_copies():
    quantizer = VectorQuantizer(8, 16, codebook_update="ema")
    keys = list(quantizer.state_dict())
    compile_quantizer(quantizer, backend="aot_eager")
    copied = copy.deepcopy(quantizer)
    assert list(quantizer.state_dict()) == keys
    copied(torch.randn(4, 8))
    assert int(copied.step) == 1 and int(quantizer.step) == 0


def test_train_compile_trains_the_same_model(tmp_path, monkeypatch):
    """``train.compile``: the model compiled (aot_eager here, to keep the test short), the quantizer in its own
    graph with eager replacement passes; the trained state equals the eager run's."""
    import toy_task
    from seqvq.train import StepOutput, TrainConfig, Trainer

    monkeypatch.setattr(distance, "faiss", None)

    class Quantized(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(4, 4)
            self.quantizer = VectorQuantizer(4, 8, pre_norm=True, codebook_update="ema", replace_dead_after=3)
            self.head = torch.nn.Linear(4, 1)

        def forward(self, batch):
            out = self.quantizer(self.encoder(batch["x"]).unsqueeze(1))
            mse = (self.head(out.quantized).squeeze(-1).squeeze(-1) - batch["y"]).pow(2).mean()
            return StepOutput(loss=mse + out.loss, metrics={"mse": mse}, weight=len(batch["x"]))

    def train(directory, **options):
        torch.manual_seed(0)
        config = TrainConfig(steps=6, batch_size=4, lr=0.01, checkpoint_every=100, eval_every=100, log_every=1,
                             seed=1, device="cpu", **options)
        trainer = Trainer(Quantized(), config, toy_task.make_dataset(), toy_task.collate,
                          exp_dir=tmp_path / directory)
        trainer.fit()
        return trainer.model

    eager, compiled = train("eager"), train("compiled", compile=True, compile_backend="aot_eager")
    assert compiled.quantizer.compiled_forward is not None
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_compiled_quantizer_accumulates_micro_batches_like_an_eager_one(monkeypatch):
    from seqvq.quantize.accumulation import accumulated_step

    monkeypatch.setattr(distance, "faiss", None)
    torch.manual_seed(0)
    eager = VectorQuantizer(8, 6, pre_norm=True, codebook_update="ema")
    compiled = compile_quantizer(copy.deepcopy(eager), backend="aot_eager")
    for step in range(3):
        x, mask = padded_batch([5, 2, 7, 4], 8, seed=step)
        for quantizer in (eager, compiled):
            assert not runs_eagerly(quantizer)
            with accumulated_step(quantizer):
                for start in (0, 2):
                    quantizer(x[start:start + 2], mask=mask[start:start + 2])
        for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
            assert torch.equal(a, b), name
    assert int(compiled.step) == 3


def _compiled_ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    from distributed_helpers import init_rank
    import torch.distributed as dist

    init_rank(rank, init_file)
    distance.faiss = None  # the same torch search in both copies, so ties break alike
    torch.manual_seed(0)
    eager = VectorQuantizer(8, 6, pre_norm=True, codebook_update="ema", usage_regularizer={"weight": 0.1})
    compiled = compile_quantizer(copy.deepcopy(eager), backend="aot_eager")
    eager_passes, gradients = [], []
    for step in range(4):
        x, mask = padded_batch([5, 2, 7, 4], 8, seed=10 * step + rank)
        for quantizer in (eager, compiled):
            quantizer.zero_grad()
            quantizer(x, mask=mask).loss.backward()
        eager_passes.append(runs_eagerly(compiled))
        gradients.append([p.grad.clone() for q in (eager, compiled) for p in q.parameters() if p.grad is not None])
    torch.save({"eager": eager.state_dict(), "compiled": compiled.state_dict(), "eager_passes": eager_passes,
                "gradients": gradients}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_a_compiled_quantizer_under_two_gloo_ranks_runs_eagerly_and_matches_eager(tmp_path):
    """BatchNorm moments and the usage term are summed over ranks differentiably, which a graph does not reproduce
    (compiled.py): under DDP every pass of a compiled quantizer runs eagerly, with the eager state and gradients."""
    from distributed_helpers import rank_results

    records = rank_results(_compiled_ddp_worker, tmp_path)
    for record in records:
        assert record["eager_passes"] == [True] * 4
        for (name, a), b in zip(record["eager"].items(), record["compiled"].values()):
            assert torch.equal(a, b), name
        for step in record["gradients"]:
            half = len(step) // 2
            assert half > 0 and all(torch.equal(a, b) for a, b in zip(step[:half], step[half:]))
    for a, b in zip(records[0]["compiled"].values(), records[1]["compiled"].values()):
        assert torch.equal(a, b)  # every rank holds the same quantizer
