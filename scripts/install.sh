#!/usr/bin/env bash
# Installs keras-silc with the three backends and the test tools into the current Python.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip --disable-pip-version-check --no-input"
# A CPU build of PyTorch unless one is installed already (a plain `torch` requirement
# would pull a multi-GB CUDA build). On a GPU machine, install your CUDA torch first.
if ! python -c "import torch" 2>/dev/null; then
  $PIP install -q "torch==2.13.0"
fi
$PIP install -q -e ".[all,test]"
