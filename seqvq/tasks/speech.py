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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqvq.data.features import FbankOptions, GlobalCMVN, add_deltas
from seqvq.data.kaldi import read_data_dir
from seqvq.data.speech_corpus import FEATS_SCP, iter_fbank, load_cmvn, load_split, read_features
from seqvq.data.units import TEXT, UnitInventory, normalize_transcript, read_transcripts
from seqvq.errors import UserError
from seqvq.metrics.ctc import ctc_greedy_decode
from seqvq.metrics.per import error_counts
from seqvq.metrics.wer import character_error_counts, word_error_counts
from seqvq.models.deepspeech2 import DeepSpeech2CTC
from seqvq.options import Section
from seqvq.quantize import perplexity, quantizer_section
from seqvq.train.logs import atomic_write_text
from seqvq.train.types import StepOutput, TaskBundle

BLANK = 0  # CTC label 0 is the blank; label i > 0 is the unit ``inventory.symbols[i - 1]``


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


@dataclass
class SpeechBatch:
    features: torch.Tensor  # (B, T, D) float, zero-padded
    lengths: torch.Tensor  # (B,) valid frames
    targets: torch.Tensor  # (B, L) int64 phone ids, zero-padded
    target_lengths: torch.Tensor  # (B,)
    utterances: list[str]


def ctc_feasible(latent_frames: int, targets: list[int]) -> bool:
    """CTC needs a frame per label plus one blank between each pair of equal neighbours."""
    repeats = sum(a == b for a, b in zip(targets, targets[1:]))
    return latent_frames >= len(targets) + repeats


class SpeechDataset(torch.utils.data.Dataset):
    """Utterances with both features and targets, normalized with global CMVN (deltas appended first).

    ``targets`` are unit sequences of ``inventory``; ``references`` (characters and subwords) the normalized
    transcripts they are scored against. With ``output_lengths`` (the encoder's frames -> latents map; for
    training) utterances too short for their targets are left out and counted in ``skipped``: CTC could not
    align them. Without it (evaluation) every utterance counts, so one without frames is an error. ``lengths``
    holds each kept utterance's frames; ``cache`` keeps each item's normalized matrix after its first read.
    """

    def __init__(self, features: Mapping[str, np.ndarray], targets: Mapping[str, list[str]], cmvn: GlobalCMVN,
                 deltas: bool, output_lengths=None, name: str = "data", inventory: UnitInventory | None = None,
                 references: Mapping[str, str] | None = None, cache: bool = False):
        self.features, self.cmvn, self.deltas = features, cmvn, deltas
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None
        self.inventory = inventory or UnitInventory.phones()
        self.utterances, self.targets, self.references = [], [], []
        self.lengths: list[int] = []  # feature frames per utterance (length-bucketed batches)
        self.skipped = {"no_features": 0, "no_targets": 0, "too_short": 0}
        self.skipped["no_targets"] = sum(utt not in targets for utt in features)
        for utt in sorted(targets):
            if utt not in features:
                self.skipped["no_features"] += 1
                continue
            unknown = [unit for unit in targets[utt] if unit not in self.inventory.ids]
            if unknown:
                raise UserError(f"{name}: utterance {utt} has unit {unknown[0]!r}, which the model's "
                                f"{self.inventory.kind} inventory lacks; map it to one of them or drop the utterance")
            ids = [self.inventory.ids[unit] + 1 for unit in targets[utt]]
            frames = len(features[utt])
            if output_lengths is not None:
                if not ctc_feasible(int(output_lengths(torch.tensor([frames]))[0]), ids):
                    self.skipped["too_short"] += 1
                    continue
            elif frames == 0:
                raise UserError(f"{name}: utterance {utt} has no feature frames (audio shorter than one 25 ms "
                                f"window); drop it from the data dir (e.g. Kaldi's utils/subset_data_dir.sh)")
            self.utterances.append(utt)
            self.lengths.append(frames)
            self.targets.append(torch.tensor(ids, dtype=torch.long))
            self.references.append(references[utt] if references is not None else None)
        if not self.utterances:
            raise UserError(f"{name}: no utterance has both features and {self.inventory.kind} targets "
                            f"({self.skipped}); check that feats.scp and the targets name the same utterances")
        if any(self.skipped.values()):
            print(f"{name}: {len(self.utterances)} utterances; left out: {self.skipped}")

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        utt = self.utterances[index]
        if self.cache is not None and index in self.cache:
            return utt, self.cache[index], self.targets[index]
        matrix = torch.from_numpy(np.array(self.features[utt], dtype=np.float32))
        if self.deltas:
            matrix = add_deltas(matrix)
        if matrix.shape[1] != self.cmvn.dim:
            raise UserError(f"{utt}: features have {matrix.shape[1]} dims but the CMVN statistics {self.cmvn.dim}; "
                            f"check data.deltas and recompute the statistics on the same features")
        normalized = torch.from_numpy(self.cmvn(matrix.numpy()))
        if self.cache is not None:
            self.cache[index] = normalized
        return utt, normalized, self.targets[index]


def collate_speech(items: list[tuple[str, torch.Tensor, torch.Tensor]]) -> SpeechBatch:
    utterances, features, targets = zip(*items)
    return SpeechBatch(
        features=nn.utils.rnn.pad_sequence(list(features), batch_first=True),
        lengths=torch.tensor([len(f) for f in features]),
        targets=nn.utils.rnn.pad_sequence(list(targets), batch_first=True),
        target_lengths=torch.tensor([len(t) for t in targets]),
        utterances=list(utterances),
    )


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


def load_unit_split(path: str | Path, inventory: UnitInventory, options: FbankOptions = FbankOptions(),
                    feature_dim: int | None = None):
    """``(features, targets, references)`` of a split for ``inventory``'s units; references are None for phones.

    Characters and subwords read a prepared split's ``text`` (normalized transcripts, written by
    data_prep/make_targets.py) or a raw Kaldi data dir's ``text`` (features computed in memory), and encode it
    with the unit model.
    """
    if inventory.kind == "phones":
        return (*load_split(path, options, feature_dim=feature_dim), None)
    path = Path(path)
    if (path / FEATS_SCP).exists() and (path / TEXT).exists():
        features, transcripts = read_features(path, feature_dim), read_transcripts(path / TEXT)
    else:
        data = read_data_dir(path)
        if not data.text:
            raise UserError(f"{path / 'text'}: missing; {inventory.kind} units need transcripts")
        features, transcripts = dict(iter_fbank(data, options)), data.text
    references = {utt: normalize_transcript(text) for utt, text in transcripts.items()}
    references = {utt: text for utt, text in references.items() if text}
    targets = {utt: inventory.encode(text) for utt, text in references.items()}
    return features, targets, references


def _feature_dim(features: Mapping[str, np.ndarray], name: str) -> int:
    """Dimension of the stored features (before deltas), from the first utterance."""
    if not len(features):
        raise UserError(f"{name}: no utterances with features; check its feats.scp")
    return np.asarray(features[next(iter(features))]).shape[1]


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
    feature_dim = _feature_dim(train_features, data.train)
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
