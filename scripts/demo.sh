#!/usr/bin/env bash
# Set up (idempotent) and run the end-to-end demo.  Extra arguments go to `bluesky-twin demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${BLUESKY_TWIN_VENV:-.venv}"
export MPLBACKEND=Agg
"$VENV/bin/bluesky-twin" demo "$@"
