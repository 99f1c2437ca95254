"""The import layering of the package, read from the source (README "How the code is laid out").

* The core (the model and what runs it: config, layers, fusion, model, likelihood,
  classify, sample, fast_sample, guidance, checkpoint, and the helpers they use: paths, precision,
  grids, evidence) imports no module outside the core.
* Nothing imports cli except pcnn/__main__.py; no library module imports the faces
  (notebook, live, widgets, cli).
* Imports of pcnn modules sit at the top of a file, unless the line or the one above it
  says why (a comment), e.g. an optional heavy dependency.
"""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "pcnn"
CORE = {"logs", "config", "layers", "fusion", "model", "likelihood", "classify", "sample", "fast_sample", "guidance",
        "checkpoint", "paths", "precision", "grids", "evidence", "__init__"}
FACES = {"notebook", "live", "widgets", "cli", "__main__"}


def modules():
    """{dotted name under pcnn: path}, e.g. 'train.loop'."""
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG).with_suffix("")
        out[".".join(rel.parts)] = p
    return out


def pcnn_imports(name: str, path: Path):
    """(top-level pcnn module imported, line, nested?, commented?) for every import of a pcnn module."""
    src = path.read_text()
    lines = src.splitlines()
    tree = ast.parse(src)
    top_nodes = set(map(id, tree.body))
    pkg_parts = name.split(".")[:-1] if not name.endswith("__init__") else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = pkg_parts[:len(pkg_parts) - (node.level - 1)] if node.level > 1 else pkg_parts
                mods = [".".join([*base, node.module])] if node.module else [".".join([*base, a.name]) for a in node.names]
            elif node.module and (node.module == "pcnn" or node.module.startswith("pcnn.")):
                rest = node.module.split(".")[1:]
                mods = [".".join(rest)] if rest else [a.name for a in node.names]
            else:
                continue
            targets = [m for m in mods if m]
        elif isinstance(node, ast.Import):
            targets = [a.name.split(".", 1)[1] for a in node.names if a.name.startswith("pcnn.")]
        for t in targets:
            top = t.split(".")[0]
            near = " ".join(lines[max(0, node.lineno - 2):node.lineno])
            found.append((top, node.lineno, id(node) not in top_nodes, "#" in near))
    return found


MODULES = modules()


def test_every_module_is_classified():
    tops = {n.split(".")[0] for n in MODULES}
    assert CORE & tops == CORE - {"__init__"} | ({"__init__"} & tops)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_layering(name):
    top = name.split(".")[0]
    for imported, line, nested, commented in pcnn_imports(name, MODULES[name]):
        where = f"pcnn/{name.replace('.', '/')}.py:{line} imports pcnn.{imported}"
        if imported == top:
            continue  # inside one package (pcnn.train.*)
        if top in CORE and top != "__init__":
            assert imported in CORE, f"{where}: the core imports only the core"
        if imported == "cli":
            assert name == "__main__", f"{where}: nothing imports the CLI"
        if imported in FACES and top not in FACES:
            pytest.fail(f"{where}: a library module imports a face (notebook, live, widgets, cli)")
        if nested:
            assert commented, f"{where} inside a function without a comment saying why"


def test_the_checker_sees_violations(tmp_path):
    """The parser is not blind: a nested, uncommented import and a relative one are found."""
    p = tmp_path / "m.py"
    p.write_text("from .data import x\n\ndef f():\n    from ..cli import main\n    import pcnn.train\n")
    found = pcnn_imports("train.m", p)
    assert ("data", 1, False, False) not in found  # relative to pcnn.train -> pcnn.train.data
    assert ("train", 1, False, False) in found
    assert ("cli", 4, True, False) in found and ("train", 5, True, False) in found
