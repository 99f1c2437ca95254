# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 Loss curves
#
# Train / validation bits per dimension and validation accuracy against epochs for one or several runs, read from their `metrics.jsonl` (in `results/` and `runs/`). The bits/dim axes show the lowest 90 % of the points, so the differences late in training stay visible; a note in the corner counts the first epochs left above the axis.
#
# **Committed outputs:** the metric logs of the shipped `checkpoints/pcnn_cpu_film40_disc.safetensors` (see `checkpoints/README.md`): phase A of issue #15 in two sessions (`results/shipped/5_film40_pretrain`, `results/shipped/5_film40_pretrain_b`) and the phase-B fine-tune (`results/shipped/6_film40_disc`), which ship rule v2 shipped on 2026-12-04; and those of the previous shipped model, `checkpoints/stages/pcnn_cpu_blocks40_stage4.safetensors`: its four training stages (`results/shipped/1_pretrain`, `results/shipped/2_disc_finetune`, `results/shipped/3_disc_finetune_lowlr`, `results/shipped/4_disc_finetune_dropout01`), a stopped try (`results/levers/disc_weight_002`) and a 4-epoch dropout-0 probe (`results/levers/dropout_0`).
#
# With `PCNN_SMOKE=1` (CI) every size shrinks so the notebook runs in well under a minute on a CPU; no step is skipped.

# %%
import os, sys
SMOKE = os.environ.get("PCNN_SMOKE") == "1"   # CI: shrink every size, skip nothing
TINY_EPOCHS = 2 if SMOKE else 3       # the tiny run made when there is nothing to plot
MAX_RUNS = 8                          # most runs drawn in one figure

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
from pcnn.notebook import live, runtime as nb
from pcnn.viz.training import chain_offsets, plot_training_curves, run_summary
nb.setup_plots()            # readable sizes: 100 dpi, 11 pt text
if SMOKE and not torch.cuda.is_available():
    torch.set_num_threads(1)   # tiny tensors: one thread is ~10x faster than several on a busy 2-core CI box
DEVICE = nb.device()
ROOT = nb.repo_root()
DATA = nb.ensure_data()      # $PCNN_DATA_DIR, a Kaggle input data set, or <repo>/data (downloaded when missing)
print(nb.describe_setup(DATA, DEVICE, SMOKE))

# %%
runs = nb.find_runs(ROOT / "results", ROOT / "runs")
for r in runs:
    got = run_summary(r)
    print(f"{nb.show_path(r):<45} {got['epochs']:>4} epochs ({got['partial_rows']} partial row(s)), "
          f"last validation bits/dim {got['last_val_bpd']}")

# %% [markdown]
# ## A tiny run
# In smoke mode (or when no run is found) a tiny model is trained for a few epochs on a few images so the plots below have data.

# %%
if SMOKE or not runs:
    import tempfile
    from pcnn.data.dataset import load_split
    tiny_dir = Path(tempfile.mkdtemp(prefix="pcnn-tiny-curves-")) / "tiny_run"   # a new folder: nothing is replaced
    tr = load_split("train", DATA, show_progress=False)
    tr = tr.subset(torch.randperm(len(tr), generator=torch.Generator().manual_seed(0))[:16])
    va = load_split("validation", DATA, show_progress=False)
    cfg = nb.tiny_train_config(steps=None, batch_size=4, val_subset=8)   # configs/smoke.json's network
    live.train_live(cfg, tiny_dir, until=TINY_EPOCHS, train_data=tr, val_data=va, progress=False)
    runs = [tiny_dir] + runs
print(len(runs), "run(s)")

# %% [markdown]
# ## The shipped checkpoint: phase A (likelihood only) of the 1/40/5 FiLM run, two sessions, then phase B
# Phase B (`6_film40_disc`) fine-tunes phase A's export with the discriminative term: accuracy rises
# while bits/dim rises a little. The bits/dim-only rule of issue #15 kept it out; ship rule v2 (+3.7
# points for +0.013 bits/dim) shipped it, so the shipped checkpoint is phase B's last point.
# The first session's first 6 epochs are the scaling probe's (`results/scaling/`), scored on 260 validation
# images; everything after on all 519. The second session started from the first one's export
# (`init_from`: fresh optimizer, learning-rate warm-up and EMA), so its first epoch shows the restart.
# Train bits/dim is measured with dropout on and flipped images, so it sits above validation; the
# eval-mode gap is in `results/shipped/5_film40_pretrain_b/fit_gap.json`.

# %%
PHASE_A = {name: ROOT / "results" / "shipped" / name for name in ("5_film40_pretrain", "5_film40_pretrain_b",
                                                                  "6_film40_disc")}
PHASE_A = {k: v for k, v in PHASE_A.items() if v.is_dir()}
if PHASE_A:
    plot_training_curves(PHASE_A, chain_offsets(PHASE_A),
                               title="1/40/5 FiLM: phase A (shipped, two sessions) and phase B (disc fine-tune)")
    plt.show()
print({k: run_summary(v)["epochs"] for k, v in PHASE_A.items()}, "epochs")

# %% [markdown]
# ## The previous shipped checkpoint's four stages, one after another
# Each stage starts from the previous stage's weights (`init_from` in its `config.json`), so the x axis
# counts epochs across stages (dotted lines: where a stage starts). The two lever runs branch off where
# their `init_from` points: `disc_weight_002` after stage 2, `dropout_0` after stage 4.

# %%
STAGES = {name: ROOT / "results" / "shipped" / name for name in
          ("1_pretrain", "2_disc_finetune", "3_disc_finetune_lowlr", "4_disc_finetune_dropout01")}
STAGES = {k: v for k, v in STAGES.items() if v.is_dir()}
offsets = chain_offsets(STAGES)
shown = dict(STAGES)
for lever, after in (("disc_weight_002", "2_disc_finetune"), ("dropout_0", "4_disc_finetune_dropout01")):
    if (ROOT / "results" / "levers" / lever).is_dir() and after in STAGES:
        shown[f"lever {lever}"] = ROOT / "results" / "levers" / lever
        offsets[f"lever {lever}"] = offsets[after] + run_summary(STAGES[after])["epochs"]
if shown:
    plot_training_curves(shown, offsets,
                               title="previous shipped checkpoint (1/40/5 blocks): 4 stages and 2 lever runs")
    plt.show()
print("epochs before each run:", offsets)

# %% [markdown]
# ## Every other run found (each from epoch 1)

# %%
others = [r for r in runs if "shipped" not in r.parts and "levers" not in r.parts][:MAX_RUNS]
if others:
    plot_training_curves({nb.show_path(r): r for r in others}, title="other runs")
    plt.show()
print(len(others), "other run(s)")
