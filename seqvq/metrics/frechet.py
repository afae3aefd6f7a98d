"""Fréchet distance between two sets of image features (Heusel et al. 2017, eq. 6; Dowson & Landau 1982):

    d^2 = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1^(1/2) S_2 S_1^(1/2))^(1/2))

in float64, the matrix square roots by eigen-decomposition of symmetric positive semi-definite matrices (the trace
term equals tr((S_1 S_2)^(1/2)) of the usual statement; negative round-off eigenvalues are clamped to zero).

FID is this distance in the pool features of an ImageNet Inception network. Its weights cannot be downloaded
everywhere, so the figures of the recipes are computed in the feature space of :class:`FeatureClassifier`, a small
CNN trained (seeded, :func:`train_feature_classifier`) to tell the images of a labelled set apart: "FD (own
classifier)", never FID. :func:`inception_features` gives real FID features when torchvision and its Inception
weights are already on the machine (nothing is downloaded), else None.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Features = Callable[[torch.Tensor], torch.Tensor]  # uint8 images (B, 3, H, W) -> (B, D) features


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    features = features.double()
    if len(features) < 2:
        raise ValueError(f"feature statistics need at least 2 feature vectors, got {len(features)}")
    return features.mean(0), torch.cov(features.T).reshape(features.shape[1], features.shape[1])


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mean_1: torch.Tensor, cov_1: torch.Tensor, mean_2: torch.Tensor, cov_2: torch.Tensor) -> float:
    """The Fréchet distance (squared, as FID reports it) between N(mean_1, cov_1) and N(mean_2, cov_2)."""
    mean_1, cov_1, mean_2, cov_2 = (t.double() for t in (mean_1, cov_1, mean_2, cov_2))
    root_1 = _psd_sqrt(cov_1)
    product = root_1 @ cov_2 @ root_1
    cross = torch.linalg.eigvalsh((product + product.T) / 2).clamp_min(0).sqrt().sum()
    return float((mean_1 - mean_2).square().sum() + cov_1.trace() + cov_2.trace() - 2 * cross)


def frechet_distance_of(features_1: torch.Tensor, features_2: torch.Tensor) -> float:
    """The Fréchet distance between the Gaussians fitted to two feature sets (N_1, D) and (N_2, D)."""
    return frechet_distance(*feature_statistics(features_1), *feature_statistics(features_2))


@torch.no_grad()
def features_of(extract: Features, images: torch.Tensor, batch_size: int = 200) -> torch.Tensor:
    """(N, D) float64 features of uint8 images (N, 3, H, W), ``batch_size`` at a time."""
    return torch.cat([extract(images[start:start + batch_size]).double()
                      for start in range(0, len(images), batch_size)])


class FeatureClassifier(nn.Module):
    """A small CNN for 32x32 images: three 3x3 conv blocks (32, 64, 128 channels, the first two max-pooled), global
    average pooling to the ``feature_dim`` features the Fréchet distance is computed in, a linear classifier."""

    def __init__(self, num_classes: int, feature_dim: int = 128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, feature_dim, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(feature_dim, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) features of uint8 images (B, 3, 32, 32)."""
        return self.features(images.float() / 255 - 0.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(images))


def train_feature_classifier(images: torch.Tensor, labels: torch.Tensor, steps: int = 300, batch_size: int = 64,
                             lr: float = 1e-3, seed: int = 0) -> FeatureClassifier:
    """A :class:`FeatureClassifier` trained by Adam on (images, labels) with its own seeded generator (the same
    weights for the same images, labels and settings), returned in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FeatureClassifier(int(labels.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        batch = torch.randint(0, len(images), (batch_size,), generator=generator)
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def inception_features() -> Features | None:
    """torchvision's ImageNet Inception-v3 as a FID feature extractor (2048 pool features of images resized to
    299x299), when torchvision is installed and its weights are already in torch's hub cache; else None."""
    try:
        from torchvision.models import Inception_V3_Weights, inception_v3
    except ImportError:
        return None
    weights = Inception_V3_Weights.IMAGENET1K_V1
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        return None
    model = inception_v3(weights=None, aux_logits=True, init_weights=False)
    model.load_state_dict(torch.load(path, weights_only=True))
    model.fc = nn.Identity()
    model.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def extract(images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float() / 255, size=(299, 299), mode="bilinear", align_corners=False)
        return model((x - mean) / std)

    return extract
