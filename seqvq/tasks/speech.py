"""The speech task (``task: speech_ctc``): CTC phone recognition with a VQ bottleneck (Łańcucki 2020 §IV-A).

Run config keys read here (besides ``train:``, which the trainer reads; declared by :data:`CONFIG`, checked
before anything runs):

```yaml
data:
  train: exp/mini/feats/train      # prepared split (feats.scp + phones.txt); see seqvq/data/speech_corpus.py
  dev: exp/mini/feats/dev          # prepared split or a raw Kaldi data dir
  cmvn: exp/mini/feats/train/cmvn.ark
  deltas: true                     # append Δ, ΔΔ to the stored features on the fly
model: {...}                       # DeepSpeech2CTC keyword arguments; model.quantizer: null = no bottleneck
threads: 2                         # torch CPU threads (optional)
```

Training uses whole utterances. The paper trained on 64-frame chunks with targets from forced alignments (Kaldi
tri3b); CTC on a chunk needs the phones inside that chunk, which only an alignment gives, and the built corpus
has none -- so this task trains on whole utterances, which CTC handles without alignments.

Evaluation (during training on ``data.dev``, and ``seqvq evaluate CHECKPOINT DATA``): greedy CTC decoding,
corpus PER = (S + D + I) / N, code perplexity 2^H over all valid frames and the number of codes used, and a
hypothesis file with one ``utt PH PH ...`` line per utterance.

A checkpoint carries what evaluation needs besides the weights (:func:`evaluation_state`): the CMVN statistics
themselves, the feature settings (deltas, the fbank options used for raw Kaldi dirs, the feature dimension) and
the label inventory, so ``seqvq evaluate CHECKPOINT DATA`` needs neither the training directory nor its files.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqvq.data.features import FbankOptions, GlobalCMVN, add_deltas
from seqvq.data.lexicon import PHONES
from seqvq.data.speech_corpus import load_cmvn, load_split
from seqvq.errors import UserError
from seqvq.metrics.ctc import ctc_greedy_decode
from seqvq.metrics.per import error_counts
from seqvq.models.deepspeech2 import DeepSpeech2CTC
from seqvq.quantize import perplexity
from seqvq.tasks import quantizer_section
from seqvq.train.config import Section
from seqvq.train.logs import atomic_write_text
from seqvq.train.types import StepOutput, TaskBundle

BLANK = "<blk>"
SYMBOLS = (BLANK, *PHONES)  # CTC label i <-> SYMBOLS[i]; the blank is 0


@dataclass
class SpeechData:
    """The ``data:`` section."""

    train: str  # prepared training split (feats.scp + phones.txt)
    cmvn: str  # global CMVN statistics of the training split (Kaldi layout)
    dev: str | None = None  # prepared split or raw Kaldi data dir evaluated during training
    deltas: bool = True  # append Δ, ΔΔ to the stored features on the fly


CONFIG = Section.keys("speech_ctc", threads=int | None, data=Section.of(SpeechData),
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

    With ``output_lengths`` (the encoder's frames -> latents map; for training) utterances too short for their
    targets are left out and counted in ``skipped``: CTC could not align them. Without it (evaluation) every
    utterance counts, so one without frames is an error. ``symbols`` is the label inventory (index 0 = blank).
    """

    def __init__(self, features: Mapping[str, np.ndarray], targets: Mapping[str, list[str]], cmvn: GlobalCMVN,
                 deltas: bool, output_lengths=None, name: str = "data", symbols: Sequence[str] = SYMBOLS):
        self.features, self.cmvn, self.deltas = features, cmvn, deltas
        label_ids = {symbol: index for index, symbol in enumerate(symbols)}
        self.utterances, self.targets = [], []
        self.skipped = {"no_features": 0, "no_targets": 0, "too_short": 0}
        self.skipped["no_targets"] = sum(utt not in targets for utt in features)
        for utt in sorted(targets):
            if utt not in features:
                self.skipped["no_features"] += 1
                continue
            unknown = [label for label in targets[utt] if label not in label_ids]
            if unknown:
                raise UserError(f"{name}: utterance {utt} has label {unknown[0]!r}, which the model's inventory "
                                f"lacks ({' '.join(symbols[1:])}); map it to one of them or drop the utterance")
            ids = [label_ids[p] for p in targets[utt]]
            frames = len(features[utt])
            if output_lengths is not None:
                if not ctc_feasible(int(output_lengths(torch.tensor([frames]))[0]), ids):
                    self.skipped["too_short"] += 1
                    continue
            elif frames == 0:
                raise UserError(f"{name}: utterance {utt} has no feature frames (audio shorter than one 25 ms "
                                f"window); drop it from the data dir (e.g. Kaldi's utils/subset_data_dir.sh)")
            self.utterances.append(utt)
            self.targets.append(torch.tensor(ids, dtype=torch.long))
        if not self.utterances:
            raise UserError(f"{name}: no utterance has both features and phone targets ({self.skipped}); check "
                            f"that feats.scp and phones.txt name the same utterances")
        if any(self.skipped.values()):
            print(f"{name}: {len(self.utterances)} utterances; left out: {self.skipped}")

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        utt = self.utterances[index]
        matrix = torch.from_numpy(np.array(self.features[utt], dtype=np.float32))
        if self.deltas:
            matrix = add_deltas(matrix)
        if matrix.shape[1] != self.cmvn.dim:
            raise UserError(f"{utt}: features have {matrix.shape[1]} dims but the CMVN statistics {self.cmvn.dim}; "
                            f"check data.deltas and recompute the statistics on the same features")
        return utt, torch.from_numpy(self.cmvn(matrix.numpy())), self.targets[index]


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
    """Trainer-facing wrapper: ``forward(batch) -> StepOutput`` with loss = CTC + the quantizer's loss."""

    def __init__(self, model: DeepSpeech2CTC):
        super().__init__()
        self.model = model

    def forward(self, batch: SpeechBatch) -> StepOutput:
        out = self.model(batch.features, batch.lengths)
        # Mean over utterances of the per-utterance loss divided by its target length (PyTorch's "mean").
        ctc = F.ctc_loss(out.log_probs.transpose(0, 1), batch.targets, out.lengths, batch.target_lengths,
                         blank=0, reduction="mean", zero_infinity=True)
        metrics = {"ctc_loss": ctc.detach()}
        loss = ctc
        if out.vq_loss is not None:
            loss = loss + out.vq_loss
            metrics["vq_loss"] = out.vq_loss.detach()
            metrics.update(out.vq_metrics)
        return StepOutput(loss=loss, metrics=metrics, weight=float(len(batch.utterances)))


def build_model(config: dict, input_dim: int, num_classes: int = len(SYMBOLS)) -> SpeechCTCTask:
    options = CONFIG.sections["model"].check(dict(config.get("model") or {}), "model")
    try:
        return SpeechCTCTask(DeepSpeech2CTC(input_dim=input_dim, num_classes=num_classes, **options))
    except ValueError as error:  # an option value the model refuses (the keys and types are checked above)
        raise UserError(f"model: {error}; fix the model section of the config") from None


def _feature_dim(features: Mapping[str, np.ndarray], name: str) -> int:
    """Dimension of the stored features (before deltas), from the first utterance."""
    if not len(features):
        raise UserError(f"{name}: no utterances with features; check its feats.scp")
    return np.asarray(features[next(iter(features))]).shape[1]


def _input_dim(feature_dim: int, deltas: bool) -> int:
    return feature_dim * (3 if deltas else 1)


def evaluation_state(cmvn: GlobalCMVN, deltas: bool, feature_dim: int,
                     symbols: Sequence[str] = SYMBOLS) -> dict:
    """What ``seqvq evaluate`` needs besides the weights, stored in every checkpoint (types that
    ``torch.load(weights_only=True)`` reads): CMVN statistics, feature settings and the label inventory."""
    return {"cmvn": torch.tensor(cmvn.stats), "deltas": deltas, "feature_dim": feature_dim,
            "fbank": dataclasses.asdict(FbankOptions()), "symbols": list(symbols)}


def evaluate_dataset(model: SpeechCTCTask, dataset: SpeechDataset, batch_size: int = 32,
                     hypothesis_file: str | Path | None = None,
                     symbols: Sequence[str] = SYMBOLS) -> dict[str, float]:
    """Greedy CTC over ``dataset``: corpus PER (%), code perplexity and codes used over all valid frames."""
    device = next(model.parameters()).device
    order = sorted(range(len(dataset)), key=lambda i: len(dataset.features[dataset.utterances[i]]))
    references, hypotheses, utterances, counts = [], [], [], None
    quantizer = model.model.quantizer
    for start in range(0, len(order), batch_size):
        batch = collate_speech([dataset[i] for i in order[start:start + batch_size]])
        out = model.model(batch.features.to(device), batch.lengths.to(device))
        for utt, ids, target, length in zip(batch.utterances, ctc_greedy_decode(out.log_probs, out.lengths),
                                            batch.targets, batch.target_lengths):
            references.append([symbols[i] for i in target[:length].tolist()])
            hypotheses.append([symbols[i] for i in ids])
            utterances.append(utt)
        if out.codes is not None:
            valid = out.codes[out.codes >= 0].reshape(-1).cpu()
            batch_counts = torch.bincount(valid, minlength=quantizer.codebook_size)
            counts = batch_counts if counts is None else counts + batch_counts
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
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    data = SpeechData(**CONFIG.sections["data"].check(config.get("data"), "data"))
    cmvn = load_cmvn(data.cmvn)
    train_features, train_targets = load_split(data.train)
    feature_dim = _feature_dim(train_features, data.train)
    model = build_model(config, _input_dim(feature_dim, data.deltas))
    train_set = SpeechDataset(train_features, train_targets, cmvn, data.deltas, model.model.output_lengths,
                              data.train)
    dev_set = None
    if data.dev:  # every dev utterance counts in the PER, so none is left out for being short
        dev_set = SpeechDataset(*load_split(data.dev, feature_dim=feature_dim), cmvn, data.deltas, name=data.dev)
    exp_dir = Path(config.get("exp_dir", "."))

    def evaluate(task_model: nn.Module) -> dict[str, float]:
        """Dev PER and code usage for the training log (the S/D/I counts go to ``seqvq evaluate``'s output)."""
        figures = evaluate_dataset(task_model, dev_set, hypothesis_file=exp_dir / "dev_hyp.txt")
        return {name: figures[name] for name in ("per", "code_perplexity", "codes_used") if name in figures}

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


def evaluate_cli(checkpoint: str, data: str, config: dict, out_dir: str | Path | None = None) -> dict[str, float]:
    """``seqvq evaluate CHECKPOINT DATA``: figures as a dict; ``hyp.txt`` and ``figures.json`` in ``out_dir``
    (default: :func:`seqvq.train.checkpoint.evaluation_dir`)."""
    from seqvq.train.checkpoint import evaluation_dir, load_checkpoint, read_checkpoint

    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    state = _saved_evaluation_state(read_checkpoint(checkpoint), config)
    cmvn, deltas, symbols = GlobalCMVN(state["cmvn"].numpy()), bool(state["deltas"]), list(state["symbols"])
    features, targets = load_split(data, FbankOptions(**state["fbank"]), feature_dim=int(state["feature_dim"]))
    model = build_model(config, _input_dim(int(state["feature_dim"]), deltas), len(symbols))
    saved = load_checkpoint(checkpoint, model, use_polyak=True)
    model.eval()
    dataset = SpeechDataset(features, targets, cmvn, deltas, name=data, symbols=symbols)
    out_dir = Path(out_dir) if out_dir is not None else evaluation_dir(checkpoint, data)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        figures = evaluate_dataset(model, dataset, hypothesis_file=out_dir / "hyp.txt", symbols=symbols)
    figures = {"step": saved.get("step"), "data": str(Path(data).resolve()), "out_dir": str(out_dir), **figures}
    atomic_write_text(out_dir / "figures.json", json.dumps(figures, indent=1) + "\n")
    return figures
