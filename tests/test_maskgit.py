"""MaskGIT (Chang et al. 2022): the cosine masking schedule, the training masks, and iterative decoding on a toy
transformer (the scheduled number of tokens fixed per step, no token ever un-fixed)."""
import math

import pytest
import torch

from seqvq.models.maskgit import MaskGITTransformer, cosine_mask_ratio, iterative_decode, masked_counts, random_mask


def test_cosine_schedule_masks_everything_at_the_start_and_nothing_at_the_end():
    assert float(cosine_mask_ratio(0.0)) == 1.0
    assert float(cosine_mask_ratio(1.0)) == pytest.approx(0.0, abs=1e-15)
    assert float(cosine_mask_ratio(0.5)) == pytest.approx(math.cos(math.pi / 4))
    ratios = cosine_mask_ratio(torch.linspace(0, 1, 11))
    assert (ratios[1:] < ratios[:-1]).all()  # decreasing


def test_masked_counts_follow_the_schedule():
    # 64 tokens, 8 steps: floor(64 cos(pi t / 16)) for t = 1..7, then 0
    assert masked_counts(64, 8) == [math.floor(64 * math.cos(math.pi / 2 * t / 8)) for t in range(1, 8)] + [0]
    assert masked_counts(64, 1) == [0]
    counts = masked_counts(4, 10)  # more steps than tokens: at least one fixed per step until one is left
    assert counts[-1] == 0 and all(b < a or b == 1 for a, b in zip([4] + counts, counts[:-1]))


def test_random_mask_counts_are_the_cosine_of_a_uniform_ratio():
    generator = torch.Generator().manual_seed(0)
    mask = random_mask(2000, 64, generator)
    counts = mask.sum(1).double()
    assert counts.min() >= 1 and counts.max() <= 64
    # E[ceil(64 cos(pi r / 2))] with r ~ U(0, 1) is about 64 * 2 / pi + 0.5
    assert counts.mean() == pytest.approx(64 * 2 / math.pi + 0.5, abs=1.0)


class RecordingToy:
    """A toy 'transformer': random logits, recording every input it is given."""

    def __init__(self, codebook_size, seed=0):
        self.codebook_size, self.inputs = codebook_size, []
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, tokens):
        self.inputs.append(tokens.clone())
        return torch.randn(*tokens.shape, self.codebook_size, generator=self.generator) * 3


@pytest.mark.parametrize("steps,temperature", [(8, 4.5), (12, 0.0), (3, 1.0)])
def test_decoding_fixes_the_scheduled_tokens_and_never_unfixes_one(steps, temperature):
    toy, num_tokens, mask_id = RecordingToy(16), 64, 16
    codes = iterative_decode(toy, 5, num_tokens, mask_id, steps, temperature, torch.Generator().manual_seed(1))
    assert codes.shape == (5, 64) and (codes >= 0).all() and (codes < 16).all()
    assert len(toy.inputs) == steps
    states = toy.inputs + [codes]
    expected = [num_tokens] + masked_counts(num_tokens, steps)
    for step, (before, after) in enumerate(zip(states[:-1], states[1:])):
        assert ((before == mask_id).sum(1) == expected[step]).all()
        assert ((after == mask_id).sum(1) == expected[step + 1]).all()
        fixed = before != mask_id
        assert torch.equal(after[fixed], before[fixed])  # a fixed token keeps its code


def test_without_noise_the_most_confident_samples_are_fixed_first():
    # each position's logits favour one code by a margin that grows with the position: the last positions are the
    # most confident and must be fixed first
    num_tokens, codebook_size = 16, 8
    logits = torch.zeros(num_tokens, codebook_size)
    logits[torch.arange(num_tokens), torch.arange(num_tokens) % codebook_size] = torch.linspace(1, 40, num_tokens)
    states = []

    def predict(tokens):
        states.append(tokens.clone())
        return logits.expand(len(tokens), -1, -1)

    iterative_decode(predict, 1, num_tokens, codebook_size, 4, 0.0, torch.Generator().manual_seed(0))
    fixed_after_first = (states[1][0] != codebook_size).nonzero().flatten().tolist()
    assert fixed_after_first == list(range(num_tokens - len(fixed_after_first), num_tokens))


def test_transformer_shapes_masked_nll_and_generation():
    torch.manual_seed(0)
    model = MaskGITTransformer(codebook_size=32, num_tokens=16, dim=32, depth=2, heads=4).eval()
    codes = torch.randint(0, 32, (3, 16))
    assert model(codes).shape == (3, 16, 32)
    mask = random_mask(3, 16, torch.Generator().manual_seed(0))
    nll, count = model.masked_nll(codes, mask)
    assert count == int(mask.sum()) and nll.item() / count == pytest.approx(math.log(32), rel=0.3)
    generated = model.generate(4, steps=4, generator=torch.Generator().manual_seed(0))
    assert generated.shape == (4, 16) and (generated < 32).all()
    with pytest.raises(ValueError, match="multiple of heads"):
        MaskGITTransformer(32, 16, dim=30, heads=4)
