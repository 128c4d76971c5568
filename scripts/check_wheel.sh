#!/usr/bin/env bash
# The package as a user outside this checkout gets it: build the wheel and the sdist, install
# the wheel (not the checkout) into a fresh virtual environment that reuses the installed
# dependencies, then run a tiny `keras-silc demo` and the quickstart notebook (quick mode)
# from a folder outside the checkout. A module or data file missing from the wheel fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOUT=$(pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python -m pip --disable-pip-version-check -q install build
python -m build --wheel --sdist --outdir "$WORK/dist" . > "$WORK/build.log" 2>&1 \
  || { cat "$WORK/build.log"; exit 1; }
python -m venv --system-site-packages "$WORK/venv"
VENV_PY="$WORK/venv/bin/python"
"$VENV_PY" -m pip --disable-pip-version-check -q install --no-deps "$WORK"/dist/*.whl
cd "$WORK"
LOCATION=$("$VENV_PY" -c "import keras_silc, os; print(os.path.dirname(keras_silc.__file__))")
case "$LOCATION" in
  "$CHECKOUT"*) echo "keras_silc was imported from the checkout ($LOCATION), not the wheel"; exit 1 ;;
esac
echo "keras_silc from the wheel: $LOCATION"
export KERAS_BACKEND=${KERAS_BACKEND:-torch} TF_CPP_MIN_LOG_LEVEL=3
"$WORK/venv/bin/keras-silc" demo --steps 2 --checkpoint-every 2 --batch-size 8 --num-scenes 64 \
  --eval-items 50 --eval-scenes 20 --output "$WORK/demo" --quiet > "$WORK/demo.log" 2>&1 \
  || { tail -40 "$WORK/demo.log"; exit 1; }
test -f "$WORK/demo/report.md" || { echo "the demo wrote no report"; exit 1; }
"$VENV_PY" -m ipykernel install --sys-prefix --name keras-silc-wheel > /dev/null
KERAS_SILC_QUICK=1 "$VENV_PY" - "$CHECKOUT/examples/quickstart.ipynb" "$WORK" <<'PY'
import sys

import nbclient
import nbformat

notebook = nbformat.read(sys.argv[1], as_version=4)
client = nbclient.NotebookClient(
    notebook, timeout=600, kernel_name="keras-silc-wheel", resources={"metadata": {"path": sys.argv[2]}}
)
client.execute()
errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
if errors:
    raise SystemExit(f"quickstart.ipynb failed with the wheel: {errors[0].get('ename')}: {errors[0].get('evalue')}")
print("quickstart.ipynb ran with the installed wheel")
PY
echo "wheel check passed"
