"""Static checks of the committed notebooks (they are executed by nbval in scripts/test.sh)."""
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from notebook_files import strip_notebook  # noqa: E402  (scripts/ is not a package)
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
    assert stripped == nb, f"{path.name}: run scripts/execute_notebooks.py (or scripts/notebook_files.py)"
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
    assert 'PCNN_REF = os.environ.get("PCNN_REF", "' in "\n".join(code)


def test_class_counts_cell_is_checked():
    nb = _load(ROOT / "notebooks" / "01_data_exploration_and_augmentation.ipynb")
    cells = [c for c in _code(nb) if c.startswith("# NBVAL_CHECK_OUTPUT")]
    assert len(cells) == 1 and "verify" in cells[0]


def test_strip_notebook():
    view = {"application/vnd.jupyter.widget-view+json": {"model_id": "m"}, "text/plain": "1"}
    nb = {"metadata": {"widgets": {"x": 1}, "jupytext": {"formats": "x"}, "kernelspec": {}}, "cells": [
        {"cell_type": "code", "execution_count": 3, "metadata": {"execution": {"t": 1}, "tags": ["a"]},
         "outputs": [{"output_type": "execute_result", "execution_count": 3, "metadata": {}, "data": dict(view)}],
         "source": "1"}]}
    out = strip_notebook(nb)
    assert out["metadata"] == {"widgets": {"x": 1}, "kernelspec": {}}   # widget state kept, jupytext stamp gone
    cell = out["cells"][0]
    assert cell["execution_count"] == 1 and cell["metadata"] == {"tags": ["a"]}
    assert cell["outputs"][0]["execution_count"] == 1
    assert cell["outputs"][0]["data"] == view


# --------------------------------------------------------------------------- notebooks as code

SOURCES = ROOT / "notebooks" / "src"


def test_every_notebook_has_its_script_and_they_agree(notebook):
    """notebooks/src/NN_name.py (jupytext percent) and notebooks/NN_name.ipynb hold the same cells.
    Fix: edit the script, then ``jupytext --sync notebooks/src/*.py``."""
    jupytext = pytest.importorskip("jupytext")
    path, nb = notebook
    script = SOURCES / f"{path.stem}.py"
    assert script.is_file(), f"{script.relative_to(ROOT)} missing"
    want = jupytext.read(script)
    got = [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"]) for c in nb["cells"]]
    assert got == [(c.cell_type, c.source) for c in want.cells], f"{path.name} and {script.name} differ: run jupytext --sync"
    assert sorted(p.stem for p in SOURCES.glob("*.py")) == EXPECTED


def _setup_cell(nb):
    return next(c for c in _code(nb) if c.startswith("# Set-up."))


def test_setup_cell_is_the_same_everywhere_and_pinned():
    cells = {p.stem: _setup_cell(_load(p)) for p in NOTEBOOKS}
    assert len(set(cells.values())) == 1, "the set-up cells differ between notebooks"
    cell = next(iter(cells.values()))
    ref = re.search(r'PCNN_REF = os\.environ\.get\("PCNN_REF", "([^"]+)"\)', cell).group(1)
    # A ref the repository carries: a commit (scripts/set_repo.py writes one) or main, with a warning.
    assert re.fullmatch(r"[0-9a-f]{40}", ref) or (ref == "main" and 'if PCNN_REF == "main":' in cell)
    assert '"--depth", "1", PCNN_REPO, PCNN_REF' in cell and "os.chdir(checkout)" in cell
    assert '"-c", str(keep)' in cell and "torch==" in cell            # the runtime's torch is kept
    assert "Set PCNN_REPO" in cell and "/OWNER/" in cell              # the placeholder stops with a sentence
    assert "Could not fetch PCNN_REF=" in cell and "check=True" not in cell   # a failed fetch: one sentence
    for p in NOTEBOOKS:
        code = _code(_load(p))
        assert code.index(cells[p.stem]) == 1                          # right after the smoke flag


def _run_setup_cell(tmp_path, monkeypatch, ref):
    """The set-up cell's code, run as the Colab path against a local repository without ``ref``."""
    import os
    import subprocess
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    content = tmp_path / "content"
    content.mkdir()
    monkeypatch.chdir(content)
    monkeypatch.setenv("PCNN_SETUP", "remote")
    monkeypatch.setenv("PCNN_REPO", f"file://{repo}")
    monkeypatch.setenv("PCNN_REF", ref)
    cell = _setup_cell(_load(NOTEBOOKS[0]))
    with pytest.raises(SystemExit) as e:
        exec(compile(cell, "setup", "exec"), {"os": os, "sys": sys, "__name__": "__main__"})
    return str(e.value)


def test_setup_cell_stops_with_one_sentence_when_the_ref_is_missing(tmp_path, monkeypatch):
    msg = _run_setup_cell(tmp_path, monkeypatch, "no-such-ref")
    assert msg.startswith("Could not fetch PCNN_REF=no-such-ref from file://") and msg.endswith("Internet is on.")
    assert "\n" not in msg and "Traceback" not in msg


def test_no_notebook_deletes_a_run_by_run_all():
    """Only 02 deletes anything, through nb.clear_run, and only under ``if FRESH_RUN:`` with False as default."""
    for p in NOTEBOOKS:
        text = "\n".join(_code(_load(p)))
        assert "rmtree" not in text and ".unlink(" not in text, f"{p.name} deletes files"
        if p.stem == "02_training":
            assert re.search(r"^FRESH_RUN = False\b", text, re.M)
            assert re.search(r"^if FRESH_RUN:\n    nb\.clear_run\(WORKDIR\)", text, re.M)
            assert text.count("clear_run") == 1
        else:
            assert "clear_run" not in text


LOCAL_PATH = re.compile(r"(/work/|/tmp/|/root/|/home/|/content/|/kaggle/|[A-Z]:\\\\Users)")


def _output_texts(nb):
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text = out.get("text", "")
            yield out, "".join(text) if isinstance(text, list) else text
            for mime, val in (out.get("data") or {}).items():
                if mime.startswith("text/"):
                    yield out, "".join(val) if isinstance(val, list) else val


def test_committed_outputs_hold_no_local_paths_or_frozen_bars(notebook):
    path, nb = notebook
    for out, text in _output_texts(nb):
        assert not LOCAL_PATH.search(text), f"{path.name}: machine-local path in an output: {text[:200]!r}"
        assert not re.search(r"\b0%\|", text), f"{path.name}: a frozen progress bar: {text[:120]!r}"
        assert not (out.get("output_type") == "stream" and out.get("name") == "stderr" and "%|" in text), \
            f"{path.name}: progress bar on stderr"


def test_widgets_are_saved_with_state_and_a_png_fallback():
    nb = _load(ROOT / "notebooks" / "07_interactive_sampling.ipynb")
    state = nb["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    views = [(out["data"], "".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "code"
             for out in c.get("outputs", []) if "application/vnd.jupyter.widget-view+json" in out.get("data", {})]
    assert len(views) >= 3, "07 should show the sampler, the completion widget and the scripted sampler"
    for data, _ in views:
        assert data["application/vnd.jupyter.widget-view+json"]["model_id"] in state, "widget view without saved state"
        assert not "".join(data["text/plain"]).startswith("VBox(")
    scripted = [d for d, src in views if "ws.display()" in src]
    assert scripted and "image/png" in scripted[0], "the scripted sampler should carry its grid as a PNG fallback"


def test_set_repo_points_notebooks_and_links_at_a_fork(tmp_path):
    import importlib.util
    import shutil
    spec = importlib.util.spec_from_file_location("set_repo", ROOT / "scripts" / "set_repo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (tmp_path / "notebooks" / "src").mkdir(parents=True)
    shutil.copy2(NOTEBOOKS[-1], tmp_path / "notebooks" / NOTEBOOKS[-1].name)
    shutil.copy2(SOURCES / f"{NOTEBOOKS[-1].stem}.py", tmp_path / "notebooks" / "src")
    shutil.copy2(ROOT / "README.md", tmp_path / "README.md")
    commit = "0123456789abcdef0123456789abcdef01234567"
    changed = mod.set_repo("https://github.com/alice/pcnn-fork.git", tmp_path, ref=commit)
    assert len(changed) == 3
    nb = json.loads((tmp_path / "notebooks" / NOTEBOOKS[-1].name).read_text())
    cell = _setup_cell(nb)
    assert 'os.environ.get("PCNN_REPO", "https://github.com/alice/pcnn-fork")' in cell
    assert f'os.environ.get("PCNN_REF", "{commit}")' in cell
    assert f'os.environ.get("PCNN_REF", "{commit}")' in (tmp_path / "notebooks" / "src" / f"{NOTEBOOKS[-1].stem}.py").read_text()
    readme = (tmp_path / "README.md").read_text()
    assert "colab.research.google.com/github/alice/pcnn-fork/blob/" in readme and "github/OWNER/" not in readme
    assert mod.set_repo("https://github.com/alice/pcnn-fork", tmp_path, ref=commit) == []     # idempotent
    assert re.fullmatch(r"[0-9a-f]{40}", mod.head_commit(ROOT))                                # default: HEAD
    with pytest.raises(ValueError):
        mod.set_repo("git@github.com:alice/pcnn", tmp_path, ref=commit)
    with pytest.raises(ValueError):
        mod.set_repo("https://github.com/alice/pcnn", tmp_path, ref="a b")
