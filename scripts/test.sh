#!/usr/bin/env bash
# The test command: unit tests, then every notebook in smoke mode under nbval.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && . .venv/bin/activate
export PCNN_SMOKE=1 MPLBACKEND=Agg PCNN_FID_DOWNLOAD=${PCNN_FID_DOWNLOAD:-0}
python -m pytest -q tests
if compgen -G "notebooks/*.ipynb" >/dev/null; then
  python -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks
fi
