#!/usr/bin/env bash
# The prepared GPU check (issue 10.4): on a CUDA machine, about 3 minutes; writes gpu_check.csv
# under $OUT (or results/gpu_check/). Uses .venv when present (carry it to the GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { bash scripts/bootstrap.sh; }
exec "$PY" experiments/gpu_check.py "$@"
