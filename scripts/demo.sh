#!/usr/bin/env bash
# The README's demo command: set up .venv (first run only), run the end-to-end demo, then draw
# its table files and figures from the results it wrote (analysis/, outside the core).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python -m tucker_init demo "$@"
exec .venv/bin/python -m analysis.demo_plots "$@"
