"""ESPnet2 adapter: the VQ bottleneck as an ASR post-encoder, and a model that adds its loss.

ESPnet2's component slots are closed ``ClassChoices`` that type-check ``AbsPostEncoder`` and ``AbsESPnetModel``,
and its post-encoder contract ``forward(input, input_lengths) -> (output, output_lengths)`` returns tensors only.
So the adapter ships

* :class:`VQPostEncoder` — ``input_size`` plus any :class:`seqvq.VectorQuantizer` option (``postencoder_conf``);
* :class:`VQESPnetASRModel` — ``ESPnetASRModel`` whose ``forward`` adds ``vq_loss_weight`` x the post-encoder's
  VQ loss to the loss and reports ``vq_loss``, ``vq_perplexity`` and ``vq_active_codes`` in ``stats``, so
  neither ESPnet's trainer nor the model's forward is edited;
* :func:`register` — adds both to ``ASRTask``'s choices (``postencoder: vq``, ``model: espnet_vq``); call it
  before ESPnet builds the task's parser or model;
* :class:`VQASRTask` — ``ASRTask`` whose ``build_optimizers`` makes each optimizer clear the moments of rewritten
  codes before every step (:func:`seqvq.reset_optimizer_state_on_step`), since ESPnet's trainer builds and steps
  the optimizers itself.  ``python -m seqvq.integrations.espnet train|inference`` runs it (``ASRTask.main``,
  i.e. ``espnet2.bin.asr_train``) / ``espnet2.bin.asr_inference`` after :func:`register` (see ``recipes/espnet/``);
  from Python, build the optimizers with ``VQASRTask.build_optimizers(args, model)``.
"""
from __future__ import annotations

import torch

try:
    from espnet2.asr.espnet_model import ESPnetASRModel
    from espnet2.asr.postencoder.abs_postencoder import AbsPostEncoder
    from espnet2.tasks.asr import ASRTask
except ImportError as error:
    raise ImportError("seqvq.integrations.espnet needs ESPnet2: bash .ci/install_toolkits.sh "
                      "(pip install espnet backtracks to an old release; see that script)") from error

from ..quantize import QuantizedResult, VectorQuantizer, reset_optimizer_state_on_step
from .encoder import SequenceBottleneck

POSTENCODER_NAME, MODEL_NAME = "vq", "espnet_vq"


class VQPostEncoder(AbsPostEncoder):
    """A :class:`seqvq.VectorQuantizer` of ``input_size`` channels on the encoder output ``(B, T, C)``; frames
    beyond ``input_lengths`` pass through with code -1.  ``**quantizer_options`` go to the quantizer."""

    def __init__(self, input_size: int, **quantizer_options):
        super().__init__()
        self.input_size = input_size
        self.bottleneck = SequenceBottleneck(VectorQuantizer(input_size, **quantizer_options))

    def output_size(self) -> int:
        return self.input_size

    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.bottleneck(input, input_lengths)

    def take_result(self) -> QuantizedResult:
        """The quantizer's result of the latest forward pass (loss, codes, metrics); taking it clears it."""
        return self.bottleneck.take_result()


class VQESPnetASRModel(ESPnetASRModel):
    """``ESPnetASRModel`` that adds ``vq_loss_weight`` x the VQ loss of its :class:`VQPostEncoder` to the loss.

    ESPnet's objectives (CTC, attention, transducer) are computed by the parent's ``forward`` unchanged; the VQ
    loss of the same pass is taken from the post-encoder and added, and ``stats["loss"]`` is the new total.
    """

    def __init__(self, *args, vq_loss_weight: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.postencoder, VQPostEncoder):
            raise ValueError(f"model '{MODEL_NAME}' needs postencoder '{POSTENCODER_NAME}' (VQPostEncoder), got "
                             f"{type(self.postencoder).__name__}")
        self.vq_loss_weight = vq_loss_weight

    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor, text: torch.Tensor,
                text_lengths: torch.Tensor, **kwargs):
        loss, stats, weight = super().forward(speech, speech_lengths, text, text_lengths, **kwargs)
        result = self.postencoder.take_result()
        loss = loss + self.vq_loss_weight * result.loss
        stats.update(loss=loss.detach(), vq_loss=result.loss.detach(),
                     vq_perplexity=result.metrics["perplexity"].detach(),
                     vq_active_codes=result.metrics["active_codes"].detach())
        return loss, stats, weight


def register() -> None:
    """Make ``postencoder: vq`` and ``model: espnet_vq`` valid choices of ESPnet2's ``ASRTask``."""
    from espnet2.tasks import asr

    asr.postencoder_choices.classes[POSTENCODER_NAME] = VQPostEncoder
    asr.model_choices.classes[MODEL_NAME] = VQESPnetASRModel


class VQASRTask(ASRTask):
    """ESPnet2's ``ASRTask`` whose optimizers clear the moments of rewritten codes (re-estimation, replacement,
    k-means) right before each step ESPnet's trainer takes."""

    @classmethod
    def build_optimizers(cls, args, model: torch.nn.Module) -> list[torch.optim.Optimizer]:
        optimizers = super().build_optimizers(args, model)
        for optimizer in optimizers:
            reset_optimizer_state_on_step(model, optimizer)
        return optimizers


def main(argv: list[str] | None = None) -> None:
    """``python -m seqvq.integrations.espnet train|inference ARGS``: ``espnet2.bin.asr_train`` (as
    :class:`VQASRTask`) / ``espnet2.bin.asr_inference`` with the seqvq choices registered (the same arguments; a
    drop-in for the ``${python} -m espnet2.bin.asr_train`` / ``asr_inference`` lines of ``asr.sh``)."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("train", "inference"):
        raise SystemExit("usage: python -m seqvq.integrations.espnet {train|inference} [ESPnet arguments]")
    register()
    if argv[0] == "train":
        VQASRTask.main(cmd=argv[1:])
    else:
        from espnet2.bin.asr_inference import main as run
        run(argv[1:])


if __name__ == "__main__":
    main()
