"""The collapse toy of Huh et al. 2023, Appendix A.9 / Fig. 10: ``python -m seqvq.demo [--out PNG]``.

512 embeddings from N(0, 0.5 I) and 128 codes from N((-1, -1), 0.3 I) in 2-D; the embeddings are fixed and the
codebook takes 20 SGD updates (learning rate 0.1) on the codebook term of the commitment loss.  With the plain
parameterization only the few codes nearest the data are ever selected and trained, so most stay dead; each
remedy is one more row.  Prints active codes and perplexity per method and writes a PNG of the distributions.

The paper writes the distributions as N(mu, sigma I); we read sigma as the standard deviation (0.5 and 0.3).  Read
as variances, 57 of 128 codes start active, whereas the paper reports that more than 90% receive no update; read as
standard deviations about 20 start active, which matches it.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import torch

from .quantize import VectorQuantizer

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
}


def toy_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(NUM_EMBEDDINGS, 2, generator=generator) * 0.5
    codes = torch.randn(NUM_CODES, 2, generator=generator) * 0.3 + torch.tensor([-1.0, -1.0])
    return embeddings, codes


def run_method(options: dict, seed: int = 0) -> dict:
    """Train the toy codebook with one method; return active codes, perplexity and the final point sets."""
    torch.manual_seed(seed)
    embeddings, codes = toy_data(seed)
    quantizer = VectorQuantizer(2, NUM_CODES, alpha=1.0, beta=1.0, **options)
    quantizer.rewrite_codes(codes.unsqueeze(0))
    parameters = [p for p in quantizer.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=LEARNING_RATE) if parameters else None
    batch = embeddings.unsqueeze(0)
    for _ in range(UPDATES):
        result = quantizer(batch)
        if optimizer is not None:
            optimizer.zero_grad()
            result.loss.backward()
            optimizer.step()
    quantizer.eval()
    with torch.no_grad():
        final = quantizer(batch)
        codebook = quantizer.effective_codebook()[0].clone()
    used = final.codes[0].unique()
    return {
        "active_codes": int(used.numel()),
        "perplexity": float(final.metrics["perplexity"]),
        "embeddings": embeddings,
        "codebook": codebook,
        "selected": codebook[used],
    }


def save_figure(results: dict[str, dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.4), squeeze=False)
    for axis, (name, result) in zip(axes[0], results.items()):
        axis.scatter(*result["embeddings"].T, s=4, c="0.7", label="embeddings")
        axis.scatter(*result["codebook"].T, s=8, c="tab:blue", label="codes")
        axis.scatter(*result["selected"].T, s=10, c="tab:orange", label="selected codes")
        axis.set_title(f"{name}\n{result['active_codes']}/{NUM_CODES} active", fontsize=9)
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
        print(f"| {name} | {result['active_codes']}/{NUM_CODES} | {result['perplexity']:.1f} |")
    save_figure(results, args.out)
    print(f"figure: {args.out}")
    return results


if __name__ == "__main__":
    main()
