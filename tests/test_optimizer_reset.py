"""seqvq.reset_optimizer_state_on_step: the optimizer clears the moments of rewritten codes itself, right before each
step it takes, so that the training loop is just backward/step.  Every trajectory here equals, bit for bit, the loop
that calls seqvq.reset_optimizer_state by hand after backward and before the step."""
import io
import warnings

import pytest
import torch

import seqvq
from seqvq.train import StepOutput, Trainer, TrainConfig


def _model():
    torch.manual_seed(7)  # re-estimation at quantizer steps 6, 9, 12; LRU replacement of a few codes at 8, 11, 14
    return torch.nn.Sequential(
        torch.nn.Linear(6, 6),
        seqvq.VectorQuantizer(6, 12, affine="learned", replace_dead_after=2, sync_nu=0.5,
                              reestimate={"init_steps": 6, "every": 3, "steps": 9, "reservoir_size": 40}))


def _loss(model, step, part=0):
    generator = torch.Generator().manual_seed(1000 + 10 * step + part)
    x = torch.randn(4, 5, 6, generator=generator)
    lengths = torch.randint(1, 6, (4,), generator=generator)
    out = model[1](model[0](x), lengths=lengths)
    return out.loss + out.quantized.pow(2).mean()


def _train(model, optimizer, steps, by_hand, start=0, accumulate=1, scaler=None, scheduler=None, nonfinite_at=()):
    """``accumulate`` backward passes per step; ``by_hand``: call reset_optimizer_state after them, else only
    backward/step.  A gradient made infinite at a step in ``nonfinite_at`` makes ``scaler`` skip that step."""
    for step in range(start, steps):
        optimizer.zero_grad()
        for part in range(accumulate):
            loss = _loss(model, step, part) / accumulate
            (loss if scaler is None else scaler.scale(loss)).backward()
        if step in nonfinite_at:
            model[0].weight.grad[0, 0] = float("inf")
        if by_hand:
            seqvq.reset_optimizer_state(model, optimizer)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        if scheduler is not None:
            scheduler.step()


def _same(model, optimizer, other_model, other_optimizer) -> bool:
    states = [(model.state_dict(), other_model.state_dict())]
    for parameter, other in zip(model.parameters(), other_model.parameters()):
        state, other_state = optimizer.state.get(parameter, {}), other_optimizer.state.get(other, {})
        if state.keys() != other_state.keys():
            return False
        states.append((state, other_state))
    return all(a.keys() == b.keys() and all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)
               for a, b in states)


OPTIMIZERS = {
    "adam": lambda groups: torch.optim.Adam(groups),
    "adamw": lambda groups: torch.optim.AdamW(groups, weight_decay=0.1),
    "sgd_momentum": lambda groups: torch.optim.SGD(groups, momentum=0.9),
}


def _hooked_and_by_hand(kind="adam"):
    pairs = []
    for hooked in (True, False):
        model = _model()
        optimizer = OPTIMIZERS[kind](seqvq.param_groups(model, 1e-2, 1e-1))
        if hooked:
            seqvq.reset_optimizer_state_on_step(model, optimizer)
        pairs.append((model, optimizer))
    return pairs


def test_moments_of_rewritten_codes_are_zero_when_the_step_begins():
    vq = seqvq.VectorQuantizer(4, 8)
    optimizer = torch.optim.Adam(seqvq.param_groups(vq, 1e-2))
    seqvq.reset_optimizer_state_on_step(vq, optimizer)
    seen = []  # the codebook's optimizer state as the update finds it (hooks run in the order they were registered)
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(
        {name: value.clone() for name, value in opt.state[vq.codebook].items()} if vq.codebook in opt.state
        else None))

    def step():
        optimizer.zero_grad()
        vq(torch.randn(1, 32, 4)).loss.backward()
        optimizer.step()

    step()
    step()
    rows = torch.zeros(1, 8, dtype=torch.bool)
    rows[0, 3] = True
    vq.rewrite_codes(torch.zeros(1, 8, 4), rows)  # what LRU replacement does to the dead codes
    step()
    assert (seen[-1]["exp_avg"][0, 3] == 0).all() and (seen[-1]["exp_avg_sq"][0, 3] == 0).all()
    assert seen[-1]["exp_avg_sq"][0, [0, 1, 2, 4, 5, 6, 7]].abs().sum() > 0
    vq.rewrite_codes(torch.zeros(1, 8, 4))  # what re-estimation does to the whole codebook
    step()
    assert seen[-1] is None  # the whole state goes, so Adam's bias correction restarts too
    step()
    assert seen[-1] is not None


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_trajectory_equals_the_loop_that_resets_by_hand(kind):
    (hooked, hooked_opt), (by_hand, by_hand_opt) = _hooked_and_by_hand(kind)
    _train(hooked, hooked_opt, 14, by_hand=False)
    _train(by_hand, by_hand_opt, 14, by_hand=True)
    assert int(hooked[1].rewrites) == 6  # three re-estimations, three replacements
    assert _same(hooked, hooked_opt, by_hand, by_hand_opt)
    never_reset = _model()
    never_reset_opt = OPTIMIZERS[kind](seqvq.param_groups(never_reset, 1e-2, 1e-1))
    _train(never_reset, never_reset_opt, 14, by_hand=False)
    assert not torch.equal(never_reset[1].codebook, by_hand[1].codebook)  # the resets matter in this run


def test_gradient_accumulation_resets_at_the_steps_taken():
    (hooked, hooked_opt), (by_hand, by_hand_opt) = _hooked_and_by_hand()
    calls = []
    hooked_opt.register_step_pre_hook(lambda *_: calls.append(int(hooked[1].step)))
    _train(hooked, hooked_opt, 7, by_hand=False, accumulate=2)  # codes rewritten in either forward pass of a step
    _train(by_hand, by_hand_opt, 7, by_hand=True, accumulate=2)
    assert calls == list(range(2, 15, 2))
    assert _same(hooked, hooked_opt, by_hand, by_hand_opt)


def test_grad_scaler_steps_reset_and_a_skipped_step_defers_the_reset():
    (hooked, hooked_opt), (by_hand, by_hand_opt) = _hooked_and_by_hand()
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0 ** 8) for _ in range(2)]
    # Loop step 8 is the re-estimation at quantizer step 9; its gradient is made infinite, so the scaler skips it.
    _train(hooked, hooked_opt, 14, by_hand=False, scaler=scalers[0], nonfinite_at=(8,))
    _train(by_hand, by_hand_opt, 14, by_hand=True, scaler=scalers[1], nonfinite_at=(8,))
    assert scalers[0].get_scale() == scalers[1].get_scale() < 2.0 ** 8
    assert _same(hooked, hooked_opt, by_hand, by_hand_opt)


def test_lr_scheduler_drives_the_hooked_optimizer():
    (hooked, hooked_opt), (by_hand, by_hand_opt) = _hooked_and_by_hand()
    schedulers = [torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
                  for optimizer in (hooked_opt, by_hand_opt)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(hooked, hooked_opt, 14, by_hand=False, scheduler=schedulers[0])
        _train(by_hand, by_hand_opt, 14, by_hand=True, scheduler=schedulers[1])
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]  # e.g. "step() before optimizer.step()"
    assert hooked_opt.param_groups[0]["lr"] == by_hand_opt.param_groups[0]["lr"] == 1e-2 * 0.5 ** 3
    assert _same(hooked, hooked_opt, by_hand, by_hand_opt)


def test_resume_from_state_dicts_is_exact():
    straight = _model()
    straight_opt = torch.optim.Adam(seqvq.param_groups(straight, 1e-2, 1e-1))
    seqvq.reset_optimizer_state_on_step(straight, straight_opt)
    straight_scheduler = torch.optim.lr_scheduler.StepLR(straight_opt, step_size=4, gamma=0.5)
    _train(straight, straight_opt, 14, by_hand=False, scheduler=straight_scheduler)

    first = _model()
    first_opt = torch.optim.Adam(seqvq.param_groups(first, 1e-2, 1e-1))
    seqvq.reset_optimizer_state_on_step(first, first_opt)
    first_scheduler = torch.optim.lr_scheduler.StepLR(first_opt, step_size=4, gamma=0.5)
    _train(first, first_opt, 7, by_hand=False, scheduler=first_scheduler)  # after one re-estimation, before two
    saved = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": first_opt.state_dict(),
                "scheduler": first_scheduler.state_dict()}, saved)
    saved.seek(0)

    resumed = _model()
    with torch.no_grad():  # scramble, so only the checkpoint can make it right
        for parameter in resumed.parameters():
            parameter.add_(1.0)
    resumed_opt = torch.optim.Adam(seqvq.param_groups(resumed, 1e-2, 1e-1))
    seqvq.reset_optimizer_state_on_step(resumed, resumed_opt)
    resumed_scheduler = torch.optim.lr_scheduler.StepLR(resumed_opt, step_size=4, gamma=0.5)
    checkpoint = torch.load(saved)
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["optimizer"])
    resumed_scheduler.load_state_dict(checkpoint["scheduler"])
    _train(resumed, resumed_opt, 14, by_hand=False, start=7, scheduler=resumed_scheduler)
    assert _same(straight, straight_opt, resumed, resumed_opt)


@pytest.mark.parametrize("positional", [True, False])
def test_a_closure_step_resets_after_the_closure_runs_the_forward_pass(positional):
    """Optimizers that take a closure (and Lightning, which passes one) run the forward pass inside ``step``: the
    codes it rewrites are cleared before the update of the same step."""
    (hooked, hooked_opt), (by_hand, by_hand_opt) = _hooked_and_by_hand("sgd_momentum")
    for step in range(14):
        def closure():
            hooked_opt.zero_grad()
            loss = _loss(hooked, step)
            loss.backward()
            return loss

        hooked_loss = hooked_opt.step(closure) if positional else hooked_opt.step(closure=closure)
        by_hand_opt.zero_grad()
        by_hand_loss = _loss(by_hand, step)
        by_hand_loss.backward()
        seqvq.reset_optimizer_state(by_hand, by_hand_opt)
        by_hand_opt.step()
        assert torch.equal(hooked_loss, by_hand_loss)
    assert _same(hooked, hooked_opt, by_hand, by_hand_opt)


def test_lightning_automatic_optimization(one_thread):
    """Lightning steps with a closure (forward and backward inside ``optimizer.step``), as NeMo's models do."""
    pytest.importorskip("lightning.pytorch", reason="Lightning is not installed")
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = _model()

        def training_step(self, step, index):
            return _loss(self.model, int(step))

        def configure_optimizers(self):
            optimizer = torch.optim.Adam(seqvq.param_groups(self.model, 1e-2, 1e-1))
            seqvq.reset_optimizer_state_on_step(self.model, optimizer)
            return optimizer

    module = Module()
    trainer = pl.Trainer(max_steps=14, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(torch.arange(14), batch_size=None))
    by_hand = _model()
    by_hand_opt = torch.optim.Adam(seqvq.param_groups(by_hand, 1e-2, 1e-1))
    _train(by_hand, by_hand_opt, 14, by_hand=True)
    assert _same(module.model, trainer.optimizers[0], by_hand, by_hand_opt)


def test_removing_the_handle_stops_the_resets():
    vq = seqvq.VectorQuantizer(4, 8)
    optimizer = torch.optim.SGD(seqvq.param_groups(vq, 1e-2), momentum=0.9)
    handle = seqvq.reset_optimizer_state_on_step(vq, optimizer)
    for _ in range(2):
        optimizer.zero_grad()
        vq(torch.randn(1, 32, 4)).loss.backward()
        optimizer.step()
    handle.remove()
    vq.rewrite_codes(torch.zeros(1, 8, 4))
    optimizer.zero_grad()
    vq(torch.randn(1, 32, 4)).loss.backward()
    optimizer.step()
    assert vq.codebook in optimizer.state and int(vq.optimizer_synced_rewrites) < int(vq.rewrites)


class _VQRegression(torch.nn.Module):
    """A task for seqvq's Trainer: a linear encoder, the quantizer of ``_model`` and a loss on its output."""

    def __init__(self):
        super().__init__()
        self.encoder, self.quantizer = _model()

    def forward(self, batch) -> StepOutput:
        out = self.quantizer(self.encoder(batch["x"]), lengths=batch["lengths"])
        return StepOutput(loss=out.loss + out.quantized.pow(2).mean(), metrics={}, weight=len(batch["x"]))


def _vq_items():
    generator = torch.Generator().manual_seed(0)
    return [{"x": torch.randn(5, 6, generator=generator), "length": int(torch.randint(1, 6, (), generator=generator))}
            for _ in range(16)]


def _vq_collate(items):
    return {"x": torch.stack([item["x"] for item in items]),
            "lengths": torch.tensor([item["length"] for item in items])}


def test_trainer_steps_clear_the_moments_of_rewritten_codes(tmp_path):
    config = TrainConfig(steps=14, batch_size=4, lr=1e-2, codebook_lr=1e-1, clip_grad_norm=1.0, checkpoint_every=14,
                         eval_every=14, log_every=14, seed=3, device="cpu")
    trainer = Trainer(_VQRegression(), config, _vq_items(), _vq_collate, exp_dir=tmp_path)
    quantizer, synced, seen = trainer.model.quantizer, [0], []

    def snapshot(optimizer, args, kwargs):  # runs after the trainer's reset: rows rewritten since the last step
        rewritten = quantizer.code_rewritten_at > synced[0]
        synced[0] = int(quantizer.rewrites)
        state = optimizer.state.get(quantizer.codebook)
        seen.append((rewritten, None if state is None else state["exp_avg"].clone()))

    trainer.optimizer.register_step_pre_hook(snapshot)
    trainer.fit()
    wholly = [moments for rewritten, moments in seen[1:] if rewritten.all()]
    partly = [moments[rewritten] for rewritten, moments in seen[1:] if rewritten.any() and not rewritten.all()]
    assert len(wholly) == 3 and all(moments is None for moments in wholly)
    assert partly and all((moments == 0).all() for moments in partly)
