"""The Fréchet distance against closed-form Gaussian cases, its estimate from features, the own-classifier features,
and the optional Inception features (where torchvision imports)."""
import math

import pytest
import torch

from seqvq.metrics.frechet import (FeatureClassifier, feature_statistics, features_of, frechet_distance,
                                   frechet_distance_of, inception_features, train_feature_classifier)


def _rotation(dim, seed):
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_closed_form_for_commuting_covariances():
    # same eigenvectors: d^2 = ||mu_1 - mu_2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    a, b = torch.tensor([1.0, 4.0, 9.0, 0.25]), torch.tensor([4.0, 1.0, 9.0, 2.25])
    mu_1, mu_2 = torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 0.0, 3.0])
    expected = 1 + 4 + sum((math.sqrt(x) - math.sqrt(y)) ** 2 for x, y in zip(a.tolist(), b.tolist()))
    rotation = _rotation(4, 0)
    cov_1, cov_2 = rotation @ torch.diag(a).double() @ rotation.T, rotation @ torch.diag(b).double() @ rotation.T
    assert frechet_distance(mu_1, cov_1, mu_2, cov_2) == pytest.approx(expected, rel=1e-10)


def test_closed_form_for_non_commuting_two_dimensional_covariances():
    # d^2 = tr(S_1) + tr(S_2) - 2 tr((S_1^1/2 S_2 S_1^1/2)^1/2); for S_1 = I: tr(S_2) + 2 - 2 tr(S_2^1/2), and the
    # distance is symmetric in its two Gaussians
    cov_2 = torch.tensor([[2.0, 0.7], [0.7, 1.0]], dtype=torch.float64)
    values = torch.linalg.eigvalsh(cov_2)
    expected = float(cov_2.trace() + 2 - 2 * values.sqrt().sum())
    zero, identity = torch.zeros(2), torch.eye(2, dtype=torch.float64)
    assert frechet_distance(zero, identity, zero, cov_2) == pytest.approx(expected, rel=1e-12)
    cov_1 = torch.tensor([[1.0, -0.4], [-0.4, 0.5]], dtype=torch.float64)
    assert frechet_distance(zero, cov_1, zero, cov_2) == pytest.approx(frechet_distance(zero, cov_2, zero, cov_1),
                                                                       rel=1e-10)
    assert frechet_distance(zero, cov_2, zero, cov_2) == pytest.approx(0.0, abs=1e-10)


def test_estimate_from_samples_approaches_the_closed_form():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(200_000, 3, generator=generator, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5]) + 1.0
    expected = 3 + 0 + 1 + 0.25
    assert frechet_distance_of(x, y) == pytest.approx(expected, rel=0.02)
    mean, cov = feature_statistics(x[:10])
    assert mean.dtype == cov.dtype == torch.float64 and cov.shape == (3, 3)
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(x[:1])


def test_own_classifier_learns_its_labels_and_is_reproducible():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    images = torch.randint(0, 60, (200, 3, 32, 32), generator=generator, dtype=torch.uint8)
    images[labels == 1] += 150  # two easily told classes
    first = train_feature_classifier(images, labels, steps=30, seed=3)
    second = train_feature_classifier(images, labels, steps=30, seed=3)
    assert isinstance(first, FeatureClassifier) and not first.training
    with torch.no_grad():
        assert (first(images).argmax(1) == labels).float().mean() > 0.95
        assert torch.equal(first.embed(images), second.embed(images))
    features = features_of(first.embed, images, batch_size=64)
    assert features.shape == (200, 128) and features.dtype == torch.float64
    assert frechet_distance_of(features[labels == 0], features[labels == 1]) > \
        10 * frechet_distance_of(features[labels == 0][:50], features[labels == 0][50:])


def test_inception_features_where_torchvision_imports(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty cache: nothing to load, no download
    assert inception_features() is None
