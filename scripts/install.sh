#!/usr/bin/env bash
# Installs keras-silc with the three backends and the test tools into the current Python,
# and the Fashion-MNIST Debian package that the demo and the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip --disable-pip-version-check --no-input"
# A CPU build of PyTorch unless one is installed already (a plain `torch` requirement
# would pull a multi-GB CUDA build). On a GPU machine, install your CUDA torch first.
if ! python -c "import torch" 2>/dev/null; then
  $PIP install -q "torch==2.13.0"
fi
$PIP install -q -e ".[all,test]"
# Fashion-MNIST (real images, offline): Debian's dataset-fashion-mnist package. Elsewhere
# keras_silc finds it in the Keras cache or downloads it with keras.datasets.fashion_mnist.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  SUDO=""
  if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
  ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist) \
    || echo "Could not install dataset-fashion-mnist; keras_silc will look in ~/.keras/datasets."
fi
