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
# The training notebook: pick a preset, train with a live plot and samples every few epochs, stop at any time and resume, export the checkpoint. **Run all never deletes a run**: it continues the run in `RUN_NAME` where it stopped (set `FRESH_RUN = True` to start again). On Colab the run lives on Google Drive (the notebook asks once), so a recycled runtime loses nothing: reconnect, *Run all*, and training resumes; on Kaggle it lives in the working folder.
#
# **Pick a GPU runtime first** (Colab: *Runtime > Change runtime type*; Kaggle: *Settings > Accelerator*). The set-up prints the GPU it found, and the presets cell what an epoch costs on a GPU we measured (an estimate: yours will differ). On a GPU the trainer picks its precision and speed-ups by itself: nothing to set.
#
# **What a free T4 (Colab, Kaggle) or P100 (Kaggle) student should expect:**
# - *Precision*: **fp16 with a gradient scaler**. Neither card computes bf16 natively (bf16 needs sm_80: A100, L4, H100), and emulated bf16 is slow and not compiled, so `amp=auto` does not use it there. The set-up line says which precision your GPU gets.
# - *Compiling*: the training loss is compiled **once per run**, on a T4 only when the run is long enough to repay it (about 3,000 steps, a guess until a GPU measures it: the starter preset's 300 epochs are, a 3-epoch try is not), never on a P100 (older than sm_70, which the compiler needs). The compiled kernels are kept beside the run (`compile_cache/` in the run's folder), so a new runtime compiles from a warm cache. If compiling fails or gives a NaN that eager training does not, the run continues eagerly with one warning.
# - *Time per epoch*: the presets cell prints, per preset, an estimate from the one GPU we measured (an H200: 1,295 img/s for the starter-size step, i.e. about 3 s per epoch of the 3,899 training images there); a T4 is slower, by how much is not measured here.
# - *Resume anywhere*: a run started on a CPU runtime (with its folder on Drive) continues on a GPU runtime and back; only the precision and the optimizer's device options change, and the run says so.
#
# **Committed outputs:** a full (non-smoke) run of the `starter.json` preset (1/40/5) on 1200 of the 3899 training images for 1 + 2 epochs on the project's 2-core CPU machine, shared with another training job: a short budget, so the curves show the start of training only (the shipped model's recipe, `configs/cpu_film40.json`, ran for many more epochs: notebook 04). On a GPU, set `N_TRAIN = None` and raise `EPOCHS`.
#
# With `PCNN_SMOKE=1` (CI) every size shrinks so the notebook runs in well under a minute on a CPU; no step is skipped.

# %%
import os, sys
SMOKE = os.environ.get("PCNN_SMOKE") == "1"   # CI: shrink every size, skip nothing
PRESET = "smoke.json" if SMOKE else "starter.json"   # any file in configs/ (the list below says what each is for)
RUN_NAME = "notebook_02"          # the run's folder: Run all continues it, a new name starts another run
FRESH_RUN = False                 # True: delete the run in RUN_NAME first and start again
N_TRAIN = 16 if SMOKE else 1200   # training images (None: the whole split, 3899)
EPOCHS_FIRST = 1                  # whole epochs after the first training cell
EPOCHS = 2 if SMOKE else 3        # whole epochs after the resume cell (raise it for a real run)
SAMPLES_EVERY = 1                 # show samples of the export every this many epochs (0: never)
N_SAMPLES = 1 if SMOKE else 4     # samples per class in those grids and at the end
WANDB = False                     # True: also log to Weights & Biases (pip install wandb; wandb.login())
TENSORBOARD = False               # True: also log to <workdir>/tensorboard (%load_ext tensorboard; %tensorboard --logdir it)
OVERRIDES = (["batch_size=4", "max_steps=null", "val_subset=8", "eval_batch_size=64"] if SMOKE
             else ["val_every=1"])
if SMOKE:   # CI: a new temporary runs folder each time (unless PCNN_RUNS_DIR names one), so it always trains
    import tempfile
    os.environ.setdefault("PCNN_RUNS_DIR", tempfile.mkdtemp(prefix="pcnn-runs-"))

# %%
# Set-up. On Colab or Kaggle (or with PCNN_SETUP=remote) clone the project at a pinned ref, install it
# (keeping the runtime's torch) and work inside the checkout, where configs/, checkpoints/ and results/
# are. In a local checkout this cell does nothing. A fork: scripts/set_repo.py writes its URL and commit here.
import subprocess, tempfile
from pathlib import Path
PCNN_REPO = os.environ.get("PCNN_REPO", "https://github.com/OWNER/pcnn")
PCNN_REF = os.environ.get("PCNN_REF", "main")   # a commit (scripts/set_repo.py pins one), a tag or a branch
REMOTE = ("google.colab" in sys.modules or "KAGGLE_KERNEL_RUN_TYPE" in os.environ
          or os.environ.get("PCNN_SETUP") == "remote")
if REMOTE and not (Path("pyproject.toml").is_file() and Path("pcnn", "__init__.py").is_file()):
    if "/OWNER/" in PCNN_REPO:
        raise SystemExit("Set PCNN_REPO (in this cell or the environment) to your pcnn repository's URL, "
                         "e.g. https://github.com/<you>/pcnn, then run this cell again.")
    if PCNN_REF == "main":
        print("note: PCNN_REF is the branch main, which moves; scripts/set_repo.py pins a commit.")
    checkout = Path("pcnn_repo").resolve()
    if not (checkout / "pyproject.toml").is_file():
        checkout.mkdir(exist_ok=True)
        for step in (["init", "-q"], ["fetch", "-q", "--depth", "1", PCNN_REPO, PCNN_REF], ["checkout", "-q", "FETCH_HEAD"]):
            got = subprocess.run(["git", "-C", str(checkout), *step], capture_output=True, text=True)
            if got.returncode != 0:
                why = (got.stderr.strip().splitlines() or ["git failed"])[-1]
                raise SystemExit(f"Could not fetch PCNN_REF={PCNN_REF} from {PCNN_REPO} ({why}): check that the "
                                 "repository and the ref exist and are pushed, and on Kaggle that Internet is on.")
    from importlib.metadata import PackageNotFoundError, version
    keep = Path(tempfile.mkdtemp(), "keep-torch.txt")   # pip may add packages but must not replace torch
    try:
        keep.write_text(f"torch=={version('torch')}\n")
    except PackageNotFoundError:
        keep.write_text("")
    got = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", str(keep), str(checkout)],
                         capture_output=True, text=True)
    if got.returncode != 0:
        raise SystemExit(f"pip could not install pcnn from the checkout ({(got.stderr.strip().splitlines() or ['?'])[-1]}).")
    os.chdir(checkout)

# %%
# %matplotlib inline
# %config InlineBackend.figure_format = "png"
import matplotlib.pyplot as plt
import torch
import pcnn
from pcnn.notebook import live, runtime as nb
from pcnn.viz.images import show_grid
from pcnn.viz.training import LiveLossPlot
nb.setup_plots()            # readable sizes: 100 dpi, 11 pt text
if SMOKE and not torch.cuda.is_available():
    torch.set_num_threads(1)   # tiny tensors: one thread is ~10x faster than several on a busy 2-core CI box
DEVICE = nb.device()
ROOT = nb.repo_root()
DATA = nb.ensure_data()      # $PCNN_DATA_DIR, a Kaggle input data set, or <repo>/data (downloaded when missing)
print(nb.describe_setup(DATA, DEVICE, SMOKE))
print(nb.gpu_report(dev=DEVICE))

# %% [markdown]
# ## Where the run lives
# `nb.run_workdir` picks a folder that outlives the runtime where it can: Google Drive on Colab (mounted here; refuse and the run stays on the runtime's disk), Kaggle's working folder on Kaggle (kept in a saved version's output), `runs/` in a local checkout, or `$PCNN_RUNS_DIR`. Nothing is deleted unless `FRESH_RUN = True`.

# %%
WORKDIR = nb.run_workdir(RUN_NAME)
if FRESH_RUN:
    nb.clear_run(WORKDIR)    # the only deletion in this notebook, and only when asked for
print(nb.run_status(WORKDIR))

# %% [markdown]
# ## Presets
# Each file in `configs/` is a complete recipe: the network (nr_resnet / nr_filters / mixture components, where the class enters), the optimiser and the epochs of its full run.

# %%
import dataclasses, json
from pcnn.train import TrainConfig, apply_overrides
print("\n".join(live.preset_lines()))
print("\n".join(live.epoch_estimates(3899)))
cfg = TrainConfig.from_dict(apply_overrides(json.loads(nb.config_path(PRESET).read_text()), OVERRIDES))
cfg = dataclasses.replace(cfg, wandb=WANDB, tensorboard=TENSORBOARD)
print("\nmodel:", cfg.model)
print(f"this notebook trains the run to {EPOCHS_FIRST}, then {EPOCHS} epochs (the preset's full run: {cfg.epochs}); "
      f"batch {cfg.batch_size}, lr {cfg.lr}, EMA {cfg.ema}")

# %%
from pcnn.data.dataset import load_split
train_split = load_split("train", DATA, size=cfg.model.image_size, show_progress=False)
val_split = load_split("validation", DATA, size=cfg.model.image_size, show_progress=False)
if N_TRAIN:
    train_split = train_split.subset(torch.randperm(len(train_split), generator=torch.Generator().manual_seed(0))[:N_TRAIN])
print(f"{len(train_split)} training images, {len(train_split) // cfg.batch_size} batches per epoch; "
      f"{len(val_split)} validation images")
print(live.gpu_epoch_estimate(cfg.model, len(train_split)))

# %% [markdown]
# ## Train
# `live.train_live` calls `pcnn.train.train` once for the whole run (`resume=True` when the run exists), so the trainer is built, and its loss compiled, once; after each epoch its callbacks redraw the plot from `metrics.jsonl`: train bits/dim (measured with dropout and flips on, so above validation), validation bits/dim and accuracy of the **EMA weights** (the running average the export usually uses) and, where they differ, of the raw weights. Every `SAMPLES_EVERY` epochs it shows a grid from the export (one row per class, the same noise in each column; from the EMA weights at an epoch without validation). Validation runs every `val_every` epochs of the preset (this notebook sets 1). A run that already has `EPOCHS_FIRST` epochs trains nothing here.

# %%
plot = LiveLossPlot(PRESET, ema=cfg.ema > 0)
history = live.train_live(cfg, WORKDIR, until=EPOCHS_FIRST, train_data=train_split, val_data=val_split, plot=plot,
                        samples_every=SAMPLES_EVERY, samples_per_class=N_SAMPLES)
print(sorted(p.name for p in WORKDIR.iterdir()))

# %% [markdown]
# ## Interrupt and resume
# Interrupt the kernel, or lose the runtime, at any point: everything needed to continue exactly (weights, optimizer, EMA, RNG states, data order) is in `last.pt`, saved at every epoch's end, every 10 minutes within an epoch, and when the kernel is interrupted. To resume: reconnect, keep `FRESH_RUN = False`, *Run all*: the cells above find the run and train only what is missing. On CPU the result is bitwise what an uninterrupted run gives. From the command line: `python -m pcnn train --workdir runs/x --resume`.

# %%
state = torch.load(WORKDIR / "last.pt", weights_only=True)
print(f"saved state: epoch {state['epoch']}, step {state['step']}")
del state
plot = LiveLossPlot(PRESET, ema=cfg.ema > 0)   # a fresh plot in this cell; it reads the whole metrics.jsonl
history = live.train_live(cfg, WORKDIR, until=EPOCHS, train_data=train_split, val_data=val_split, plot=plot,
                        samples_every=SAMPLES_EVERY, samples_per_class=N_SAMPLES)
print("\n".join(live.history_lines(history, ema=cfg.ema > 0)))

# %% [markdown]
# ## Export
# `model.safetensors` in the workdir holds the weights to use, EMA or raw, whichever had the lower validation bits/dim, with the model config inside, so `pcnn.load` needs nothing else; the line below says which and gives the other's bits/dim. `pcnn.course.export_for_course` writes the file the CPEN455 scripts load.

# %%
model = pcnn.load(WORKDIR / "model.safetensors", device=DEVICE)
meta = pcnn.read_metadata(WORKDIR / "model.safetensors")
print(model.config)
print(live.export_line(meta))
from pcnn.course.hook import export_for_course, load_course_model
course_file = export_for_course(WORKDIR / "model.safetensors", WORKDIR / "conditional_pixelcnn.pth")
print(course_file.name, course_file.stat().st_size, "bytes; reloads:", load_course_model(course_file).config == model.config)

# %% [markdown]
# ## Samples from the model just trained
# One row per class, each column one noise draw shared by the four classes. After a run this short the samples are still close to per-pixel noise: compare the export's bits/dim above with the shipped model's in notebook 03, and its samples in notebooks 06 and 07.

# %%
show_grid(pcnn.same_noise_grid(model, per_class=N_SAMPLES, seed=0), title="export, seed 0", width=None)
plt.show()
