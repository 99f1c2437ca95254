#!/usr/bin/env bash
# The main job on a fresh machine: install into .venv, find (or fetch) the data,
# classify the validation split with the shipped checkpoint and sample a class grid.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
if [ -z "${PCNN_DATA_DIR:-}" ]; then
  if [ -f data/validation.csv ]; then export PCNN_DATA_DIR=data
  elif [ -f ../shared/cpen455/validation.csv ]; then export PCNN_DATA_DIR=../shared/cpen455
  else python -m pcnn data download --data-dir data; export PCNN_DATA_DIR=data; fi
fi
python -m pcnn demo "$@"
