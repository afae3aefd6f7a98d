"""The speech task (``task: speech_ctc``): CTC recognition with a VQ bottleneck (Łańcucki 2020 §IV-A), on phones
(the paper), characters or sentencepiece subwords (:mod:`seqvq.data.units`).

Run config keys read here (besides ``train:``, which the trainer reads; declared by :class:`SpeechCTCTask`,
checked before anything runs):

```yaml
data:
  train: exp/mini/feats/train      # prepared split (feats.scp + phones.txt, or + text for chars/bpe units)
  dev: exp/mini/feats/dev          # prepared split or a raw Kaldi data dir
  cmvn: exp/mini/feats/train/cmvn.ark
  units: exp/mini/feats/units.json # unit model from data_prep/make_targets.py --units; null/absent = phones
  deltas: true                     # append Δ, ΔΔ to the stored features on the fly
model: {...}                       # DeepSpeech2CTC keyword arguments; model.quantizer: null = no bottleneck
```

Training uses whole utterances. The paper trained on 64-frame chunks with targets from forced alignments (Kaldi
tri3b); CTC on a chunk needs the phones inside that chunk, which only an alignment gives, and the built corpus
has none -- so this task trains on whole utterances, which CTC handles without alignments.

The unit model is stored in the model's ``unit_model`` buffer, so every checkpoint carries it and
``seqvq evaluate`` decodes with the units the model was trained on, whatever ``data.units`` points at then.

Evaluation (during training on ``data.dev``, and ``seqvq evaluate CHECKPOINT DATA``): greedy CTC decoding, the
error rate of the unit -- corpus PER = (S + D + I) / N for phones; CER and WER on the normalized transcripts for
characters and subwords (words rebuilt from the units) -- code perplexity 2^H over all valid frames, the number of
codes used, whether the bottleneck quantizes (``quantized``: false for a run that ended inside the quantizer's
pass-through warm-up, :mod:`seqvq.train.warmup`), and a hypothesis file with one ``utt PH PH ...`` (phones) or
``utt word word ...`` line per utterance.

A checkpoint carries what evaluation needs besides the weights: the unit model (above) and
(:meth:`SpeechCTCTask.evaluation_state`) the CMVN statistics themselves and the feature settings (deltas, the fbank
options used for raw Kaldi dirs, the feature dimension), so ``seqvq evaluate CHECKPOINT DATA`` needs neither the
training directory nor its files.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seqvq.data.features import FbankOptions, GlobalCMVN, add_deltas
from seqvq.data.speech_corpus import load_cmvn
from seqvq.data.speech_dataset import (BLANK, SpeechBatch, SpeechDataset, collate_speech, load_unit_split,
                                       split_files, stored_feature_dim)
from seqvq.data.units import UnitInventory
from seqvq.errors import UserError
from seqvq.metrics.bits import stream_bit_rate
from seqvq.metrics.ctc import ctc_greedy_decode
from seqvq.metrics.per import error_counts
from seqvq.metrics.wer import character_error_counts, word_error_counts
from seqvq.models.deepspeech2 import DeepSpeech2CTC
from seqvq.options import Section
from seqvq.quantize import perplexity, quantizer_section
from seqvq.tasks.base import TRAIN, Task
from seqvq.train.checkpoint import load_checkpoint, read_checkpoint
from seqvq.train.logs import atomic_write_text
from seqvq.train.types import StepOutput
from seqvq.units.runs import dedup

LOGGED = ("per", "cer", "wer", "code_perplexity", "codes_used")  # the dev figures of the training log


@dataclass
class SpeechData:
    """The ``data:`` section."""

    train: str  # prepared training split (feats.scp + phones.txt, or text for character/subword units)
    cmvn: str  # global CMVN statistics of the training split (Kaldi layout)
    dev: str | None = None  # prepared split or raw Kaldi data dir evaluated during training
    deltas: bool = True  # append Δ, ΔΔ to the stored features on the fly
    units: str | None = None  # unit model file (data_prep/make_targets.py --units); None = phones
    # keep each training utterance's normalized input (with deltas) in memory after its first read: every later
    # epoch then skips decompressing, Δ and CMVN (T x D x 4 bytes an utterance: 0.6 GB for the built corpus)
    cache_train: bool = False


class SpeechCTCModel(nn.Module):
    """Trainer-facing wrapper: ``forward(batch) -> StepOutput`` with loss = CTC + the quantizer's loss.

    ``unit_model`` (uint8 buffer) holds the unit inventory's bytes (:meth:`UnitInventory.to_bytes`), so the
    checkpoint carries the units; :attr:`inventory` reads them back.
    """

    def __init__(self, model: DeepSpeech2CTC, inventory: UnitInventory):
        super().__init__()
        self.model = model
        self.register_buffer("unit_model", torch.tensor(list(inventory.to_bytes()), dtype=torch.uint8))

    @property
    def inventory(self) -> UnitInventory:
        return UnitInventory.from_bytes(bytes(self.unit_model.cpu().tolist()), "the model's unit_model buffer")

    def forward(self, batch: SpeechBatch) -> StepOutput:
        out = self.model(batch.features, batch.lengths)
        # Mean over utterances of the per-utterance loss divided by its target length (PyTorch's "mean").
        ctc = F.ctc_loss(out.log_probs.transpose(0, 1), batch.targets, out.lengths, batch.target_lengths,
                         blank=BLANK, reduction="mean", zero_infinity=True)
        metrics = {"ctc_loss": ctc.detach()}
        loss = ctc
        if out.vq_loss is not None:
            loss = loss + out.vq_loss
            metrics["vq_loss"] = out.vq_loss.detach()
            metrics.update(out.vq_metrics)
        return StepOutput(loss=loss, metrics=metrics, weight=float(len(batch.utterances)))


def checkpoint_units(model_state: Mapping[str, torch.Tensor], where: str) -> UnitInventory:
    """The unit model a checkpoint's model state carries."""
    if "unit_model" not in model_state:
        raise UserError(f"{where}: the checkpoint carries no unit model (written before seqvq stored one); "
                        f"retrain it with this version")
    return UnitInventory.from_bytes(bytes(model_state["unit_model"].cpu().tolist()), where)


def evaluate_dataset(model: SpeechCTCModel, dataset: SpeechDataset, batch_size: int = 32,
                     hypothesis_file: str | Path | None = None, frame_seconds: float = 0.01) -> dict[str, float]:
    """Greedy CTC over ``dataset``: corpus PER (%) for phones, CER and WER (%) for characters and subwords,
    code perplexity and codes used over all valid frames, and the bits per second of the code stream (one code
    per latent, ``frames_bps``; runs of a repeated code merged, ``dedup_bps``, as discrete units are; the unigram
    entropy per code, :func:`~seqvq.metrics.bits.stream_bit_rate`) over the input's duration at ``frame_seconds``
    per input frame."""
    device = next(model.parameters()).device
    inventory = model.inventory
    symbols = inventory.symbols
    order = sorted(range(len(dataset)), key=lambda i: len(dataset.features[dataset.utterances[i]]))
    references, hypotheses, utterances, counts, code_streams, frames = [], [], [], None, [], 0
    quantizer = model.model.quantizer
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        batch = collate_speech([dataset[i] for i in indices])
        out = model.model(batch.features.to(device), batch.lengths.to(device))
        for index, ids, target, length in zip(indices, ctc_greedy_decode(out.log_probs, out.lengths, BLANK),
                                              batch.targets, batch.target_lengths):
            references.append(dataset.references[index]
                              or [symbols[i - 1] for i in target[:length].tolist()])
            hypotheses.append([symbols[i - 1] for i in ids])
            utterances.append(dataset.utterances[index])
        if out.codes is not None:
            valid = out.codes[out.codes >= 0].reshape(-1).cpu()
            batch_counts = torch.bincount(valid, minlength=quantizer.codebook_size)
            counts = batch_counts if counts is None else counts + batch_counts
            code_streams += [row[row >= 0].cpu() for row in out.codes] if out.codes.dim() == 2 else []
            frames += int(batch.lengths.sum())
    if inventory.has_words:
        hypotheses = [inventory.to_text(units) for units in hypotheses]
        characters, words = character_error_counts(references, hypotheses), word_error_counts(references, hypotheses)
        figures = {"cer": 100.0 * characters.rate, "wer": 100.0 * words.rate,
                   "reference_characters": characters.reference_length, "reference_words": words.reference_length,
                   "word_substitutions": words.substitutions, "word_deletions": words.deletions,
                   "word_insertions": words.insertions, "utterances": len(utterances)}
        hypotheses = [text.split() for text in hypotheses]
    else:
        errors = error_counts(references, hypotheses)
        figures = {"per": 100.0 * errors.rate, "substitutions": errors.substitutions, "deletions": errors.deletions,
                   "insertions": errors.insertions, "reference_phones": errors.reference_length,
                   "utterances": len(utterances)}
    if counts is not None:
        figures["code_perplexity"] = float(perplexity(counts.double()))
        figures["codes_used"] = int((counts > 0).sum())
    if code_streams:  # one codebook: a single token per latent
        seconds = frames * frame_seconds
        streams = {"frames": [codes.tolist() for codes in code_streams],
                   "dedup": [dedup(codes)[0].tolist() for codes in code_streams]}
        for name, sequences in streams.items():
            rate = stream_bit_rate(sequences, quantizer.codebook_size, seconds)
            figures[f"{name}_bps"], figures[f"{name}_nominal_bps"] = rate["entropy_bps"], rate["nominal_bps"]
    if hypothesis_file is not None:
        lines = sorted(" ".join([utt, *labels]) + "\n" for utt, labels in zip(utterances, hypotheses))
        atomic_write_text(Path(hypothesis_file), "".join(lines))
    return figures


class SpeechCTCTask(Task):
    """CTC recognition with a VQ bottleneck. The model's shape comes from the data: its input dimension from the
    stored features (with deltas), its outputs from the unit inventory; training reads them from ``data.train``
    and ``data.units``, evaluation from the checkpoint."""

    name = "speech_ctc"
    data_options = SpeechData
    cmvn: GlobalCMVN
    deltas: bool
    feature_dim: int  # of the stored features, before deltas
    fbank: FbankOptions  # for raw Kaldi dirs
    inventory: UnitInventory

    @classmethod
    def model_section(cls) -> Section:
        return Section.of(DeepSpeech2CTC, skip=("input_dim", "num_classes"), quantizer=quantizer_section())

    def read_training_data(self) -> None:
        self.cmvn, self.deltas, self.fbank = load_cmvn(self.data.cmvn), self.data.deltas, FbankOptions()
        self.inventory = UnitInventory.load(self.data.units) if self.data.units else UnitInventory.phones()
        self.train_split = load_unit_split(self.data.train, self.inventory)
        self.feature_dim = stored_feature_dim(self.train_split[0], self.data.train)

    def data_files(self) -> list[str]:
        """The training and dev splits' files, the CMVN statistics and the unit model."""
        units = [self.data.units] if self.data.units else []
        dev = split_files(self.data.dev, self.inventory) if self.data.dev else []
        return [*split_files(self.data.train, self.inventory), self.data.cmvn, *units, *dev]

    def evaluation_state(self) -> dict:
        """The CMVN statistics and feature settings (the units travel in the model's ``unit_model`` buffer)."""
        return {"cmvn": torch.tensor(self.cmvn.stats), "deltas": self.deltas, "feature_dim": self.feature_dim,
                "fbank": dataclasses.asdict(self.fbank)}

    def restore(self, checkpoint: dict, path: str) -> None:
        state = checkpoint.get("evaluation_state")
        if state:
            self.cmvn, self.deltas = GlobalCMVN(state["cmvn"].numpy()), bool(state["deltas"])
            self.feature_dim, self.fbank = int(state["feature_dim"]), FbankOptions(**state["fbank"])
        else:  # a checkpoint written before checkpoints carried it: the config's files, which then must exist
            self.cmvn, self.deltas, self.fbank = load_cmvn(self.data.cmvn), self.data.deltas, FbankOptions()
            self.feature_dim = self.cmvn.dim // (3 if self.deltas else 1)
        self.inventory = checkpoint_units(checkpoint["model"], path)

    def build_network(self, options: dict) -> SpeechCTCModel:
        network = DeepSpeech2CTC(input_dim=self.feature_dim * (3 if self.deltas else 1),
                                 num_classes=len(self.inventory.symbols) + 1, **options)
        return SpeechCTCModel(network, self.inventory)

    def open_split(self, split: str, model: SpeechCTCModel, path: str | None = None) -> SpeechDataset | None:
        """Training leaves out utterances too short for their targets (CTC could not align them); every evaluated
        utterance counts in the error rate, so none is left out for being short."""
        if split == TRAIN:
            features, targets, references = self.train_split
            return SpeechDataset(features, targets, self.cmvn, self.deltas, model.model.output_lengths,
                                 self.data.train, self.inventory, references, cache=self.data.cache_train)
        path = path or self.data.dev
        if path is None:
            return None
        features, targets, references = load_unit_split(path, self.inventory, self.fbank, self.feature_dim)
        return SpeechDataset(features, targets, self.cmvn, self.deltas, name=path, inventory=self.inventory,
                             references=references)

    def training_collate(self):
        return collate_speech

    def evaluate(self, model: SpeechCTCModel, dataset: SpeechDataset, out_dir: Path | None) -> dict:
        """The figures of :func:`evaluate_dataset`; the hypotheses to ``out_dir``/hyp.txt."""
        return evaluate_dataset(model, dataset, hypothesis_file=None if out_dir is None else out_dir / "hyp.txt",
                                frame_seconds=self.fbank.frame_shift_ms / 1000)

    def evaluate_during_training(self, model: SpeechCTCModel, dataset: SpeechDataset) -> dict:
        """Dev error rate and code usage for the training log (the counts go to ``seqvq evaluate``'s output); the
        hypotheses to EXP_DIR/dev_hyp.txt."""
        hypotheses = Path(self.config.get("exp_dir", ".")) / "dev_hyp.txt"
        figures = evaluate_dataset(model, dataset, hypothesis_file=hypotheses)
        return {name: figures[name] for name in LOGGED if name in figures}


class SpeechEncoderLayers(nn.Module):
    """The encoder of a ``speech_ctc`` checkpoint as a layer encoder for k-means units
    (:mod:`seqvq.units.encoder_features`): ``(features (1, T, D), lengths)`` -- the stored fbank frames of one
    utterance -- through the checkpoint's deltas and CMVN to ``[front end, BiLSTM layer 1, ..., layer L]`` outputs
    (its Polyak-averaged weights when it holds them and ``use_polyak``)."""

    def __init__(self, checkpoint: str | Path, use_polyak: bool = True):
        super().__init__()
        saved = read_checkpoint(checkpoint)
        if (saved.get("config") or {}).get("task") != SpeechCTCTask.name:
            raise UserError(f"{checkpoint}: not a {SpeechCTCTask.name} checkpoint; pass one the speech recipe trained")
        task = SpeechCTCTask(saved["config"])
        task.restore(saved, str(checkpoint))
        network = task.build_model()
        load_checkpoint(checkpoint, network, use_polyak=use_polyak)
        self.model, self.cmvn, self.deltas = network.model.eval(), task.cmvn, task.deltas

    @torch.no_grad()
    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        if features.shape[0] != 1:
            raise ValueError(f"SpeechEncoderLayers takes one utterance at a time; got a batch of {features.shape[0]}")
        matrix = add_deltas(features[0].cpu()) if self.deltas else features[0].cpu()
        normalized = torch.from_numpy(self.cmvn(matrix.numpy())).to(features.device)[None]
        return self.model.encoder_layers(normalized, lengths)[0]
