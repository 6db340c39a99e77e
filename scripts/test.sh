#!/usr/bin/env bash
# Set up (idempotent) and run the test suite.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${BLUESKY_TWIN_VENV:-.venv}"
export MPLBACKEND=Agg
"$VENV/bin/python" -m pytest "$@"
