#!/usr/bin/env bash
# Create .venv (if needed) and install bluesky-twin with all extras.  Idempotent.
# Everything is installed with `-c constraints.txt`, which pins torch==2.13.0: its CPU
# wheel is on the machine's disk, and an unpinned torch would pull a multi-GB CUDA build.
# BLUESKY_TWIN_CONSTRAINTS=FILE uses another constraints file.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${BLUESKY_TWIN_VENV:-.venv}"
CONSTRAINTS="${BLUESKY_TWIN_CONSTRAINTS:-constraints.txt}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# torch first and on its own, so that a fresh machine fetches the pinned CPU wheel
# before the resolver sees anything else that depends on torch.
"$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" "torch"
"$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e ".[all]"
echo "bluesky-twin installed in $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
