"""Handwriting VQ autoencoder: geometry, padding masks, sampling from codes."""
import pytest
import torch

from seqvq.data.lines import LineSample, collate_lines
from seqvq.models.handwriting_ae import HandwritingAutoencoder

LEVELS, HEIGHT = 4, 16


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(**quantizer):
    torch.manual_seed(0)
    return HandwritingAutoencoder(
        levels=LEVELS, height=HEIGHT, latent_dim=8,
        encoder={"channels": 8, "strides": [[2, 2], [2, 2], [2, 1]], "lstm_hidden": 8},
        decoder={"channels": 8, "num_layers": 2, "first_kernel": 5},
        quantizer={"codebook_size": 16, **quantizer})


def _lines(widths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [LineSample(torch.randint(0, LEVELS, (HEIGHT, w), generator=generator), "", f"l{i}")
            for i, w in enumerate(widths)]


def test_one_latent_every_four_columns():
    model = _model().eval()
    batch = collate_lines(_lines([13, 8, 21]))
    out = model(batch.images, batch.mask)
    assert model.width_stride == 4
    assert out.codes.shape == (3, 6) and out.latent_mask.sum(1).tolist() == [4, 2, 6]  # ceil(width / 4)
    assert (out.codes[~out.latent_mask] == -1).all() and (out.codes[out.latent_mask] >= 0).all()
    assert out.logits.shape == (3, HEIGHT, 21, LEVELS)
    assert out.num_pixels == HEIGHT * (13 + 8 + 21)


@torch.no_grad()
def test_padding_changes_nothing_for_valid_lines():
    """A line's codes and NLL are the same alone and padded in a batch; padded pixels are not scored."""
    model = _model().eval()
    lines = _lines([9, 22, 14])
    batch = collate_lines(lines)
    together = model(batch.images, batch.mask)
    features, _ = model.encoder(batch.images, batch.widths)
    nll_sum = 0.0
    for index, line in enumerate(lines):
        alone = collate_lines([line])
        single = model(alone.images, alone.mask)
        width = single.codes.shape[1]
        torch.testing.assert_close(model.encoder(alone.images, alone.widths)[0][0], features[index, :width])
        assert torch.equal(single.codes[0], together.codes[index, :width])
        nll_sum += float(single.nll)
    assert float(together.nll) == pytest.approx(nll_sum, rel=1e-5)
    scribbled = batch.images.clone()
    scribbled[~batch.mask[:, None, :].expand_as(scribbled)] = LEVELS - 1
    assert float(model(scribbled, batch.mask).nll) == pytest.approx(float(together.nll), rel=1e-6)


def test_loss_is_nll_per_pixel_plus_vq_loss():
    model = _model().train()
    batch = collate_lines(_lines([12, 7]))
    out = model(batch.images, batch.mask)
    assert out.loss.item() == pytest.approx(out.nll.item() / out.num_pixels + out.vq_loss.item(), rel=1e-6)
    out.loss.backward()
    assert model.encoder.convs[0].weight.grad.abs().sum() > 0  # straight-through reaches the encoder
    assert model.quantizer.codebook.grad.abs().sum() > 0


def test_reconstruction_samples_from_codes():
    model = _model().eval()
    batch = collate_lines(_lines([10, 6]))
    samples, codes = model.reconstruct(batch.images, batch.mask, torch.Generator().manual_seed(0))
    assert samples.shape == batch.images.shape and samples.dtype == torch.long
    assert samples.min() >= 0 and samples.max() < LEVELS
    assert (samples[1, :, 6:] == 0).all()
    assert torch.equal(codes, model(batch.images, batch.mask).codes)
    # the decoder is conditioned on the codes' vectors: the same as the quantized latents at valid positions
    vq, mask = model.encode(batch.images, batch.widths)
    torch.testing.assert_close(model.quantizer.codes_to_vectors(vq.codes)[mask], vq.quantized[mask])
