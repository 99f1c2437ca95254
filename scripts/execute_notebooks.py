#!/usr/bin/env python
"""Execute notebooks in place (in notebooks/ as working folder) and strip volatile metadata.

Widget state is saved into the notebook (nbviewer, Voila and JupyterLab draw the widgets
from it) and ``TQDM_DISABLE=1`` keeps tqdm bars out of the committed outputs (they would
show their first frame, ``0%``); the notebooks' own :class:`pcnn.notebook.runtime.ProgressLine`
lines keep their final state; volatile metadata is stripped by
``scripts/notebook_files.py``. Edit ``notebooks/src/*.py``, run ``jupytext --sync
notebooks/src/*.py``, then this script.

    PCNN_DATA_DIR=... python scripts/execute_notebooks.py            # full mode (real checkpoint)
    python scripts/execute_notebooks.py --smoke 02_training           # smoke mode, one notebook

Prints the wall time of each notebook. A failing notebook is reported and left unchanged.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def main(argv=None) -> int:
    import nbformat
    from nbconvert.preprocessors import CellExecutionError, ExecutePreprocessor

    from notebook_files import strip_file

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="notebook names or prefixes (default: all in notebooks/)")
    p.add_argument("--smoke", action="store_true", help="PCNN_SMOKE=1 (tiny sizes, as CI)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell (default %(default)s)")
    p.add_argument("--kernel", default="python3")
    args = p.parse_args(argv)
    os.environ["PCNN_SMOKE"] = "1" if args.smoke else "0"
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    os.environ["TQDM_DISABLE"] = "1"
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.names:
        paths = [q for q in paths if any(q.stem.startswith(n.removesuffix(".ipynb")) for n in args.names)]
    failed = 0
    for path in paths:
        nb = nbformat.read(str(path), as_version=4)
        ep = ExecutePreprocessor(timeout=args.timeout, kernel_name=args.kernel, store_widget_state=True)
        t0 = time.perf_counter()
        try:
            ep.preprocess(nb, {"metadata": {"path": str(path.parent)}})
        except CellExecutionError as e:
            failed += 1
            print(f"FAILED {path.name} after {time.perf_counter() - t0:.1f} s:\n{str(e)[-3000:]}", flush=True)
            continue
        nbformat.write(nb, str(path))
        strip_file(path)
        print(f"{path.name}: {time.perf_counter() - t0:.1f} s (smoke={args.smoke})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
