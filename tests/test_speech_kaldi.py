"""Kaldi data-dir reading and validation: one test per kind of bad input."""
import numpy as np
import pytest
import soundfile

from seqvq.data.kaldi import DataDirError, read_data_dir


def make_dir(root, utts=("a1", "a2", "b1"), rate=16000, **overrides):
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "wav.scp": "".join(f"{u} {root / (u + '.wav')}\n" for u in utts),
        "text": "".join(f"{u} HELLO WORLD\n" for u in utts),
        "utt2spk": "".join(f"{u} {u[0]}\n" for u in utts),
        "spk2utt": "a a1 a2\nb b1\n",
    }
    files.update(overrides)
    for name, content in files.items():
        if content is not None:
            (root / name).write_text(content)
    for i, u in enumerate(utts):
        soundfile.write(root / f"{u}.wav", np.full(1600 + i, 0.1, dtype=np.float32), rate)
    return root


def test_reads_a_valid_dir_and_audio(tmp_path):
    data = read_data_dir(make_dir(tmp_path / "d"))
    assert data.utterances == ["a1", "a2", "b1"]
    assert data.spk2utt == {"a": ["a1", "a2"], "b": ["b1"]}
    assert data.sample_rate == 16000
    samples, rate = data.load_audio("a2")
    assert rate == 16000 and samples.shape == (1601,) and samples.dtype == np.float32


def test_pipe_and_segments(tmp_path):
    root = make_dir(tmp_path / "d", utts=("rec",), spk2utt=None, text="s1 A\ns2 B\n", utt2spk="s1 x\ns2 x\n",
                    **{"wav.scp": f"rec cat {tmp_path / 'd' / 'rec.wav'} |\n"})
    (root / "segments").write_text("s1 rec 0.0 0.05\ns2 rec 0.05 0.1\n")
    data = read_data_dir(root)
    samples, rate = data.load_audio("s2")
    assert rate == 16000 and samples.shape == (800,)


@pytest.mark.parametrize("name, content, message", [
    ("utt2spk", "a2 a\na1 a\nb1 b\n", "utt2spk:2: key 'a1' comes after 'a2', not sorted"),
    ("utt2spk", "a1 a\na1 a\nb1 b\n", "utt2spk:2: key 'a1' appears twice"),
    ("utt2spk", "a1 a x\na2 a\nb1 b\n", "utt2spk:1: expected 2 fields"),
    ("text", "a1 HELLO\na2\nb1 HI\n", "text:2: utterance a2 has an empty transcript"),
    ("text", "a1 HELLO\nb1 HI\n", "text: utterance a2 of .*utt2spk:2 is missing here"),
    ("spk2utt", "a a1\nb b1\n", "spk2utt: disagrees with utt2spk"),
    ("wav.scp", "a1 /nonexistent/a1.wav\na2 x\nb1 y\n", "wav.scp:1: audio file '/nonexistent/a1.wav'"),
    ("text", "a1 HELLO\n\na2 A\nb1 B\n", "text:2: empty line"),
])
def test_bad_tables_name_file_line_and_fix(tmp_path, name, content, message):
    root = make_dir(tmp_path / "d", **{name: content})
    with pytest.raises(DataDirError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        read_data_dir(root)
    assert str(root / name) in str(error.value)


def test_missing_files(tmp_path):
    with pytest.raises(DataDirError, match="utt2spk: missing"):
        read_data_dir(make_dir(tmp_path / "a", utt2spk=None))
    with pytest.raises(DataDirError, match="text: missing"):
        read_data_dir(make_dir(tmp_path / "b", text=None))
    with pytest.raises(DataDirError, match="wav.scp: missing"):
        read_data_dir(make_dir(tmp_path / "c", **{"wav.scp": None}))
    with pytest.raises(DataDirError, match="not a directory"):
        read_data_dir(tmp_path / "nothing")


def test_mixed_sample_rates(tmp_path):
    root = make_dir(tmp_path / "d")
    soundfile.write(root / "b1.wav", np.zeros(800, dtype=np.float32), 8000)
    with pytest.raises(DataDirError, match="wav.scp:3: .* resample"):
        read_data_dir(root)


def test_unreadable_audio_and_failing_pipe(tmp_path):
    root = make_dir(tmp_path / "d")
    (root / "a1.wav").write_bytes(b"not audio")
    with pytest.raises(DataDirError, match="wav.scp:1: cannot read the header"):
        read_data_dir(root)
    root = make_dir(tmp_path / "e", **{"wav.scp": "a1 false |\na2 false |\nb1 false |\n"})
    data = read_data_dir(root)
    with pytest.raises(DataDirError, match="command 'false |' failed"):
        data.load_audio("a1")


def test_bad_segments(tmp_path):
    root = make_dir(tmp_path / "d", utts=("rec",), spk2utt=None, text="s1 A\n", utt2spk="s1 x\n")
    (root / "segments").write_text("s1 rec 0.5 0.2\n")
    with pytest.raises(DataDirError, match="segments:1: segment s1 has start 0.5 >= end 0.2"):
        read_data_dir(root)
    (root / "segments").write_text("s1 other 0.0 0.2\n")
    with pytest.raises(DataDirError, match="segments:1: recording 'other' is not in wav.scp"):
        read_data_dir(root)
    (root / "segments").write_text("s1 rec 0.0 9.0\n")
    with pytest.raises(DataDirError, match="ends at 9.0s"):
        read_data_dir(root).load_audio("s1")


def test_utterance_lists_that_disagree_name_utt2spk_and_the_line(tmp_path):
    root = make_dir(tmp_path / "d", text="a1 HELLO\nb1 HI\n")
    with pytest.raises(DataDirError) as error:
        read_data_dir(root)
    assert str(error.value).startswith(f"{root / 'text'}: utterance a2 of {root / 'utt2spk'}:2 is missing here "
                                       f"(1 utterance(s) of utt2spk missing); run Kaldi's utils/fix_data_dir.sh")
    root = make_dir(tmp_path / "e", text="a1 HELLO\na2 HI\na3 HO\nb1 HI\n")
    with pytest.raises(DataDirError) as error:
        read_data_dir(root)
    assert str(error.value).startswith(f"{root / 'text'}:3: utterance a3 is not in {root / 'utt2spk'} (1 such "
                                       f"utterance(s)); run Kaldi's utils/fix_data_dir.sh")


def test_segments_and_sample_rate_errors_name_the_line(tmp_path):
    root = make_dir(tmp_path / "d", utts=("rec",), spk2utt=None, text="s1 A\ns2 B\n", utt2spk="s1 x\ns2 x\n")
    (root / "segments").write_text("s1 rec 0.0 0.05\ns2 rec 0.05 9.0\n")
    with pytest.raises(DataDirError, match=f"^{root / 'segments'}:2: utterance s2 ends at 9.0s"):
        read_data_dir(root).load_audio("s2")
    data = read_data_dir(make_dir(tmp_path / "e"))
    soundfile.write(tmp_path / "e" / "b1.wav", np.zeros(800, dtype=np.float32), 8000)
    with pytest.raises(DataDirError, match=f"^{tmp_path / 'e' / 'wav.scp'}:3: recording b1 has sample rate 8000"):
        data.load_audio("b1")


def test_an_utterance_shorter_than_a_frame_names_its_line(tmp_path):
    from seqvq.data.speech_corpus import write_features

    root = make_dir(tmp_path / "d")
    soundfile.write(root / "a2.wav", np.zeros(100, dtype=np.float32), 16000)
    with pytest.raises(DataDirError, match=f"^{root / 'wav.scp'}:2: utterance a2 is shorter than one 25 ms frame"):
        write_features(read_data_dir(root), tmp_path / "out")
