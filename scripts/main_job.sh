#!/usr/bin/env bash
# The main job: install, then `keras-silc demo`: train a small SILC on Fashion-MNIST scenes
# (offline), evaluate zero-shot / few-shot / retrieval / zero-shot segmentation, write a report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export TF_CPP_MIN_LOG_LEVEL=3
# PyTorch is the fastest of the three backends on a CPU; pick another with KERAS_BACKEND.
KERAS_BACKEND=${KERAS_BACKEND:-torch} keras-silc demo --output runs/main_job "$@"
