"""SpeechBrain adapter: the recipe's hparams YAML (HyperPyYAML ``!new:``) builds a CRDNN CTC model with the VQ
bottleneck, Brain.fit trains it on a tiny corpus written here, the VQ loss reaches the total, codes cover exactly
the valid frames of SpeechBrain's relative lengths, and SpeechBrain's Checkpointer restores all quantizer state.
KMeansUnits takes MiniBatchKMeansSklearn's calls (the same script runs on both), masks padding by relative lengths,
is saved and recovered by SpeechBrain's Checkpointer, and is loaded and used by DiscreteSSL as its k-means model.
Skips when SpeechBrain does not import (bash .ci/install_toolkits.sh installs it)."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest
import torch

from integration_checks import (QUANTIZER_OPTIONS, assert_codes_on_valid_frames, assert_quantizer_trained,
                                assert_same_state, assert_vq_loss_in_total)
from seqvq.integrations.speechbrain import KMeansUnits, VQBottleneck, absolute_lengths
from seqvq.units import KMeansTokenizer


RECIPE = pathlib.Path(__file__).resolve().parents[1] / "recipes" / "speechbrain"
PHONES = ["sil", "aa", "iy", "s", "t"]


def load_recipe():
    spec = importlib.util.spec_from_file_location("speechbrain_vq_recipe", RECIPE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_corpus(folder: pathlib.Path) -> None:
    """SpeechBrain JSON manifests (TIMIT format) over random-noise waves of different lengths."""
    soundfile = pytest.importorskip("soundfile")
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 8), ("dev", 4), ("test", 4)):
        manifest = {}
        for index in range(count):
            samples = 2400 + 800 * index
            path = folder / f"{split}{index}.wav"
            soundfile.write(path, (0.1 * torch.randn(samples, generator=generator)).numpy(), 16000)
            phones = [PHONES[int(i)] for i in torch.randint(len(PHONES), (3 + index % 3,), generator=generator)]
            manifest[f"{split}{index}"] = {"wav": str(path), "duration": samples / 16000, "phn": " ".join(phones)}
        (folder / f"{split}.json").write_text(json.dumps(manifest))


OVERRIDES = {
    "number_of_epochs": 2, "batch_size": 4, "n_mels": 16, "cnn_blocks": 1, "cnn_channels": (4,), "rnn_layers": 1,
    "rnn_neurons": 8, "dnn_blocks": 1, "dnn_neurons": 12, "output_neurons": len(PHONES) + 1,
    "vq_codebook_size": QUANTIZER_OPTIONS["codebook_size"],
    "vq_codebook_update": QUANTIZER_OPTIONS["codebook_update"], "vq_affine": QUANTIZER_OPTIONS["affine"],
    "vq_reestimate": QUANTIZER_OPTIONS["reestimate"],
}


def test_relative_lengths_follow_speechbrain_rounding():
    assert absolute_lengths(torch.tensor([1.0, 0.5, 0.26]), 10).tolist() == [10, 5, 3]
    with pytest.raises(ValueError, match="relative lengths"):
        absolute_lengths(torch.tensor([1.5]), 10)


def test_recipe_trains_with_brain_fit_and_checkpointer_restores_the_quantizer(tmp_path, one_thread):
    sb = pytest.importorskip("speechbrain", reason="SpeechBrain is not installed (bash .ci/install_toolkits.sh)")
    recipe = load_recipe()
    write_corpus(tmp_path)
    overrides = dict(OVERRIDES, data_folder=str(tmp_path), output_folder=str(tmp_path / "exp"))
    run_opts = {"device": "cpu", "noprogressbar": True}
    hparams_file = str(RECIPE / "hparams" / "train_ctc_vq.yaml")
    brain, datasets, loader_options = recipe.prepare(hparams_file, run_opts, overrides)
    assert isinstance(brain.modules.vq, VQBottleneck)
    brain.fit(brain.hparams.epoch_counter, datasets["train"], datasets["valid"],
              train_loader_kwargs=loader_options, valid_loader_kwargs=loader_options)
    quantizer = brain.modules.vq.quantizer
    assert_quantizer_trained(quantizer)
    saved = {name: tensor.clone() for name, tensor in quantizer.state_dict().items()}

    # The Brain's own forward and objectives on one padded batch.
    batch = next(iter(brain.make_dataloader(datasets["train"], sb.Stage.TRAIN, **loader_options)))
    brain.modules.train()
    log_probs, wav_lens, vq = brain.compute_forward(batch, sb.Stage.TRAIN)
    total = brain.compute_objectives((log_probs, wav_lens, vq), batch, sb.Stage.TRAIN)
    phns, phn_lens = batch.phn_encoded
    ctc = brain.hparams.ctc_cost(log_probs, phns, wav_lens, phn_lens)
    assert_vq_loss_in_total(total, ctc, vq.loss, list(brain.modules.encoder.parameters()))
    assert_codes_on_valid_frames(vq.codes, absolute_lengths(wav_lens, vq.codes.shape[1]))

    # A fresh model from the same hparams recovers the checkpoint Brain.fit saved after its last validation
    # (evaluation mode: the quantizer's state then is its state at the end of fit).
    fresh, _, _ = recipe.prepare(hparams_file, run_opts, overrides)
    fresh_state = fresh.modules.vq.quantizer.state_dict()
    assert not torch.equal(fresh_state["reestimation.reservoir.samples"], saved["reestimation.reservoir.samples"])
    fresh.checkpointer.recover_if_possible()
    assert_same_state(fresh.modules.vq.quantizer, saved)
    assert fresh.hparams.epoch_counter.current == 2

    # The recipe's test stage: loads the best checkpoint by PER and logs the test PER and code perplexity.
    fresh.evaluate(datasets["test"], min_key="PER", test_loader_kwargs=loader_options)
    test_line = (tmp_path / "exp" / "train_log.txt").read_text().splitlines()[-1]
    assert "test PER" in test_line and "test vq_perplexity" in test_line


def test_recipe_brain_clears_the_optimizer_moments_of_rewritten_codes_before_each_step(tmp_path, one_thread):
    pytest.importorskip("speechbrain", reason="SpeechBrain is not installed (bash .ci/install_toolkits.sh)")
    recipe = load_recipe()
    write_corpus(tmp_path)
    overrides = dict(OVERRIDES, data_folder=str(tmp_path), output_folder=str(tmp_path / "exp"),
                     vq_codebook_update="gradient", vq_affine=None)  # a codebook with optimizer moments
    brain, datasets, loader_options = recipe.prepare(str(RECIPE / "hparams" / "train_ctc_vq.yaml"),
                                                     {"device": "cpu", "noprogressbar": True}, overrides)
    quantizer, seen = brain.modules.vq.quantizer, []
    init_optimizers = brain.init_optimizers

    def init_optimizers_and_watch():  # Brain.fit builds the optimizer; watch what each of its updates finds
        init_optimizers()
        brain.optimizer.register_step_pre_hook(lambda optimizer, args, kwargs: seen.append(
            (int(quantizer.rewrites), quantizer.codebook in optimizer.state)))

    brain.init_optimizers = init_optimizers_and_watch
    brain.fit(brain.hparams.epoch_counter, datasets["train"], datasets["valid"],
              train_loader_kwargs=loader_options, valid_loader_kwargs=loader_options)
    # (rewrites so far, whether the codebook has optimizer state) at each of the 4 steps: k-means at step 2 and
    # re-estimation at step 4 rewrite the whole codebook, so those steps find its state cleared.
    assert seen == [(0, False), (1, False), (1, True), (2, False)]


# ------------------------------------------------------------------------------------------------ k-means units
def padded_frames(generator, lengths_rel, steps=50, dim=6):
    """(B, steps, dim) frames from 5 clusters, NaN past each relative length (SpeechBrain's rounding)."""
    centres = torch.randn(5, dim, generator=torch.Generator().manual_seed(3)) * 4
    labels = torch.randint(5, (len(lengths_rel), steps), generator=generator)
    features = centres[labels] + 0.3 * torch.randn(len(lengths_rel), steps, dim, generator=generator)
    lengths = absolute_lengths(torch.tensor(lengths_rel), steps)
    features[torch.arange(steps) >= lengths.unsqueeze(1)] = float("nan")
    return features, torch.tensor(lengths_rel), lengths


def test_kmeans_units_take_the_calls_of_minibatchkmeanssklearn():
    pytest.importorskip("speechbrain", reason="SpeechBrain is not installed (bash .ci/install_toolkits.sh)")
    from speechbrain.integrations.audio_tokenizers.kmeans import MiniBatchKMeansSklearn

    generator = torch.Generator().manual_seed(0)
    batches = [padded_frames(generator, [1.0, 1.0, 1.0])[0] for _ in range(3)]
    theirs, ours = MiniBatchKMeansSklearn(5, random_state=0), KMeansUnits(5, random_state=0)
    for model in (theirs, ours):  # the same script, as SpeechBrain's own docstring example runs it
        for batch in batches:
            model.partial_fit(batch)
        assert model(batches[0]).shape == (3, 50) and model(batches[0]).dtype == torch.long
        assert model.cluster_centers.shape == (5, 6) and model.n_steps == 3
        assert model.inertia(batches[0]).shape == () and float(model.inertia(batches[0])) > 0
    ours.fit(torch.cat(batches))  # fit restarts from the frames given, as scikit-learn's does
    assert ours.n_steps == 0 and ours(batches[1]).shape == (3, 50)


def test_kmeans_units_mask_padding_by_relative_lengths():
    generator = torch.Generator().manual_seed(1)
    batches = [padded_frames(generator, rel) for rel in ([1.0, 0.5, 0.26], [0.8, 1.0, 0.1])]
    padded, plain = KMeansUnits(5, random_state=0), KMeansUnits(5, random_state=0)
    for features, lengths_rel, lengths in batches:
        padded.partial_fit(features, lengths_rel)
        plain.partial_fit(torch.cat([f[:n] for f, n in zip(features, lengths)]))
    assert torch.equal(padded.cluster_centers, plain.cluster_centers)
    features, lengths_rel, lengths = batches[0]
    codes = padded(features, lengths_rel)
    assert_codes_on_valid_frames(codes, lengths)
    assert torch.equal(codes[0], plain(features[0]))
    valid = torch.cat([f[:n] for f, n in zip(features, lengths)])
    assert torch.allclose(padded.inertia(features, lengths_rel), plain.inertia(valid))

    # fit_stream: a DataLoader-like stream of (features, relative lengths), as a fit over absolute lengths
    stream = [(features, lengths_rel) for features, lengths_rel, _ in batches]
    fitted = KMeansUnits(5, random_state=2, max_iter=4, update="full").fit_stream(stream)
    expected = KMeansTokenizer(5, 6, passes=4, seed=2).fit([(f, n) for f, _, n in batches])
    assert torch.equal(fitted.cluster_centers, expected.centroids)
    assert np.array_equal(fitted.predict(valid.numpy()), expected.encode(valid[None])[0].numpy())  # as sklearn


def test_speechbrain_checkpointer_saves_and_recovers_kmeans_units(tmp_path):
    pytest.importorskip("speechbrain", reason="SpeechBrain is not installed (bash .ci/install_toolkits.sh)")
    from speechbrain.utils.checkpoints import Checkpointer

    generator = torch.Generator().manual_seed(2)
    units = KMeansUnits(5, random_state=0)
    for _ in range(2):
        units.partial_fit(padded_frames(generator, [1.0, 0.7])[0][:, :35])
    Checkpointer(tmp_path, recoverables={"kmeans": units}).save_checkpoint()
    fresh = KMeansUnits(5, random_state=0)
    Checkpointer(tmp_path, recoverables={"kmeans": fresh}).recover_if_possible()
    assert fresh.n_steps == 2 and torch.equal(fresh.cluster_centers, units.cluster_centers)
    batch = padded_frames(generator, [1.0, 1.0])[0]
    fresh.partial_fit(batch), units.partial_fit(batch)  # the online fit goes on identically
    assert torch.equal(fresh.cluster_centers, units.cluster_centers)


def test_discrete_ssl_loads_and_encodes_with_kmeans_units(tmp_path, monkeypatch):
    pytest.importorskip("speechbrain", reason="SpeechBrain is not installed (bash .ci/install_toolkits.sh)")
    from speechbrain.integrations.audio_tokenizers import discrete_ssl

    class FakeSSL(torch.nn.Module):
        """An SSL model's ``extract_features``: (layers, B, T, D) hidden states of a waveform."""

        def extract_features(self, wav, wav_lens=None):
            frames = wav[:, : wav.shape[1] // 10 * 10].reshape(wav.shape[0], -1, 10)[..., :6]
            return torch.stack([frames, 2 * frames])

    wav = torch.randn(2, 400, generator=torch.Generator().manual_seed(4))
    units = KMeansUnits(8, random_state=0)
    units.partial_fit(FakeSSL().extract_features(wav)[1])
    (tmp_path / "kmeans").mkdir()
    joblib = pytest.importorskip("joblib")
    joblib.dump(units, tmp_path / "kmeans" / "LibriSpeech_fakessl_k8_L1.pt")  # the file DiscreteSSL downloads
    monkeypatch.setattr(discrete_ssl, "snapshot_download", lambda **kwargs: str(tmp_path))
    monkeypatch.setattr(discrete_ssl.UnitHIFIGAN, "from_hparams", lambda **kwargs: torch.nn.Identity())
    model = discrete_ssl.DiscreteSSL(str(tmp_path), FakeSSL(), kmeans_dataset="LibriSpeech", num_clusters=8)
    tokens, embeddings, _ = model.encode(wav, SSL_layers=[1])
    assert torch.equal(tokens[..., 0], units(FakeSSL().extract_features(wav)[1]))
    assert torch.equal(embeddings[:, :, 0], units.cluster_centers[tokens[..., 0]])
