# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 Training
#
# Pick a preset from `configs/`, train with a progress bar and a loss plot that redraws after every epoch, interrupt and resume the run exactly, and export the checkpoint.
#
# **Committed outputs:** a full (non-smoke) run of the `starter.json` preset (1/40/5) on 1200 of the 3899 training images for 1 + 2 epochs on the project's 2-core CPU machine, shared with two other training jobs (about 100 s of training plus validation per epoch, 13 min for the notebook): a short budget, so the curves show the start of training only (the shipped checkpoint trained for 16 + 6 + 10 + 10 epochs). On a GPU, set `N_TRAIN = None` and raise `EPOCHS_MORE`.
#
# With `PCNN_SMOKE=1` (CI) every size shrinks so the notebook runs in well under a minute on a CPU; no step is skipped.

# %%
import os, sys
SMOKE = os.environ.get("PCNN_SMOKE") == "1"   # CI: shrink every size, skip nothing
PRESET = "smoke.json" if SMOKE else "starter.json"   # any file in configs/
N_TRAIN = 16 if SMOKE else 1200                       # training images (None: the whole split, 3899)
EPOCHS_MORE = 1 if SMOKE else 2                       # epochs after the resume
N_SAMPLES = 1 if SMOKE else 4                         # samples per class from the trained model
OVERRIDES = (["batch_size=4", "max_steps=null", "val_subset=8", "eval_batch_size=64"] if SMOKE
             else ["val_every=1"])

# %%
# Set-up. On Colab or Kaggle (or with PCNN_SETUP=remote) clone the project at a pinned ref, install it
# (keeping the runtime's torch) and work inside the checkout, where configs/, checkpoints/ and results/
# are. In a local checkout this cell does nothing. A fork: put its URL in PCNN_REPO (README "Forks").
import subprocess, tempfile
from pathlib import Path
PCNN_REPO = os.environ.get("PCNN_REPO", "https://github.com/OWNER/pcnn")
PCNN_REF = os.environ.get("PCNN_REF", "v0.1.0")   # pinned: the tag v<pcnn.__version__>, or a commit
REMOTE = ("google.colab" in sys.modules or "KAGGLE_KERNEL_RUN_TYPE" in os.environ
          or os.environ.get("PCNN_SETUP") == "remote")
if REMOTE and not (Path("pyproject.toml").is_file() and Path("pcnn", "__init__.py").is_file()):
    if "/OWNER/" in PCNN_REPO:
        raise SystemExit("Set PCNN_REPO (in this cell or the environment) to your pcnn repository's URL, "
                         "e.g. https://github.com/<you>/pcnn, then run this cell again.")
    checkout = Path("pcnn_repo").resolve()
    if not (checkout / "pyproject.toml").is_file():
        git = lambda *a: subprocess.run(["git", "-C", str(checkout), *a], check=True)  # noqa: E731
        checkout.mkdir(exist_ok=True)
        git("init", "-q")
        git("fetch", "-q", "--depth", "1", PCNN_REPO, PCNN_REF)
        git("checkout", "-q", "FETCH_HEAD")
    from importlib.metadata import PackageNotFoundError, version
    keep = Path(tempfile.mkdtemp(), "keep-torch.txt")   # pip may add packages but must not replace torch
    try:
        keep.write_text(f"torch=={version('torch')}\n")
    except PackageNotFoundError:
        keep.write_text("")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", str(keep), str(checkout)], check=True)
    os.chdir(checkout)

# %%
# %matplotlib inline
# %config InlineBackend.figure_format = "png"
import matplotlib.pyplot as plt
import torch
import pcnn
from pcnn import notebook as nb
nb.setup_plots()            # readable sizes: 100 dpi, 11 pt text
if SMOKE and not torch.cuda.is_available():
    torch.set_num_threads(1)   # tiny tensors: one thread is ~10x faster than several on a busy 2-core CI box
DEVICE = nb.device()
ROOT = nb.repo_root()
DATA = nb.ensure_data()      # $PCNN_DATA_DIR, a Kaggle input data set, or <repo>/data (downloaded when missing)
print(nb.describe_setup(DATA, DEVICE, SMOKE))

# %% [markdown]
# ## Presets

# %%
import json, shutil
from pcnn.train import TrainConfig, apply_overrides
for p in sorted((ROOT / "configs").glob("*.json")):
    print(f"{p.name:<22} {json.loads(p.read_text()).get('description', '')[:110]}")
cfg = TrainConfig.from_dict(apply_overrides(json.loads((ROOT / "configs" / PRESET).read_text()), OVERRIDES))
print("\nmodel:", cfg.model)
print(f"this notebook trains 1 + {EPOCHS_MORE} epochs (the preset's full run: {cfg.epochs}); "
      f"batch {cfg.batch_size}, lr {cfg.lr}, EMA {cfg.ema}")

# %%
from pcnn.data import load_split
train_split = load_split("train", DATA, size=cfg.model.image_size, show_progress=False)
val_split = load_split("validation", DATA, size=cfg.model.image_size, show_progress=False)
if N_TRAIN:
    train_split = train_split.subset(torch.randperm(len(train_split), generator=torch.Generator().manual_seed(0))[:N_TRAIN])
WORKDIR = ROOT / "runs" / "notebook_02"
shutil.rmtree(WORKDIR, ignore_errors=True)   # a fresh run every time the notebook is executed
print(f"{len(train_split)} training images, {len(train_split) // cfg.batch_size} batches per epoch -> {nb.show_path(WORKDIR)}")

# %% [markdown]
# ## Train one epoch
# `nb.train_live` calls `pcnn.train.train` one epoch at a time with `resume=True` and redraws the plot from `metrics.jsonl` after each.

# %%
plot = nb.LiveLossPlot(PRESET)
history = nb.train_live(cfg, WORKDIR, epochs=1, train_data=train_split, val_data=val_split, plot=plot)
print(sorted(p.name for p in WORKDIR.iterdir()))

# %% [markdown]
# ## Interrupt and resume
# The kernel could die here: everything needed to continue exactly (weights, optimizer, EMA, RNG states, data order) is in `last.pt`. A new `train(..., resume=True)` call picks it up; on CPU the result is bitwise what an uninterrupted run gives. From the command line: `python -m pcnn train --workdir runs/x --resume`.

# %%
state = torch.load(WORKDIR / "last.pt", weights_only=True)
print(f"saved state: epoch {state['epoch']}, step {state['step']}")
del state
plot = nb.LiveLossPlot(PRESET)   # a fresh plot in this cell; it reads the whole metrics.jsonl
history = nb.train_live(cfg, WORKDIR, epochs=EPOCHS_MORE, train_data=train_split, val_data=val_split, plot=plot)
for row in history:
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
           if k in ("epoch", "step", "train_bpd", "val_bpd", "val_acc", "seconds")})

# %% [markdown]
# ## Export
# `model.safetensors` in the workdir holds the weights to use (EMA or raw, whichever had the lower validation bits/dim) with the model config inside, so `pcnn.load` needs nothing else. `pcnn.course.export_for_course` writes the file the CPEN455 scripts load.

# %%
model = pcnn.load(WORKDIR / "model.safetensors", device=DEVICE)
meta = pcnn.read_metadata(WORKDIR / "model.safetensors")
print(model.config)
print({k: meta[k] for k in ("weights", "epoch", "step", "val_bpd", "val_acc")})
from pcnn.course import export_for_course, load_course_model
course_file = export_for_course(WORKDIR / "model.safetensors", WORKDIR / "conditional_pixelcnn.pth")
print(course_file.name, course_file.stat().st_size, "bytes; reloads:", load_course_model(course_file).config == model.config)

# %% [markdown]
# ## Samples from the model just trained
# One row per class, each column one noise draw shared by the four classes. After this short a run
# (about 7 bits/dim) the samples are still close to per-pixel noise: compare with the shipped
# checkpoint (3.8 bits/dim) in notebook 07.

# %%
nb.show_grid(pcnn.same_noise_grid(model, per_class=N_SAMPLES, seed=0), width=None)
plt.show()
