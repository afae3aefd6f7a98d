"""Every pair of collapse remedies, and Huh et al.'s "all" row (Table 2: affine + sync + alternating +
replacement): a refused pair raises at construction naming both options; an allowed pair trains a few steps on a
toy task with padded == unpadded, no NaN, exact resume from a mid-run state_dict, and each remedy visibly at work.
"""
import copy
import functools
import itertools

import pytest
import torch
from torch import nn

import seqvq
from seqvq.quantize import AlternatingOptimizer

STEPS, RESUME_AT = 6, 3
# SGD with momentum (optimizer state to resume): Adam would turn the rounding noise of a zero gradient (the
# encoder bias in front of pre_norm's BatchNorm) into full-size steps that differ between padded and packed.
SGD = functools.partial(torch.optim.SGD, momentum=0.5)
REESTIMATE = {"init_steps": 2, "every": 2, "steps": 3, "reservoir_size": 32, "kmeans_iterations": 2}
REESTIMATION_STEPS = {2, 4}
REMEDIES = {
    "pre_norm": {"pre_norm": True},
    "ema": {"codebook_update": "ema"},
    "affine_learned": {"affine": "learned"},
    "affine_ema": {"affine": {"mode": "ema", "momentum": 0.3}},
    "sync_nu": {"sync_nu": 0.5},
    "kmeans_init": {"kmeans_init": True},
    "reestimate": {"reestimate": REESTIMATE},
    "replacement": {"replace_dead_after": 1},
    "stochastic": {"assignment": "stochastic", "temperature": 2.0},
    "gumbel": {"assignment": "gumbel", "temperature": 1.0},
    "cosine": {"distance": "cosine"},
    "alternating": {},  # a training procedure, not a quantizer option: see Run
}
SAME_OPTION = [{"affine_learned", "affine_ema"}, {"stochastic", "gumbel"}]  # two values of one option
REFUSED = {
    frozenset({"ema", "affine_learned"}): "affine='learned'.*codebook_update='ema'",
    frozenset({"ema", "sync_nu"}): "sync_nu.*codebook_update='ema'",
    frozenset({"sync_nu", "gumbel"}): "sync_nu.*assignment='gumbel'",
    frozenset({"kmeans_init", "reestimate"}): "kmeans_init and reestimate",
    frozenset({"ema", "alternating"}): "AlternatingOptimizer.*codebook_update='ema'",
}
PAIRS = [set(pair) for pair in itertools.combinations(REMEDIES, 2) if set(pair) not in SAME_OPTION]
ALL_ROW = {"affine_learned", "sync_nu", "alternating", "replacement"}
ALLOWED = [pair for pair in PAIRS if frozenset(pair) not in REFUSED] + [ALL_ROW]
LENGTHS = [5, 2, 4]


def name_of(remedies):
    return "+".join(sorted(remedies))


class Toy(nn.Module):
    """Encoder -> quantizer -> decoder regression; keeps the last QuantizedResult for the checks."""

    def __init__(self, options):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(3, 4)
        self.quantizer = seqvq.VectorQuantizer(4, 8, **{"alpha": 2.0, "beta": 0.7, "seed": 1, **options})
        self.decoder = nn.Linear(4, 2)

    def forward(self, batch):
        self.result = self.quantizer(self.encoder(batch["x"]), mask=batch["mask"])
        error = (self.decoder(self.result.quantized) - batch["y"]).pow(2).sum(-1)
        return (error * batch["mask"]).sum() / batch["mask"].sum() + self.result.loss


def batch_at(step, packed):
    generator = torch.Generator().manual_seed(step)
    x, y = torch.randn(3, 5, 3, generator=generator) * 2, torch.randn(3, 5, 2, generator=generator)
    mask = torch.arange(5).unsqueeze(0) < torch.tensor(LENGTHS).unsqueeze(1)
    x[~mask] = 100.0  # garbage in the padding must not matter
    if packed:
        return {"x": x[mask].unsqueeze(0), "y": y[mask].unsqueeze(0), "mask": torch.ones(1, int(mask.sum()),
                                                                                     dtype=torch.bool)}
    return {"x": x, "y": y, "mask": mask}


class Run:
    """A model and its optimizer(s) for one combination; ``train`` records what the checks need per step."""

    def __init__(self, remedies, **overrides):
        options = {}
        for remedy in sorted(remedies):
            options.update(REMEDIES[remedy])
        options.update(overrides)
        self.model = Toy(options)
        self.alternating = "alternating" in remedies
        if self.alternating:  # k = 1 keeps padded and packed batches splitting alike; the "all" row is fused
            fused = remedies == ALL_ROW
            self.optimizer = AlternatingOptimizer.from_model(self.model, lr=0.02, codebook_lr=0.05, fused=fused,
                                                             inner_steps=1, optimizer=SGD)
        else:
            self.optimizer = SGD(seqvq.param_groups(self.model, 0.02, 0.05))
        self.rewrites, self.outputs, self.losses = {}, {}, []

    def train(self, steps, packed=False):
        for step in steps:
            batch, before = batch_at(step, packed), int(self.model.quantizer.rewrites)
            if self.alternating:
                loss = self.optimizer.step(batch, self.model).loss
            else:
                loss = self.model(batch)
                self.optimizer.zero_grad()
                loss.backward()
                seqvq.reset_optimizer_state(self.model, self.optimizer)
                self.optimizer.step()
            self.losses.append(loss.detach())
            self.rewrites[step] = int(self.model.quantizer.rewrites) - before
            self.outputs[step] = self.model.result.quantized.detach()[batch["mask"]]
        return self

    def state(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}


@pytest.mark.parametrize("remedies", [pair for pair in PAIRS if frozenset(pair) in REFUSED], ids=name_of)
def test_refused_pairs_raise_at_construction_naming_both(remedies):
    with pytest.raises(ValueError, match=REFUSED[frozenset(remedies)] + ".*(use|or)"):
        Run(remedies)


@pytest.mark.parametrize("remedies", ALLOWED, ids=name_of)
def test_allowed_combination_trains_pads_resumes_and_acts(remedies, one_thread):
    steps = range(1, STEPS + 1)
    run = Run(remedies).train(steps)
    quantizer = run.model.quantizer

    # No NaN, and one quantizer step per optimizer step (alternating passes included).
    assert all(torch.isfinite(loss) for loss in run.losses)
    assert all(torch.isfinite(value).all() for value in run.model.state_dict().values() if value.is_floating_point())
    assert int(quantizer.step) == STEPS

    assert_pads_and_resumes(lambda **options: Run(remedies, **options), run)

    for remedy in remedies:
        assert_active(remedy, run, remedies)


def assert_pads_and_resumes(make_run, run):
    """``run`` (``make_run()`` trained for STEPS steps) equals, step by step and in its final state, the same run on
    unpadded (packed) batches, and a run resumed from a state_dict taken mid-run into a differently initialised
    (and perturbed) model."""
    steps = range(1, STEPS + 1)
    packed = make_run().train(steps, packed=True)
    for step in steps:
        torch.testing.assert_close(run.outputs[step], packed.outputs[step], msg=f"output at step {step}")
    for (name, a), b in zip(run.model.state_dict().items(), packed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)

    first = make_run().train(range(1, RESUME_AT + 1))
    saved = copy.deepcopy(first.state())
    resumed = make_run(seed=99)
    with torch.no_grad():
        for parameter in resumed.model.parameters():
            parameter.add_(1.0)
    resumed.model.load_state_dict(saved["model"])
    resumed.optimizer.load_state_dict(saved["optimizer"])
    resumed.train(range(RESUME_AT + 1, STEPS + 1))
    for (name, a), b in zip(run.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def assert_active(remedy, run, remedies):
    """The method did something visible in ``run``."""
    quantizer = run.model.quantizer
    if remedy == "pre_norm":
        assert quantizer.norm.running_mean.abs().sum() > 0
    elif remedy == "ema":
        assert not torch.equal(quantizer.ema.cluster_size, torch.ones_like(quantizer.ema.cluster_size))
    elif remedy == "affine_learned":
        assert quantizer.affine.scale.abs().sum() > 0 and quantizer.affine.shift.abs().sum() > 0
    elif remedy == "affine_ema":
        assert quantizer.affine.embedding_mean.abs().sum() > 0
    elif remedy == "sync_nu":  # nu changes the codebook update (Huh eq. 21)
        without = Run(remedies, sync_nu=0.0).train(range(1, STEPS + 1)).model.quantizer
        assert not torch.allclose(quantizer.codebook, without.codebook)
    elif remedy == "kmeans_init":
        assert quantizer.initialized and run.rewrites[1] >= 1
    elif remedy == "reestimate":  # k-means at the scheduled steps, nothing during the warm-up
        assert run.rewrites[1] == 0
        assert all(run.rewrites[step] == 1 for step in REESTIMATION_STEPS)
    elif remedy == "replacement":  # dead codes replaced after the warm-up, never on a k-means step
        other_steps = [step for step in run.rewrites if not ("reestimate" in remedies and
                                                              (step < 2 or step in REESTIMATION_STEPS))]
        assert sum(run.rewrites[step] for step in other_steps) > 0
    elif remedy in ("stochastic", "gumbel"):
        assert not torch.equal(quantizer.sampling_rng.state, Toy(REMEDIES[remedy]).quantizer.sampling_rng.state)
    elif remedy == "cosine":
        torch.testing.assert_close(run.outputs[STEPS].norm(dim=-1), torch.ones(sum(LENGTHS)))
    elif remedy == "alternating":
        assert run.optimizer.codebook_optimizer.state  # the codebook was stepped by its own optimizer
