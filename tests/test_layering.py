"""The import layering of the package, read from the source (docs/design.md, "How the code is laid out").

pcnn is a stack of floors; a module may import its own subpackage and any floor below its own,
never a floor above (so there are no cycles between subpackages):

====  =========================================  ==============================================
floor  members                                    what
====  =========================================  ==============================================
0      ``logs``, ``paths``, ``text``              foundations: logging, where things are, tables
1      ``model``, ``viz.grids``                   the paper, and image tiling (PIL only)
2      ``sampling``, ``data``                     drawing images; the data set
3      ``eval`` (but ``eval.card``)               metrics: classification, FID, quality, generation
4      ``train``                                  the training loop (its validation uses eval)
5      ``viz``                                    figures (training curves read train's metrics)
6      ``eval.card``, ``course``                  reports over a trained checkpoint; the course hook
7      ``notebook``, ``cli``, ``__init__``,        the faces
       ``__main__``
====  =========================================  ==============================================

Also: nothing imports the CLI but ``__main__``; nothing in pcnn imports ``studies`` (research
drivers live outside the library); imports of pcnn modules sit at the top of a file unless
the line or the one above it says why (a comment), e.g. an optional heavy dependency.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pcnn"

FLOORS = {
    "logs": 0, "paths": 0, "text": 0,
    "model": 1, "viz.grids": 1,
    "sampling": 2, "data": 2,
    "eval": 3,
    "train": 4,
    "viz": 5,
    "eval.card": 6, "course": 6,
    "notebook": 7, "cli": 7, "__init__": 7, "__main__": 7,
}
SUBPACKAGES = {"model", "sampling", "data", "train", "eval", "viz", "notebook", "cli", "course"}


def modules():
    """{dotted name under pcnn: path}, e.g. 'train.loop', 'model.__init__'."""
    return {".".join(p.relative_to(PKG).with_suffix("").parts): p for p in sorted(PKG.rglob("*.py"))}


MODULES = modules()


def floor_of(name: str) -> int:
    """The floor of a dotted module name under pcnn (the longest prefix listed in FLOORS)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        key = ".".join(parts[:k])
        if key in FLOORS:
            return FLOORS[key]
    raise KeyError(name)


def resolve(name: str, node: ast.ImportFrom) -> list:
    """Dotted names under pcnn (or 'studies...') that an import statement of module ``name`` reads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] in ("pcnn", "studies")]
    if node.level:
        pkg = name.split(".")[:-1]  # the package the module is in ('model.__init__' -> ['model'])
        base = pkg[:len(pkg) - (node.level - 1)]
        mod = ".".join(["pcnn", *base, *([node.module] if node.module else [])])
    else:
        mod = node.module or ""
    if not mod.startswith(("pcnn", "studies")):
        return []
    if node.module is None or mod == "pcnn":  # from . import x / from pcnn import x: maybe submodules
        return [f"{mod}.{a.name}" if f"{mod}.{a.name}".split(".", 1)[-1] in MODULES or
                (PKG / Path(*f"{mod}.{a.name}".split(".")[1:])).is_dir() else mod for a in node.names]
    return [mod]


def pcnn_imports(name: str, path: Path):
    """(imported dotted name, line, nested?, commented?) for every import of a pcnn/studies module."""
    src = path.read_text()
    lines = src.splitlines()
    tree = ast.parse(src)
    top_nodes = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for target in resolve(name, node):
            near = " ".join(lines[max(0, node.lineno - 2):node.lineno])
            found.append((target, node.lineno, id(node) not in top_nodes, "#" in near))
    return found


def test_every_module_has_a_floor():
    for name in MODULES:
        floor_of(name)  # raises KeyError for a module no rule covers


def test_every_subpackage_has_a_map():
    """Each subpackage's __init__ says what its modules are (a docstring naming each one)."""
    for sub in SUBPACKAGES:
        init = PKG / sub / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        for p in sorted((PKG / sub).glob("*.py")):
            if p.stem != "__init__":
                assert f".{p.stem}`" in doc, f"pcnn/{sub}/__init__.py does not mention {p.stem}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_layering(name):
    mine = floor_of(name)
    sub = name.split(".")[0]
    for target, line, nested, commented in pcnn_imports(name, MODULES[name]):
        where = f"pcnn/{name.replace('.', '/')}.py:{line} imports {target}"
        assert not target.startswith("studies"), f"{where}: the library never imports the research drivers"
        rel = target.split(".", 1)[1] if "." in target else "__init__"
        if rel.split(".")[0] == "cli":
            assert name == "__main__" or sub == "cli", f"{where}: nothing imports the CLI"
        if rel.split(".")[0] != sub:  # inside one subpackage anything goes
            theirs = floor_of(rel)
            assert theirs <= mine, f"{where}: floor {mine} imports floor {theirs} (upward)"
        if nested:
            assert commented, f"{where} inside a function without a comment saying why"


def test_the_checker_sees_violations(tmp_path):
    """The parser is not blind: relative, nested, uncommented and upward imports are found."""
    p = tmp_path / "m.py"
    p.write_text("from .loop import x\n\ndef f():\n    from ..cli.main import main\n    import pcnn.viz.training\n"
                 "from pcnn import notebook\n")
    found = pcnn_imports("train.m", p)
    assert ("pcnn.train.loop", 1, False, False) in found
    assert ("pcnn.cli.main", 4, True, False) in found and ("pcnn.viz.training", 5, True, False) in found
    assert ("pcnn.notebook", 6, False, False) in found
    assert floor_of("viz.training") > floor_of("train.loop") > floor_of("eval.fid")
    assert floor_of("viz.grids") < floor_of("sampling.sets")
