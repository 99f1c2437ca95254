#!/usr/bin/env bash
# The test command: the linter, unit tests, then every notebook in smoke mode under nbval; with CI=true
# (or PCNN_E2E=1) also the fresh Colab/Kaggle runtime simulation (notebook 02 interrupted and
# resumed in a new runtime, then 03, 06 and 07, each opened alone, set-up cell cloning this checkout) and the real-browser test of notebook 07's widget,
# side by side (each is mostly one thread).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && . .venv/bin/activate
export PCNN_SMOKE=1 MPLBACKEND=Agg PCNN_FID_DOWNLOAD=${PCNN_FID_DOWNLOAD:-0}
ruff check .   # the linter (pyproject.toml [tool.ruff]); seconds
# One worker per core (pytest-xdist; tests/conftest.py gives each one intra-op thread); a file's
# tests stay on one worker so its module fixtures are built once. PCNN_TEST_WORKERS=0: in-process.
WORKERS=${PCNN_TEST_WORKERS:-$(python -c "import os; print(min(len(os.sched_getaffinity(0)), 4))")}
XDIST=(); [ "$WORKERS" -gt 1 ] && XDIST=(-n "$WORKERS" --dist loadfile)
# --durations: every log names its 15 slowest tests (CI must stay under 15 minutes; see docs/design.md).
python -m pytest -q "${XDIST[@]}" --durations=15 tests
if compgen -G "notebooks/*.ipynb" >/dev/null; then
  python -m pytest -q "${XDIST[@]}" --nbval-lax --nbval-current-env -p no:cacheprovider notebooks
fi
if [ "${CI:-}" = "true" ] || [ "${PCNN_E2E:-0}" = "1" ]; then
  mkdir -p artifacts
  start=$(date +%s)
  python scripts/fresh_runtime_test.py 02 03 06 07 > artifacts/fresh_runtime.log 2>&1 & fresh=$!
  python scripts/browser_test.py --out artifacts/browser > artifacts/browser_test.log 2>&1 & browser=$!
  rc=0
  wait $fresh || rc=1
  wait $browser || rc=1
  grep -v "WARNING | Kernel is running over TCP" artifacts/fresh_runtime.log || true
  cat artifacts/browser_test.log
  echo "fresh runtime + browser tests: $(( $(date +%s) - start )) s"
  exit $rc
fi
