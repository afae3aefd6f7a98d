"""Features of one layer of any encoder, dumped for a Kaldi data directory, to fit and encode k-means units on.

``encoder`` is an ``nn.Module`` or any callable ``encoder(inputs, lengths)`` -- ``inputs`` (1, T, D) frames or
(1, samples) waveform, ``lengths`` (1,) -- that returns its layers' outputs, a list or tuple of (1, T', C) tensors
(a HuBERT / WavLM checkpoint on disk: ``lambda wav, lengths: model(wav, output_hidden_states=True).hidden_states``;
the speech recipe's model: :class:`seqvq.tasks.speech.SpeechEncoderLayers`), or one (1, T', C) tensor (layer 0);
None: the input frames themselves (log-mel).  ``layer`` picks one (Python indexing: -1 is the last).

``inputs``: ``"fbank"`` -- the directory's own ``feats.scp`` (also a split the speech recipe prepared, feats.scp
without utt2spk), else 80 log-mel + log energy computed from its audio (:mod:`seqvq.data.speech_corpus`) -- or
``"waveform"`` -- float samples in [-1, 1] at the directory's sample rate.
Utterances go through the encoder one at a time, so nothing is padded.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from seqvq.data.features import FbankOptions, check_features
from seqvq.data.kaldi import read_data_dir
from seqvq.data.speech_corpus import FeatureArchive, iter_fbank
from seqvq.errors import UserError

INPUTS = ("fbank", "waveform")


def layer_features(encoder: Callable | None, layer: int, data_dir: str | Path, inputs: str = "fbank",
                   fbank: FbankOptions = FbankOptions()) -> Iterator[tuple[str, np.ndarray]]:
    """``(utterance, (T', C) float32)``: the ``layer`` output of ``encoder`` for each utterance of the directory."""
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, got {inputs!r}")
    if inputs == "fbank" and (Path(data_dir) / "feats.scp").is_file() and not (Path(data_dir) / "utt2spk").exists():
        data = FeatureArchive(Path(data_dir) / "feats.scp")  # a prepared split (data_prep/compute_features.py)
        source = ((utt, data[utt]) for utt in data.entries)
    else:
        data = read_data_dir(data_dir, require_text=False)
        source = iter_fbank(data, fbank) if inputs == "fbank" else ((utt, data.load_audio(utt)[0])
                                                                     for utt in data.utterances)
    parameters = list(encoder.parameters()) if isinstance(encoder, torch.nn.Module) else []
    device = parameters[0].device if parameters else torch.device("cpu")
    for utt, array in source:
        x = torch.as_tensor(np.array(array, dtype=np.float32), device=device)[None]
        if encoder is None:
            out = x
        else:
            with torch.no_grad():
                out = encoder(x, torch.tensor([x.shape[1]], device=device))
            out = _pick(out, layer, utt) if isinstance(out, (list, tuple)) else _pick([out], layer, utt)
        yield utt, check_features(out[0].detach().cpu().numpy(), utt, data.where(utt))


def _pick(layers, layer: int, utt: str) -> torch.Tensor:
    if not -len(layers) <= layer < len(layers):
        raise UserError(f"layer {layer}: the encoder returned {len(layers)} layer output(s) for utterance {utt}; "
                        f"choose a layer from {-len(layers)} to {len(layers) - 1}")
    return layers[layer]


def dump_layer_features(encoder: Callable | None, layer: int, data_dir: str | Path, out_dir: str | Path,
                        inputs: str = "fbank", fbank: FbankOptions = FbankOptions()) -> int:
    """Write ``out_dir``/feats.{ark,scp} (float32 matrices) and utt2num_frames of the ``layer`` features of every
    utterance of ``data_dir`` (see :func:`layer_features`); returns the frames written.  An existing
    ``out_dir``/feats.scp is refused; files appear when complete."""
    import kaldiio

    out_dir = Path(out_dir)
    if (out_dir / "feats.scp").exists():
        raise UserError(f"{out_dir / 'feats.scp'}: exists; choose another output folder or remove it")
    out_dir.mkdir(parents=True, exist_ok=True)
    ark, partial = (out_dir / "feats.ark").resolve(), (out_dir / "feats.ark.partial").resolve()
    raw_scp, frames, counts = out_dir / "feats.scp.partial", 0, []
    try:
        with kaldiio.WriteHelper(f"ark,scp:{partial},{raw_scp}") as writer:
            for utt, matrix in layer_features(encoder, layer, data_dir, inputs, fbank):
                writer(utt, matrix)
                counts.append(f"{utt} {matrix.shape[0]}\n")
                frames += matrix.shape[0]
        scp = "".join(f"{utt} {ark}:{entry.rsplit(':', 1)[1]}\n" for utt, entry in
                      (line.rstrip("\n").split(" ", 1) for line in raw_scp.read_text(encoding="utf-8").splitlines()))
        (out_dir / "utt2num_frames").write_text("".join(counts), encoding="utf-8")
        os.replace(partial, ark)
        (out_dir / "feats.scp").write_text(scp, encoding="utf-8")
    finally:
        for temporary in (partial, raw_scp):
            temporary.unlink(missing_ok=True)
    return frames
