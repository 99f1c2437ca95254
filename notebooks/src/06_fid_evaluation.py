# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 FID evaluation
#
# 25 generated images per class (the course protocol) with `pcnn.sample.write_sample_set`, a grid per class, and FID at 192 and 2048 Inception dims against the test images with `pcnn.fid.fid_from_dirs` (offline Inception weights; the notebook prints which).
#
# **Committed outputs:** `checkpoints/pcnn_cpu_film40.safetensors` (see `checkpoints/README.md`); 25 images per class, FID against the 519 test images, CPU.
#
# With `PCNN_SMOKE=1` (CI) every size shrinks so the notebook runs in well under a minute on a CPU; no step is skipped.

# %%
import os, sys
SMOKE = os.environ.get("PCNN_SMOKE") == "1"   # CI: shrink every size, skip nothing
PER_CLASS = 2 if SMOKE else 25        # generated images per class
N_REF = 16 if SMOKE else None         # test images used as reference (None: the whole test split)
SHOW = 2 if SMOKE else 10            # images per class in the figure
FID_DIMS = (64, 192) if SMOKE else (192, 2048)   # 2048-d: a 2048x2048 matrix square root, minutes on a CPU

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
from pcnn.fid import fid_from_dirs
nb.setup_plots()            # readable sizes: 100 dpi, 11 pt text
if SMOKE and not torch.cuda.is_available():
    torch.set_num_threads(1)   # tiny tensors: one thread is ~10x faster than several on a busy 2-core CI box
DEVICE = nb.device()
ROOT = nb.repo_root()
DATA = nb.ensure_data()      # $PCNN_DATA_DIR, a Kaggle input data set, or <repo>/data (downloaded when missing)
print(nb.describe_setup(DATA, DEVICE, SMOKE))

# %%
model, source = nb.get_model(dev=DEVICE)
print("model:", source)

# %%
import tempfile
from pathlib import Path
from pcnn.data import CLASS_NAMES
from pcnn.fid import list_images
OUT = Path(tempfile.mkdtemp(prefix="pcnn-fid-"))
paths, grid = nb.write_fid_samples(model, OUT / "generated", per_class=PER_CLASS, seed=0)
print(len(paths), "images, e.g.", paths[0].name)

# %% [markdown]
# ## Generated beside real
# For each class a row of generated images (the first `SHOW` of the set) and below it a row of real
# validation images of that class, at 2x (64 px per 32 px image), drawn at their own pixel size.

# %%
from pcnn.data import load_split
gen, gen_labels = nb.read_sample_set(OUT / "generated")
val = load_split("validation", DATA, show_progress=False)
grid = pcnn.class_grid(gen, gen_labels, CLASS_NAMES, real_images=val.images, real_labels=val.labels,
                       per_row=SHOW, scale=2, font_size=13)
nb.show_grid(grid, width=None)
plt.show()

# %% [markdown]
# ## FID
# The reference statistics are cached (keyed by the files' contents), so a second run only scores the generated images. With 100 generated images the 192- and 2048-d covariances are rank-deficient (the course protocol); the warnings say so.

# %%
import warnings
ref_dir = DATA / "test" if N_REF is None else nb.copy_subset(list_images(DATA / "test"), OUT / "ref", n=N_REF)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    res = fid_from_dirs(OUT / "generated", ref_dir, dims=FID_DIMS, device=str(DEVICE))
for d, v in res["fid"].items():
    print(f"FID {d:>4} dims: {v:.2f}")
print(f"{res['n_gen']} generated vs {res['n_ref']} reference images")
print("Inception weights:", res["weights"])
for w in res["warnings"]:
    print("note:", nb.scrub_paths(w, OUT, DATA))
