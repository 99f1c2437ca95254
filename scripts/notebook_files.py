"""Notebook files as the repository commits them: volatile metadata stripped, deterministic
execution counts, one JSON layout. Used by ``scripts/execute_notebooks.py`` (after executing),
``scripts/set_repo.py`` (after editing cell sources) and ``tests/test_notebooks.py``.

    python scripts/notebook_files.py notebooks/*.ipynb    # strip in place
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

#: Metadata keys removed from cells and notebooks (volatile: timings, jupytext's pairing
#: stamp, which jupytext.toml already states). Widget state (``metadata.widgets``) is kept:
#: it is what lets nbviewer, Voila and JupyterLab draw a saved notebook's widgets.
VOLATILE_CELL_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled", "jupyter", "papermill")
VOLATILE_NB_METADATA = ("papermill", "toc", "varInspector", "jupytext")


def strip_notebook(nb: dict) -> dict:
    """Strip volatile parts of a notebook (a JSON dict), in place, and return it.

    Execution counts become deterministic: the k-th code cell gets ``k`` (and so do its
    ``execute_result`` outputs); a cell without outputs gets None. They cannot all be None:
    nbval treats a cell with outputs and no count as an unrun reference cell and fails it.
    Cell metadata ``execution``, ``ExecuteTime``... and the notebook's ``jupytext`` stamp go;
    widget views and the saved widget state stay (with their PNG/text fallbacks).
    """
    for key in VOLATILE_NB_METADATA:
        nb.get("metadata", {}).pop(key, None)
    k = 0
    for cell in nb.get("cells", []):
        md = cell.get("metadata", {})
        for key in VOLATILE_CELL_METADATA:
            md.pop(key, None)
        if cell.get("cell_type") != "code":
            continue
        k += 1
        cell["execution_count"] = k if cell.get("outputs") else None
        for out in cell.get("outputs", []):
            if "execution_count" in out:
                out["execution_count"] = k
            out.get("metadata", {}).pop("ExecuteTime", None)
    return nb


def dumps(nb: dict) -> str:
    """The committed layout of a notebook: nbformat's indent of 1, sorted keys, a final newline."""
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def strip_file(path) -> None:
    """:func:`strip_notebook` on an ``.ipynb`` file, rewritten in the layout of :func:`dumps`."""
    path = Path(path)
    nb = json.loads(path.read_text())
    path.write_text(dumps(strip_notebook(nb)))


if __name__ == "__main__":
    for name in sys.argv[1:]:
        strip_file(name)
