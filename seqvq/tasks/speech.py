"""The speech task (``task: speech_ctc``): CTC recognition with a VQ bottleneck (Łańcucki 2020 §IV-A), on phones
(the paper), characters or sentencepiece subwords (:mod:`seqvq.data.units`).

Run config keys read here (besides ``train:``, which the trainer reads; declared by :data:`CONFIG`, checked
before anything runs):

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
codes used, and a hypothesis file with one ``utt PH PH ...`` (phones) or ``utt word word ...`` line per utterance.

A checkpoint carries what evaluation needs besides the weights: the unit model (above) and
(:func:`evaluation_state`) the CMVN statistics themselves and the feature settings (deltas, the fbank options used
for raw Kaldi dirs, the feature dimension), so ``seqvq evaluate CHECKPOINT DATA`` needs neither the training
directory nor its files.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seqvq.data.features import FbankOptions, GlobalCMVN
from seqvq.data.speech_corpus import load_cmvn
from seqvq.data.speech_dataset import (BLANK, SpeechBatch, SpeechDataset, collate_speech, load_unit_split,
                                       stored_feature_dim)
from seqvq.data.units import UnitInventory
from seqvq.errors import UserError
from seqvq.metrics.ctc import ctc_greedy_decode
from seqvq.metrics.per import error_counts
from seqvq.metrics.wer import character_error_counts, word_error_counts
from seqvq.models.deepspeech2 import DeepSpeech2CTC
from seqvq.options import Section
from seqvq.quantize import perplexity, quantizer_section
from seqvq.train.logs import atomic_write_text
from seqvq.train.types import StepOutput, TaskBundle

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


CONFIG = Section.keys("speech_ctc", data=Section.of(SpeechData),
                      model=Section.of(DeepSpeech2CTC, skip=("input_dim", "num_classes"),
                                       quantizer=quantizer_section()))


class SpeechCTCTask(nn.Module):
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


def build_model(config: dict, input_dim: int, inventory: UnitInventory) -> SpeechCTCTask:
    options = CONFIG.sections["model"].check(dict(config.get("model") or {}), "model")
    try:
        model = DeepSpeech2CTC(input_dim=input_dim, num_classes=len(inventory.symbols) + 1, **options)
    except ValueError as error:  # an option value the model refuses (the keys and types are checked above)
        raise UserError(f"model: {error}; fix the model section of the config") from None
    return SpeechCTCTask(model, inventory)


def config_units(data: SpeechData) -> UnitInventory:
    """The unit model named by ``data.units`` (phones when it is absent or null)."""
    return UnitInventory.load(data.units) if data.units else UnitInventory.phones()


def checkpoint_units(model_state: Mapping[str, torch.Tensor], where: str) -> UnitInventory:
    """The unit model a checkpoint's model state carries."""
    if "unit_model" not in model_state:
        raise UserError(f"{where}: the checkpoint carries no unit model (written before seqvq stored one); "
                        f"retrain it with this version")
    return UnitInventory.from_bytes(bytes(model_state["unit_model"].cpu().tolist()), where)


def _input_dim(feature_dim: int, deltas: bool) -> int:
    return feature_dim * (3 if deltas else 1)


def evaluation_state(cmvn: GlobalCMVN, deltas: bool, feature_dim: int) -> dict:
    """What ``seqvq evaluate`` needs besides the weights and the unit model (the ``unit_model`` buffer), stored in
    every checkpoint (types that ``torch.load(weights_only=True)`` reads): CMVN statistics and feature settings."""
    return {"cmvn": torch.tensor(cmvn.stats), "deltas": deltas, "feature_dim": feature_dim,
            "fbank": dataclasses.asdict(FbankOptions())}


def evaluate_dataset(model: SpeechCTCTask, dataset: SpeechDataset, batch_size: int = 32,
                     hypothesis_file: str | Path | None = None) -> dict[str, float]:
    """Greedy CTC over ``dataset``: corpus PER (%) for phones, CER and WER (%) for characters and subwords,
    code perplexity and codes used over all valid frames."""
    device = next(model.parameters()).device
    inventory = model.inventory
    symbols = inventory.symbols
    order = sorted(range(len(dataset)), key=lambda i: len(dataset.features[dataset.utterances[i]]))
    references, hypotheses, utterances, counts = [], [], [], None
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
    if hypothesis_file is not None:
        lines = sorted(" ".join([utt, *labels]) + "\n" for utt, labels in zip(utterances, hypotheses))
        atomic_write_text(Path(hypothesis_file), "".join(lines))
    return figures


def build_task(config: dict) -> TaskBundle:
    """The trainer's entry point (see the module docstring for the config keys)."""
    data = SpeechData(**CONFIG.sections["data"].check(config.get("data"), "data"))
    cmvn = load_cmvn(data.cmvn)
    inventory = config_units(data)
    train_features, train_targets, train_references = load_unit_split(data.train, inventory)
    feature_dim = stored_feature_dim(train_features, data.train)
    model = build_model(config, _input_dim(feature_dim, data.deltas), inventory)
    train_set = SpeechDataset(train_features, train_targets, cmvn, data.deltas, model.model.output_lengths,
                              data.train, inventory, train_references, cache=data.cache_train)
    dev_set = None
    if data.dev:  # every dev utterance counts in the error rate, so none is left out for being short
        features, targets, references = load_unit_split(data.dev, inventory, feature_dim=feature_dim)
        dev_set = SpeechDataset(features, targets, cmvn, data.deltas, name=data.dev, inventory=inventory,
                                references=references)
    exp_dir = Path(config.get("exp_dir", "."))

    def evaluate(task_model: nn.Module) -> dict[str, float]:
        """Dev error rate and code usage for the training log (the counts go to ``seqvq evaluate``'s output)."""
        figures = evaluate_dataset(task_model, dev_set, hypothesis_file=exp_dir / "dev_hyp.txt")
        return {name: figures[name] for name in ("per", "cer", "wer", "code_perplexity", "codes_used")
                if name in figures}

    return TaskBundle(model=model, train_dataset=train_set, collate_fn=collate_speech,
                      evaluate=evaluate if dev_set is not None else None,
                      evaluation_state=evaluation_state(cmvn, data.deltas, feature_dim))


def _saved_evaluation_state(checkpoint: dict, config: dict) -> dict:
    """The checkpoint's evaluation state; for checkpoints written before it existed, rebuilt from the config's
    files (which then must still exist)."""
    if checkpoint.get("evaluation_state"):
        return checkpoint["evaluation_state"]
    data = SpeechData(**CONFIG.sections["data"].check(config.get("data"), "data"))
    cmvn = load_cmvn(data.cmvn)
    return evaluation_state(cmvn, data.deltas, cmvn.dim // (3 if data.deltas else 1))


def evaluate_cli(checkpoint: str, data: str, config: dict, out_dir: str | Path | None = None,
                 use_polyak: bool = True) -> dict[str, float]:
    """``seqvq evaluate CHECKPOINT DATA``: figures as a dict (Polyak weights when saved and ``use_polyak``);
    ``hyp.txt`` and ``figures.json`` in ``out_dir`` (default: :func:`seqvq.train.checkpoint.evaluation_dir`)."""
    from seqvq.train.checkpoint import evaluation_dir, load_checkpoint, read_checkpoint

    saved_checkpoint = read_checkpoint(checkpoint)
    state = _saved_evaluation_state(saved_checkpoint, config)
    inventory = checkpoint_units(saved_checkpoint["model"], checkpoint)
    cmvn, deltas, feature_dim = GlobalCMVN(state["cmvn"].numpy()), bool(state["deltas"]), int(state["feature_dim"])
    features, targets, references = load_unit_split(data, inventory, FbankOptions(**state["fbank"]), feature_dim)
    model = build_model(config, _input_dim(feature_dim, deltas), inventory)
    saved = load_checkpoint(checkpoint, model, use_polyak=use_polyak)
    model.eval()
    dataset = SpeechDataset(features, targets, cmvn, deltas, name=data, inventory=inventory, references=references)
    out_dir = Path(out_dir) if out_dir is not None else evaluation_dir(checkpoint, data)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        figures = evaluate_dataset(model, dataset, hypothesis_file=out_dir / "hyp.txt")
    figures = {"step": saved.get("step"), "data": str(Path(data).resolve()), "out_dir": str(out_dir), **figures}
    atomic_write_text(out_dir / "figures.json", json.dumps(figures, indent=1) + "\n")
    return figures
