"""NeMo adapter: the VQ bottleneck after the encoder of a NeMo ASR model, its loss added by NeMo itself.

NeMo builds modules only from ``_target_`` paths inside its own namespaces, so the bottleneck goes in from Python::

    model = nemo_asr.models.EncDecCTCModel(cfg, trainer)
    model.encoder = VQEncoder(model.encoder, seqvq.VectorQuantizer(encoder_dim, 512, pre_norm=True))
    trainer.fit(model)

:class:`VQEncoder` keeps the encoder's port types (``('B', 'D', 'T')`` outputs and lengths), so the model calls it
as it called its encoder.  The VQ loss uses NeMo's own auxiliary-loss route (the one its adapters use): in training
the module enables access for its model and registers the loss as ``adapter_loss``; the training steps of NeMo's
ASR models (CTC, RNNT, hybrid RNNT-CTC) add every registered ``adapter_loss`` to the loss
(``ASRModel.add_auxiliary_losses``, logged as ``adapter_loss/encoder``) and reset the registry.  The quantizer's
state is parameters and buffers, so Lightning checkpoints (``.ckpt``) carry it; load them into a model wrapped the
same way (``restore_from`` of a ``.nemo`` file rebuilds the model from its config, without the wrapper).

NeMo builds the optimizer when ``trainer.fit`` starts (``configure_optimizers``), so the moments of rewritten codes
(re-estimation, replacement, k-means) are cleared before each step by a Lightning callback:
``Trainer(..., callbacks=[ResetOptimizerStateOnStep()])``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..quantize import reset_optimizer_state_on_step

try:
    from lightning.pytorch import Callback
    from nemo.core.classes import NeuralModule
    from nemo.core.classes.mixins import AccessMixin
except ImportError as error:
    raise ImportError("seqvq.integrations.nemo needs NeMo: "
                      "pip install -c constraints.txt 'nemo_toolkit[asr]'") from error

AUXILIARY_LOSS = "adapter_loss"  # the registry key NeMo's ASR training steps add to the loss


class VQEncoder(NeuralModule, AccessMixin):
    """``encoder`` (a NeMo encoder: ``(audio_signal, length) -> (outputs (B, D, T), encoded_lengths)``) followed
    by ``quantizer`` (channel-last, e.g. :class:`seqvq.VectorQuantizer`) over the valid frames."""

    def __init__(self, encoder: NeuralModule, quantizer: nn.Module):
        super().__init__()
        self.encoder, self.quantizer = encoder, quantizer
        self.last_codes: torch.Tensor | None = None  # (B, T) codes of the latest pass, -1 at padded frames

    @property
    def input_types(self):
        return self.encoder.input_types

    @property
    def output_types(self):
        return self.encoder.output_types

    def forward(self, audio_signal: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, encoded_lengths = self.encoder(audio_signal=audio_signal, length=length)[:2]
        result = self.quantizer(outputs.transpose(1, 2), lengths=encoded_lengths)
        if self.training:
            guid = getattr(self, "model_guid", None)
            self.set_access_enabled(access_enabled=True, guid=guid)
            self.register_accessible_tensor(name=AUXILIARY_LOSS, tensor=result.loss)
        self.last_codes = result.codes
        return result.quantized.transpose(1, 2), encoded_lengths


class ResetOptimizerStateOnStep(Callback):
    """Lightning callback: the optimizers ``trainer.fit`` builds clear the moments of rewritten codes right before
    each step (:func:`seqvq.reset_optimizer_state_on_step`, also when Lightning steps with a closure)."""

    def __init__(self):
        self.handles = []

    def on_fit_start(self, trainer, pl_module) -> None:
        self.handles = [reset_optimizer_state_on_step(pl_module, optimizer) for optimizer in trainer.optimizers]

    def teardown(self, trainer, pl_module, stage) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
