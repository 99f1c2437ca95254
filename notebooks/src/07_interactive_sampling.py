# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 Interactive sampling
#
# Pick a class by name, the number of images and a seed, press **Sample**: the progress bar advances row by row and the images form row by row as they are sampled (rows not sampled yet are grey; the grid is redrawn every 4 rows). **Save PNGs** writes them to `runs/notebook_07/` and offers them as one zip to download. Below the interactive part, a scripted section runs the same code path so CI can check it; it uses its own widget and leaves yours alone.
#
# **Committed outputs:** `checkpoints/pcnn_cpu_film40_disc.safetensors` (see `checkpoints/README.md`), on the 2-core CPU machine.
#
# With `PCNN_SMOKE=1` (CI) every size shrinks so the notebook runs in well under a minute on a CPU; no step is skipped.

# %%
import os, sys
SMOKE = os.environ.get("PCNN_SMOKE") == "1"   # CI: shrink every size, skip nothing
COUNT = 2 if SMOKE else 8        # images per click in the scripted run below
SEED = 0                         # seed of the scripted sampler, the same-noise grid and the completions
KEEP_ROWS = 16                   # rows of the 32 kept in the scripted completions

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
from pcnn.notebook import runtime as nb
from pcnn.viz.images import show_grid
nb.setup_plots()            # readable sizes: 100 dpi, 11 pt text
if SMOKE and not torch.cuda.is_available():
    torch.set_num_threads(1)   # tiny tensors: one thread is ~10x faster than several on a busy 2-core CI box
DEVICE = nb.device()
ROOT = nb.repo_root()
DATA = nb.ensure_data()      # $PCNN_DATA_DIR, a Kaggle input data set, or <repo>/data (downloaded when missing)
print(nb.describe_setup(DATA, DEVICE, SMOKE))

# %% [markdown]
# ## Sample a class
# Choose the class, the number of images (1-16; tiles stay 128 px whatever the count) and a seed, then
# press **Sample**. The same seed and class give the same images. **guidance** w steers each sub-pixel
# toward what the model itself recognises as the class (`pcnn.sampling.guidance`; 0 = the model's own
# distribution, C = 4 times the work); one seed gives the same noise at every setting, so moving a
# control shows only what it changes. **alpha** is the plausibility constraint: before the tilt, the
# values the class itself finds less likely than alpha times its most likely one are excluded (the
# guard against saturated single-pixel speckle); **schedule** spreads w over the rows (`constant`;
# `ramp`, 0 at the top to w at the bottom; `interval:0:16`, guidance on the top half only). The
# controls start at the checkpoint's **recommended** guidance, stored in its metadata with the name
# of the trade-off it came from (`results/guidance/`); `pcnn.sample(..., guidance="recommended")` and
# `python -m pcnn sample --guidance recommended` read the same.

# %%
from pcnn.sampling.guidance import GuidanceSetting, recommended_guidance
from pcnn.notebook.widgets import SamplerWidget
model, source = nb.get_model(dev=DEVICE)
print("model:", source)
RECOMMENDED = recommended_guidance(model)    # from the checkpoint's metadata, not from results/
print(f"recommended guidance: {RECOMMENDED.describe()} (chosen in {RECOMMENDED.source})")
w = SamplerWidget(model, out_dir=ROOT / "runs" / "notebook_07")   # starts at the recommendation
w.display();

# %% [markdown]
# ## Class-conditional completion
# Interactive: pick an image index, the rows to keep and a seed, press **Complete**.
# `pcnn.complete` keeps the top rows of a validation image and samples the rest under each class, with the same noise (the cached sampler, its layer caches filled from the kept rows). "Finish this panda as a pizza" is the question it asks; with half the image kept, the kept rows constrain the rest strongly, so expect the completions to differ between classes mostly in colour and texture, much less than the rows of the same-noise grid below, where the class shapes the whole image.

# %%
from pcnn.data.dataset import load_split
from pcnn.notebook.widgets import CompletionWidget
val = load_split("validation", DATA, show_progress=False)
cw = CompletionWidget(model, val.images, val.labels, guidance="recommended")   # pick an image, the rows to keep, press Complete
cw.display();

# %% [markdown]
# ---
# ## Scripted: the same code paths, run without clicks (CI executes these)
# A second sampler widget, driven by code: setting its controls and calling `on_sample` / `on_save`
# runs exactly what a click on **Sample** / **Save PNGs** runs. The interactive widgets above are not
# touched.

# %%
ws = SamplerWidget(model, out_dir=ROOT / "runs" / "notebook_07")
ws.class_dropdown.value = 1      # panda, at the recommended guidance the controls above start at
ws.count.value = COUNT
ws.seed.value = SEED
images = ws.on_sample(ws.sample_button)
saved = ws.on_save(ws.save_button)
print(f"class {pcnn.model.config.CPEN455_CLASSES[ws.class_dropdown.value]}, seed {SEED}:", ws.status.value, "|",
      [p.name for p in saved])
ws.display();

# %% [markdown]
# ## Same noise, every class
# Each column uses one noise draw for all four classes, so what changes down a column is only the class: how much the class steers a sample.

# %%
PER_CLASS = 2 if SMOKE else 6
grid = pcnn.same_noise_grid(model, per_class=PER_CLASS, seed=SEED)
show_grid(grid, title=f"rows: class; column k: noise draw k of seed {SEED}", width=None)
plt.show()

# %% [markdown]
# ## Class guidance: the same noise at every w
# One class per grid, one row per guidance weight w, column k always the same noise draw: what changes
# down a column is only how hard the sample is steered toward what the model recognises as the class.
# Panda and hamburger are the classes an Inception probe recognises least in unguided samples.

# %%
WEIGHTS = (0.0, 1.0, 2.0, 4.0)
for cls in (1, 0):   # panda, hamburger
    g = pcnn.guidance_grid(model, cls, WEIGHTS, per_row=PER_CLASS, seed=SEED, guide=RECOMMENDED.guide)
    show_grid(g, title=f"{pcnn.model.config.CPEN455_CLASSES[cls]}: rows w = {', '.join(f'{v:g}' for v in WEIGHTS)} "
                    f"(guide {RECOMMENDED.guide}, alpha 0, constant); column k: noise draw k of seed {SEED}", width=None)
    plt.show()

# %% [markdown]
# ## w = 0, the earlier default and the recommendation, on the same noise
# Three settings per class, column k always the same noise draw: the model's own distribution
# (w = 0), issue #28's default (flat, w = 4, no plausibility constraint, constant; its samples win the
# Inception probe on colour statistics and carry saturated single-pixel speckle) and the checkpoint's
# recommended setting (the rule of `results/guidance/README.md` picked it from issue #34's trade-off).

# %%
from pcnn.viz.samples import setting_grid
SHOW = [GuidanceSetting(0.0), GuidanceSetting(4.0, "flat", 0.0, "constant"), RECOMMENDED]
LABELS = ["w = 0", "flat w = 4, alpha 0 (earlier default)", f"recommended: {RECOMMENDED.describe()}"]
grid = setting_grid(model, SHOW, LABELS, classes=[1] if SMOKE else None, per_row=PER_CLASS, seed=SEED)   # CI: panda only
show_grid(grid, title=f"rows: class and setting; column k: noise draw k of seed {SEED}", width=None)
plt.show()

# %% [markdown]
# Completion, scripted: the first panda and the first pizza of the validation split, the top `KEEP_ROWS` rows kept (set in the first cell), each completed as every class with the same noise.

# %%
picks = [int((val.labels == c).nonzero()[0]) for c in (1, 3)]   # the first panda and the first pizza
originals = val.images[picks]
completions = pcnn.complete_as_every_class(model, originals, KEEP_ROWS, seed=SEED)   # (2, 4, 3, 32, 32)
assert torch.equal(completions[:, :, :, :KEEP_ROWS], originals[:, None, :, :KEEP_ROWS].expand_as(completions[:, :, :, :KEEP_ROWS]))
show_grid(pcnn.completion_grid(originals, completions, KEEP_ROWS, row_labels=[pcnn.model.config.CPEN455_CLASSES[c] for c in (1, 3)]),
                title=f"validation images, top {KEEP_ROWS} of 32 rows kept, seed {SEED}", width=None)
plt.show()

# %% [markdown]
# The same completions with class guidance at the recommended setting: every sampled sub-pixel is pushed
# toward what the chosen class predicts more than the class average does (flat guide), given the kept
# rows, so completing the panda "as a pizza" takes the pizza's colours.

# %%
guided = pcnn.complete_as_every_class(model, originals, KEEP_ROWS, seed=SEED, **RECOMMENDED.kwargs())
assert torch.equal(guided[:, :, :, :KEEP_ROWS], completions[:, :, :, :KEEP_ROWS])
show_grid(pcnn.completion_grid(originals, guided, KEEP_ROWS, row_labels=[pcnn.model.config.CPEN455_CLASSES[c] for c in (1, 3)]),
                title=f"the same, recommended guidance ({RECOMMENDED.describe()}), seed {SEED}", width=None)
plt.show()
