#!/usr/bin/env python3
"""SpeechBrain CTC phone recognizer with a seqvq VQ bottleneck (hparams/train_ctc_vq.yaml).

The only VQ-specific lines: ``compute_forward`` passes the encoder output through ``self.modules.vq`` with the
batch's relative lengths, ``compute_objectives`` adds ``vq.loss`` to the CTC loss, ``init_optimizers`` makes the
optimizer clear the moments of rewritten codes before each step, and the stage summary logs code perplexity.  The
quantizer's whole state is checkpointed by the ``model`` recoverable.

    python recipes/speechbrain/train.py recipes/speechbrain/hparams/train_ctc_vq.yaml --data_folder=DIR
"""
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

import seqvq


class VQCTCBrain(sb.Brain):
    def init_optimizers(self):
        super().init_optimizers()
        seqvq.reset_optimizer_state_on_step(self.modules, self.optimizer)

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        feats = self.modules.normalize(self.hparams.compute_features(wavs), wav_lens)
        vq = self.modules.vq(self.modules.encoder(feats), lengths_rel=wav_lens)
        log_probs = self.hparams.log_softmax(self.modules.output(vq.quantized))
        return log_probs, wav_lens, vq

    def compute_objectives(self, predictions, batch, stage):
        log_probs, wav_lens, vq = predictions
        phns, phn_lens = batch.phn_encoded
        loss = self.hparams.ctc_cost(log_probs, phns, wav_lens, phn_lens) + self.hparams.vq_loss_weight * vq.loss
        self.vq_perplexities.append(float(vq.metrics["perplexity"]))
        if stage != sb.Stage.TRAIN:
            hypotheses = sb.decoders.ctc_greedy_decode(log_probs, wav_lens, blank_id=self.hparams.blank_index)
            self.per_metrics.append(batch.id, hypotheses, phns, target_len=phn_lens,
                                    ind2lab=self.label_encoder.decode_ndim)
        return loss

    def on_stage_start(self, stage, epoch=None):
        self.vq_perplexities = []
        if stage != sb.Stage.TRAIN:
            self.per_metrics = self.hparams.per_stats()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        stats = {"loss": stage_loss, "vq_perplexity": sum(self.vq_perplexities) / max(len(self.vq_perplexities), 1)}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats["PER"] = self.per_metrics.summarize("error_rate")
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(stats_meta={"epoch": epoch}, train_stats=self.train_stats,
                                                valid_stats=stats)
            self.checkpointer.save_and_keep_only(meta={"PER": stats["PER"]}, min_keys=["PER"])
        else:
            self.hparams.train_logger.log_stats(stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                                                test_stats=stats)


def dataio_prepare(hparams):
    """DynamicItemDatasets of the JSON manifests (audio and phone labels), and the CTC label encoder."""
    datasets = {name: sb.dataio.dataset.DynamicItemDataset.from_json(hparams[f"{name}_annotation"],
                                                                     replacements={"data_root": hparams["data_folder"]})
                for name in ("train", "valid", "test")}
    datasets["train"] = datasets["train"].filtered_sorted(sort_key="duration")
    label_encoder = sb.dataio.encoder.CTCTextEncoder()

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return sb.dataio.dataio.read_audio(wav)

    @sb.utils.data_pipeline.takes("phn")
    @sb.utils.data_pipeline.provides("phn_list", "phn_encoded")
    def text_pipeline(phn):
        phn_list = phn.strip().split()
        yield phn_list
        yield torch.LongTensor(label_encoder.encode_sequence(phn_list))

    sb.dataio.dataset.add_dynamic_item(list(datasets.values()), audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(list(datasets.values()), text_pipeline)
    label_encoder.load_or_create(path=f"{hparams['save_folder']}/label_encoder.txt",
                                 from_didatasets=[datasets["train"]], output_key="phn_list",
                                 special_labels={"blank_label": hparams["blank_index"]}, sequence_input=True)
    sb.dataio.dataset.set_output_keys(list(datasets.values()), ["id", "sig", "phn_encoded"])
    return datasets, label_encoder


def prepare(hparams_file, run_opts, overrides):
    """The Brain, its datasets and loader options from an hparams file (``overrides``: YAML text or a dict)."""
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file,
                                   overrides=overrides)
    datasets, label_encoder = dataio_prepare(hparams)
    brain = VQCTCBrain(modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams,
                       run_opts=run_opts, checkpointer=hparams["checkpointer"])
    brain.label_encoder = label_encoder
    return brain, datasets, {"batch_size": hparams["batch_size"]}


def main(argv):
    brain, datasets, loader_options = prepare(*sb.parse_arguments(argv))
    brain.fit(brain.hparams.epoch_counter, datasets["train"], datasets["valid"], train_loader_kwargs=loader_options,
              valid_loader_kwargs=loader_options)
    brain.evaluate(datasets["test"], min_key="PER", test_loader_kwargs=loader_options)


if __name__ == "__main__":
    main(sys.argv[1:])
