"""seqvq.units.encoder_features: one layer of any encoder (a callable, an nn.Module, the speech recipe's trained
model) dumped as Kaldi features for a data directory; log-mel frames where there is no encoder."""
import kaldiio
import numpy as np
import pytest
import torch

from helpers import write_kaldi_dir
from seqvq.data.features import Fbank, FbankOptions
from seqvq.data.speech_corpus import utterance_fbank
from seqvq.data.kaldi import read_data_dir
from seqvq.errors import UserError
from seqvq.tasks.speech import SpeechEncoderLayers
from seqvq.units.encoder_features import dump_layer_features, layer_features
from test_speech_task import corpus, make_config, run  # noqa: F401 (corpus: the fixture)


@pytest.fixture
def data_dir(tmp_path):
    write_kaldi_dir(tmp_path / "data", ["one two", "three", "four five six"], seed=0)
    return tmp_path / "data"


def read_back(out_dir):
    return {utt: matrix for utt, matrix in kaldiio.load_scp(str(out_dir / "feats.scp")).items()}


def test_the_chosen_layer_of_a_callable_is_dumped_per_utterance(data_dir, tmp_path):
    data = read_data_dir(data_dir)
    fbank = {utt: utterance_fbank(data.load_audio(utt)[0], Fbank(FbankOptions())) for utt in data.utterances}

    def hidden_states(x, lengths):  # an encoder's layers: (1, T', C) each, here at half the frame rate
        assert lengths.tolist() == [x.shape[1]]
        return [x, x[:, ::2] * 2, x[:, ::2, :5] + 1]

    frames = dump_layer_features(hidden_states, 2, data_dir, tmp_path / "layer2")
    dumped = read_back(tmp_path / "layer2")
    assert list(dumped) == data.utterances and frames == sum(len(m) for m in dumped.values())
    for utt in data.utterances:
        assert np.array_equal(dumped[utt], fbank[utt][::2, :5] + 1)
    counts = (tmp_path / "layer2" / "utt2num_frames").read_text().split()
    assert counts[1::2] == [str(len(dumped[utt])) for utt in data.utterances]

    dump_layer_features(None, 0, data_dir, tmp_path / "logmel")  # no encoder: the log-mel frames
    assert all(np.array_equal(m, fbank[utt]) for utt, m in read_back(tmp_path / "logmel").items())
    with pytest.raises(UserError, match="logmel/feats.scp: exists"):
        dump_layer_features(None, 0, data_dir, tmp_path / "logmel")
    with pytest.raises(UserError, match="layer 3: the encoder returned 3 layer output"):
        next(layer_features(hidden_states, 3, data_dir))


def test_a_module_on_the_waveform(data_dir):
    class Framer(torch.nn.Module):  # a waveform encoder: 10 ms frames of 160 samples, one layer
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(3.0))

        def forward(self, wav, lengths):
            return self.scale * wav[:, : wav.shape[1] // 160 * 160].reshape(1, -1, 160)

    data = read_data_dir(data_dir)
    for utt, matrix in layer_features(Framer(), 0, data_dir, inputs="waveform"):
        samples = data.load_audio(utt)[0]
        assert np.allclose(matrix, 3 * samples[: len(samples) // 160 * 160].reshape(-1, 160))


def test_the_speech_models_bilstm_layers(corpus, tmp_path):  # noqa: F811
    config = make_config(corpus, tmp_path / "exp", steps=2, quantizer=None)
    config["model"]["rnn_layers"] = 2
    run(config)
    encoder = SpeechEncoderLayers(tmp_path / "exp" / "checkpoints" / "last.pt")
    dumped = dict(layer_features(encoder, -1, corpus / "dev"))
    first = dict(layer_features(encoder, 1, corpus / "dev"))
    utt = sorted(dumped)[0]
    features = torch.tensor(kaldiio.load_scp(str(corpus / "dev" / "feats.scp"))[utt])
    layers = encoder(features[None], torch.tensor([features.shape[0]]))
    assert len(layers) == 3  # the front end and the two BiLSTM layers
    assert np.array_equal(dumped[utt], layers[2][0].numpy()) and np.array_equal(first[utt], layers[1][0].numpy())
    assert dumped[utt].shape[1] == 2 * 24  # both directions of rnn_hidden 24
