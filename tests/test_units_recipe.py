"""data_prep/make_units.py, the steps of recipes/units: log-mel features -> k-means units -> dedup + sentencepiece
token ids stored as features -> speech_ctc trains on them (model.input_tokens) and reports PER; bits per second of
each token stream."""
import importlib.util
import json
import pathlib

import kaldiio
import numpy as np
import pytest
import torch

from seqvq.units import KMeansTokenizer, dedup
from test_speech_task import corpus, make_config, run  # noqa: F401 (corpus: the fixture)

TOOL = pathlib.Path(__file__).resolve().parents[1] / "data_prep" / "make_units.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("make_units", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_units_tokens_train_a_ctc_recognizer(corpus, tmp_path, one_thread):  # noqa: F811
    import sentencepiece

    tool = load_tool()
    tool.main(["features", "--encoder", "none", "--split", f"train={corpus}/train", "--split", f"dev={corpus}/dev",
               "--out", str(tmp_path / "logmel")])
    tool.main(["kmeans", "--features", str(tmp_path / "logmel" / "train"), "--units", "6", "--passes", "3",
               "--out", str(tmp_path / "km.pt")])
    tool.main(["tokens", "--kmeans", str(tmp_path / "km.pt"), "--features", str(tmp_path / "logmel"),
               "--targets", str(corpus), "--vocab-size", "10", "--out", str(tmp_path / "tokens")])

    # a rerun reuses what was built from the same inputs, and refuses what was built from other ones
    built = (tmp_path / "km.pt").stat().st_mtime_ns
    tool.main(["kmeans", "--features", str(tmp_path / "logmel" / "train"), "--units", "6", "--passes", "3",
               "--out", str(tmp_path / "km.pt")])
    assert (tmp_path / "km.pt").stat().st_mtime_ns == built
    with pytest.raises(SystemExit, match="km.pt: holds k-means units built from other inputs: units: 6, now 7"):
        tool.main(["kmeans", "--features", str(tmp_path / "logmel" / "train"), "--units", "7", "--passes", "3",
                   "--out", str(tmp_path / "km.pt")])

    # the token ids are sentencepiece pieces of the de-duplicated units of each utterance's frames
    tokenizer = KMeansTokenizer.load(tmp_path / "km.pt")
    processor = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "tokens" / "sentencepiece.model"))
    frames = kaldiio.load_scp(str(corpus / "dev" / "feats.scp"))
    stored = kaldiio.load_scp(str(tmp_path / "tokens" / "dev" / "feats.scp"))
    for utt in frames:
        units = dedup(tokenizer.encode(torch.tensor(frames[utt])[None])[0])[0].tolist()
        ids = stored[utt][:, 0].astype(int).tolist()
        assert processor.decode(ids) == "".join(chr(tool.UNIT_CHARACTERS + u) for u in units)

    rates = json.loads((tmp_path / "tokens" / "bitrate.json").read_text())["dev"]
    assert rates["frames"]["tokens_per_second"] == 100.0  # one code per 10 ms frame
    assert rates["frames"]["nominal_bps"] == 100.0 * np.log2(6)
    assert rates["dedup"]["tokens_per_second"] <= rates["frames"]["tokens_per_second"]
    assert rates["sentencepiece"]["tokens_per_second"] <= rates["dedup"]["tokens_per_second"]
    assert all(r["entropy_bps"] <= r["nominal_bps"] + 1e-9 for r in rates.values() if isinstance(r, dict))

    pieces = processor.get_piece_size()
    config = make_config(corpus, tmp_path / "exp", steps=3, quantizer=None)
    config["data"] = {"train": str(tmp_path / "tokens" / "train"), "dev": str(tmp_path / "tokens" / "dev"),
                      "cmvn": str(tmp_path / "tokens" / "train" / "cmvn.ark"), "deltas": False}
    config["model"].update(input_tokens=pieces, token_dim=12, in_channels=1, conv_strides=[[1, 2], [1, 2]])
    trainer, _ = run(config)
    assert trainer.model.model.token_embedding.num_embeddings == pieces
    evaluated = json.loads((tmp_path / "exp" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "per" in evaluated
