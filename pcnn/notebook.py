"""The notebook runtime: where a numbered notebook (``notebooks/*.ipynb``) runs and what it needs there.

* where: :func:`environment` (Colab, Kaggle, local), :func:`device`, :func:`gpu_report` (the GPU
  named, or how to pick one), :func:`describe_setup`, :func:`setup_plots`.
* the data and the checkout: :func:`repo_root`, :func:`ensure_data` (``$PCNN_DATA_DIR``, a Kaggle
  input data set, ``<repo>/data``), :func:`show_path` / :func:`scrub_paths` (no machine-local
  paths in outputs), :func:`find_checkpoint`, :func:`get_model`, :func:`tiny_train_config`,
  :func:`find_runs`.
* a run that survives the runtime: :func:`runs_root` / :func:`run_workdir` (Google Drive on Colab,
  ``/kaggle/working`` on Kaggle, ``<repo>/runs`` elsewhere, or ``$PCNN_RUNS_DIR``),
  :func:`run_status`, :func:`clear_run` (the only deletion, asked for by ``FRESH_RUN = True``),
  :func:`train_live` (epoch by epoch with a live plot and samples every N epochs; resumes).
* :class:`ProgressLine` -- a one-line progress display whose final state is what a saved notebook shows.

Figures live in :mod:`pcnn.plots`, sample-set files in :mod:`pcnn.sample`, notebook-file
stripping in ``scripts/notebook_files.py``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import torch

from . import __version__
from . import paths
from .checkpoint import load, read_metadata
from .data import DataError, verify
from .download import download as download_data
from .paths import DATA_ENV_VAR as ENV_VAR
from .paths import preset_path
from .plots import LiveLossPlot, show_grid
from .precision import resolve_device
from .sample import same_noise_grid, save_png
from .train import TrainConfig, read_metrics, train
from .workdir import RUN_FILES, WorkdirLock, break_idle_lock

#: Environment variable that turns on smoke mode (tiny sizes, used by CI); notebooks read it.
SMOKE_VAR = "PCNN_SMOKE"
#: Environment variable naming the folder that holds notebook runs (overrides the default below).
RUNS_ENV_VAR = "PCNN_RUNS_DIR"
#: Where Kaggle mounts the data sets added to a notebook, and its persistent output folder.
KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")
#: Where Colab mounts Google Drive, and the folder of runs on it.
DRIVE_MOUNT = Path("/content/drive")
DRIVE_RUNS = DRIVE_MOUNT / "MyDrive" / "pcnn_runs"
#: Measured GPU speeds the notebooks quote (labelled as estimates), relative to the checkout.
GPU_FIGURES = Path("results") / "gpu" / "h200_issue26.json"

#: What each preset in ``configs/`` is for (the files' own ``description`` says how it was run).
PRESET_USES = {
    "starter.json": "the course starter's size (1/40/5, class bias in every block): a first run",
    "cpu_film40.json": "1/40/5 with FiLM in every block, likelihood only: phase A of the shipped model",
    "cpu_film40_disc.json": "phase B: fine-tunes the phase-A export with the discriminative term "
                            "(more accuracy, higher bits/dim: not shipped); needs its init_from file",
    "film_large.json": "1/160/5, FiLM + input planes + bottleneck + mixture bias: a GPU run",
    "report_chan.json": "a course report's best model (3/90/5, first_conv): a GPU run",
    "report_shakouri.json": "a course report's model (2/100/5, four fusions): a GPU run",
    "fusion_budget.json": "the 2-epoch budget of the fusion comparison (notebook 05)",
    "scaling_probe.json": "the recipe scripts/scaling_probe.py sizes (results/scaling)",
    "shipped_cpu.json": "stage 1 of the previous shipped model (history, notebook 04)",
    "shipped_cpu_disc.json": "stage 2 of the previous shipped model (history)",
    "shipped_cpu_disc2_w002.json": "a stopped stage-3 try of the previous model (history)",
    "shipped_cpu_disc3.json": "stage 3 of the previous shipped model (history)",
    "shipped_cpu_disc4.json": "stage 4 of the previous shipped model (history)",
    "lever_dropout0.json": "a 4-epoch lever probe, dropout 0 (history)",
    "smoke.json": "a tiny network for tests: seconds, not a model worth keeping",
}


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


def gpu_report(env: Optional[str] = None, dev: Optional[torch.device] = None) -> str:
    """One line: the GPU this runtime has (name, memory, bf16 or not) or, without one, how to
    pick a GPU runtime on Colab / Kaggle."""
    env = env or environment()
    dev = dev or device()
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        bf16 = torch.cuda.is_bf16_supported()
        return (f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}; "
                f"training runs in {'bf16' if bf16 else 'fp16 with a gradient scaler'} (amp=auto)")
    how = {"colab": "Runtime > Change runtime type > a GPU (T4 on the free tier), then run all again",
           "kaggle": "Settings > Accelerator > GPU, then run all again"}.get(env, "run it on a machine with CUDA")
    return f"no GPU: training runs on the CPU, minutes per epoch even for the small presets; for a GPU: {how}"


def gpu_figures(root=None) -> Optional[dict]:
    """The measured GPU speeds in ``results/gpu/h200_issue26.json`` (None outside a checkout)."""
    path = Path(root or repo_root()) / GPU_FIGURES
    return json.loads(path.read_text()) if path.is_file() else None


def gpu_epoch_estimate(model_config, n_train: int, figures: Optional[dict] = None) -> Optional[str]:
    """An estimate of the training seconds per epoch on the GPU of ``figures`` (default
    :func:`gpu_figures`) for a model like ``model_config`` and ``n_train`` images: the measured
    images/s of the nearest measured network (by ``nr_filters``; the slowest figure measured for
    it), labelled as an estimate."""
    figures = figures if figures is not None else gpu_figures()
    if not figures:
        return None
    rows = sorted(figures["measured"], key=lambda r: (abs(r["nr_filters"] - model_config.nr_filters), r["images_per_s"]))
    r = rows[0]
    secs = n_train / r["images_per_s"]
    return (f"estimate: about {secs:.0f} s of training per epoch of {n_train} images on one {figures['gpu']} "
            f"({r['images_per_s']:,} img/s measured for {r['what']}, {figures['source']}); validation adds to it, "
            f"a free T4 is slower (not measured here), and the trainer's GPU fast path is faster")


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
    :func:`repo_root`) when inside it, ``$PCNN_DATA_DIR`` / ``$PCNN_RUNS_DIR`` when it is (inside)
    that folder, ``<tmp>/...`` inside the temporary folder, else only its last two parts."""
    import tempfile
    p = Path(path).expanduser().resolve()
    root = Path(root or repo_root()).resolve()
    for var in (ENV_VAR, RUNS_ENV_VAR):
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
        self.handle = _display({"text/plain": self.text}, raw=True)

    def __call__(self, done: int, total: int) -> None:
        import time
        now = time.perf_counter()
        unit = f" {self.unit}" if self.unit else ""
        self.text = f"{self.desc}: {done} / {total}{unit} in {now - self.t0:.1f} s"
        if self.handle is not None and (done >= total or now - self._last >= self.every):
            self._last = now
            self.handle.update({"text/plain": self.text}, raw=True)


def _display(obj, **kw):
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


def preset_lines(names=None) -> list:
    """One line per preset (default: every ``configs/*.json``): file name, network
    (nr_resnet/nr_filters/K, fusion), epochs, and what it is for (:data:`PRESET_USES`, else its
    description); the preset whose description matches the shipped checkpoint's is marked."""
    shipped = None
    ck = find_checkpoint()
    if ck is not None:
        shipped = (read_metadata(ck).get("train_config") or {}).get("description")
    out = []
    for name in names or [f"{n}.json" for n in paths.preset_names()]:
        d = json.loads(config_path(name).read_text())
        m = d.get("model", {})
        fusion = m.get("fusion", "")
        fusion = "+".join(fusion) if isinstance(fusion, list) else fusion
        net = f"{m.get('nr_resnet', '?')}/{m.get('nr_filters', '?')}/{m.get('nr_logistic_mix', '?')} {fusion}"
        use = PRESET_USES.get(name) or d.get("description", "").split(". ")[0]
        mark = "  <- the shipped model's recipe" if shipped and d.get("description") == shipped else ""
        out.append(f"{name:<28} {net:<40} {d.get('epochs', '?'):>4} epochs  {use}{mark}")
    return out


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
            print(f"note: Google Drive not mounted ({type(e).__name__}: {e})")
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
    print(f"workdir {show_path(workdir)}: {note}")
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
    print(f"FRESH_RUN: removed {', '.join(removed) or 'nothing'} from {show_path(workdir)}")
    return removed


class _PrecisionOnce(io.TextIOBase):
    """A stderr stand-in that sends the trainer's ``precision: ...`` line to stdout once (not as a
    red stderr box on every epoch) and passes everything else through."""

    def __init__(self, err, seen: set):
        self.err, self.seen = err, seen

    def write(self, s):
        if s.startswith("precision: "):
            if s not in self.seen:
                self.seen.add(s)
                sys.stdout.write(s)
            return len(s)
        return self.err.write(s)

    def flush(self):
        self.err.flush()


def train_live(config, workdir, until: int, train_data=None, val_data=None, plot: Optional[LiveLossPlot] = None,
               progress: Optional[bool] = None, samples_every: int = 0, samples_per_class: int = 4,
               idle_minutes: Optional[float] = None) -> list:
    """Train the run in ``workdir`` until it has ``until`` whole epochs, one :func:`pcnn.train.train`
    call per epoch (``resume=True`` once a ``last.pt`` exists), redrawing ``plot`` from
    ``metrics.jsonl`` after each. Returns the full history; a run already there is continued
    (nothing is trained when it has ``until`` epochs), never replaced.

    Each call continues exactly from ``workdir/last.pt``; only ``epochs`` changes between calls,
    so the run equals one uninterrupted run, also across a restarted kernel or a new runtime.
    ``samples_every`` > 0: after every such epoch, a same-noise grid of ``samples_per_class`` per
    class from the export is saved as ``samples/epoch_<e>.png`` and shown. A lock left by another
    host (a recycled runtime) is taken over when the run's files have been idle ``idle_minutes``
    (default 3 x ``checkpoint_minutes``; :func:`pcnn.workdir.break_idle_lock`). An interrupted
    kernel stops the trainer after its batch (it evaluates, exports and saves ``last.pt``); this
    then raises ``KeyboardInterrupt``, so Run all stops there as an interrupt should.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    workdir = Path(workdir)
    progress = show_progress() if progress is None else progress
    note = break_idle_lock(workdir, idle_minutes if idle_minutes is not None else 3 * cfg.checkpoint_minutes)
    if note:
        print(note)
    done = completed_epochs(workdir)
    if done >= until:
        print(f"{show_path(workdir)} already has {done} epoch(s) (target {until}): nothing to train")
    elif done:
        print(f"resuming {show_path(workdir)} after epoch {done}")
    seen: set = set()
    sample_handle = None
    for e in range(done + 1, until + 1):
        with warnings.catch_warnings(), contextlib.redirect_stderr(_PrecisionOnce(sys.stderr, seen)):
            warnings.filterwarnings("ignore", message=r"resuming with changed settings \['epochs'\]$")
            rows = train(dataclasses.replace(cfg, epochs=e), workdir, train_data=train_data, val_data=val_data,
                         resume=(workdir / "last.pt").exists(), progress=progress)
        if plot is not None:
            plot.update(workdir)
        if rows and rows[-1].get("partial"):   # the kernel was interrupted (or a SIGTERM): the trainer saved last.pt
            raise KeyboardInterrupt(f"training stopped inside epoch {e}; last.pt is saved: run this cell again "
                                    "(or Run all) to resume")
        if samples_every and e % samples_every == 0 and (workdir / "model.safetensors").is_file():
            _, grid = save_epoch_samples(workdir, e, samples_per_class)
            import matplotlib.pyplot as plt
            fig = show_grid(grid, title=f"samples after epoch {e} (export, seed 0)", width=None)
            if sample_handle is None:
                sample_handle = _display(fig)
            else:
                sample_handle.update(fig)
            plt.close(fig)
    return read_metrics(workdir)


def save_epoch_samples(workdir, epoch: int, per_class: int = 4, seed: int = 0) -> tuple:
    """A same-noise grid (:func:`pcnn.sample.same_noise_grid`) of the export in ``workdir`` saved as
    ``workdir/samples/epoch_<epoch>.png``; returns ``(path, grid)``."""
    model = load(Path(workdir) / "model.safetensors", device=device())
    grid = same_noise_grid(model, per_class=per_class, seed=seed, scale=2)
    return save_png(grid, Path(workdir) / "samples" / f"epoch_{epoch:03d}.png"), grid


def history_lines(rows, ema: bool = True) -> list:
    """One line per whole epoch: train bits/dim, validation bits/dim and accuracy of the EMA
    weights and of the raw weights (both where they differ), seconds; 4 decimals."""
    out = []
    for r in rows:
        if r.get("partial"):
            continue
        parts = [f"epoch {r['epoch']}", f"train {r['train_bpd']:.4f} bpd" if r.get("train_bpd") is not None else ""]
        if r.get("val_bpd") is not None:
            if ema:
                parts.append(f"validation EMA {r['val_bpd']:.4f} bpd / {r['val_acc']:.4f} acc")
                parts.append(f"raw {r['val_bpd_raw']:.4f} bpd / {r['val_acc_raw']:.4f} acc")
            else:
                parts.append(f"validation {r['val_bpd']:.4f} bpd / {r['val_acc']:.4f} acc")
        if r.get("seconds") is not None:
            parts.append(f"{r['seconds']:.0f} s")
        out.append(", ".join(p for p in parts if p))
    return out


def export_line(meta: dict) -> str:
    """What ``model.safetensors`` holds, from its metadata: which weights (EMA or raw, the lower
    validation bits/dim) and their figures, beside the other weights' bits/dim."""
    other = "raw" if meta.get("weights") == "ema" else "EMA"
    other_bpd = meta.get("val_bpd_raw") if other == "raw" else meta.get("val_bpd_ema")
    tail = f"; {other} weights {other_bpd:.4f} bpd" if other_bpd is not None else ""
    return (f"export: {meta.get('weights')} weights after epoch {meta.get('epoch')} (step {meta.get('step')}): "
            f"validation {meta['val_bpd']:.4f} bpd, accuracy {meta['val_acc']:.4f}{tail}")

