"""SpeechBrain adapter: the VQ bottleneck with SpeechBrain's *relative* lengths.

SpeechBrain batches carry lengths as fractions of the padded length (``PaddedBatch``: ``lengths[i] =
len_i / T_max``), which stay valid after any downsampling; the absolute length at ``T`` frames is
``round(lengths_rel * T)``, SpeechBrain's own rule (``relative_time_to_absolute``, ``length_to_mask``).

HyperPyYAML builds any importable class, so no registration is needed::

    vq: !new:seqvq.integrations.speechbrain.VQBottleneck
        quantizer: !new:seqvq.VectorQuantizer
            dim: 256
            codebook_size: 256

``compute_forward`` calls ``out = self.modules.vq(x, lengths_rel=wav_lens)`` and ``compute_objectives`` adds
``out.loss`` to the task loss.  The optimizer, which ``Brain.fit`` builds in ``init_optimizers``, clears the moments
of rewritten codes (re-estimation, replacement, k-means) before each step once the Brain says so::

    def init_optimizers(self):
        super().init_optimizers()
        seqvq.reset_optimizer_state_on_step(self.modules, self.optimizer)

Every piece of the quantizer's state is a parameter or buffer, so putting the module into ``modules`` (and the
``Checkpointer``'s recoverables) checkpoints all of it.

:class:`KMeansUnits` is k-means units (:class:`seqvq.units.KMeansTokenizer`) where SpeechBrain takes
``MiniBatchKMeansSklearn`` or one of ``DiscreteSSL``'s k-means models.  Nothing here imports SpeechBrain: the
adapters are plain torch.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..quantize import QuantizedResult
from ..units import KMeansTokenizer


def absolute_lengths(lengths_rel: torch.Tensor, max_len: int) -> torch.Tensor:
    """SpeechBrain relative lengths (B,) in [0, 1] -> frame counts (B,) at ``max_len`` frames."""
    if lengths_rel.is_floating_point() and bool(((lengths_rel < 0) | (lengths_rel > 1)).any()):
        raise ValueError(f"relative lengths must lie in [0, 1], got {lengths_rel.tolist()}")
    return torch.round(lengths_rel.float() * max_len).long()


class VQBottleneck(nn.Module):
    """``quantizer`` on ``(B, T, C)`` SpeechBrain tensors; ``lengths_rel`` (B,) relative lengths or None (all
    frames valid).  Returns the quantizer's :class:`~seqvq.QuantizedResult` (``quantized``, ``codes`` with -1 at
    padded frames, ``loss`` to add to the task loss, ``metrics``)."""

    def __init__(self, quantizer: nn.Module):
        super().__init__()
        self.quantizer = quantizer

    def forward(self, x: torch.Tensor, lengths_rel: torch.Tensor | None = None) -> QuantizedResult:
        if lengths_rel is None:
            return self.quantizer(x)
        return self.quantizer(x, lengths=absolute_lengths(lengths_rel, x.shape[1]))


class KMeansUnits(nn.Module):
    """k-means units with SpeechBrain's calls: those of ``MiniBatchKMeansSklearn``
    (``speechbrain.integrations.audio_tokenizers.kmeans``) -- ``fit(x)``, ``partial_fit(x)``, ``forward(x) ->
    labels``, ``inertia(x)``, ``n_steps``, ``cluster_centers`` -- and those ``DiscreteSSL`` makes of its k-means
    models -- ``predict(x (N, D)) -> labels`` and ``cluster_centers_`` (numpy), so ``joblib.dump`` of a fitted one
    is a ``kmeans/<dataset>_<encoder>_k<K>_L<layer>.pt`` file ``DiscreteSSL`` loads.

    ``x`` is ``(..., D)`` (every frame counts), or ``(B, T, D)`` with SpeechBrain's relative lengths
    ``lengths_rel``: padding is then neither fitted nor scored, and its labels are -1.  ``fit_stream(batches)``
    fits from a re-iterable stream of ``(x, lengths_rel)`` (a DataLoader) in bounded memory, which scikit-learn's
    ``fit`` cannot.  ``n_clusters`` and ``random_state`` are scikit-learn's; ``max_iter``: the passes of ``fit`` and
    ``fit_stream``; ``update``: ``"mini_batch"`` (as ``MiniBatchKMeans``; ``partial_fit`` needs it) or ``"full"``
    (Lloyd passes); ``**options``: the rest of :class:`~seqvq.units.KMeansTokenizer`'s.  The tokenizer is built at
    the first fit (that fixes D); its state is the module's ``state_dict``, so SpeechBrain's ``Checkpointer``
    saves and recovers it like any module.
    """

    def __init__(self, n_clusters: int, *, random_state: int = 0, max_iter: int = 10, update: str = "mini_batch",
                 **options):
        super().__init__()
        self.settings = dict(passes=max_iter, update=update, seed=random_state, **options)
        self.n_clusters = n_clusters
        self.tokenizer: KMeansTokenizer | None = None
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------------------------------- fitting
    def fit(self, x: torch.Tensor, lengths_rel: torch.Tensor | None = None) -> KMeansUnits:
        """Fit afresh on these frames (``max_iter`` passes over them)."""
        return self.fit_stream([(x, lengths_rel)])

    def fit_stream(self, batches, **fit_options) -> KMeansUnits:
        """Fit afresh on a stream of ``(x (B, T, D), lengths_rel (B,) or None)`` batches, iterated once per pass
        (``**fit_options``: ``KMeansTokenizer.fit``'s ``checkpoint``, ``checkpoint_every``, ``log``)."""
        stream = _AbsoluteLengths(batches)
        first = next(iter(stream), None)
        if first is None:
            raise ValueError("KMeansUnits.fit_stream: the stream has no batch")
        self.tokenizer = self._new_tokenizer(first[0].shape[-1]).to(first[0].device)
        self.tokenizer.fit(stream, **fit_options)
        self.steps.zero_()
        return self

    def partial_fit(self, x: torch.Tensor, lengths_rel: torch.Tensor | None = None) -> KMeansUnits:
        """One online step, scikit-learn's ``partial_fit``: the first seeds from its batch, every one moves the
        centroids by the mini-batch update (:meth:`seqvq.units.KMeansTokenizer.partial_fit`)."""
        features, lengths = _batch(x, lengths_rel)
        if self.tokenizer is None:
            self.tokenizer = self._new_tokenizer(features.shape[-1]).to(features.device)
        self.tokenizer.partial_fit(features, lengths)
        self.steps += 1
        return self

    def _new_tokenizer(self, dim: int) -> KMeansTokenizer:
        return KMeansTokenizer(self.n_clusters, dim, **self.settings)

    # ------------------------------------------------------------------------------------------- encoding
    def forward(self, x: torch.Tensor, lengths_rel: torch.Tensor | None = None) -> torch.Tensor:
        """Labels of shape ``x.shape[:-1]``: each frame's nearest centroid, -1 past ``lengths_rel``."""
        features, lengths = _batch(x, lengths_rel)
        return self._fitted().encode(features, lengths).reshape(x.shape[:-1])

    def inertia(self, x: torch.Tensor, lengths_rel: torch.Tensor | None = None) -> torch.Tensor:
        """The sum of squared distances of the (valid) frames to their nearest centroid (``-score`` in
        scikit-learn)."""
        features, lengths = _batch(x, lengths_rel)
        tokenizer = self._fitted()
        codes = tokenizer.encode(features, lengths)
        valid = codes >= 0
        return (features[valid].to(tokenizer.centroids) - tokenizer.centroids[codes[valid]]).pow(2).sum()

    def predict(self, x) -> np.ndarray:
        """``DiscreteSSL``'s call: labels (N,) of ``x`` (N, D), an array or a tensor, as a numpy array."""
        frames = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        return self.forward(frames.to(self.cluster_centers)).cpu().numpy()

    @property
    def cluster_centers(self) -> torch.Tensor:
        return self._fitted().centroids

    @property
    def cluster_centers_(self) -> np.ndarray:
        return self.cluster_centers.detach().cpu().numpy()

    @property
    def n_steps(self) -> int:
        """``partial_fit`` calls since the last ``fit`` (scikit-learn's ``n_steps_``)."""
        return int(self.steps)

    def _fitted(self) -> KMeansTokenizer:
        if self.tokenizer is None:
            raise RuntimeError("KMeansUnits: not fitted; call fit, fit_stream or partial_fit first")
        return self.tokenizer

    # ------------------------------------------------------------------------------------------ checkpoints
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Build the tokenizer the state holds (its shapes are those of the fit that wrote it), then load it."""
        inner = prefix + "tokenizer."
        tokenizer_state = {key[len(inner):]: value for key, value in state_dict.items() if key.startswith(inner)}
        if tokenizer_state:
            self.tokenizer = KMeansTokenizer.from_state_dict(tokenizer_state)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def _batch(x: torch.Tensor, lengths_rel: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(features (B, T, D), absolute lengths or None)``: ``x`` (..., D) as one row where no lengths are given."""
    if lengths_rel is None:
        return x.detach().reshape(1, -1, x.shape[-1]), None
    if x.dim() != 3:
        raise ValueError(f"lengths_rel needs x of shape (batch, frames, dim); got {tuple(x.shape)}")
    return x.detach(), absolute_lengths(lengths_rel.to(x.device), x.shape[1])


class _AbsoluteLengths:
    """A stream of ``(x, lengths_rel)`` batches as ``KMeansTokenizer.fit`` takes it: ``(features, lengths)``."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return (_batch(x, lengths_rel) for x, lengths_rel in self.batches)
