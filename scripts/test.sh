#!/usr/bin/env bash
# Lint, then the test suite once per Keras backend.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export TF_CPP_MIN_LOG_LEVEL=3
ruff check .
ruff format --check .
# Tests marked backend_independent run no backend code: once (under jax) is enough. Tests marked
# benchmark_script check a benchmarks/ script's bookkeeping: once (under torch).
echo "=== KERAS_BACKEND=jax ==="
KERAS_BACKEND=jax python -m pytest -n 2 -q --durations=10 -m "not benchmark_script" tests
echo "=== KERAS_BACKEND=tensorflow ==="
KERAS_BACKEND=tensorflow python -m pytest -n 2 -q --durations=10 \
  -m "not backend_independent and not benchmark_script" tests
echo "=== KERAS_BACKEND=torch ==="
KERAS_BACKEND=torch python -m pytest -n 2 -q --durations=10 -m "not backend_independent" tests
