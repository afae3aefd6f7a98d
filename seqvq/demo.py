"""The collapse toy of Huh et al. 2023, Appendix A.9 / Fig. 10: ``python -m seqvq.demo [--out PNG]``.

512 embeddings from N(0, 0.5 I) and 128 codes from N((-1, -1), 0.3 I) in 2-D; the embeddings are fixed and the
codebook takes 20 SGD updates (learning rate 0.1) on the codebook term of the commitment loss.  With the plain
parameterization only the few codes nearest the data are ever selected and trained, so most stay dead; each
remedy is one more row.  Prints active codes and perplexity per method and writes a PNG of the distributions.

A second table trains the embeddings too (the toy's "encoder"): each embedding is a free parameter initialised
at its data point and trained to reconstruct that point through the quantizer, ``||q(e) - x||^2`` summed over
points, while the codebook term trains the codes as above.  Only here do the methods that change the encoder's
gradient act (the rotation trick, stochastic sampling, FSQ's noise substitution and residual stages, IBQ, DiVeQ and
SF-DiVeQ — the last two with no codebook term, as in their paper), alone and in the combinations users report
trouble with; it prints active codes, perplexity and the final reconstruction error.
LFQ has no row there: its learned 7 -> 2 output projection diverges at the toy's learning rate on the loss summed
over the 512 points (with or without its entropy penalty).  In 2-D, the 7 sign bits of an affine projection cut the
plane into at most 29 regions, so LFQ and BSQ can use at most 29 of their 128 codes here.

The paper writes the distributions as N(mu, sigma I); we read sigma as the standard deviation (0.5 and 0.3).  Read
as variances, 57 of 128 codes start active, whereas the paper reports that more than 90% receive no update; read as
standard deviations about 20 start active, which matches it.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import torch

from .quantize import ResidualVectorQuantizer, VectorQuantizer, build_quantizer

NUM_EMBEDDINGS, NUM_CODES, UPDATES, LEARNING_RATE = 512, 128, 20, 0.1

# One row per method: keyword arguments of VectorQuantizer on top of the toy's plain setting.  The toy has no task
# loss, so the synchronized update (nu) has nothing to act on and has no row.  It has 20 updates in all, so
# replacement uses a life span of 2 steps (Huh et al. use 20 in real training) and re-estimation runs k-means++ on
# its reservoir at step 1 and every 5 steps after.
METHODS: dict[str, dict] = {
    "plain VQ": {},
    "EMA codebook": {"codebook_update": "ema", "ema_decay": 0.9},
    "affine (learned)": {"affine": "learned"},
    "affine (EMA statistics)": {"affine": {"mode": "ema", "momentum": 0.1}},
    "LRU replacement": {"replace_dead_after": 2},
    "k-means init": {"kmeans_init": True},
    "data-dependent re-estimation": {"reestimate": {"init_steps": 1, "every": 5, "steps": 20,
                                                     "reservoir_size": 512}},
    "usage regularizer (KL, weight 5, tau 0.1)": {"usage_regularizer": {"weight": 5.0, "temperature": 0.1}},
    "SimVQ linear map": {"affine": {"mode": "linear"}},
    "OptVQ (optimal transport assignment)": {"assignment": "optimal_transport"},
    "VQBridge (FVQ)": {"bridge": {"group": 16, "width": 64, "heads": 4}},
    "FSQ (levels 16 x 8, no codebook)": {"kind": "fsq", "levels": [16, 8]},
    "BSQ (7 bits, no codebook)": {"kind": "bsq", "bits": 7},
    "FSQ, symmetric levels (16 x 8)": {"kind": "fsq", "levels": [16, 8], "symmetric": True},
    "LFQ (7 bits, entropy penalty)": {"kind": "lfq", "bits": 7, "entropy_regularizer": {}},
    "residual FSQ (2 stages of 4 x 4)": {"kind": "residual", "num_quantizers": 2,
                                         "stage": {"kind": "fsq", "levels": [4, 4]}},
}
STOCHASTIC = {"assignment": "stochastic", "temperature": 0.1}
# Rows of the second table (trained embeddings): the encoder-side methods and the combinations users report.
ENCODER_METHODS: dict[str, dict] = {
    "straight-through (plain VQ)": {},
    "rotation trick": {"rotation_trick": True},
    "stochastic sampling (tau 0.1)": STOCHASTIC,
    "rotation trick + stochastic sampling": {"rotation_trick": True, **STOCHASTIC},
    "SimVQ linear map": {"affine": {"mode": "linear"}},
    "SimVQ + rotation trick": {"affine": {"mode": "linear"}, "rotation_trick": True},
    "affine (learned) + rotation trick": {"affine": "learned", "rotation_trick": True},
    "usage regularizer + rotation trick": {"usage_regularizer": {"weight": 5.0, "temperature": 0.1},
                                           "rotation_trick": True},
    "IBQ (index backpropagation)": {"assignment": "index_backprop"},
    "DiVeQ (no auxiliary loss)": {"diveq": {"noise": 1e-3}, "alpha": 0.0},
    "SF-DiVeQ (no auxiliary loss)": {"diveq": {"space_filling": True}, "alpha": 0.0},
    "FSQ (levels 16 x 8)": METHODS["FSQ (levels 16 x 8, no codebook)"],
    "FSQ + noise substitution (p 0.5)": {"kind": "fsq", "levels": [16, 8], "noise_dropout": 0.5},
    "FSQ, symmetric levels": METHODS["FSQ, symmetric levels (16 x 8)"],
    "residual FSQ (2 stages of 4 x 4)": METHODS["residual FSQ (2 stages of 4 x 4)"],
}


def toy_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(NUM_EMBEDDINGS, 2, generator=generator) * 0.5
    codes = torch.randn(NUM_CODES, 2, generator=generator) * 0.3 + torch.tensor([-1.0, -1.0])
    return embeddings, codes


def run_method(options: dict, seed: int = 0, train_embeddings: bool = False) -> dict:
    """Train the toy codebook (and with ``train_embeddings`` the embeddings) with one method; return active
    codes, perplexity, the reconstruction error and the final point sets."""
    torch.manual_seed(seed)
    targets, codes = toy_data(seed)
    if "kind" in options:  # a codebook-free quantizer: its implicit codes, no codebook to initialise
        quantizer = build_quantizer(2, **options)
    else:
        quantizer = VectorQuantizer(2, NUM_CODES, **{"alpha": 1.0, "beta": 1.0, **options})
        if "bridge" in options:  # no inverse to write through: the toy's codes are its frozen codebook
            with torch.no_grad():
                quantizer.codebook.copy_(codes.unsqueeze(0))
        else:
            quantizer.rewrite_codes(codes.unsqueeze(0))
    embeddings = torch.nn.Parameter(targets.clone(), requires_grad=train_embeddings)
    parameters = [p for p in [*quantizer.parameters(), embeddings] if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=LEARNING_RATE) if parameters else None
    for _ in range(UPDATES):
        result = quantizer(embeddings.unsqueeze(0))
        if optimizer is not None:
            optimizer.zero_grad()
            task = (result.quantized[0] - targets).pow(2).sum() if train_embeddings else 0.0
            (result.loss + task).backward()
            optimizer.step()
    quantizer.eval()
    with torch.no_grad():
        final = quantizer(embeddings.unsqueeze(0))
        if "kind" in options:
            codebook = implicit_codebook(quantizer)
        else:
            codebook = quantizer.effective_codebook()[0].clone()
    used = single_codes(quantizer, final.codes[0]).unique()
    return {
        "active_codes": int(used.numel()),
        "codebook_size": int(codebook.shape[0]),
        "perplexity": float(final.metrics["perplexity"]),
        "reconstruction_error": float((final.quantized[0] - targets).pow(2).sum(-1).mean()),
        "embeddings": embeddings.detach(),
        "codebook": codebook,
        "selected": codebook[used],
    }


def implicit_codebook(quantizer) -> torch.Tensor:
    """Every vector a codebook-free quantizer (or a residual stack of them) can output, in code order."""
    if isinstance(quantizer, ResidualVectorQuantizer):
        size, stages = quantizer.stages[0].codebook_size, len(quantizer.stages)
        return quantizer.codes_to_vectors(torch.cartesian_prod(*[torch.arange(size)] * stages).view(-1, stages))
    return quantizer.codes_to_vectors(torch.arange(quantizer.codebook_size))


def single_codes(quantizer, codes: torch.Tensor) -> torch.Tensor:
    """One code per vector: a residual stack's per-stage codes (N, stages) as one number, in the order of
    :func:`implicit_codebook` (stage 0 the most significant digit)."""
    if not isinstance(quantizer, ResidualVectorQuantizer):
        return codes
    size, stages = quantizer.stages[0].codebook_size, len(quantizer.stages)
    return (codes * size ** torch.arange(stages - 1, -1, -1)).sum(dim=-1)


def save_figure(results: dict[str, dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.4), squeeze=False)
    for axis, (name, result) in zip(axes[0], results.items()):
        axis.scatter(*result["embeddings"].T, s=4, c="0.7", label="embeddings")
        axis.scatter(*result["codebook"].T, s=8, c="tab:blue", label="codes")
        axis.scatter(*result["selected"].T, s=10, c="tab:orange", label="selected codes")
        axis.set_title(f"{name}\n{result['active_codes']}/{result['codebook_size']} active", fontsize=9)
        axis.set_xlim(-3, 2.5)
        axis.set_ylim(-3, 2.5)
        axis.set_aspect("equal")
    axes[0][0].legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".png", dir=directory)
    os.close(handle)
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="exp/demo/collapse_toy.png", help="where to write the PNG")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = {name: run_method(options, args.seed) for name, options in METHODS.items()}
    print(f"Huh et al. 2023 Fig. 10 toy: {NUM_EMBEDDINGS} embeddings, {NUM_CODES} codes, {UPDATES} updates, "
          f"lr {LEARNING_RATE}")
    print("| method | active codes | perplexity |\n|---|---|---|")
    for name, result in results.items():
        print(f"| {name} | {result['active_codes']}/{result['codebook_size']} | {result['perplexity']:.1f} |")
    encoder_results = {name: run_method(options, args.seed, train_embeddings=True)
                       for name, options in ENCODER_METHODS.items()}
    print("\nWith trained embeddings (reconstruction loss through the quantizer):")
    print("| method | active codes | perplexity | reconstruction error |\n|---|---|---|---|")
    for name, result in encoder_results.items():
        print(f"| {name} | {result['active_codes']}/{result['codebook_size']} | {result['perplexity']:.1f} | "
              f"{result['reconstruction_error']:.4f} |")
    save_figure(results, args.out)
    print(f"figure: {args.out}")
    return {**results, **{f"trained embeddings: {name}": result for name, result in encoder_results.items()}}


if __name__ == "__main__":
    main()
