#!/usr/bin/env bash
# The GPU acceptance check (python -m src.gpu_check): builds the ops, runs pytest -m cuda, times
# the ops, StyleGAN3 and the translators, prints one table and writes gpu_check.json.
# Usage: scripts/gpu_check.sh [--out gpu_check.json] [--budget-s 420] [--cpu-dry-run]
# It stops by itself: parts stop starting after --budget-s, and the whole run is cut at 9 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
exec timeout --kill-after=10 540 "$python" -m src.gpu_check "$@"
