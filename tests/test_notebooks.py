"""Static checks of the committed notebooks (they are executed by nbval in scripts/test.sh)."""
import json
import re
from pathlib import Path

import pytest

from pcnn.notebook import strip_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_data_exploration_and_augmentation", "02_training", "03_classification", "04_loss_curves",
            "05_fusion_comparison", "06_fid_evaluation", "07_interactive_sampling"]
MAX_OUTPUT_BYTES = 500_000  # per output (images are PNG at modest dpi)
MAX_NOTEBOOK_BYTES = 3_000_000


def _load(path):
    return json.loads(path.read_text())


def _code(nb):
    return [("".join(c["source"]) if isinstance(c["source"], list) else c["source"])
            for c in nb["cells"] if c["cell_type"] == "code"]


def test_all_notebooks_present():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.stem)
def notebook(request):
    return request.param, _load(request.param)


def test_valid_nbformat(notebook):
    import nbformat
    path, _ = notebook
    nbformat.validate(nbformat.read(str(path), as_version=4))


def test_no_errors_and_small_outputs(notebook):
    path, nb = notebook
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{path.name}: error output {out.get('ename')}: {out.get('evalue')}"
            size = len(json.dumps(out))
            assert size < MAX_OUTPUT_BYTES, f"{path.name}: an output of {size} bytes"


def test_volatile_metadata_stripped(notebook):
    path, nb = notebook
    stripped = strip_notebook(json.loads(json.dumps(nb)))
    assert stripped == nb, f"{path.name}: run scripts/execute_notebooks.py (or pcnn.notebook.strip_file)"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for k, cell in enumerate(code, 1):  # deterministic counts (nbval needs one on every cell with outputs)
        assert cell["execution_count"] == (k if cell["outputs"] else None)


def test_no_platform_paths_or_unpinned_installs(notebook):
    path, nb = notebook
    text = "\n".join(_code(nb))
    assert "/content" not in text and "/kaggle" not in text, f"{path.name}: hard-coded Colab/Kaggle path"
    for line in text.splitlines():
        if "git+" in line:
            assert re.search(r"git\+\S*@", line), f"{path.name}: unpinned install: {line.strip()}"
        assert not re.search(r"pip install\s+(-\S+\s+)*(pcnn|\.)\s*$", line), f"{path.name}: unpinned: {line}"


def test_first_cells(notebook):
    path, nb = notebook
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown" and "".join(first["source"]).startswith("# ")
    assert "Committed outputs" in "".join(first["source"])
    code = _code(nb)
    assert 'SMOKE = os.environ.get("PCNN_SMOKE") == "1"' in code[0], f"{path.name}: first code cell must read PCNN_SMOKE"
    assert 'PCNN_REF = "' in "\n".join(code)


def test_class_counts_cell_is_checked():
    nb = _load(ROOT / "notebooks" / "01_data_exploration_and_augmentation.ipynb")
    cells = [c for c in _code(nb) if c.startswith("# NBVAL_CHECK_OUTPUT")]
    assert len(cells) == 1 and "verify" in cells[0]


def test_strip_notebook():
    nb = {"metadata": {"widgets": {"x": 1}, "kernelspec": {}}, "cells": [
        {"cell_type": "code", "execution_count": 3, "metadata": {"execution": {"t": 1}, "tags": ["a"]},
         "outputs": [{"output_type": "execute_result", "execution_count": 3, "metadata": {},
                      "data": {"text/plain": "1", "application/vnd.jupyter.widget-view+json": {}}}],
         "source": "1"}]}
    out = strip_notebook(nb)
    assert out["metadata"] == {"kernelspec": {}}
    cell = out["cells"][0]
    assert cell["execution_count"] == 1 and cell["metadata"] == {"tags": ["a"]}
    assert cell["outputs"][0]["execution_count"] == 1
    assert cell["outputs"][0]["data"] == {"text/plain": "1"}
