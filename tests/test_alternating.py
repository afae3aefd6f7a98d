"""Alternating optimization (Huh eq. 17-18, §5.4): inner codebook steps on sub-batches, then the task step."""
import collections
import copy
import dataclasses

import pytest
import torch
from torch import nn

import seqvq
from seqvq.quantize.alternating import AlternatingOptimizer, split_batch
from seqvq.quantize.core import quantizer_passes
from seqvq.quantize.optim import codebook_parameters


class Model(nn.Module):
    def __init__(self, codebook_update="gradient"):
        super().__init__()
        self.encoder = nn.Linear(3, 4)
        affine = "learned" if codebook_update == "gradient" else None
        self.quantizer = seqvq.VectorQuantizer(4, 6, codebook_update=codebook_update, alpha=2.0, beta=0.7,
                                               affine=affine)
        if affine:  # start the affine map away from identity, so its gradients are not trivially zero
            with torch.no_grad():
                self.quantizer.affine.scale.fill_(0.5)
                self.quantizer.affine.shift.fill_(0.1)
        self.decoder = nn.Linear(4, 2)

    def encode(self, batch):
        return self.encoder(batch["x"]), batch["mask"]

    def forward(self, batch):
        z_e, mask = self.encode(batch)
        res = self.quantizer(z_e, mask=mask)
        error = (self.decoder(res.quantized) - batch["y"]).pow(2).sum(-1)
        return (error * mask).sum() / mask.sum() + res.loss

    def codebook_loss(self, part):
        with torch.no_grad():
            z_e, mask = self.encode(part)
        return self.quantizer(z_e, mask=mask).losses["codebook"]


def make_batch(seed=0, size=4):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 6, (size,), generator=generator)
    return {"x": torch.randn(size, 5, 3, generator=generator),
            "mask": torch.arange(5).unsqueeze(0) < lengths.unsqueeze(1),
            "y": torch.randn(size, 5, 2, generator=generator), "name": "batch"}


def split_parameters(model):
    codebook = codebook_parameters(model)
    codebook_ids = {id(p) for p in codebook}
    task = [p for p in model.parameters() if id(p) not in codebook_ids]
    return task, codebook


def sgd_helper(model, lr=0.1, codebook_lr=0.3, **options):
    task, codebook = split_parameters(model)
    return AlternatingOptimizer(model, torch.optim.SGD(task, lr=lr), torch.optim.SGD(codebook, lr=codebook_lr),
                                **options)


def reference_step(model, batch, inner_steps, fused, lr=0.1, codebook_lr=0.3):
    """Eq. 17-18 by hand: plain SGD, gradients with torch.autograd.grad."""
    task, codebook = split_parameters(model)
    if fused:
        with quantizer_passes(model, "task_step") as codebook_terms:
            loss = model(batch)
        codebook_grads = torch.autograd.grad(codebook_terms[0], codebook, retain_graph=True)
        task_grads = torch.autograd.grad(loss, task)
        with torch.no_grad():
            for p, g in zip(codebook, codebook_grads):
                p -= codebook_lr * g
            for p, g in zip(task, task_grads):
                p -= lr * g
        return
    for part in split_batch(batch, inner_steps):
        with quantizer_passes(model, "codebook_fit"):  # one optimizer step is one quantizer step
            grads = torch.autograd.grad(model.codebook_loss(part), codebook)
        with torch.no_grad():
            for p, g in zip(codebook, grads):
                p -= codebook_lr * g
    with quantizer_passes(model, "task_step"):
        grads = torch.autograd.grad(model(batch), task)
    with torch.no_grad():
        for p, g in zip(task, grads):
            p -= lr * g


@pytest.mark.parametrize("inner_steps, fused", [(1, False), (2, False), (4, False), (1, True)])
def test_steps_equal_eq_17_then_eq_18_by_hand(inner_steps, fused):
    torch.manual_seed(0)
    model, reference = Model(), Model()
    reference.load_state_dict(model.state_dict())
    helper = sgd_helper(model, inner_steps=inner_steps, fused=fused)
    for seed in range(3):
        batch = make_batch(seed)
        result = helper.step(batch, model, model.codebook_loss)
        reference_step(reference, batch, inner_steps, fused)
        assert result.inner_losses.shape == (inner_steps,)
        for (name, a), b in zip(model.named_parameters(), reference.parameters()):
            torch.testing.assert_close(a, b, msg=name)
            assert a.grad is None or all(a is not p for p in codebook_parameters(model)), name  # no inner grad left
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_inner_loop_sends_no_gradient_outside_the_codebook_even_from_a_careless_inner_loss():
    torch.manual_seed(0)
    model = Model()
    helper = sgd_helper(model, inner_steps=2)
    phase, received = ["inner"], collections.Counter()
    for name, parameter in model.named_parameters():
        parameter.register_hook(lambda grad, name=name: received.update([(phase[0], name)]))

    def careless_inner_loss(part):  # encoder WITH gradients, and the loss includes the commitment term that
        z_e, mask = model.encode(part)  # reaches it: the helper must still send nothing outside the codebook
        return model.quantizer(z_e, mask=mask).loss

    def task_loss(batch):
        phase[0] = "task"
        for parameter in model.parameters():
            assert parameter.grad is None  # nothing from the inner loop waits to be added to the task gradient
        return model(batch)

    helper.step(make_batch(), task_loss, careless_inner_loss)
    inner = {name for phase_name, name in received if phase_name == "inner"}
    assert inner == {"quantizer.codebook", "quantizer.affine.scale", "quantizer.affine.shift"}
    assert all(count == 2 for (phase_name, _), count in received.items() if phase_name == "inner")
    affine = [model.quantizer.affine.scale, model.quantizer.affine.shift, model.quantizer.codebook]
    assert all(p.grad is None for p in affine)


def test_ema_codebooks_are_refused():
    with pytest.raises(ValueError, match="AlternatingOptimizer.*codebook_update='ema'"):
        AlternatingOptimizer.from_model(Model(codebook_update="ema"), lr=0.01, inner_steps=2)


def test_optimizers_are_checked_and_state_round_trips():
    model = Model()
    task, codebook = split_parameters(model)
    with pytest.raises(ValueError, match="task_optimizer holds codebook parameters"):
        AlternatingOptimizer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(codebook, lr=0.1))
    with pytest.raises(ValueError, match="not codebook parameters"):
        AlternatingOptimizer(model, torch.optim.SGD(task, lr=0.1), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="exactly one inner step"):
        sgd_helper(model, inner_steps=2, fused=True)
    helper = AlternatingOptimizer.from_model(model, lr=0.01, codebook_lr=0.1, inner_steps=2)
    helper.step(make_batch(), model, model.codebook_loss)
    restored = AlternatingOptimizer.from_model(Model(), lr=0.01, codebook_lr=0.1, inner_steps=2)
    restored.load_state_dict(copy.deepcopy(helper.state_dict()))
    assert restored.codebook_optimizer.state_dict()["state"].keys() == helper.codebook_optimizer.state_dict()[
        "state"].keys()
    assert restored.codebook_optimizer.param_groups[0]["lr"] == 0.1


def test_task_gradient_clipping_bounds_the_task_step_only():
    torch.manual_seed(0)
    model, reference = Model(), Model()
    reference.load_state_dict(model.state_dict())
    clipped, plain = sgd_helper(model, clip_grad_norm=1e-3), sgd_helper(reference)
    batch = make_batch()
    task_before = [p.detach().clone() for p in split_parameters(model)[0]]
    result = clipped.step(batch, model, model.codebook_loss)
    plain.step(batch, reference, reference.codebook_loss)
    assert result.grad_norm > 1e-3
    moved = torch.cat([(p - b).flatten() for p, b in zip(split_parameters(model)[0], task_before)])
    torch.testing.assert_close(moved.norm(), torch.tensor(0.1 * 1e-3))  # lr x the clipped norm
    for a, b in zip(split_parameters(model)[1], split_parameters(reference)[1]):
        torch.testing.assert_close(a, b)  # the inner codebook steps are not clipped


@pytest.mark.parametrize("inner_steps, fused, bad", [(3, False, "task"), (3, False, "inner"), (1, True, "task"),
                                                     (1, True, "inner")])
def test_a_nonfinite_step_raises_before_it_is_applied_and_undoes_the_inner_steps(inner_steps, fused, bad):
    from seqvq.quantize.alternating import NonFiniteStep

    torch.manual_seed(0)
    model = Model()
    task, codebook = split_parameters(model)
    helper = AlternatingOptimizer(model, torch.optim.SGD(task, lr=0.1, momentum=0.9),
                                  torch.optim.SGD(codebook, lr=0.3, momentum=0.9), inner_steps=inner_steps,
                                  fused=fused, check_finite=True)
    helper.step(make_batch(seed=0), model, model.codebook_loss)  # momentum buffers to keep
    before = copy.deepcopy((model.state_dict(), helper.state_dict()))
    inner_calls = []

    def inner_loss(part):  # the last inner step's loss is NaN
        inner_calls.append(part)
        loss = model.codebook_loss(part)
        return loss * float("nan") if bad == "inner" and len(inner_calls) == inner_steps else loss

    def task_loss(batch):
        loss = model(batch)
        if fused and bad == "inner":  # a NaN codebook term (the fused inner loss) under a finite task loss
            model.quantizer.codebook_terms.append(torch.tensor(float("nan")))
        return loss * (float("nan") if bad == "task" else 1.0)

    where = "task step" if bad == "task" else f"inner codebook step {inner_steps} of {inner_steps}"
    with pytest.raises(NonFiniteStep, match=f"{where}: loss nan"):
        helper.step(make_batch(seed=1), task_loss, None if fused else inner_loss)
    model_state, optimizer_state = before
    for name, value in model.named_parameters():
        assert torch.equal(value, model_state[name]) and value.grad is None, name
    for name in ("task", "codebook"):
        for index, state in optimizer_state[name]["state"].items():
            assert torch.equal(helper.state_dict()[name]["state"][index]["momentum_buffer"],
                               state["momentum_buffer"]), (name, index)


@dataclasses.dataclass
class Batch:
    x: torch.Tensor
    lengths: torch.Tensor
    names: tuple


Pair = collections.namedtuple("Pair", "a b")


def test_split_batch_slices_every_tensor_along_the_batch_axis():
    batch = {"data": Batch(torch.arange(10).view(5, 2), torch.arange(5), ("u1", "u2")),
             "pair": Pair(torch.arange(5), torch.tensor(7.0)), "tag": "train"}
    parts = split_batch(batch, 2)
    assert [part["data"].x.shape[0] for part in parts] == [3, 2]
    assert torch.equal(torch.cat([part["data"].x for part in parts]), batch["data"].x)
    assert torch.equal(parts[1]["pair"].a, torch.tensor([3, 4])) and isinstance(parts[1]["pair"], Pair)
    assert parts[1]["pair"].b == 7.0 and parts[0]["tag"] == "train" and parts[0]["data"].names == ("u1", "u2")
    with pytest.raises(ValueError, match=r"batch\['targets'\] has leading size 7"):
        split_batch({"x": torch.zeros(5, 2), "targets": torch.zeros(7)}, 2)
    assert [p["x"].shape[0] for p in split_batch({"x": torch.zeros(5, 2)}, 6)] == [1] * 5  # short batch


class SyncModel(nn.Module):
    """No affine map, so the nu term lands on the codebook rows of the selected codes, readable by hand."""

    def __init__(self, sync_nu):
        super().__init__()
        torch.manual_seed(3)
        self.encoder = nn.Linear(3, 4)
        self.quantizer = seqvq.VectorQuantizer(4, 6, sync_nu=sync_nu, alpha=2.0, beta=0.7)
        self.decoder = nn.Linear(4, 2)

    def forward(self, batch):
        z_e, mask = self.encoder(batch["x"]), batch["mask"]
        self.result = self.quantizer(z_e, mask=mask)
        self.result.quantized.retain_grad()
        error = (self.decoder(self.result.quantized) - batch["y"]).pow(2).sum(-1)
        return (error * mask).sum() / mask.sum() + self.result.loss


@pytest.mark.parametrize("inner_steps, fused", [(1, True), (1, False), (2, False)])
def test_sync_nu_adds_exactly_nu_times_the_task_gradient_to_the_codebook_update(inner_steps, fused):
    """Huh eq. 21 under alternating optimization: with SGD at codebook rate lr, the codebook after a step with nu
    differs from the one with nu = 0 by -lr * nu * sum_{i: code k} dL_task/dz_q_i, and nothing else differs."""
    nu, codebook_lr = 0.6, 0.3
    synced, plain = SyncModel(nu), SyncModel(0.0)
    batch = make_batch(seed=4)
    for model in (synced, plain):
        sgd_helper(model, codebook_lr=codebook_lr, inner_steps=inner_steps, fused=fused).step(batch, model)
    mask = batch["mask"]
    task_gradient = synced.result.quantized.grad[mask]  # dL/d(output) at the valid positions, the task pass's
    codes = synced.result.codes[mask]
    assert torch.equal(codes, plain.result.codes[mask])
    expected = -codebook_lr * nu * torch.zeros(6, 4).index_add_(0, codes, task_gradient)
    difference = synced.quantizer.codebook.detach()[0] - plain.quantizer.codebook.detach()[0]
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(difference, expected)
    for (name, a), b in zip(synced.named_parameters(), plain.parameters()):
        if name != "quantizer.codebook":
            torch.testing.assert_close(a, b, msg=name)


def test_nu_and_gumbel_need_what_ema_and_gumbel_lack():
    with pytest.raises(ValueError, match="sync_nu.*codebook_update='ema'.*use one or the other"):
        seqvq.VectorQuantizer(4, 6, sync_nu=0.5, codebook_update="ema")
    with pytest.raises(ValueError, match="sync_nu.*assignment='gumbel'.*use one or the other"):
        seqvq.VectorQuantizer(4, 6, sync_nu=0.5, assignment="gumbel")


class PassModel(nn.Module):
    """Every quantizer state that a step changes: step, reservoir, affine EMA statistics, LRU clocks and
    replacement, EMA-free temperature anneal."""

    def __init__(self, **options):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(3, 4)
        self.quantizer = seqvq.VectorQuantizer(4, 16, **options)
        self.decoder = nn.Linear(4, 2)

    def forward(self, batch):
        res = self.quantizer(self.encoder(batch["x"]), mask=batch["mask"])
        error = (self.decoder(res.quantized) - batch["y"]).pow(2).sum(-1)
        return (error * batch["mask"]).sum() / batch["mask"].sum() + res.loss


STATEFUL = dict(affine={"mode": "ema", "momentum": 0.3}, replace_dead_after=1, assignment="stochastic",
                temperature={"start": 2.0, "end": 0.1, "decay_steps": 10},
                reestimate={"init_steps": 2, "every": 2, "steps": 6, "reservoir_size": 1000,
                            "restart_reservoir": False})


@pytest.mark.parametrize("assignment", ["stochastic", "gumbel"])
@pytest.mark.parametrize("kind", ["codebook_fit", "zero_loss", "bypass"])
def test_a_pass_that_updates_no_state_leaves_every_buffer_and_the_sampler_as_they_were(kind, assignment):
    model = PassModel(**{**STATEFUL, "assignment": assignment})
    model(make_batch(seed=0))  # past step 0, so the clocks and statistics hold something
    before = copy.deepcopy(model.state_dict())
    with quantizer_passes(model, kind) as terms:
        model(make_batch(seed=1))
        model(make_batch(seed=2))
    assert len(terms) == 2 and (kind == "bypass" or terms[0].requires_grad)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("assignment", ["stochastic", "gumbel"])
def test_samples_do_not_depend_on_how_many_stateless_passes_ran(assignment):
    """The state-updating passes draw the same samples whatever passes ran in between (k inner passes, the
    gradient gap's, a rank's extra ones), and the stateless passes do not repeat the next step's noise."""
    torch.manual_seed(0)
    quantizers = [seqvq.VectorQuantizer(4, 64, assignment=assignment, temperature=100.0) for _ in range(2)]
    quantizers[1].load_state_dict(quantizers[0].state_dict())
    for step in range(3):
        x = torch.randn(50, 4)
        with quantizer_passes(quantizers[0], ["codebook_fit", "zero_loss", "bypass"][step]):
            stateless = [quantizers[0](x).codes for _ in range(step + 1)]
        codes = [quantizer(x).codes for quantizer in quantizers]
        assert torch.equal(codes[0], codes[1])
        assert all(torch.equal(stateless[0], c) for c in stateless)  # one draw until the next step
        assert not torch.equal(stateless[0], codes[0])
    for (name, a), b in zip(quantizers[0].state_dict().items(), quantizers[1].state_dict().values()):
        assert torch.equal(a, b), name


def test_alternating_steps_advance_the_sampler_once_per_step_whatever_k():
    options = [dict(inner_steps=1), dict(inner_steps=3), dict(inner_steps=1, fused=True)]
    models = [PassModel(**STATEFUL) for _ in range(len(options) + 1)]
    helpers = [sgd_helper(model, **option) for model, option in zip(models, options)]
    for step in range(1, 4):
        batch = make_batch(seed=step)
        for helper, model in zip(helpers, models):
            helper.step(batch, model)
        models[-1](batch)  # a plain training step's forward pass
    for model in models[:-1]:
        assert torch.equal(model.quantizer.sampling_rng.state, models[-1].quantizer.sampling_rng.state)


@pytest.mark.parametrize("inner_steps, fused", [(3, False), (1, True)])
def test_one_optimizer_step_is_one_quantizer_step(inner_steps, fused):
    model = PassModel(**STATEFUL)
    helper = sgd_helper(model, inner_steps=inner_steps, fused=fused)
    valid = 0
    rewrites_at = {}
    for step in range(1, 6):
        batch = make_batch(seed=step)
        valid += int(batch["mask"].sum())
        before = int(model.quantizer.rewrites)
        helper.step(batch, model)
        rewrites_at[step] = int(model.quantizer.rewrites) - before
    quantizer = model.quantizer
    assert int(quantizer.step) == 5
    assert int(quantizer.reestimation.reservoir.seen) == valid  # every vector entered once (steps 1-5 <= 6)
    assert quantizer.current_temperature() == seqvq.quantize.annealed_temperature(5, 2.0, 0.1, 10)
    assert rewrites_at[1] == 0 and rewrites_at[2] == 1 and rewrites_at[4] == 1  # k-means at 2 and 4, nothing else
    assert int(quantizer.replacement.last_used.max()) <= 5


def test_trainer_steps_with_inner_steps_count_once(tmp_path):
    """Through the trainer (k = 2 sub-batches per step): N optimizer steps are N quantizer steps; every vector
    enters the reservoir once; Algorithm 1, the LRU clock and the anneal run at the optimizer-step rate."""
    import toy_task
    from seqvq.train import StepOutput, TrainConfig, Trainer

    class Quantized(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(4, 4)
            self.quantizer = seqvq.VectorQuantizer(4, 8, **STATEFUL)
            self.head = nn.Linear(4, 1)

        def forward(self, batch):
            out = self.quantizer(self.encoder(batch["x"]).unsqueeze(1))
            mse = (self.head(out.quantized).squeeze(-1).squeeze(-1) - batch["y"]).pow(2).mean()
            return StepOutput(loss=mse + out.loss, metrics={"mse": mse}, weight=len(batch["x"]))

    torch.manual_seed(0)
    config = TrainConfig(steps=5, batch_size=4, lr=0.01, codebook_lr=0.1, alternating_inner_steps=2,
                         checkpoint_every=100, eval_every=100, log_every=1, seed=1, device="cpu")
    trainer = Trainer(Quantized(), config, toy_task.make_dataset(size=12), toy_task.collate, exp_dir=tmp_path)
    trainer.fit()
    quantizer = trainer.model.quantizer
    assert int(quantizer.step) == 5
    assert int(quantizer.reestimation.reservoir.seen) == 5 * 4  # 5 batches of 4 one-vector items, each once
    assert int(quantizer.rewrites) >= 2  # k-means at steps 2 and 4 (replacements may add more)
    assert int(quantizer.replacement.last_used.max()) == 5
    assert quantizer.current_temperature() == seqvq.quantize.annealed_temperature(5, 2.0, 0.1, 10)


def test_pass_kinds_are_checked_and_restored():
    model = Model()
    with pytest.raises(ValueError, match="pass kind must be one of"):
        with quantizer_passes(model, "inner"):
            pass
    with quantizer_passes(model, "codebook_fit"):
        with quantizer_passes(model, "bypass"):
            assert model.quantizer.pass_kind == "bypass"
        assert model.quantizer.pass_kind == "codebook_fit"
    assert model.quantizer.pass_kind == "step" and model.quantizer.codebook_terms is None
