"""NeMo adapter: VQEncoder wraps the encoder of a small NeMo EncDecCTCModel, Lightning's Trainer.fit trains it with
NeMo's own training_step, which adds the VQ loss (NeMo's auxiliary-loss registry) to the CTC loss; codes cover
exactly the valid encoder frames; a Lightning checkpoint restores all quantizer state.  Skips when NeMo does not
import (NeMo 3.0 [asr] installs next to CPU torch 2.13, but it is 0.9 GB, so CI does not install it)."""
import pytest
import torch

from integration_checks import (assert_codes_on_valid_frames, assert_quantizer_trained, assert_same_state,
                                assert_vq_loss_in_total, make_quantizer)

nemo_asr = pytest.importorskip("nemo.collections.asr", reason="NeMo is not installed")
from lightning.pytorch import Callback, Trainer  # noqa: E402
from nemo.core.classes.mixins import AccessMixin  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from seqvq.integrations.nemo import AUXILIARY_LOSS, ResetOptimizerStateOnStep, VQEncoder  # noqa: E402

LABELS = [" ", "a", "b", "c"]
FEATURES, DIM = 16, 12


def build_model(quantizer_options=None):
    torch.manual_seed(0)
    cfg = OmegaConf.create({
        "sample_rate": 16000, "labels": LABELS,
        "preprocessor": {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                         "features": FEATURES, "n_fft": 256, "window_size": 0.016, "window_stride": 0.008,
                         "sample_rate": 16000, "dither": 0.0, "pad_to": 0},
        "encoder": {"_target_": "nemo.collections.asr.modules.ConvASREncoder", "feat_in": FEATURES,
                    "activation": "relu", "conv_mask": True,
                    "jasper": [{"filters": DIM, "repeat": 1, "kernel": [3], "stride": [2], "dilation": [1],
                                "dropout": 0.0, "residual": False, "separable": False}]},
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": DIM,
                    "num_classes": len(LABELS), "vocabulary": LABELS},
        "optim": {"name": "adam", "lr": 1e-3},
    })
    model = nemo_asr.models.EncDecCTCModel(cfg=cfg)
    model.encoder = VQEncoder(model.encoder, make_quantizer(DIM, **(quantizer_options or {})))
    return model


def make_batches(count):
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([4000, 3000, 1800])
    batches = []
    for _ in range(count):
        signal = torch.randn(3, 4000, generator=generator) * (torch.arange(4000) < lengths.unsqueeze(1))
        batches.append((signal, lengths, torch.tensor([[1, 2, 3, 1], [2, 2, 1, 0], [3, 1, 0, 0]]),
                        torch.tensor([4, 3, 2])))
    return batches


class LastStep(Callback):
    """Keeps the model state and batch before the last training step, and the loss NeMo's training_step returned."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.state = {name: tensor.clone() for name, tensor in pl_module.state_dict().items()}
        self.batch = batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.loss = outputs["loss"].detach()


def test_nemo_ctc_model_with_vq_encoder_trains_with_trainer_fit_and_checkpoint_restores(tmp_path, one_thread):
    model = build_model()
    last_step = LastStep()
    trainer = Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                      callbacks=[last_step])
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(make_batches(6), batch_size=None))
    quantizer = model.encoder.quantizer
    assert_quantizer_trained(quantizer)

    # NeMo's loss at the last step = CTC + VQ loss, recomputed from the state before that step.
    trained_state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model.load_state_dict(last_step.state)
    model.train()
    signal, signal_lengths, transcript, transcript_lengths = last_step.batch
    log_probs, encoded_lengths, _ = model.forward(input_signal=signal, input_signal_length=signal_lengths)
    ctc = model.loss(log_probs=log_probs, targets=transcript, input_lengths=encoded_lengths,
                     target_lengths=transcript_lengths)
    (vq_loss,) = AccessMixin.get_module_registry(model)["encoder"][AUXILIARY_LOSS]
    AccessMixin.reset_registry(model)
    assert torch.allclose(last_step.loss, (ctc + vq_loss).detach())
    assert_vq_loss_in_total(ctc + vq_loss, ctc, vq_loss, list(model.encoder.encoder.parameters()))
    assert_codes_on_valid_frames(model.encoder.last_codes, encoded_lengths)
    model.load_state_dict(trained_state)

    trainer.save_checkpoint(tmp_path / "last.ckpt")
    fresh = build_model()
    assert not torch.equal(fresh.encoder.quantizer.reestimation.reservoir.samples,
                           quantizer.reestimation.reservoir.samples)
    fresh.load_state_dict(torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"])
    assert_same_state(fresh.encoder.quantizer, quantizer.state_dict())


class CodebookSteps(Callback):
    """Adam's step count for the codebook after each training step: it restarts when the codebook's state is
    cleared."""

    def __init__(self):
        self.seen = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        codebook = pl_module.encoder.quantizer.codebook
        self.seen.append(int(trainer.optimizers[0].state[codebook]["step"]))


def test_callback_clears_the_moments_of_rewritten_codes_before_each_step(one_thread):
    model = build_model({"codebook_update": "gradient", "affine": None})  # a codebook with optimizer moments
    steps = CodebookSteps()
    trainer = Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[ResetOptimizerStateOnStep(), steps])
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(make_batches(6), batch_size=None))
    # k-means at step 2 and re-estimation at step 4 rewrite the whole codebook: Adam starts over at those steps.
    assert steps.seen == [1, 1, 2, 1, 2, 3]
