"""Codec-style residual VQ (seqvq/quantize/residual.py): a codebook size per stage, the number of stages chosen at
encode and decode time, and quantizer dropout (per example, exact resume, no draw in inner passes)."""
import copy

import pytest
import torch

from seqvq.quantize import ResidualVectorQuantizer, quantizer_passes


def batch(lengths=(6, 3, 5), dim=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), dim, generator=generator)
    mask = torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return x, mask


def test_codebook_size_per_stage():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(4, [16, 4, 2], 3)
    assert [stage.codebook_size for stage in rvq.stages] == [16, 4, 2]
    x, mask = batch()
    codes = rvq(x, mask=mask).codes
    for index, size in enumerate([16, 4, 2]):
        assert codes[..., index][mask].max() < size
    with pytest.raises(ValueError, match="2 codebook sizes for 3 stages"):
        ResidualVectorQuantizer(4, [16, 4], 3)


def test_number_of_stages_chosen_at_encode_and_decode_time():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(4, 8, 3).eval()
    x, mask = batch()
    full = rvq(x, mask=mask)
    one = rvq(x, mask=mask, num_quantizers=1)
    two = rvq(x, mask=mask, num_quantizers=2)
    assert torch.equal(one.codes[..., 0], full.codes[..., 0]) and (one.codes[..., 1:] == -1).all()
    assert torch.equal(two.codes[..., :2], full.codes[..., :2]) and (two.codes[..., 2] == -1).all()
    torch.testing.assert_close(one.quantized[mask], rvq.stages[0].codes_to_vectors(full.codes[..., 0])[mask])
    torch.testing.assert_close(rvq.codes_to_vectors(full.codes, num_quantizers=2)[mask], two.quantized[mask])
    torch.testing.assert_close(rvq.codes_to_vectors(two.codes)[mask], two.quantized[mask])
    errors = [float(rvq(x, mask=mask, num_quantizers=n).metrics["residual_error"]) for n in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]  # more stages, finer codes
    with pytest.raises(ValueError, match="num_quantizers must be in 1..3"):
        rvq(x, mask=mask, num_quantizers=4)


def test_quantizer_dropout_drops_trailing_stages_per_example():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(4, 8, 4, quantizer_dropout=1.0)
    x, mask = batch(lengths=(6, 3, 5, 4, 6, 2, 5, 6))
    seen = set()
    for _ in range(4):
        result = rvq(x, mask=mask)
        for example in range(x.shape[0]):
            codes = result.codes[example][mask[example]]  # (T_valid, stages)
            used = (codes >= 0).all(dim=0)
            assert ((codes >= 0).any(dim=0) == used).all()  # a stage is used at every valid frame or none
            n_q = int(used.sum())
            assert n_q >= 1 and used[:n_q].all()  # the first n_q stages
            seen.add(n_q)
        torch.testing.assert_close(rvq.codes_to_vectors(result.codes)[mask], result.quantized[mask])
    assert len(seen) > 1
    rvq.eval()
    assert (rvq(x, mask=mask).codes[mask] >= 0).all()  # evaluation uses every stage


def test_quantizer_dropout_ignores_padding_and_resumes_exactly():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(4, 8, 3, quantizer_dropout=0.5, replace_dead_after=1)
    x, mask = batch()
    garbage = x.clone()
    garbage[~mask] = 1e3
    twin = copy.deepcopy(rvq)
    for _ in range(3):
        a, b = rvq(x, mask=mask), twin(garbage, mask=mask)
        assert torch.equal(a.codes, b.codes)
        torch.testing.assert_close(a.quantized[mask], b.quantized[mask])
    saved = copy.deepcopy(rvq.state_dict())
    after = [rvq(x, mask=mask).codes for _ in range(3)]
    torch.manual_seed(1)
    resumed = ResidualVectorQuantizer(4, 8, 3, quantizer_dropout=0.5, replace_dead_after=1)
    resumed.load_state_dict(saved)
    assert all(torch.equal(codes, resumed(x, mask=mask).codes) for codes in after)


def test_inner_passes_draw_no_dropout():
    rvq = ResidualVectorQuantizer(4, 8, 3, quantizer_dropout=1.0)
    x, mask = batch()
    state = rvq.dropout_rng.state.clone()
    with quantizer_passes(rvq, "codebook_fit"):
        codes = rvq(x, mask=mask).codes
    assert torch.equal(rvq.dropout_rng.state, state) and (codes[mask] >= 0).all()
    rvq(x, mask=mask)
    assert not torch.equal(rvq.dropout_rng.state, state)
    with pytest.raises(ValueError, match="quantizer_dropout must be in"):
        ResidualVectorQuantizer(4, 8, 3, quantizer_dropout=1.5)


PROJECTED_OPTIONS = [{}, {"rotation_trick": True}, {"sync_nu": 0.5, "num_codebooks": 2},
                     {"assignment": "stochastic", "temperature": 0.5, "quantizer_dropout": 0.0}]


@pytest.mark.parametrize("options", PROJECTED_OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_dac_code_space_pads_decodes_and_trains_every_projection(options):
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(6, [8, 4, 4], 3, code_dim=4, **options)
    assert all(stage.distance == "cosine" and stage.dim == 4 for stage in rvq.stages)
    twin = copy.deepcopy(rvq)
    x, mask = batch(dim=6)
    x.requires_grad_(True)
    packed_x = x.detach()[mask].unsqueeze(0).requires_grad_(True)
    padded, packed = rvq(x, mask=mask), twin(packed_x)
    torch.testing.assert_close(padded.quantized[mask], packed.quantized[0])
    assert torch.equal(padded.codes[mask], packed.codes[0])
    torch.testing.assert_close(padded.quantized[~mask], x[~mask])  # padding passes through
    (padded.quantized[mask].pow(2).sum() + padded.loss).backward()
    (packed.quantized.pow(2).sum() + packed.loss).backward()
    torch.testing.assert_close(x.grad[mask], packed_x.grad[0])
    for (name, a), b in zip(rvq.named_parameters(), twin.parameters()):
        assert a.grad is not None and a.grad.abs().sum() > 0, name  # every projection and codebook trains
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    rvq.eval()
    result = rvq(x, mask=mask)
    torch.testing.assert_close(rvq.codes_to_vectors(result.codes)[mask], result.quantized[mask])
    two = rvq(x, mask=mask, num_quantizers=2)
    torch.testing.assert_close(rvq.codes_to_vectors(two.codes)[mask], two.quantized[mask])


def test_dac_code_space_refusals():
    with pytest.raises(ValueError, match="reestimate"):
        ResidualVectorQuantizer(6, 8, 2, code_dim=2, reestimate={"init_steps": 1, "every": 1, "steps": 1})
    with pytest.raises(ValueError, match="code_dim.*distance='l2'"):
        ResidualVectorQuantizer(6, 8, 2, code_dim=2, distance="l2")
