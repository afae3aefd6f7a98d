"""The collapse remedies on the core quantizer: masking across every combination, the Huh Fig. 10 toy
ordering, the synchronized update, affine write-through, re-estimation schedule, replacement, reservoir, k-means
and exact resume."""
import copy

import pytest
import torch

import seqvq
from seqvq import demo
from seqvq.quantize.kmeans import kmeans, kmeans_plus_plus, lloyd
from seqvq.quantize.reservoir import Reservoir

SMALL_REESTIMATION = {"init_steps": 2, "every": 2, "steps": 4, "reservoir_size": 16, "kmeans_iterations": 3}
METHODS = {
    "affine-learned": {"affine": "learned"},
    "affine-ema": {"affine": {"mode": "ema", "momentum": 0.3, "codes_per_group": 4}},
    "sync": {"sync_nu": 0.5},
    "kmeans-init": {"kmeans_init": True},
    "reestimate": {"reestimate": SMALL_REESTIMATION},
    "replacement": {"replace_dead_after": 1},
    "stochastic": {"assignment": "stochastic", "temperature": {"start": 1.0, "end": 0.1, "decay_steps": 5}},
    "gumbel": {"assignment": "gumbel", "temperature": 0.5},
}
COMBINATIONS = dict(METHODS)
COMBINATIONS["affine+reestimate+replacement+sync"] = {
    "affine": "learned", "reestimate": SMALL_REESTIMATION, "replace_dead_after": 1, "sync_nu": 1.0}
COMBINATIONS["affine-ema+kmeans+replacement"] = {
    "affine": {"mode": "ema"}, "kmeans_init": True, "replace_dead_after": 2}
BASES = {
    "l2-gradient": {},
    "cosine-ema-bn-2groups": {"distance": "cosine", "codebook_update": "ema", "pre_norm": True, "num_codebooks": 2},
}


@pytest.mark.parametrize("base", BASES.values(), ids=BASES.keys())
@pytest.mark.parametrize("method", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_padded_equals_unpadded_for_every_method(method, base):
    torch.manual_seed(0)
    if base.get("codebook_update") == "ema" and (method.get("sync_nu") or method.get("affine") == "learned"):
        with pytest.raises(ValueError, match="codebook_update='ema'"):  # both need a codebook gradient
            seqvq.VectorQuantizer(8, 16, **base, **method)
        return
    padded_vq = seqvq.VectorQuantizer(8, 16, **base, **method)
    packed_vq = copy.deepcopy(padded_vq)
    padded_opt = torch.optim.SGD(padded_vq.parameters(), lr=0.1)
    packed_opt = torch.optim.SGD(packed_vq.parameters(), lr=0.1)
    for step in range(7):  # crosses M_init, re-estimations, replacements
        generator = torch.Generator().manual_seed(step)
        x = torch.randn(3, 6, 8, generator=generator)
        mask = torch.arange(6).unsqueeze(0) < torch.tensor([6, 2, 4]).unsqueeze(1)
        x[~mask] = 100.0
        x.requires_grad_(True)  # pass-through steps (before M_init) have no other differentiable input
        padded, packed = padded_vq(x, mask=mask), packed_vq(x[mask].unsqueeze(0))
        assert torch.equal(padded.codes[mask], packed.codes[0]), step
        torch.testing.assert_close(padded.quantized[mask], packed.quantized[0])
        torch.testing.assert_close(padded.loss, packed.loss)
        for key in padded.metrics:
            torch.testing.assert_close(padded.metrics[key], packed.metrics[key])
        for optimizer, out, valid in ((padded_opt, padded, mask), (packed_opt, packed, None)):
            optimizer.zero_grad()
            task = out.quantized[valid].sum() if valid is not None else out.quantized.sum()
            (out.loss + task * 0.01).backward()
            optimizer.step()
        for (name, a), b in zip(padded_vq.state_dict().items(), packed_vq.state_dict().values()):
            torch.testing.assert_close(a, b, msg=f"{name} at step {step}")


def test_collapse_toy_orders_the_remedies_above_plain_vq():
    """Huh et al. Fig. 10: plain VQ leaves most codes dead; affine, replacement, re-estimation each raise it."""
    plain = demo.run_method(demo.METHODS["plain VQ"])["active_codes"]
    assert plain < demo.NUM_CODES // 2
    for name in ("affine (learned)", "affine (EMA statistics)", "LRU replacement", "data-dependent re-estimation",
                 "k-means init"):
        assert demo.run_method(demo.METHODS[name])["active_codes"] > plain, name


def test_stochastic_assignment_samples_in_training_and_is_nearest_in_evaluation():
    torch.manual_seed(5)
    vq = seqvq.VectorQuantizer(4, 16, assignment="stochastic", temperature=100.0)
    x = torch.randn(1, 200, 4)
    nearest = vq.eval()(x).codes
    assert torch.equal(vq(x).codes, nearest)
    sampled = vq.train()(x).codes
    assert (sampled != nearest).float().mean() > 0.5  # tau = 100: nearly uniform over 16 codes
    cold = seqvq.VectorQuantizer(4, 16, assignment="stochastic", temperature=1e-6)
    cold.load_state_dict(vq.state_dict())
    assert torch.equal(cold.train()(x).codes, nearest)


def test_gumbel_assignment_sends_gradients_to_the_encoder_through_the_soft_weights():
    vq = seqvq.VectorQuantizer(4, 8, assignment="gumbel", temperature=1.0, alpha=0.0)
    x = torch.randn(1, 30, 4, requires_grad=True)
    out = vq(x)
    torch.testing.assert_close(out.quantized.detach(), vq.codes_to_vectors(out.codes).detach())
    (out.quantized * torch.randn(1, 30, 4)).sum().backward()
    assert x.grad.abs().sum() > 0 and vq.codebook.grad.abs().sum() > 0


def test_sync_update_gives_the_codebook_nu_times_the_task_gradient():
    """Huh eq. 21: d L / d c_k = nu * sum_{i: code k} dL_task/dz_q_i + the codebook term's own gradient."""
    nu = 0.7
    torch.manual_seed(1)
    vq = seqvq.VectorQuantizer(4, 8, sync_nu=nu, alpha=2.0, beta=0.6)
    x = torch.randn(1, 20, 4)
    upstream = torch.randn(1, 20, 4)
    out = vq(x)
    (out.quantized * upstream).sum().backward(retain_graph=True)
    task_grad = vq.codebook.grad.clone()
    vq.codebook.grad = None
    out.loss.backward()
    commitment_grad = vq.codebook.grad.clone()
    expected = torch.zeros(8, 4).index_add_(0, out.codes[0], upstream[0]) * nu
    torch.testing.assert_close(task_grad[0], expected)
    z_q = vq.codebook.detach()[0][out.codes[0]]
    expected_commitment = torch.zeros(8, 4).index_add_(0, out.codes[0], 2 * (z_q - x[0]) / x.numel()) * 2.0 * 0.6
    torch.testing.assert_close(commitment_grad[0], expected_commitment)


@pytest.mark.parametrize("affine", ["learned", {"mode": "ema", "codes_per_group": 2}])
def test_rewritten_codes_land_where_intended_through_the_affine_map(affine):
    vq = seqvq.VectorQuantizer(4, 8, affine=affine)
    with torch.no_grad():
        if vq.affine.mode == "learned":
            vq.affine.scale.fill_(0.5)
            vq.affine.shift.fill_(-2.0)
        else:
            vq.affine.embedding_mean.fill_(3.0)
            vq.affine.code_var.fill_(4.0)
    target = torch.randn(1, 8, 4)
    vq.rewrite_codes(target)
    torch.testing.assert_close(vq.effective_codebook(), target)
    assert not torch.allclose(vq.codebook, target)


def test_learned_affine_moves_unselected_codes():
    vq = seqvq.VectorQuantizer(2, 16, affine="learned", alpha=1.0, beta=1.0)
    before = vq.effective_codebook().detach().clone()
    out = vq(torch.randn(1, 32, 2) + 5.0)
    out.loss.backward()
    torch.optim.SGD(vq.parameters(), lr=0.5).step()
    unused = torch.ones(16, dtype=torch.bool)
    unused[out.codes.unique()] = False
    assert unused.any()
    assert (vq.effective_codebook().detach()[0, unused] - before[0, unused]).abs().sum() > 0


def test_reestimation_schedule_follows_algorithm_1():
    vq = seqvq.VectorQuantizer(4, 8, reestimate={"init_steps": 3, "every": 2, "steps": 4, "reservoir_size": 64})
    snapshots = []
    for step in range(1, 10):
        x = torch.randn(2, 5, 4) * 3 + step
        out = vq(x)
        if step < 3:
            torch.testing.assert_close(out.quantized, x)  # pass-through before M_init
            assert out.loss.item() == 0.0
            out.loss.backward()  # the codebook stays in the graph (DDP needs every parameter used)
            assert vq.codebook.grad is not None and (vq.codebook.grad == 0).all()
        snapshots.append(vq.codebook.detach().clone())
    changed = [i + 1 for i in range(1, len(snapshots)) if not torch.equal(snapshots[i], snapshots[i - 1])]
    # k-means at M_init = 3, then every 2 steps while step < M_init + M_reestim = 7; only the gradient-free steps
    # are visible here (no optimizer), so every change is a re-estimation.
    assert changed == [3, 5]
    assert int(vq.reestimation.reservoir.seen) == 0  # restarted after the last re-estimation, not fed since


def test_reestimation_in_epochs_converts_to_steps():
    vq = seqvq.VectorQuantizer(4, 8, reestimate={"init_steps": 2, "every": 1, "steps": 3, "steps_per_epoch": 10})
    assert (vq.reestimation.init_steps, vq.reestimation.every, vq.reestimation.steps) == (20, 10, 30)


def test_reestimation_clears_the_optimizer_state_of_the_codebook():
    vq = seqvq.VectorQuantizer(4, 8, reestimate={"init_steps": 1, "every": 2, "steps": 4, "reservoir_size": 32})
    optimizer = torch.optim.Adam(seqvq.param_groups(vq, 1e-2))
    for step in range(1, 5):  # k-means at steps 1 and 3
        optimizer.zero_grad()
        out = vq(torch.randn(1, 16, 4, requires_grad=True))
        (out.loss + out.quantized.sum()).backward()
        had_state = vq.codebook in optimizer.state
        seqvq.reset_optimizer_state(vq, optimizer)
        if step == 3:
            assert had_state and vq.codebook not in optimizer.state  # re-estimated: moments gone
        if step == 4:
            assert vq.codebook in optimizer.state  # an ordinary step keeps them
        optimizer.step()


def test_lru_replacement_replaces_dead_codes_with_batch_vectors_only():
    vq = seqvq.VectorQuantizer(2, 4, replace_dead_after=3, codebook_update="ema")
    vq.rewrite_codes(torch.tensor([[[0.0, 0.0], [100.0, 100.0], [200.0, 200.0], [300.0, 300.0]]]))
    x = torch.randn(1, 30, 2) * 0.1
    for _ in range(2):
        vq(x)
    assert vq.codebook[0, 1:].abs().min() > 50  # not dead for 3 steps yet
    vq(x)
    replaced = vq.codebook.detach()[0, 1:]
    assert replaced.abs().max() < 1.0  # codes 1..3 now hold vectors of the batch
    assert any(torch.allclose(row, x[0, i]) for row in replaced for i in range(30))
    torch.testing.assert_close(vq.ema.cluster_size[0, 1:], torch.ones(3))


def test_reservoir_is_algorithm_r_however_the_stream_is_batched():
    stream = torch.arange(200, dtype=torch.float32).unsqueeze(1)
    one_batch, many_batches = Reservoir(10, 1, seed=3), Reservoir(10, 1, seed=3)
    one_batch.add(stream)
    for start in range(0, 200, 7):
        many_batches.add(stream[start:start + 7])
    assert torch.equal(one_batch.samples, many_batches.samples) and int(many_batches.seen) == 200
    # the same draws, applied one item at a time (Vitter's Algorithm R)
    generator = torch.Generator()
    generator.set_state(Reservoir(10, 1, seed=3).rng.state)
    draws = torch.rand(190, generator=generator, dtype=torch.float64)
    reference = stream[:10].clone()
    for t in range(11, 201):
        slot = int(draws[t - 11] * t)
        if slot < 10:
            reference[slot] = stream[t - 1]
    assert torch.equal(one_batch.samples, reference)


def test_reservoir_keeps_every_item_with_equal_probability():
    hits = torch.zeros(60)
    for seed in range(300):
        reservoir = Reservoir(6, 1, seed=seed)
        for start in range(0, 60, 9):
            reservoir.add(torch.arange(start, min(start + 9, 60), dtype=torch.float32).unsqueeze(1))
        hits[reservoir.samples.squeeze(1).long()] += 1
    frequency = hits / 300
    assert (frequency - 0.1).abs().max() < 0.07  # binomial sd ~ 0.017
    assert frequency[:30].mean().sub(frequency[30:].mean()).abs() < 0.02


def test_kmeans_recovers_separated_clusters_and_lloyd_never_increases_inertia():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = (centres.repeat_interleave(50, 0) + torch.randn(200, 2, generator=generator) * 0.3)
    found = kmeans(points, 4, 10, generator)
    assert torch.cdist(centres, found).min(dim=1).values.max() < 0.3
    seeds = kmeans_plus_plus(points, 8, generator)
    assert all((points == seed).all(dim=1).any() for seed in seeds)  # seeds are data points

    def inertia(c):
        return torch.cdist(points, c).min(dim=1).values.pow(2).sum()

    assert inertia(lloyd(points, seeds, 5)) <= inertia(seeds)
    few = kmeans(points[:3], 8, 3, generator)  # fewer points than centroids still gives K finite codes
    assert few.shape == (8, 2) and torch.isfinite(few).all()


def _train(model, optimizer, steps, start=0):
    for step in range(start, steps):
        generator = torch.Generator().manual_seed(1000 + step)
        x = torch.randn(4, 5, 6, generator=generator)
        lengths = torch.randint(1, 6, (4,), generator=generator)
        out = model[1](model[0](x), lengths=lengths)
        optimizer.zero_grad()
        (out.loss + out.quantized.pow(2).mean()).backward()
        seqvq.reset_optimizer_state(model, optimizer)
        optimizer.step()


def _model():
    torch.manual_seed(7)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 6),
        seqvq.VectorQuantizer(6, 12, affine="learned", replace_dead_after=3, sync_nu=0.5,
                              reestimate={"init_steps": 6, "every": 3, "steps": 9, "reservoir_size": 40}))


def test_kill_and_resume_mid_reservoir_is_bit_identical(tmp_path):
    straight = _model()
    straight_opt = torch.optim.Adam(seqvq.param_groups(straight, 1e-2, 1e-1))
    _train(straight, straight_opt, 20)

    first = _model()
    first_opt = torch.optim.Adam(seqvq.param_groups(first, 1e-2, 1e-1))
    _train(first, first_opt, 4)  # the reservoir is filling, M_init not reached
    assert 0 < int(first[1].reestimation.reservoir.seen) < 6 * 20
    torch.save({"model": first.state_dict(), "optimizer": first_opt.state_dict()}, tmp_path / "ckpt.pt")
    del first, first_opt

    resumed = _model()
    with torch.no_grad():  # scramble, so only the checkpoint can make it right
        for parameter in resumed.parameters():
            parameter.add_(1.0)
    resumed_opt = torch.optim.Adam(seqvq.param_groups(resumed, 1e-2, 1e-1))
    checkpoint = torch.load(tmp_path / "ckpt.pt")
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["optimizer"])
    _train(resumed, resumed_opt, 20, start=4)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def _rewrites_per_step(vq, batches):
    counts = []
    for x in batches:
        before = int(vq.rewrites)
        vq(x)
        counts.append(int(vq.rewrites) - before)
    return counts


def test_replacement_waits_for_m_init_and_skips_k_means_steps():
    """Precedence: no replacement before M_init (no codebook yet), none on a step whose codes k-means just wrote."""
    vq = seqvq.VectorQuantizer(2, 32, replace_dead_after=1,
                               reestimate={"init_steps": 4, "every": 2, "steps": 4, "reservoir_size": 64})
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(1, 6, 2, generator=generator) for _ in range(8)]  # 6 vectors, 32 codes: many dead
    counts = _rewrites_per_step(vq, batches)
    assert counts[:3] == [0, 0, 0]  # warm-up, steps 1-3
    assert counts[3] == 1 and counts[5] == 1  # k-means at steps 4 and 6, and no replacement on top
    assert counts[4] == 1 and counts[6] == 1  # steps 5, 7: replacement of the codes unused since


def test_replacement_draws_from_this_batch_not_from_a_stale_reservoir():
    """After Algorithm 1's schedule the reservoir holds old data; replacements must land where the data is now."""
    vq = seqvq.VectorQuantizer(2, 8, replace_dead_after=2, codebook_update="ema",
                               reestimate={"init_steps": 2, "every": 1, "steps": 1, "reservoir_size": 64,
                                           "restart_reservoir": False})
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        vq(torch.randn(1, 20, 2, generator=generator))  # k-means at step 2 on data around the origin
    assert vq.reestimation.reservoir.filled > 0
    moved = torch.randn(1, 20, 2, generator=generator) * 0.1 + 100.0  # the data moved; one code follows it
    for _ in range(3):
        vq(moved)
    replaced = vq.code_rewritten_at[0] == vq.rewrites
    assert replaced.sum() >= 1
    assert (vq.codebook.detach()[0, replaced] - 100.0).abs().max() < 1.0


def _moving_data(step):
    return torch.randn(1, 20, 2, generator=torch.Generator().manual_seed(step)) * 0.1 + 10.0 * step


@pytest.mark.parametrize("restart", [True, False])
def test_reservoir_restarts_after_each_reestimation_by_default(restart):
    """Łańcucki §III-B / DistSup: each re-estimation clusters the encoder outputs since the previous one;
    restart_reservoir=False keeps a uniform sample of all history (warm-up included)."""
    options = {"init_steps": 3, "every": 3, "steps": 4, "reservoir_size": 200, "kmeans_iterations": 5}
    if not restart:
        options["restart_reservoir"] = False
    vq = seqvq.VectorQuantizer(2, 4, reestimate=options, codebook_update="ema", ema_decay=0.999)
    for step in range(1, 7):  # k-means at steps 3 and 6
        vq(_moving_data(step))
        if step == 3:
            assert int(vq.reestimation.reservoir.seen) == (0 if restart else 60)
    codes = vq.codebook.detach()[0]
    if restart:  # the second k-means saw steps 4-6 only: codes near 40, 50, 60
        assert codes.min() > 35.0
    else:  # all of history, warm-up at 10-30 included
        assert codes.min() < 35.0
    assert int(vq.reestimation.reservoir.seen) == (0 if restart else 120)


def test_reestimation_and_kmeans_init_are_one_or_the_other():
    with pytest.raises(ValueError, match="kmeans_init and reestimate.*use one or the other"):
        seqvq.VectorQuantizer(4, 8, kmeans_init=True, reestimate={"init_steps": 2})
