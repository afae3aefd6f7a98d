"""The speech_ctc task end to end on a tiny synthetic prepared corpus: CTC loss falls, evaluation, resume."""
import json
import math

import kaldiio
import numpy as np
import pytest
import torch

from seqvq.data.lexicon import PHONES, write_phone_transcripts
from seqvq.data.speech_corpus import compute_cmvn, read_features, save_cmvn
from seqvq.data.speech_dataset import SpeechDataset, collate_speech, ctc_feasible
from seqvq.cli import main
from seqvq.tasks.speech import SpeechCTCTask
from seqvq.train import Trainer, TrainConfig, seed_everything

USED_PHONES = PHONES[:6]


def write_split(directory, count, seed, dim=12):
    """Utterances whose ``dim``-dim frames are noisy per-phone templates, 6 frames per phone."""
    rng = np.random.default_rng(seed)
    templates = np.random.default_rng(123).normal(0, 2, size=(len(USED_PHONES), dim))
    directory.mkdir(parents=True)
    features, targets = {}, {}
    for index in range(count):
        utt = f"u{index:03d}"
        phones = rng.choice(len(USED_PHONES), size=int(rng.integers(3, 7)))
        frames = np.repeat(templates[phones], 6, axis=0) + rng.normal(0, 0.3, size=(6 * len(phones), dim))
        features[utt] = frames.astype(np.float32)
        targets[utt] = [USED_PHONES[p] for p in phones]
    kaldiio.save_ark(str(directory / "feats.ark"), features, scp=str(directory / "feats.scp"))
    write_phone_transcripts(targets, directory / "phones.txt")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    write_split(root / "train", 20, seed=0)
    write_split(root / "dev", 6, seed=1)
    save_cmvn(compute_cmvn(read_features(root / "train"), deltas=True), root / "train" / "cmvn.ark")
    return root


def make_config(corpus, exp_dir, steps, quantizer):
    return {
        "task": "speech_ctc", "exp_dir": str(exp_dir),
        "data": {"train": str(corpus / "train"), "dev": str(corpus / "dev"),
                 "cmvn": str(corpus / "train" / "cmvn.ark"), "deltas": True},
        "model": {"in_channels": 3, "conv_channels": [4, 4], "conv_kernels": [[3, 3], [3, 3]],
                  "rnn_hidden": 24, "rnn_layers": 1, "bottleneck_dim": 8, "mixer_dim": 16, "quantizer": quantizer},
        "train": {"steps": steps, "batch_size": 5, "lr": 1e-2, "eval_every": steps, "checkpoint_every": 5,
                  "log_every": 1, "seed": 0, "threads": 1},
    }


def run(config):
    seed_everything(config["train"]["seed"])  # as `seqvq train` does before building the task
    bundle = SpeechCTCTask(config).build_task()
    trainer = Trainer(bundle.model, TrainConfig.from_dict(config["train"]), bundle.train_dataset,
                      bundle.collate_fn, bundle.evaluate, exp_dir=config["exp_dir"], run_config=config)
    return trainer, trainer.fit()


def train_losses(exp_dir):
    records = [json.loads(line) for line in (exp_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["ctc_loss"] for r in records if r["split"] == "train"]


def test_ctc_feasibility_counts_repeats():
    assert ctc_feasible(3, [1, 2, 3]) and not ctc_feasible(3, [1, 1, 2]) and ctc_feasible(4, [1, 1, 2])


def test_dataset_normalizes_and_batches(corpus):
    from seqvq.data.speech_corpus import load_cmvn, load_split

    dataset = SpeechDataset(*load_split(corpus / "train"), load_cmvn(corpus / "train" / "cmvn.ark"), deltas=True)
    utt, features, targets = dataset[0]
    assert utt == "u000" and features.shape[1] == 36 and targets.min() >= 1
    stacked = torch.cat([dataset[i][1] for i in range(len(dataset))])
    assert torch.allclose(stacked.mean(0), torch.zeros(36), atol=1e-3)
    batch = collate_speech([dataset[0], dataset[1]])
    assert batch.features.shape[0] == 2 and batch.lengths.tolist() == [len(dataset[0][1]), len(dataset[1][1])]
    assert [PHONES[i - 1] for i in batch.targets[0, :batch.target_lengths[0]].tolist()] == \
        (corpus / "train" / "phones.txt").read_text().split("\n")[0].split()[1:]
    with pytest.raises(ValueError, match="CMVN statistics 36"):
        SpeechDataset(*load_split(corpus / "train"), load_cmvn(corpus / "train" / "cmvn.ark"), deltas=False)[0]


@pytest.mark.parametrize("quantizer", [None, {"codebook_size": 16, "pre_norm": True}])
def test_ctc_loss_falls_and_evaluation_reports(corpus, tmp_path, capsys, quantizer):
    config = make_config(corpus, tmp_path / "exp", steps=40, quantizer=quantizer)
    _, figures = run(config)
    losses = train_losses(tmp_path / "exp")
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert 0 <= figures["per"] < 100 and "substitutions" not in figures
    assert ("code_perplexity" in figures) == (quantizer is not None)
    assert len((tmp_path / "exp" / "dev_hyp.txt").read_text().splitlines()) == 6

    capsys.readouterr()
    main(["evaluate", str(tmp_path / "exp" / "checkpoints" / "last.pt"), str(corpus / "dev")])  # `seqvq evaluate`
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["per"] == pytest.approx(figures["per"]) and result["utterances"] == 6
    out_dir = tmp_path / "exp" / result["out_dir"]
    assert out_dir.parent == tmp_path / "exp" and out_dir.name.startswith("decode_dev_")
    assert len((out_dir / "hyp.txt").read_text().splitlines()) == 6
    assert json.loads((out_dir / "figures.json").read_text())["per"] == result["per"]
    if quantizer is not None:  # the code stream's rates: entropy of the unigram (log2 perplexity) per code
        codes_per_second = result["frames_nominal_bps"] / math.log2(16)
        assert result["frames_bps"] == pytest.approx(math.log2(result["code_perplexity"]) * codes_per_second)
        assert 0 < result["dedup_bps"] <= result["dedup_nominal_bps"] <= result["frames_nominal_bps"]


def test_cached_dataset_gives_the_uncached_items(corpus):
    from seqvq.data.speech_corpus import load_cmvn, load_split

    arguments = (*load_split(corpus / "train"), load_cmvn(corpus / "train" / "cmvn.ark"), True)
    plain, cached = SpeechDataset(*arguments), SpeechDataset(*arguments, cache=True)
    assert plain.lengths == [len(plain[i][1]) for i in range(len(plain))]
    first = [cached[i][1] for i in range(len(cached))]
    assert len(cached.cache) == len(cached)
    for index, matrix in enumerate(first):
        assert torch.equal(matrix, plain[index][1]) and cached[index][1] is matrix


@pytest.mark.parametrize("bucketed", [False, True])
def test_resumed_speech_run_equals_uninterrupted(corpus, tmp_path, bucketed):
    quantizer = {"codebook_size": 16, "pre_norm": True}

    def config(name, steps):
        values = make_config(corpus, tmp_path / name, steps=steps, quantizer=quantizer)
        if bucketed:
            values["train"]["bucket_batches"] = 2
            values["data"]["cache_train"] = True
        return values

    straight, _ = run(config("a", 10))
    run(config("b", 5))
    resumed, _ = run(config("b", 10))
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
