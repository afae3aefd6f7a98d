"""The k-means model files of the speech toolkits, read and written: scikit-learn ``KMeans`` / ``MiniBatchKMeans``
joblib models (ESPnet's ``learn_kmeans.py`` / ``ApplyKmeans`` and SpeechBrain's ``MiniBatchKMeansSklearn`` use
them) and FAISS centroids (an ``IndexFlatL2`` file, or the ``.npy`` array of ``faiss.Kmeans.centroids``).

seqvq's centroids are float32.  A written scikit-learn model therefore predicts float32 features, as one that
scikit-learn fitted on float32 features does (it refuses float64 ones); a read model fitted on float64 features
gives codes that may differ from its own ``predict`` at float32 ties.  ``joblib.load`` unpickles: read only files
you trust.  scikit-learn, joblib and faiss are imported only by the functions that need them.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from seqvq.errors import UserError

from .tokenizer import KMeansTokenizer

SKLEARN_ESTIMATORS = ("KMeans", "MiniBatchKMeans")


def _refuse_existing(path) -> None:
    if os.path.exists(path):
        raise UserError(f"{path}: exists; choose another path or remove it")


def write_sklearn(tokenizer: KMeansTokenizer, path: str | Path, estimator: str = "MiniBatchKMeans") -> None:
    """Write a fitted scikit-learn ``estimator`` (``"KMeans"`` or ``"MiniBatchKMeans"``) whose
    ``cluster_centers_`` are the tokenizer's centroids, as a joblib file its ``predict`` works from.

    The estimator is fitted by scikit-learn itself, on the centroids, starting from them (one iteration), so every
    attribute ``predict`` needs in the installed version is set; then ``cluster_centers_`` is overwritten with the
    centroids exactly (that fit may move them by rounding, or reassign some).  ``labels_`` and ``inertia_``
    describe that fit on the centroids."""
    import joblib
    from sklearn import cluster

    if estimator not in SKLEARN_ESTIMATORS:
        raise ValueError(f"write_sklearn: estimator must be one of {SKLEARN_ESTIMATORS}, got {estimator!r}")
    _refuse_existing(path)
    centroids = tokenizer.centroids.detach().cpu().numpy().copy()
    model = getattr(cluster, estimator)(n_clusters=centroids.shape[0], init=centroids, n_init=1, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of the one-iteration fit
        model.fit(centroids)
    model.cluster_centers_ = centroids
    joblib.dump(model, path)


def read_sklearn(source) -> KMeansTokenizer:
    """A tokenizer with the ``cluster_centers_`` of a scikit-learn k-means model: a joblib file or the estimator."""
    if isinstance(source, (str, os.PathLike)):
        import joblib

        try:
            model = joblib.load(source)
        except FileNotFoundError:
            raise UserError(f"{source}: no such file") from None
    else:
        model = source
    centres = getattr(model, "cluster_centers_", None)
    if centres is None:
        raise UserError(f"{source}: no cluster_centers_ (a fitted scikit-learn KMeans or MiniBatchKMeans is "
                        f"expected; got {type(model).__name__})")
    return KMeansTokenizer.from_centroids(np.asarray(centres))


def write_faiss(tokenizer: KMeansTokenizer, path: str | Path) -> None:
    """Write the centroids as a FAISS ``IndexFlatL2`` file (``faiss.read_index``), or as a float32 array where
    ``path`` ends in ``.npy``."""
    _refuse_existing(path)
    centroids = tokenizer.centroids.detach().cpu().contiguous().numpy()
    if str(path).endswith(".npy"):
        with open(path, "wb") as file:
            np.save(file, centroids)
        return
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    faiss.write_index(index, str(path))


def read_faiss(source) -> KMeansTokenizer:
    """A tokenizer with FAISS centroids: an index file or a ``.npy`` array (paths), a flat L2 index, a trained
    ``faiss.Kmeans``, or an array."""
    if isinstance(source, (str, os.PathLike)):
        if not os.path.exists(source):
            raise UserError(f"{source}: no such file")
        if str(source).endswith(".npy"):
            return KMeansTokenizer.from_centroids(np.load(source))
        import faiss

        source = faiss.read_index(str(source))
    if hasattr(source, "centroids"):  # faiss.Kmeans
        return KMeansTokenizer.from_centroids(np.asarray(source.centroids))
    if isinstance(source, np.ndarray):
        return KMeansTokenizer.from_centroids(source)
    import faiss

    if not isinstance(source, faiss.IndexFlat) or source.metric_type != faiss.METRIC_L2:
        raise UserError(f"read_faiss: {type(source).__name__} is not an L2 flat index (IndexFlatL2): only that one "
                        "holds k-means centroids as they are")
    return KMeansTokenizer.from_centroids(source.reconstruct_n(0, source.ntotal))
