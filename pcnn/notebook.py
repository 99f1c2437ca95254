"""Small helpers shared by the numbered notebooks (``notebooks/*.ipynb``).

Nothing here trains or scores a model by itself: it finds things (the repository,
the data, the shipped checkpoint), detects where a notebook runs (Colab, Kaggle,
local), and draws figures. The notebooks stay thin: they import :mod:`pcnn` and plot.

* :func:`environment`, :func:`device`, :func:`repo_root`, :func:`ensure_data`
  (``$PCNN_DATA_DIR``, a Kaggle input data set, ``<repo>/data``), :func:`describe_setup`,
  :func:`setup_plots`, :func:`show_path` / :func:`scrub_paths` (no machine-local paths in outputs).
* :func:`find_checkpoint`, :func:`get_model` -- the shipped checkpoint (an error saying what
  to do when it is missing); :func:`tiny_train_config` -- ``configs/smoke.json``'s tiny model.
* :class:`ProgressLine` -- a one-line progress display whose final state is what a saved
  notebook shows (no frozen ``0%`` bars); :func:`write_predictions` -- the test CSV.
* plotting: :func:`show_images`, :func:`plot_confusion`, :func:`plot_curves`,
  :class:`LiveLossPlot` / :func:`train_live` (a loss plot that redraws after each epoch).
* :func:`strip_notebook` / :func:`strip_file` -- remove execution counts and volatile metadata.

It runs past 400 lines because it gathers the small helpers of all seven notebooks in one
face; figures with logic of their own live in :mod:`pcnn.plots`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import __version__
from . import paths
from .checkpoint import load
from .classify import write_predictions  # noqa: F401  (nb.write_predictions in the notebooks)
from .config import CPEN455_CLASSES
from .data import DataError, verify
from .download import download as download_data
from .paths import DATA_ENV_VAR as ENV_VAR
from .paths import preset_path
from .precision import resolve_device
from .sample import grid_path_for, write_sample_set
from .train import TrainConfig, read_metrics, train  # noqa: F401  (read_metrics: nb.read_metrics)

#: Environment variable that turns on smoke mode (tiny sizes, used by CI); notebooks read it.
SMOKE_VAR = "PCNN_SMOKE"
#: Where Kaggle mounts the data sets added to a notebook.
KAGGLE_INPUT = Path("/kaggle/input")


# --------------------------------------------------------------------------- environment

def environment() -> str:
    """``"colab"`` (``google.colab`` imported), ``"kaggle"`` (``KAGGLE_KERNEL_RUN_TYPE`` set) or ``"local"``."""
    if "google.colab" in sys.modules:
        return "colab"
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE"):
        return "kaggle"
    return "local"


def device() -> torch.device:
    """CUDA when there is a GPU, else CPU (:func:`pcnn.precision.resolve_device`)."""
    return resolve_device("auto")


def repo_root(start=None) -> Path:
    """The project checkout (:func:`pcnn.paths.repo_root`), else the current folder."""
    return paths.repo_root(start) or Path(start or Path.cwd()).resolve()


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


def data_dir() -> Path:
    """The data folder: ``$PCNN_DATA_DIR`` if set, else a Kaggle input data set
    (:func:`find_kaggle_data`), else ``<repo>/data``."""
    if os.environ.get(ENV_VAR):
        return paths.resolve_data_dir()
    return find_kaggle_data() or repo_root() / "data"


def ensure_data(root=None, download: Optional[bool] = None) -> Path:
    """The data folder (see :func:`data_dir`), fetched with :func:`pcnn.download.download` when missing.

    ``download=None`` downloads only when the data is absent; the folder is also
    exported as ``$PCNN_DATA_DIR`` so later :mod:`pcnn` calls find it.
    """
    root = Path(root) if root is not None else data_dir()
    try:
        complete = not any(r["missing"] for r in verify(root).values())
    except DataError:
        complete = False
    if not complete and download is not False:
        download_data(root)
    os.environ[ENV_VAR] = str(root)
    return root


def show_path(path, root=None) -> str:
    """``path`` as a notebook may print it: relative to the checkout (``root``, default
    :func:`repo_root`) when inside it, ``$PCNN_DATA_DIR`` when it is that folder, else
    ``<tmp>/...`` inside the temporary folder, else only its last two parts."""
    import tempfile
    p = Path(path).expanduser().resolve()
    root = Path(root or repo_root()).resolve()
    env = os.environ.get(ENV_VAR)
    if env and p == Path(env).expanduser().resolve():
        return f"${ENV_VAR}"
    if p == root or root in p.parents:
        return str(p.relative_to(root)) or "."
    tmp = Path(tempfile.gettempdir()).resolve()
    if tmp in p.parents:
        return "<tmp>/" + str(p.relative_to(tmp))
    return ".../" + "/".join(p.parts[-2:])


def scrub_paths(text: str, *paths) -> str:
    """``text`` with every absolute path in ``paths`` replaced by :func:`show_path` of it
    (longest first), so printed messages hold no machine-local paths."""
    for p in sorted({str(Path(q).expanduser().resolve()) for q in paths}, key=len, reverse=True):
        text = text.replace(p, show_path(p))
    return text


def describe_setup(data, dev, smoke_mode: bool) -> str:
    """One line for a notebook's set-up cell: where it runs, the device, the data, smoke mode,
    the pcnn version and the checkout's commit (``git rev-parse``; ``?`` without git)."""
    import subprocess
    try:
        commit = subprocess.run(["git", "-C", str(repo_root()), "rev-parse", "--short", "HEAD"], text=True,
                                capture_output=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return (f"environment: {environment()}, device: {dev}, data: {show_path(data)}, smoke: {smoke_mode}, "
            f"pcnn {__version__} at {commit}")


def show_progress() -> bool:
    """Whether library progress bars (tqdm) should draw: not when ``TQDM_DISABLE=1``, which
    ``scripts/execute_notebooks.py`` sets so committed outputs hold no frozen ``0%`` bars
    (library calls that pass an explicit ``disable=`` would otherwise override it)."""
    return os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")


def setup_plots(dpi: int = 100, font_size: float = 11.0) -> None:
    """Matplotlib defaults readable in a notebook and on GitHub: ``dpi`` and ``font_size`` points
    for text, slightly smaller tick labels, and tight bounding boxes for inline figures."""
    plt = _plt()
    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi, "font.size": font_size,
                         "axes.titlesize": font_size + 1, "axes.labelsize": font_size,
                         "xtick.labelsize": font_size - 1, "ytick.labelsize": font_size - 1,
                         "legend.fontsize": font_size - 1, "figure.titlesize": font_size + 2})


class ProgressLine:
    """``progress(done, total)`` callback drawn as one text line in a notebook output.

    The line is a display handle updated in place (``update_display_data``), so a
    saved notebook keeps its last state (``"log p(x|c): 519 / 519 in 41.2 s"``) and not a
    frozen ``0%`` bar; outside IPython it only keeps ``text``. ``every`` throttles redraws.
    """

    def __init__(self, desc: str, unit: str = "", every: float = 0.5):
        import time
        self.desc, self.unit, self.every = desc, unit, every
        self.t0 = time.perf_counter()
        self._last = -1e9
        self.text = f"{desc}: starting"
        self.handle = None
        try:
            from IPython import get_ipython
            if get_ipython() is not None:
                from IPython.display import display
                self.handle = display({"text/plain": self.text}, raw=True, display_id=True)
        except ImportError:  # pragma: no cover - IPython ships with jupyter
            pass

    def __call__(self, done: int, total: int) -> None:
        import time
        now = time.perf_counter()
        unit = f" {self.unit}" if self.unit else ""
        self.text = f"{self.desc}: {done} / {total}{unit} in {now - self.t0:.1f} s"
        if self.handle is not None and (done >= total or now - self._last >= self.every):
            self._last = now
            self.handle.update({"text/plain": self.text}, raw=True)


# --------------------------------------------------------------------------- checkpoints

def find_checkpoint() -> Optional[Path]:
    """The shipped checkpoint (:func:`pcnn.paths.default_checkpoint`), or None."""
    return paths.default_checkpoint()


def config_path(name: str) -> Path:
    """``configs/<name>`` (:func:`pcnn.paths.preset_path`: package data or the checkout's); a
    ``FileNotFoundError`` saying what to do when there is none."""
    try:
        return preset_path(name)
    except FileNotFoundError:
        raise FileNotFoundError(f"configs/{name} not found: run the notebook's set-up cell (it clones the "
                                "repository and works inside the checkout) or start it from a checkout") from None


def tiny_train_config(image_size: Optional[int] = None, steps: Optional[int] = 4, fusion: Optional[str] = None,
                      seed: int = 0, **over):
    """The tiny network of ``configs/smoke.json`` (seconds to train) as a ``TrainConfig``.

    ``image_size`` and ``fusion`` replace the model's (None: the file's), ``steps`` its
    ``max_steps`` (None: whole epochs); further keyword arguments replace top-level keys.
    """
    d = json.loads(config_path("smoke.json").read_text())
    d["model"] = dict(d["model"])
    if image_size is not None:
        d["model"]["image_size"] = int(image_size)
    if fusion is not None:
        d["model"]["fusion"] = fusion
    d.update(max_steps=steps, seed=seed, **over)
    return TrainConfig.from_dict(d)


def get_model(workdir=None, dev=None, steps: int = 4, quiet: bool = True, allow_tiny: bool = False):
    """``(model, source)``: the shipped checkpoint (``source`` names it).

    Without one (pcnn used outside a checkout) this raises ``FileNotFoundError`` saying
    what to do, unless ``allow_tiny``: then a tiny model (:func:`tiny_train_config`) is
    trained for ``steps`` batches into ``workdir`` (default ``<repo>/runs/notebook_tiny``),
    reused when it exists, and ``source`` says so.
    """
    dev = dev or device()
    ck = find_checkpoint()
    if ck is not None:
        return load(ck, device=dev), f"shipped checkpoint {ck.name}"
    if not allow_tiny:
        raise FileNotFoundError("no checkpoint in checkpoints/: run the notebook's set-up cell (it clones the "
                                "repository with its shipped checkpoint) or start the notebook from a checkout")
    workdir = Path(workdir) if workdir is not None else repo_root() / "runs" / "notebook_tiny"
    path = workdir / "model.safetensors"
    if not path.is_file():
        with _quiet(quiet):
            train(tiny_train_config(steps=steps), workdir, resume=True, progress=False)
    return load(path, device=dev), f"tiny model trained for {steps} steps in {workdir} (no checkpoint shipped)"


@contextlib.contextmanager
def _quiet(on: bool = True):
    if not on:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stderr(io.StringIO()):
            yield


# --------------------------------------------------------------------------- metrics files

def find_runs(*roots) -> list:
    """Folders under ``roots`` (recursively) that hold a non-empty ``metrics.jsonl``, sorted."""
    out = set()
    for r in roots:
        r = Path(r)
        if r.is_dir():
            out.update(p.parent for p in r.rglob("metrics.jsonl") if p.stat().st_size > 0)
    return sorted(out)


# --------------------------------------------------------------------------- plotting

def _plt():
    import matplotlib.pyplot as plt
    return plt


def to_hwc(img: torch.Tensor):
    """uint8 (3, H, W) tensor -> (H, W, 3) numpy array for imshow."""
    return img.detach().cpu().permute(1, 2, 0).numpy()


def show_images(images: torch.Tensor, nrow: int = 8, titles: Optional[Sequence[str]] = None,
                scale: float = 1.5, suptitle: Optional[str] = None, fontsize: int = 10):
    """A grid of uint8 images (N, 3, H, W), one axis per image with optional titles; returns the figure."""
    plt = _plt()
    n = len(images)
    ncol = max(1, min(nrow, n))
    nrows = max(1, math.ceil(n / ncol))
    fig, axes = plt.subplots(nrows, ncol, figsize=(scale * ncol, scale * nrows + (0.3 if suptitle else 0)),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(to_hwc(images[k]), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[k], fontsize=fontsize)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_grid(image: torch.Tensor, title: Optional[str] = None, width: Optional[float] = 8.0):
    """One uint8 (3, H, W) image (e.g. :func:`pcnn.sample.make_grid`) as a figure ``width``
    inches wide; ``width=None``: at its own pixel size (one image pixel per figure pixel)."""
    plt = _plt()
    h, w = image.shape[1:]
    title_in = 0.3 if title else 0.0
    if width is None:
        # Axes fill the figure exactly: tight_layout's margins would shrink (resample) the image
        # and cut into the row labels drawn at its left edge.
        dpi = plt.rcParams["figure.dpi"]
        fig = plt.figure(figsize=(w / dpi, h / dpi + title_in))
        ax = fig.add_axes((0.0, 0.0, 1.0, (h / dpi) / (h / dpi + title_in)))
    else:
        fig, ax = plt.subplots(figsize=(width, width * h / w + title_in))
    ax.imshow(to_hwc(image), interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    if width is not None:
        fig.tight_layout()
    return fig


def plot_confusion(cm, class_names: Sequence[str] = CPEN455_CLASSES, normalize: bool = False, ax=None,
                   title: str = "confusion matrix (rows: true class)"):
    """Confusion matrix (rows true, columns predicted) as an annotated heat map; returns the figure."""
    import numpy as np
    plt = _plt()
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 3.8))
    else:
        fig = ax.figure
    im = ax.imshow(shown, cmap="Blues", vmin=0)
    n = len(cm)
    names = list(class_names)[:n]
    ax.set_xticks(range(n), names, rotation=30, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    top = shown.max() if shown.size else 1
    for i in range(n):
        for j in range(n):
            txt = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, txt, ha="center", va="center", color="white" if shown[i, j] > 0.6 * top else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_curves(runs, ax_bpd=None, ax_acc=None):
    """Train/validation bits/dim and validation accuracy against epoch for one or several runs.

    ``runs``: a mapping ``{label: workdir or list of metric rows}`` or a list of workdirs
    (labelled by folder name). Returns the figure.
    """
    plt = _plt()
    if not isinstance(runs, dict):
        runs = {Path(r).name: r for r in runs}
    if ax_bpd is None or ax_acc is None:
        fig, (ax_bpd, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    else:
        fig = ax_bpd.figure
    for k, (label, rows) in enumerate(runs.items()):
        rows = read_metrics(rows) if isinstance(rows, (str, Path)) else list(rows)
        color = f"C{k % 10}"
        tr = [(r["epoch"], r["train_bpd"]) for r in rows if r.get("train_bpd") is not None]
        va = [(r["epoch"], r["val_bpd"]) for r in rows if r.get("val_bpd") is not None]
        acc = [(r["epoch"], r["val_acc"]) for r in rows if r.get("val_acc") is not None]
        if tr:
            ax_bpd.plot(*zip(*tr), "-", color=color, label=f"{label} train")
        if va:
            ax_bpd.plot(*zip(*va), "o--", color=color, label=f"{label} val")
        if acc:
            ax_acc.plot(*zip(*acc), "o-", color=color, label=label)
    ax_bpd.set_xlabel("epoch")
    ax_bpd.set_ylabel("bits / dim")
    ax_bpd.set_title("negative log-likelihood")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("validation accuracy")
    ax_acc.set_title("likelihood classification")
    ax_acc.set_ylim(0, 1)
    from matplotlib.ticker import MaxNLocator
    for ax in (ax_bpd, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs are whole numbers
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    return fig


class LiveLossPlot:
    """A loss plot that redraws in place in a notebook (one ``display`` handle).

    ``update(workdir)`` re-reads ``metrics.jsonl`` and redraws; outside IPython it
    just keeps the latest figure in ``self.fig``.
    """

    def __init__(self, title: str = "training"):
        self.title = title
        self.handle = None
        self.fig = None

    def update(self, workdir):
        plt = _plt()
        if self.fig is not None:
            plt.close(self.fig)
        self.fig = plot_curves({self.title: workdir})
        try:
            from IPython.display import display
            if self.handle is None:
                self.handle = display(self.fig, display_id=True)
            elif self.handle is not None:
                self.handle.update(self.fig)
        except ImportError:  # pragma: no cover - IPython ships with jupyter
            pass
        plt.close(self.fig)
        return self.fig


def train_live(config, workdir, epochs: int, train_data=None, val_data=None, plot: Optional[LiveLossPlot] = None,
               progress: Optional[bool] = None) -> list:
    """Train ``epochs`` more epochs one :func:`pcnn.train.train` call at a time (``resume=True``),
    redrawing ``plot`` from ``metrics.jsonl`` after each one. Returns the full history.

    Each call continues exactly from ``workdir/last.pt``; only ``epochs`` (the target)
    changes between calls, so the run equals one uninterrupted run.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    progress = show_progress() if progress is None else progress
    done = len([r for r in read_metrics(workdir) if not r.get("partial")])
    history = []
    for e in range(done + 1, done + epochs + 1):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="resuming with changed settings")
            history = train(dataclasses.replace(cfg, epochs=e), workdir, train_data=train_data,
                            val_data=val_data, resume=(Path(workdir) / "last.pt").exists(), progress=progress)
        if plot is not None:
            plot.update(workdir)
    return history


# --------------------------------------------------------------------------- notebook files

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


def strip_file(path) -> None:
    """:func:`strip_notebook` on an ``.ipynb`` file, rewritten with nbformat's layout."""
    path = Path(path)
    nb = json.loads(path.read_text())
    strip_notebook(nb)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- sampling for FID

def write_fid_samples(model, out_dir, per_class: int = 25, seed: int = 0, progress: Optional[bool] = None,
                      **kw) -> tuple:
    """:func:`pcnn.sample.write_sample_set` into ``out_dir``; returns ``(paths, grid_path)``.
    ``progress=None``: a bar unless :func:`show_progress` says no."""
    progress = show_progress() if progress is None else progress
    paths = write_sample_set(model, out_dir, per_class=per_class, seed=seed, show_progress=progress, **kw)
    return paths, grid_path_for(out_dir)


def read_sample_set(folder) -> tuple:
    """The images of a sample set (:func:`pcnn.sample.write_sample_set`, files
    ``Class<c>_image_<nn>.png``) as ``(uint8 (N, 3, S, S), labels (N,))``, by class then name."""
    import re
    import numpy as np
    from PIL import Image
    found = []
    for f in Path(folder).glob("Class*_image_*.png"):
        m = re.fullmatch(r"Class(\d+)_image_(\d+)\.png", f.name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), f))
    if not found:
        raise FileNotFoundError(f"no Class<c>_image_<nn>.png files in {folder}")
    found.sort()
    imgs = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for _, _, f in found]
    return torch.stack(imgs), torch.tensor([c for c, _, _ in found])


def copy_subset(files: Sequence, dest, n: Optional[int] = None, seed: int = 0) -> Path:
    """Copy ``n`` of ``files`` (all when None; a seeded random choice otherwise) into ``dest``."""
    import shutil
    files = sorted(Path(f) for f in files)
    if n is not None and n < len(files):
        g = torch.Generator().manual_seed(seed)
        files = [files[i] for i in sorted(torch.randperm(len(files), generator=g)[:n].tolist())]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, dest / f.name)
    return dest
