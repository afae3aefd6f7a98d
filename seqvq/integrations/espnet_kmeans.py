"""ESPnet's k-means unit scripts with seqvq's streaming k-means: the learning step and the unit dumper of the
``asr2`` recipes (``egs2/TEMPLATE/asr1/scripts/feats/perform_kmeans.sh``), with their command lines::

    python -m seqvq.integrations.espnet_kmeans learn --km_path km_dir/km_500.mdl --n_clusters 500 \\
        --percent -1 --in_filetype mat scp:km_dir/train.scp        # for pyscripts/utils/learn_kmeans.py
    python -m seqvq.integrations.espnet_kmeans dump --km_path km_dir/km_500.mdl --in_filetype mat \\
        --out_filetype mat scp:feats.scp ark,t:pseudo_labels_km500.txt   # for pyscripts/feats/dump_km_label.py

``learn`` reads the features utterance by utterance on every pass (:class:`KaldiFeatureStream`; ESPnet's script
loads them all into memory first, which is where it runs out) and writes the file ``ApplyKmeans`` reads: a
scikit-learn ``MiniBatchKMeans`` joblib model (:func:`seqvq.units.write_sklearn`).  ``dump`` encodes with the exact
nearest centroid and writes ``utt_id unit unit ...`` lines, the text the recipe makes of ``dump_km_label.py``'s
output (its ``sed`` that strips Kaldi's brackets leaves these lines as they are).  The options ESPnet's scripts
take for scikit-learn (``--tol``, ``--n_init``, ...) are accepted and unused; the ones seqvq cannot honour
(``--RVQ_layers`` > 1, other file types, online feature extraction) are refused.  Nothing here imports ESPnet.
"""
from __future__ import annotations

import argparse
import os
import random
import sys

import numpy as np
import torch

from ..data.features import check_features
from ..errors import UserError
from ..units import KMeansTokenizer, read_sklearn, write_sklearn

SKLEARN_ONLY = "accepted for ESPnet's command line; scikit-learn's option, unused here"


class KaldiFeatureStream:
    """Batches ``(features (1, N, D), None)`` of about ``frames_per_batch`` frames read from Kaldi
    ``rspecifiers`` (``scp:FILE`` / ``ark:FILE``), one utterance at a time, on every iteration; ``percent`` in
    (0, 1]: each utterance is kept with that probability (the same ones on every pass, drawn from ``seed``)."""

    def __init__(self, rspecifiers: list[str], frames_per_batch: int = 10000, percent: float = -1, seed: int = 0):
        if frames_per_batch < 1 or not (percent < 0 or 0 < percent <= 1):
            raise UserError(f"--batch_size must be >= 1 and --percent -1 or in (0, 1]; got {frames_per_batch}, "
                            f"{percent}")
        self.rspecifiers, self.frames_per_batch, self.percent, self.seed = rspecifiers, frames_per_batch, percent, seed

    def __iter__(self):
        pending, frames = [], 0
        keep = random.Random(self.seed)
        for _, matrix in read_features(self.rspecifiers):
            if self.percent > 0 and keep.random() >= self.percent:
                continue
            pending.append(matrix)
            frames += matrix.shape[0]
            if frames >= self.frames_per_batch:
                yield torch.from_numpy(np.concatenate(pending))[None], None
                pending, frames = [], 0
        if pending:
            yield torch.from_numpy(np.concatenate(pending))[None], None


def read_features(rspecifiers: list[str], dim: int | None = None):
    """``(utterance, (T, D) float32)`` of each rspecifier in turn, each checked (finite, one dimension)."""
    import kaldiio

    for rspecifier in rspecifiers:
        if not rspecifier.split(":", 1)[0].split(",")[0] in ("scp", "ark"):
            raise UserError(f"{rspecifier}: not a Kaldi rspecifier; give scp:FILE or ark:FILE")
        try:
            reader = kaldiio.ReadHelper(rspecifier)
        except FileNotFoundError as error:
            raise UserError(f"{rspecifier}: no such file ({error.filename})") from None
        with reader:
            for utterance, matrix in reader:
                matrix = check_features(matrix, utterance, rspecifier, dim)
                dim = matrix.shape[1]
                yield utterance, matrix


def learn(args: argparse.Namespace) -> None:
    """pyscripts/utils/learn_kmeans.py: fit ``--n_clusters`` units on the features, write ``--km_path``."""
    if args.RVQ_layers != 1 or args.init != "k-means++":
        raise UserError("learn: seqvq fits one layer of units seeded by k-means++; drop --RVQ_layers / --init")
    if os.path.exists(args.km_path):
        raise UserError(f"{args.km_path}: exists; choose another --km_path or remove it")
    stream = KaldiFeatureStream(args.rspecifier, args.batch_size, args.percent, args.seed)
    first = next(iter(stream), None)
    if first is None:
        raise UserError(f"{' '.join(args.rspecifier)}: no utterance to learn from")
    tokenizer = KMeansTokenizer(args.n_clusters, first[0].shape[-1], passes=args.max_iter, update=args.update,
                                seed=args.seed)
    if args.checkpoint and os.path.exists(args.checkpoint):
        tokenizer = KMeansTokenizer.load(args.checkpoint)
    tokenizer.fit(stream, checkpoint=args.checkpoint or None, log=lambda line: print(line, flush=True))
    write_sklearn(tokenizer, args.km_path)
    passes = tokenizer.inertia[~tokenizer.inertia.isnan()]
    print(f"{args.km_path}: {args.n_clusters} units of {tokenizer.dim}-dim features; inertia "
          f"{float(passes[-1]) if passes.numel() else float('nan'):.6g} per frame")


def dump(args: argparse.Namespace) -> None:
    """pyscripts/feats/dump_km_label.py: one ``utt_id unit unit ...`` line per utterance of the features."""
    if args.RVQ_layers != 1 or args.online_feature_extract:
        raise UserError("dump: seqvq dumps one layer of units from dumped features; drop --RVQ_layers / "
                        "--online_feature_extract (dump the features first)")
    if not args.wspecifier.startswith("ark,t:"):
        raise UserError(f"{args.wspecifier}: give ark,t:FILE (the unit text the recipe keeps)")
    out = args.wspecifier[len("ark,t:"):]
    if os.path.exists(out):
        raise UserError(f"{out}: exists; choose another output or remove it")
    tokenizer = read_sklearn(args.km_path)
    if args.use_gpu and torch.cuda.is_available():
        tokenizer = tokenizer.cuda()
    partial = f"{out}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        for utterance, matrix in read_features([args.rspecifier], tokenizer.dim):
            codes = tokenizer.encode(torch.tensor(matrix, device=tokenizer.centroids.device)[None])[0]
            handle.write(" ".join([utterance, *map(str, codes.tolist())]) + "\n")
    os.replace(partial, out)


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m seqvq.integrations.espnet_kmeans", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = main.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("learn", help="learn_kmeans.py: fit the units, write the joblib model")
    fit.add_argument("--km_path", required=True, help="the joblib model to write (MiniBatchKMeans)")
    fit.add_argument("--n_clusters", type=int, required=True)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--percent", type=float, default=-1, help="keep each utterance with this probability; -1: all")
    fit.add_argument("--init", default="k-means++", help="k-means++ only")
    fit.add_argument("--max_iter", type=int, default=10, help="passes over the features after seeding")
    fit.add_argument("--batch_size", type=int, default=10000, help="frames read per batch")
    fit.add_argument("--update", choices=("full", "mini_batch"), default="full",
                     help="full: Lloyd passes; mini_batch: Sculley's update after every batch")
    fit.add_argument("--checkpoint", default="", help="a file to checkpoint the fit to, and resume it from")
    for option, kind in (("--tol", float), ("--max_no_improvement", int), ("--n_init", int),
                         ("--reassignment_ratio", float)):
        fit.add_argument(option, type=kind, help=SKLEARN_ONLY)
    fit.add_argument("--RVQ_layers", type=int, default=1, help="1 only")
    fit.add_argument("--in_filetype", choices=("mat",), default="mat", help="Kaldi matrices (scp/ark)")
    fit.add_argument("rspecifier", nargs="+", help="features, e.g. scp:train.scp")
    labels = commands.add_parser("dump", help="dump_km_label.py: write utt_id unit unit ... lines")
    labels.add_argument("--km_path", required=True, help="a scikit-learn KMeans/MiniBatchKMeans joblib model")
    labels.add_argument("--use_gpu", type=lambda value: value.lower() in ("true", "1", "yes"), default=False)
    labels.add_argument("--online_feature_extract", type=lambda value: value.lower() in ("true", "1", "yes"),
                        default=False, help="false only")
    for option in ("--feature_conf", "--batch_bins", "--utt2num_samples", "--audio_sample_rate"):
        labels.add_argument(option, help="accepted for ESPnet's command line; unused")
    labels.add_argument("--RVQ_layers", type=int, default=1, help="1 only")
    labels.add_argument("--in_filetype", choices=("mat",), default="mat")
    labels.add_argument("--out_filetype", choices=("mat",), default="mat")
    labels.add_argument("rspecifier", help="features, e.g. scp:feats.scp")
    labels.add_argument("wspecifier", help="ark,t:FILE")
    return main


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        (learn if args.command == "learn" else dump)(args)
    except UserError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
