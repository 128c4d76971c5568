#!/usr/bin/env bash
# Lint, then the test suite once per Keras backend.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export TF_CPP_MIN_LOG_LEVEL=3
ruff check .
ruff format --check .
# Tests marked backend_independent run no backend code: once (under jax) is enough.
echo "=== KERAS_BACKEND=jax (all tests) ==="
KERAS_BACKEND=jax python -m pytest -n 2 -q --durations=10 tests
for backend in tensorflow torch; do
  echo "=== KERAS_BACKEND=$backend ==="
  KERAS_BACKEND=$backend python -m pytest -n 2 -q --durations=10 -m "not backend_independent" tests
done
