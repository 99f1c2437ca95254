"""Where pcnn finds things: the checkout it runs from, the data folder, the shipped
checkpoint and the training presets. One home each, so the CLI, the notebooks, the
scripts and the tests agree.

From a git checkout (or an editable install) everything is under the repository root;
from a wheel, the presets are package data (``pcnn/configs``) and the data folder is
``$PCNN_DATA_DIR`` or ``./data``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

#: Environment variable naming the CPEN455 data folder.
DATA_ENV_VAR = "PCNN_DATA_DIR"
#: Where Kaggle mounts the data sets added to a notebook.
KAGGLE_INPUT = Path("/kaggle/input")
#: The checkpoint that ships (checkpoints/<this>); changed only by a ship decision (checkpoints/README.md).
SHIPPED_CHECKPOINT = "pcnn_cpu_film40_disc.safetensors"
#: Its model card (``python -m pcnn evaluate``), under the checkout's results/shipped/; changes with it.
SHIPPED_CARD = "card_film40_disc"

_PACKAGE = Path(__file__).resolve().parent


def _is_checkout(p: Path) -> bool:
    return (p / "pyproject.toml").is_file() and (p / "pcnn").is_dir()


def repo_root(start=None) -> Optional[Path]:
    """The pcnn checkout: the one this package was imported from (an editable install or
    ``sys.path``), else the first folder holding ``pyproject.toml`` and ``pcnn/`` at or above
    ``start`` (default: the current folder; e.g. a notebook that cloned the repository, pip
    installed it and changed into it), else None."""
    if _is_checkout(_PACKAGE.parent):
        return _PACKAGE.parent
    here = Path(start or Path.cwd()).resolve()
    return next((q for q in (here, *here.parents) if _is_checkout(q)), None)


def resolve_data_dir(data_dir=None) -> Path:
    """The data folder, by the one rule every caller (CLI, notebooks, scripts, tests) uses:
    ``data_dir`` if given, else ``$PCNN_DATA_DIR``, else a CPEN455 data set added to a Kaggle
    notebook (:func:`find_kaggle_data`), else ``<checkout>/data`` when running from a
    checkout, else ``./data``."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser()
    kaggle = find_kaggle_data()
    if kaggle is not None:
        return kaggle
    root = repo_root()
    return root / "data" if root is not None else Path("data")


def find_kaggle_data(input_root=None) -> Optional[Path]:
    """A folder under Kaggle's input mount (``/kaggle/input``, up to 3 levels down) holding
    ``train.csv``, ``validation.csv`` and ``test.csv``, or None (also off Kaggle)."""
    root = Path(input_root) if input_root is not None else KAGGLE_INPUT
    if not root.is_dir():
        return None
    for depth in range(1, 4):
        for csv in sorted(root.glob("/".join(["*"] * (depth - 1) + ["train.csv"]))):
            if all((csv.parent / f"{s}.csv").is_file() for s in ("validation", "test")):
                return csv.parent
    return None


def default_checkpoint() -> Optional[Path]:
    """The shipped checkpoint (:data:`SHIPPED_CHECKPOINT` in ``<checkout>/checkpoints``), or None
    when it is not here (a wheel, or a checkout without it)."""
    root = repo_root()
    path = root / "checkpoints" / SHIPPED_CHECKPOINT if root is not None else None
    return path if path is not None and path.is_file() else None


def shipped_card_dir() -> Optional[Path]:
    """``<checkout>/results/shipped/<SHIPPED_CARD>``, the shipped checkpoint's card folder, or None
    when it is not here (a wheel, or a checkout without it)."""
    root = repo_root()
    path = root / "results" / "shipped" / SHIPPED_CARD if root is not None else None
    return path if path is not None and (path / "card.json").is_file() else None


def preset_path(name: str) -> Path:
    """``configs/<name>.json``: package data in a wheel, the checkout's ``configs/`` otherwise.
    ``FileNotFoundError`` lists the presets there are."""
    for folder in (_PACKAGE / "configs", (repo_root() or _PACKAGE) / "configs"):
        path = folder / f"{name.removesuffix('.json')}.json"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no preset {name!r}; the presets are {preset_names()}")


def preset_names() -> list:
    """Names of the shipped training presets (``configs/*.json`` without the suffix)."""
    names = set()
    for folder in (_PACKAGE / "configs", (repo_root() or _PACKAGE) / "configs"):
        names.update(p.stem for p in folder.glob("*.json"))
    return sorted(names)


def load_preset(name: str) -> dict:
    """The preset ``name`` as a TrainConfig dict (e.g. ``load_preset("smoke")``, the tiny model)."""
    return json.loads(preset_path(name).read_text())
