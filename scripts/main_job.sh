#!/usr/bin/env bash
# The main job: install, then a short training run and its evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export TF_CPP_MIN_LOG_LEVEL=3
KERAS_BACKEND=${KERAS_BACKEND:-jax} keras-silc train --preset silc_tiny --steps 60 --output runs/main_job "$@"
