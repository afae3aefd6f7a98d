"""Gated PixelCNN: exact causality in the column-major generation order, conditioning, windowed sampling."""
import pytest
import torch

from seqvq.models.pixelcnn import GatedPixelCNN

HEIGHT, WIDTH, LEVELS, COND = 6, 14, 4, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(**kwargs):
    torch.manual_seed(0)
    model = GatedPixelCNN(LEVELS, channels=8, num_layers=2, first_kernel=5, kernel=3, cond_dim=COND, **kwargs)
    return model.double()


def _order(row, column):
    """Position in the generation order: columns left to right, rows top to bottom within a column."""
    return column * HEIGHT + row


@pytest.mark.parametrize("row,column", [(0, 0), (3, 0), (0, 5), (2, 5), (5, 13), (4, 9)])
def test_output_pixel_ignores_itself_and_later_pixels(row, column):
    model = _model()
    onehot = torch.rand(2, HEIGHT, WIDTH, LEVELS, dtype=torch.double, requires_grad=True)
    cond = torch.randn(2, WIDTH, COND, dtype=torch.double)
    logits = model.forward_onehot(onehot, cond)
    logits[0, row, column].sum().backward()
    grad = onehot.grad[0].abs().sum(-1)  # (H, W)
    assert onehot.grad[1].abs().sum() == 0  # other lines of the batch are untouched
    for r in range(HEIGHT):
        for c in range(WIDTH):
            if _order(r, c) >= _order(row, column):
                assert grad[r, c] == 0, (r, c)
    # no blind spot near p: the pixel just before, and the previous column above and below, are seen
    earlier = [(row - 1, column)] if row else []
    if column:
        earlier += [(r, column - 1) for r in (max(0, row - 2), min(HEIGHT - 1, row + 2))]
    for r, c in earlier:
        assert grad[r, c] > 0, (r, c)


def test_conditioning_is_per_column():
    model = _model()
    images = torch.randint(0, LEVELS, (1, HEIGHT, WIDTH))
    cond = torch.randn(1, WIDTH, COND, dtype=torch.double, requires_grad=True)
    model(images, cond)[0, 2, 7].sum().backward()
    seen = cond.grad[0].abs().sum(-1)
    assert seen[7] > 0 and seen[8:].sum() == 0


def test_context_window_matches_full_image():
    model = _model()
    images = torch.randint(0, LEVELS, (2, HEIGHT, WIDTH))
    cond = torch.randn(2, WIDTH, COND, dtype=torch.double)
    full = model(images, cond)
    for column in range(WIDTH):
        start = max(0, column - model.context_columns)
        window = model(images[:, :, start: column + 1], cond[:, start: column + 1])
        torch.testing.assert_close(window[:, :, -1], full[:, :, column])


def test_sample_shape_range_and_padding():
    model = _model().float()
    widths = torch.tensor([5, 3])
    cond = torch.randn(2, 5, COND)
    lines = model.sample(cond, widths, HEIGHT, generator=torch.Generator().manual_seed(0))
    assert lines.shape == (2, HEIGHT, 5) and lines.dtype == torch.long
    assert lines.min() >= 0 and lines.max() < LEVELS
    assert (lines[1, :, 3:] == 0).all()
    assert len(lines.unique()) > 1  # random weights: sampling is not stuck on one level
    greedy = model.sample(cond, widths, HEIGHT, temperature=0)
    assert torch.equal(greedy, model.sample(cond, widths, HEIGHT, temperature=0))


def test_fast_sampler_equals_naive_decoding():
    """Greedy sampling (cached vertical stacks, per-pixel horizontal stacks) equals re-running the whole model
    on the image drawn so far for every pixel."""
    model = _model()
    with torch.no_grad():  # larger weights: every pixel's argmax depends on the pixels drawn before it
        for parameter in model.parameters():
            parameter.mul_(4)
    cond = torch.randn(2, 7, COND, dtype=torch.double)
    widths = torch.tensor([7, 5])
    fast = model.sample(cond, widths, HEIGHT, temperature=0)
    naive = torch.zeros(2, HEIGHT, 7, dtype=torch.long)
    for column in range(7):
        for row in range(HEIGHT):
            naive[:, row, column] = model(naive, cond)[:, row, column].argmax(-1)
    naive[1, :, 5:] = 0
    assert torch.equal(fast, naive)
    assert len(fast.unique()) > 1


def test_sample_follows_a_confident_model():
    """With the output bias forcing level 2 everywhere, every sampled valid pixel is 2."""
    model = _model().float()
    with torch.no_grad():
        model.head[-1].weight.zero_()
        model.head[-1].bias.copy_(torch.tensor([-30.0, -30.0, 30.0, -30.0]))
    lines = model.sample(torch.zeros(1, 4, COND), torch.tensor([4]), HEIGHT)
    assert (lines == 2).all()
