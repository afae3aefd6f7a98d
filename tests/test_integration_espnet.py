"""ESPnet2 adapter: the recipe's asr.yaml (shrunk) builds, through ASRTask.build_model with the seqvq choices
registered, a Conformer CTC/attention model whose post-encoder is the VQ bottleneck; ESPnet's optimizer builder and
the model's forward/backward train it, the VQ loss reaches the loss and stats, codes cover exactly the valid
encoder frames, and ESPnet's checkpoint (Trainer.resume) restores all quantizer state.  The k-means scripts of the
asr2 stage (seqvq.integrations.espnet_kmeans) read ESPnet's feature dump and write the joblib model and the unit text
ESPnet's own ApplyKmeans and writers give.  Skips when ESPnet does
not import (bash .ci/install_toolkits.sh installs it)."""
import pathlib
import subprocess
import sys

import pytest
import torch
import yaml

from integration_checks import (QUANTIZER_OPTIONS, assert_codes_on_valid_frames, assert_quantizer_trained,
                                assert_same_state, assert_vq_loss_in_total)

pytest.importorskip("espnet2.tasks.asr", reason="ESPnet2 is not installed (bash .ci/install_toolkits.sh)")
from espnet2.asr.espnet_model import ESPnetASRModel  # noqa: E402
from espnet2.tasks.asr import ASRTask  # noqa: E402
from espnet2.train.reporter import Reporter  # noqa: E402
from espnet2.train.trainer import Trainer  # noqa: E402

import seqvq.integrations.espnet  # noqa: E402
from seqvq.integrations.espnet import VQASRTask, VQESPnetASRModel, VQPostEncoder, register  # noqa: E402

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "recipes" / "espnet" / "asr.yaml"
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "<sos/eos>"]
SMALL = {
    "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 1,
                     "cnn_module_kernel": 3},
    "decoder_conf": {"attention_heads": 2, "linear_units": 32, "num_blocks": 1},
    "frontend_conf": {"n_fft": 128, "hop_length": 64, "n_mels": 20},
    "postencoder_conf": QUANTIZER_OPTIONS,
}


def build_args(output_dir):
    register()
    config = yaml.safe_load(CONFIG.read_text())
    for section, values in SMALL.items():
        config[section] = {**config.get(section, {}), **values} if section != "postencoder_conf" else dict(values)
    parser = ASRTask.get_parser()
    parser.set_defaults(**config)
    return parser.parse_args(["--token_list", ",".join(TOKENS), "--output_dir", str(output_dir)])


def make_batch(generator):
    speech_lengths = torch.tensor([4000, 3000, 1800])
    speech = torch.randn(3, 4000, generator=generator) * (torch.arange(4000) < speech_lengths.unsqueeze(1))
    text = torch.tensor([[2, 3, 4, 2], [3, 3, 2, -1], [4, 2, -1, -1]])
    return {"speech": speech, "speech_lengths": speech_lengths, "text": text,
            "text_lengths": torch.tensor([4, 3, 2])}


def test_asr_model_with_vq_postencoder_trains_and_resumes(tmp_path, one_thread):
    args = build_args(tmp_path)
    args.token_list = TOKENS
    torch.manual_seed(0)
    model = ASRTask.build_model(args)
    assert isinstance(model, VQESPnetASRModel) and isinstance(model.postencoder, VQPostEncoder)
    optimizers = ASRTask.build_optimizers(args, model)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(6):
        loss, stats, weight = model(**make_batch(generator))
        optimizers[0].zero_grad()
        loss.backward()
        optimizers[0].step()
    quantizer = model.postencoder.bottleneck.quantizer
    assert_quantizer_trained(quantizer)
    assert {"vq_loss", "vq_perplexity", "vq_active_codes", "loss_ctc", "loss_att"} <= stats.keys()
    assert torch.equal(stats["loss"], loss.detach())

    # Evaluation mode (no dropout / SpecAugment, no state updates): the ESPnet loss of the same batch with and
    # without the VQ term.
    model.eval()
    batch = make_batch(generator)
    total, stats, _ = model(**batch)
    task_loss, _, _ = ESPnetASRModel.forward(model, **batch)
    vq = model.postencoder.take_result()
    assert torch.allclose(stats["vq_loss"], vq.loss.detach())
    assert_vq_loss_in_total(total, task_loss, vq.loss, list(model.encoder.parameters()))
    _, encoder_out_lens = model.encode(batch["speech"], batch["speech_lengths"])
    assert_codes_on_valid_frames(model.postencoder.take_result().codes, encoder_out_lens)

    # ESPnet's checkpoint.pth layout, read back by Trainer.resume into a freshly built model.
    saved = {name: tensor.clone() for name, tensor in quantizer.state_dict().items()}
    torch.save({"model": model.state_dict(), "reporter": Reporter().state_dict(),
                "optimizers": [optimizer.state_dict() for optimizer in optimizers], "schedulers": [None],
                "scaler": None}, tmp_path / "checkpoint.pth")
    torch.manual_seed(1)
    fresh = ASRTask.build_model(args)
    fresh_optimizers = ASRTask.build_optimizers(args, fresh)
    assert not torch.equal(fresh.postencoder.bottleneck.quantizer.codebook, saved["codebook"])
    Trainer.resume(checkpoint=tmp_path / "checkpoint.pth", model=fresh, reporter=Reporter(),
                   optimizers=fresh_optimizers, schedulers=[None], scaler=None, ngpu=0)
    assert_same_state(fresh.postencoder.bottleneck.quantizer, saved)


def test_vq_asr_task_optimizers_clear_the_moments_of_rewritten_codes_before_each_step(tmp_path, one_thread):
    args = build_args(tmp_path)
    args.token_list = TOKENS
    args.postencoder_conf = dict(QUANTIZER_OPTIONS, codebook_update="gradient", affine=None)  # codebook moments
    torch.manual_seed(0)
    model = VQASRTask.build_model(args)
    (optimizer,) = VQASRTask.build_optimizers(args, model)  # what ESPnet's trainer steps
    quantizer, seen = model.postencoder.bottleneck.quantizer, []
    optimizer.register_step_pre_hook(lambda optimizer, args, kwargs: seen.append(
        (int(quantizer.rewrites), quantizer.codebook in optimizer.state)))
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(4):
        loss, _, _ = model(**make_batch(generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # (rewrites so far, whether the codebook has optimizer state) at each step: k-means at step 2 and re-estimation
    # at step 4 rewrite the whole codebook, so those steps find its state cleared.
    assert seen == [(0, False), (1, False), (1, True), (2, False)]


def test_command_line_trains_the_vq_asr_task(monkeypatch):
    calls = []
    monkeypatch.setattr(VQASRTask, "main", lambda cmd=None: calls.append(cmd))
    seqvq.integrations.espnet.main(["train", "--config", "asr.yaml"])
    assert calls == [["--config", "asr.yaml"]]


def test_model_refuses_a_postencoder_that_is_not_the_vq_bottleneck(tmp_path):
    args = build_args(tmp_path)
    args.token_list = TOKENS
    args.postencoder = None
    with pytest.raises(ValueError, match="needs postencoder 'vq'"):
        ASRTask.build_model(args)


def test_plain_espnet_model_with_the_vq_postencoder_fails_at_its_second_training_step(tmp_path):
    args = build_args(tmp_path)
    args.token_list = TOKENS
    args.model = "espnet"
    args.model_conf = {key: value for key, value in args.model_conf.items() if key != "vq_loss_weight"}
    model = ASRTask.build_model(args)
    batch = make_batch(torch.Generator().manual_seed(0))
    model(**batch)
    with pytest.raises(RuntimeError, match="model: espnet_vq"):
        model(**batch)


def test_command_line_registers_the_choices_before_espnet_parses():
    command = [sys.executable, "-m", "seqvq.integrations.espnet", "train", "--print_config", "--model", "espnet_vq",
               "--postencoder", "vq", "--postencoder_conf", "codebook_size=64"]
    config = yaml.safe_load(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    assert config["model"] == "espnet_vq" and config["postencoder"] == "vq"
    assert config["postencoder_conf"] == {"codebook_size": 64}


# ------------------------------------------------------------------------------------------------ k-means units
def apply_kmeans(km_path, features):
    """ESPnet's ApplyKmeans (egs2/TEMPLATE/asr1/pyscripts/feats/dump_km_label.py; recipe scripts, not installed):
    the joblib model's cluster_centers_ and the expanded squared distance, on numpy features."""
    import joblib
    import numpy as np

    centres = joblib.load(km_path).cluster_centers_.transpose()
    distances = (features ** 2).sum(1, keepdims=True) - 2 * np.matmul(features, centres) + (centres ** 2).sum(0)
    return np.argmin(distances, axis=1)


def test_kmeans_scripts_write_the_model_and_unit_text_of_the_asr2_stage(tmp_path):
    import numpy as np
    from espnet.utils.cli_readers import file_reader_helper
    from espnet.utils.cli_writers import file_writer_helper
    from espnet2.fileio.read_text import load_num_sequence_text

    from seqvq.integrations.espnet_kmeans import main

    generator = np.random.default_rng(0)
    centres = generator.normal(size=(4, 5)).astype(np.float32) * 6
    with file_writer_helper(f"ark,scp:{tmp_path}/feats.ark,{tmp_path}/feats.scp", filetype="mat") as writer:
        for index in range(6):  # ESPnet's feature dump (dump_ssl_feature.py writes the same)
            labels = generator.integers(4, size=20 + 7 * index)
            writer[f"utt{index}"] = centres[labels] + 0.1 * generator.normal(size=(len(labels), 5)).astype(np.float32)
    km = tmp_path / "km_4.mdl"
    # perform_kmeans.sh's stage 2 and stage 3 command lines
    main(["learn", "--km_path", str(km), "--n_clusters", "4", "--percent", "-1", "--in_filetype", "mat",
          "--batch_size", "30", f"scp:{tmp_path}/feats.scp"])
    main(["dump", "--km_path", str(km), "--out_filetype", "mat", "--use_gpu", "false", "--in_filetype", "mat",
          f"scp:{tmp_path}/feats.scp", f"ark,t:{tmp_path}/pseudo_labels_km4.txt"])

    # what ESPnet's own dump_km_label.py writes with the model, after the recipe's sed
    with file_writer_helper(f"ark,t:{tmp_path}/espnet.txt", filetype="mat") as writer:
        for utterance, features in file_reader_helper(f"scp:{tmp_path}/feats.scp", "mat"):
            writer[utterance] = apply_kmeans(km, features)
    expected = subprocess.run(["sed", r"s/ \[ \| \]//g", str(tmp_path / "espnet.txt")], capture_output=True,
                              text=True, check=True).stdout
    ours = (tmp_path / "pseudo_labels_km4.txt").read_text()
    assert ours == expected
    units = load_num_sequence_text(tmp_path / "pseudo_labels_km4.txt", loader_type="text_int")
    assert len(units) == 6 and len(set(value for row in units.values() for value in row)) == 4

    with pytest.raises(SystemExit, match="km_4.mdl: exists"):  # nothing is overwritten
        main(["learn", "--km_path", str(km), "--n_clusters", "4", f"scp:{tmp_path}/feats.scp"])
    with pytest.raises(SystemExit, match="pseudo_labels_km4.txt: exists"):
        main(["dump", "--km_path", str(km), f"scp:{tmp_path}/feats.scp", f"ark,t:{tmp_path}/pseudo_labels_km4.txt"])
    with pytest.raises(SystemExit, match="RVQ_layers"):
        main(["learn", "--km_path", str(tmp_path / "rvq.mdl"), "--n_clusters", "4", "--RVQ_layers", "2",
              f"scp:{tmp_path}/feats.scp"])
