#!/usr/bin/env bash
# Lint, then the whole test suite once per Keras backend.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export TF_CPP_MIN_LOG_LEVEL=3
ruff check .
ruff format --check .
for backend in jax tensorflow torch; do
  echo "=== KERAS_BACKEND=$backend ==="
  KERAS_BACKEND=$backend python -m pytest -n 2 -q tests
done
