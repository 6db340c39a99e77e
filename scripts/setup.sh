#!/usr/bin/env bash
# Create .venv (if needed) and install bluesky-twin with all extras.
# torch==2.13.0 goes in first: its CPU wheel is on the machine's disk, and a bare
# torch requirement would otherwise pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${BLUESKY_TWIN_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q "torch==2.13.0"
fi
"$VENV/bin/python" -m pip install -q -e ".[all]"
echo "bluesky-twin installed in $VENV"
