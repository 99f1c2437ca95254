"""The notebook runtime: where a numbered notebook (``notebooks/*.ipynb``) runs and what it needs there.

* where: :func:`environment` (Colab, Kaggle, local), :func:`device`, :func:`gpu_report` (the GPU
  named, or how to pick one), :func:`describe_setup`, :func:`setup_plots`, :func:`display_handle`.
* the data and the checkout: :func:`repo_root`, :func:`ensure_data` (``$PCNN_DATA_DIR``, a Kaggle
  input data set, ``<repo>/data``), :func:`show_path` / :func:`scrub_paths` (no machine-local
  paths in outputs), :func:`find_checkpoint`, :func:`get_model`, :func:`tiny_train_config`,
  :func:`find_runs`.
* a run that survives the runtime: :func:`runs_root` / :func:`run_workdir` (Google Drive on Colab,
  ``/kaggle/working`` on Kaggle, ``<repo>/runs`` elsewhere, or ``$PCNN_RUNS_DIR``),
  :func:`run_status`, :func:`clear_run` (the only deletion, asked for by ``FRESH_RUN = True``).
* :class:`ProgressLine` -- a one-line progress display whose final state is what a saved notebook shows.

Training from a notebook (epoch by epoch with a live plot, presets, GPU estimates) is
:mod:`pcnn.notebook.live`; figures live in :mod:`pcnn.viz.images`, sample-set files in :mod:`pcnn.sample`,
notebook-file stripping in ``scripts/notebook_files.py``.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import torch

from pcnn import __version__, logs
from pcnn import paths
from pcnn.model.checkpoint import load
from pcnn.data.dataset import DataError, verify
from pcnn.data.download import download as download_data
from pcnn.paths import DATA_ENV_VAR
from pcnn.paths import preset_path
from pcnn.model.precision import cuda_compile_problem, cuda_precision, resolve_device
from pcnn.train import TrainConfig, read_metrics, train
from pcnn.train.workdir import RUN_FILES, WorkdirLock

# This module is the notebooks' runtime (only notebooks and the notebook faces import it): from
# the first `from pcnn import notebook` on, the library's log lines (a download's progress and
# checksum, training's precision and fast path) show on stdout, as plain lines (a notebook
# paints stderr as an error box).
logs.show("stdout")
log = logging.getLogger(__name__)

#: Environment variable that turns on smoke mode (tiny sizes, used by CI); notebooks read it.
SMOKE_VAR = "PCNN_SMOKE"
#: Environment variable naming the folder that holds notebook runs (overrides the default below).
RUNS_ENV_VAR = "PCNN_RUNS_DIR"
#: Kaggle's persistent output folder (its input mount: :data:`pcnn.paths.KAGGLE_INPUT`).
KAGGLE_WORKING = Path("/kaggle/working")
#: Where Colab mounts Google Drive, and the folder of runs on it.
DRIVE_MOUNT = Path("/content/drive")
DRIVE_RUNS = DRIVE_MOUNT / "MyDrive" / "pcnn_runs"


# --------------------------------------------------------------------------- environment

def environment() -> str:
    """``"colab"`` (``google.colab`` imported), ``"kaggle"`` (``KAGGLE_KERNEL_RUN_TYPE`` set) or ``"local"``."""
    if "google.colab" in sys.modules:
        return "colab"
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE"):
        return "kaggle"
    return "local"


def device() -> torch.device:
    """CUDA when there is a GPU, else CPU (:func:`pcnn.model.precision.resolve_device`)."""
    return resolve_device("auto")


def gpu_report(env: Optional[str] = None, dev: Optional[torch.device] = None) -> str:
    """One line: the GPU this runtime has (name, memory, bf16 or not) or, without one, how to
    pick a GPU runtime on Colab / Kaggle."""
    env = env or environment()
    dev = dev or device()
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        precision, _ = cuda_precision(dev)
        problem = cuda_compile_problem(dev)
        compiled = (f"no compiling ({problem})" if problem else
                    "the training loss compiled once per run when the run is long enough (compile=auto)")
        return (f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}; "
                f"training runs in {'bf16' if precision == 'bf16' else 'fp16 with a gradient scaler'} (amp=auto), "
                f"{compiled}")
    how = {"colab": "Runtime > Change runtime type > a GPU (T4 on the free tier), then run all again",
           "kaggle": "Settings > Accelerator > GPU, then run all again"}.get(env, "run it on a machine with CUDA")
    return f"no GPU: training runs on the CPU, minutes per epoch even for the small presets; for a GPU: {how}"


def repo_root(start=None) -> Path:
    """The project checkout (:func:`pcnn.paths.repo_root`), else the current folder."""
    return paths.repo_root(start) or Path(start or Path.cwd()).resolve()


def ensure_data(root=None, download: Optional[bool] = None) -> Path:
    """The data folder (:func:`pcnn.paths.resolve_data_dir`), fetched with :func:`pcnn.data.download.download` when
    missing.

    ``download=None`` downloads only when the data is absent; the folder is also
    exported as ``$PCNN_DATA_DIR`` so later :mod:`pcnn` calls find it.
    """
    root = Path(root) if root is not None else paths.resolve_data_dir()
    try:
        complete = not any(r["missing"] for r in verify(root).values())
    except DataError:
        complete = False
    if not complete and download is not False:
        download_data(root)
    os.environ[DATA_ENV_VAR] = str(root)
    return root


def show_path(path, root=None) -> str:
    """``path`` as a notebook may print it: relative to the checkout (``root``, default
    :func:`repo_root`) when inside it, ``$PCNN_DATA_DIR`` / ``$PCNN_RUNS_DIR`` when it is (inside)
    that folder, ``<tmp>/...`` inside the temporary folder, else only its last two parts."""
    import tempfile
    p = Path(path).expanduser().resolve()
    root = Path(root or repo_root()).resolve()
    for var in (DATA_ENV_VAR, RUNS_ENV_VAR):
        env = os.environ.get(var)
        if env and (p == Path(env).expanduser().resolve() or Path(env).expanduser().resolve() in p.parents):
            rest = p.relative_to(Path(env).expanduser().resolve())
            return f"${var}" + ("" if str(rest) == "." else f"/{rest}")
    if p == root or root in p.parents:
        return str(p.relative_to(root)) or "."
    for base, name in ((DRIVE_RUNS, "<Drive>/pcnn_runs"), (KAGGLE_WORKING, "<kaggle working>")):
        if p == base or base in p.parents:
            return name + ("" if p == base else f"/{p.relative_to(base)}")
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
    import matplotlib.pyplot as plt
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
        self.handle = display_handle({"text/plain": self.text}, raw=True)

    def __call__(self, done: int, total: int) -> None:
        import time
        now = time.perf_counter()
        unit = f" {self.unit}" if self.unit else ""
        self.text = f"{self.desc}: {done} / {total}{unit} in {now - self.t0:.1f} s"
        if self.handle is not None and (done >= total or now - self._last >= self.every):
            self._last = now
            self.handle.update({"text/plain": self.text}, raw=True)


def display_handle(obj, **kw):
    """An IPython display handle showing ``obj``, or None outside IPython."""
    try:
        from IPython import get_ipython
        if get_ipython() is None:
            return None
        from IPython.display import display
        return display(obj, display_id=True, **kw)
    except ImportError:  # pragma: no cover - IPython ships with jupyter
        return None


# --------------------------------------------------------------------------- checkpoints and presets

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
    logger = logging.getLogger("pcnn")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the trainer's precision / fast-path lines
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stderr(io.StringIO()):
                yield
    finally:
        logger.setLevel(level)


def find_runs(*roots) -> list:
    """Folders under ``roots`` (recursively) that hold a non-empty ``metrics.jsonl``, sorted."""
    out = set()
    for r in roots:
        r = Path(r)
        if r.is_dir():
            out.update(p.parent for p in r.rglob("metrics.jsonl") if p.stat().st_size > 0)
    return sorted(out)


def completed_epochs(workdir) -> int:
    """Whole epochs a run in ``workdir`` has finished (its last non-partial metrics row; 0 if none)."""
    return max((int(r["epoch"]) for r in read_metrics(workdir) if not r.get("partial")), default=0)


# --------------------------------------------------------------------------- runs that outlive the runtime

def mount_drive(mount=DRIVE_MOUNT) -> Optional[Path]:
    """On Colab, mount Google Drive (Colab asks for permission once) and return ``MyDrive``;
    None when not on Colab or when the mount is refused or fails."""
    if environment() != "colab":
        return None
    mount = Path(mount)
    if not (mount / "MyDrive").is_dir():
        try:
            from google.colab import drive  # only on Colab
            drive.mount(str(mount))
        except Exception as e:  # a refused permission, a timeout: the run stays on the runtime's disk
            log.info(f"note: Google Drive not mounted ({type(e).__name__}: {e})")
            return None
    return mount / "MyDrive" if (mount / "MyDrive").is_dir() else None


def runs_root(env: Optional[str] = None, drive: bool = True) -> tuple:
    """``(folder for runs, one-line note)``: ``$PCNN_RUNS_DIR`` if set; on Colab Google Drive's
    ``MyDrive/pcnn_runs`` (``drive=True``: mounted here) so a recycled runtime keeps the run;
    on Kaggle ``/kaggle/working/pcnn_runs``; else ``<repo>/runs``."""
    env = env or environment()
    if os.environ.get(RUNS_ENV_VAR):
        return Path(os.environ[RUNS_ENV_VAR]).expanduser(), f"runs in ${RUNS_ENV_VAR}"
    if env == "colab":
        mydrive = mount_drive() if drive else None
        if mydrive is not None:
            return mydrive / "pcnn_runs", "runs on Google Drive: a recycled runtime keeps them, run all to resume"
        return repo_root() / "runs", ("runs on the runtime's disk: a recycled runtime loses them "
                                      "(mount Google Drive to keep them)")
    if env == "kaggle":
        return KAGGLE_WORKING / "pcnn_runs", ("runs in Kaggle's working folder: kept in a saved version's output; "
                                              "a new session starts empty unless you add that output as input")
    return repo_root() / "runs", "runs in the checkout's runs/ folder"


def run_workdir(name: str, env: Optional[str] = None, drive: bool = True) -> Path:
    """``<runs root>/<name>`` (:func:`runs_root`), created; prints where it is and why there."""
    root, note = runs_root(env, drive)
    workdir = root / name
    workdir.mkdir(parents=True, exist_ok=True)
    log.info(f"workdir {show_path(workdir)}: {note}")
    return workdir


def run_status(workdir) -> str:
    """One line: a new run, or how far the run in ``workdir`` got and that training resumes it."""
    done = completed_epochs(workdir)
    last = Path(workdir) / "last.pt"
    if not last.is_file():
        return f"{show_path(workdir)}: no run yet, training starts a new one"
    return (f"{show_path(workdir)}: a run with {done} whole epoch(s) and a last.pt: training resumes it "
            "(FRESH_RUN = True deletes it and starts again)")


def clear_run(workdir) -> list:
    """Delete the run in ``workdir`` (checkpoints, exports, metrics, config, ``samples/``) while
    holding its lock, so a run training there is never touched; returns the names removed."""
    import shutil
    workdir = Path(workdir)
    removed = []
    with WorkdirLock(workdir):
        for n in RUN_FILES:
            if (workdir / n).exists():
                (workdir / n).unlink()
                removed.append(n)
        if (workdir / "samples").is_dir():
            shutil.rmtree(workdir / "samples")
            removed.append("samples/")
        if (workdir / "compile_cache").is_dir():  # kernels compiled for this run's model (pcnn.train.accel)
            shutil.rmtree(workdir / "compile_cache")
            removed.append("compile_cache/")
    log.info(f"FRESH_RUN: removed {', '.join(removed) or 'nothing'} from {show_path(workdir)}")
    return removed
