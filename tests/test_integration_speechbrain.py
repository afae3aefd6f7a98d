"""SpeechBrain adapter: the recipe's hparams YAML (HyperPyYAML ``!new:``) builds a CRDNN CTC model with the VQ
bottleneck, Brain.fit trains it on a tiny corpus written here, the VQ loss reaches the total, codes cover exactly
the valid frames of SpeechBrain's relative lengths, and SpeechBrain's Checkpointer restores all quantizer state.
Skips when SpeechBrain does not import (bash .ci/install_toolkits.sh installs it)."""
import importlib.util
import json
import pathlib

import pytest
import torch

from integration_checks import (QUANTIZER_OPTIONS, assert_codes_on_valid_frames, assert_quantizer_trained,
                                assert_same_state, assert_vq_loss_in_total)
from seqvq.integrations.speechbrain import VQBottleneck, absolute_lengths


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
