#!/usr/bin/env bash
# Installs everything seqvq needs on a fresh machine (root or not, bare Python, package registries only).
# torch is pinned to the local CPU build; every other package resolves under constraints.txt, so nothing can pull
# another torch (and GBs of CUDA wheels). espeak-ng (Debian) builds the mini speech corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -c constraints.txt -e ".[all]"
# SpeechBrain and ESPnet, so tests/test_integration_*.py run rather than skip (about 1.5 min, 0.4 GB).
bash .ci/install_toolkits.sh python3
if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng) >/dev/null
  else
    echo "espeak-ng is missing (needed for the mini speech corpus): sudo apt-get install -y espeak-ng" >&2
  fi
fi
