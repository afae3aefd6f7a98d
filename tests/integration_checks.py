"""Checks shared by tests/test_integration_*.py: the quantizer every toolkit test trains, and what its training and
checkpoint round trip must show."""
import torch

import seqvq

# Every kind of quantizer state: BatchNorm moments, EMA codebook statistics, EMA affine statistics, the
# re-estimation reservoir and its generators (re-estimation runs at steps 2 and 4 of a short run; the reservoir keeps
# its whole history and overflows, so its contents and generator end the run away from their initial values --
# with the default restart after re-estimation it would end empty, which a checkpoint round trip cannot tell apart).
QUANTIZER_OPTIONS = dict(codebook_size=16, pre_norm=True, codebook_update="ema", affine="ema",
                         reestimate={"init_steps": 2, "every": 2, "steps": 4, "reservoir_size": 16,
                                     "restart_reservoir": False})
TRAINED_STATE = ("step", "rewrites", "norm.running_mean", "ema.cluster_size", "ema.embed_sum",
                 "affine.embedding_mean", "affine.code_var", "reestimation.reservoir.samples",
                 "reestimation.reservoir.seen", "reestimation.reservoir.rng.state")


def make_quantizer(dim: int, **options) -> seqvq.VectorQuantizer:
    return seqvq.VectorQuantizer(dim, **{**QUANTIZER_OPTIONS, **options})


def assert_quantizer_trained(quantizer: seqvq.VectorQuantizer) -> None:
    """Training moved every kind of state away from a freshly built quantizer's."""
    fresh = make_quantizer(quantizer.dim).state_dict()
    trained = quantizer.state_dict()
    unchanged = [name for name in TRAINED_STATE if torch.equal(trained[name], fresh[name])]
    assert not unchanged, f"training left these at their initial values: {unchanged}"
    assert int(quantizer.rewrites) >= 1, "re-estimation never ran"


def assert_same_state(restored: torch.nn.Module, saved: dict) -> None:
    state = restored.state_dict()
    assert state.keys() == saved.keys()
    differing = [name for name in saved if not torch.equal(state[name], saved[name])]
    assert not differing, f"not restored: {differing}"


def assert_codes_on_valid_frames(codes: torch.Tensor, lengths: torch.Tensor) -> None:
    """Codes >= 0 exactly on the frames before each sequence's length, -1 after it."""
    valid = torch.arange(codes.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    assert bool((codes[valid] >= 0).all()) and bool((codes[~valid] == -1).all())
    assert bool((~valid).any()), "the batch must contain padded frames for this check to mean anything"


def assert_vq_loss_in_total(total: torch.Tensor, task_loss: torch.Tensor, vq_loss: torch.Tensor,
                            parameters: list[torch.Tensor]) -> None:
    """``total`` is ``task_loss + vq_loss`` and its gradient carries the VQ term (the commitment loss pulls the
    encoder towards its codes)."""
    assert float(vq_loss.detach()) > 0
    assert torch.allclose(total, task_loss + vq_loss)
    with_vq = torch.autograd.grad(total, parameters, retain_graph=True)
    without_vq = torch.autograd.grad(task_loss, parameters, retain_graph=True)
    assert any(not torch.allclose(a, b) for a, b in zip(with_vq, without_vq))
