"""k-means++ seeding (exact and batched in rounds) and Lloyd: inertia against exact k-means++ and uniform seeding."""
import pytest
import torch

from seqvq.quantize.distance import nearest_codes
from seqvq.quantize.kmeans import _seed, kmeans, kmeans_plus_plus, lloyd


def mixture(seed, points=3000, clusters=48, dim=8):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=generator) * 4
    scales = torch.rand(clusters, 1, generator=generator) * 1.5 + 0.1  # unequal spreads: D^2 sampling matters
    labels = torch.randint(clusters, (points,), generator=generator)
    return centres[labels] + torch.randn(points, dim, generator=generator) * scales[labels]


def inertia(points, centroids):
    return torch.cdist(points.double(), centroids.double()).min(dim=1).values.pow(2).mean().item()


def mean_inertia(seeding, runs=6, num_centroids=64):
    total = 0.0
    for seed in range(runs):
        points = mixture(seed)
        total += inertia(points, seeding(points, num_centroids, torch.Generator().manual_seed(100 + seed)))
    return total / runs


def uniform(points, num_centroids, generator):
    return points[torch.randperm(points.shape[0], generator=generator)[:num_centroids]]


@pytest.mark.parametrize("growth", [0.25, 0.5])
def test_batched_seeding_reaches_the_inertia_of_exact_kmeans_plus_plus(growth):
    # Seeds alone: batched rounds are coarser than exact k-means++ (+7% / +18% here) yet far better than uniform.
    assert mean_inertia(lambda p, k, g: kmeans_plus_plus(p, k, g, growth=growth)) < 0.6 * mean_inertia(uniform)
    # After Lloyd, as k-means is used, the batched seeding is as good as the exact one.
    exact = mean_inertia(lambda p, k, g: kmeans(p, k, 10, g, growth=0.0))
    batched = mean_inertia(lambda p, k, g: kmeans(p, k, 10, g, growth=growth))
    assert batched < 1.03 * exact, (batched, exact)


def test_seeds_are_distinct_data_points_and_lloyd_refines_them():
    points = mixture(7)
    generator = torch.Generator().manual_seed(0)
    for growth in (0.0, 0.5):
        seeds = kmeans_plus_plus(points, 64, generator, growth=growth)
        assert seeds.shape == (64, 8) and all((points == seed).all(dim=1).any() for seed in seeds)
        assert torch.unique(seeds, dim=0).shape[0] >= 62  # a round may draw a point twice, rarely
        assert inertia(points, lloyd(points, seeds, 5)) < inertia(points, seeds)
    assert kmeans(points[:5], 9, 3, generator).shape == (9, 8)  # fewer points than centroids


def test_negative_growth_is_refused():
    with pytest.raises(ValueError, match="growth must be >= 0"):
        kmeans_plus_plus(torch.randn(10, 2), 3, torch.Generator(), growth=-1.0)


def test_seeding_hands_lloyd_each_points_nearest_seed():
    points = mixture(9)
    seeds, nearest_seed = _seed(points, 64, torch.Generator().manual_seed(0), 0.5)
    assert torch.equal(nearest_seed, nearest_codes(points, seeds)[0])
    assert torch.equal(lloyd(points, seeds, 4, assignment=nearest_seed), lloyd(points, seeds, 4))
    assert torch.equal(kmeans(points, 64, 4, torch.Generator().manual_seed(0)), lloyd(points, seeds, 4))


def noisy_mixture(seed, points=4000, components=128, dim=64):
    """Components of unequal spread in many dimensions: D^2 sampling is drawn to the wide components' far-out points,
    the data where greedy seeding pays."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(components, dim, generator=generator) * 0.5
    scales = torch.rand(components, 1, generator=generator) + 0.5
    labels = torch.randint(components, (points,), generator=generator)
    return centres[labels] + scales[labels] * torch.randn(points, dim, generator=generator)


def test_greedy_seeding_keeps_the_best_of_its_trials():
    # Greedy k-means++ (Arthur & Vassilvitskii 2007, sec. 6; scikit-learn's default): every centroid is the best of
    # `trials` D^2 draws.  Seeds and k-means after it have a lower inertia than plain D^2 sampling's.
    def mean(function, runs=3):
        total = 0.0
        for seed in range(runs):
            points = noisy_mixture(seed)
            total += inertia(points, function(points, torch.Generator().manual_seed(100 + seed)))
        return total / runs

    plain, greedy = (mean(lambda p, g: kmeans_plus_plus(p, 64, g, trials=t)) for t in (1, 6))
    assert greedy < 0.97 * plain, (greedy, plain)
    plain, greedy = (mean(lambda p, g: kmeans(p, 64, 5, g, trials=t)) for t in (1, 6))
    assert greedy < 0.99 * plain, (greedy, plain)


def test_one_trial_is_plain_kmeans_plus_plus_and_trials_must_be_positive():
    points = mixture(3)
    assert torch.equal(kmeans_plus_plus(points, 32, torch.Generator().manual_seed(0), trials=1),
                       kmeans_plus_plus(points, 32, torch.Generator().manual_seed(0)))
    seeds = kmeans_plus_plus(points, 32, torch.Generator().manual_seed(0), trials=4)
    assert all((points == seed).all(dim=1).any() for seed in seeds)
    with pytest.raises(ValueError, match="trials must be >= 1"):
        kmeans_plus_plus(points, 3, torch.Generator(), trials=0)
