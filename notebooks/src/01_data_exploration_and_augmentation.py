# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 Data exploration and augmentation
#
# The CPEN455 data: images per class and split, examples, pixel statistics per class, the grayscale files, the course's 64 -> 32 resize, and every training augmentation of `pcnn.data.dataset`.
#
# **Committed outputs:** a full (non-smoke) run over the CPEN455 data on the project's 2-core CPU machine; no model is involved.
#
# With `PCNN_SMOKE=1` (CI) every size shrinks so the notebook runs in well under a minute on a CPU; no step is skipped.

# %%
import os, sys
SMOKE = os.environ.get("PCNN_SMOKE") == "1"   # CI: shrink every size, skip nothing
N_PER_CLASS = 4 if SMOKE else 10        # examples shown per class
N_STATS = 64 if SMOKE else None         # training images per class for histograms / means (None: all)
N_AUG = 4 if SMOKE else 8               # images in the augmentation previews

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
import pcnn.data.augment
from pcnn.notebook import runtime as nb
from pcnn.viz.images import augmentation_rows, pixel_histograms, show_images, to_hwc
nb.setup_plots()            # readable sizes: 100 dpi, 11 pt text
if SMOKE and not torch.cuda.is_available():
    torch.set_num_threads(1)   # tiny tensors: one thread is ~10x faster than several on a busy 2-core CI box
DEVICE = nb.device()
ROOT = nb.repo_root()
DATA = nb.ensure_data()      # $PCNN_DATA_DIR, a Kaggle input data set, or <repo>/data (downloaded when missing)
print(nb.describe_setup(DATA, DEVICE, SMOKE))

# %% [markdown]
# ## Images per class and split
# Counted from the CSVs (no decoding), so this table is checked verbatim by nbval.

# %%
# NBVAL_CHECK_OUTPUT
from pcnn.data.dataset import verify
from pcnn.model.config import CPEN455_CLASSES as CLASS_NAMES
report = verify(DATA)
cols = list(CLASS_NAMES) + ["unlabelled"]
print(f"{'split':<11}" + "".join(f"{c:>11}" for c in cols) + f"{'total':>8}")
for split, r in report.items():
    print(f"{split:<11}" + "".join(f"{r['classes'].get(c, 0):>11}" for c in cols) + f"{r['n']:>8}")

# %%
from pcnn.data.dataset import load_split
train = load_split("train", DATA, show_progress=False)
val = load_split("validation", DATA, show_progress=False)
print(train, val, sep="\n")

# %% [markdown]
# ## Examples per class (32x32, as the model sees them)

# %%
g = torch.Generator().manual_seed(0)
picks, titles = [], []
for c, name in enumerate(CLASS_NAMES):
    idx = (train.labels == c).nonzero().flatten()
    idx = idx[torch.randperm(len(idx), generator=g)[:N_PER_CLASS]]
    picks.append(train.images[idx]); titles += [name] * len(idx)
show_images(torch.cat(picks), nrow=N_PER_CLASS, titles=titles, scale=1.4)
plt.show()

# %% [markdown]
# ## Per-channel pixel histograms and mean image per class

# %%
pixel_histograms(train.images, train.labels, CLASS_NAMES, per_class=N_STATS)
plt.show()
mean, std = pcnn.data.augment.channel_stats(train)
print("per-channel mean / std in [-1, 1] units:", [round(v, 3) for v in mean.tolist()], [round(v, 3) for v in std.tolist()])

# %% [markdown]
# ## Grayscale files
# Some JPEGs are stored with one (gray) channel, found from the file headers. Decoding replicates the gray channel into R, G and B, so the model sees them as colour images with three equal channels.

# %%
from PIL import Image
gray = {}
for split in (train, val):
    modes = [(p, lab) for p, lab in zip(split.paths, split.labels.tolist()) if Image.open(DATA / p).mode != "RGB"]
    gray[split.name] = modes
    print(f"{split.name}: {len(modes)} non-RGB file(s) of {len(split)}",
          {n: sum(lab == c for _, lab in modes) for c, n in enumerate(CLASS_NAMES)})
idx = [train.paths.index(p) for p, _ in gray["train"][:8]]
if idx:
    assert all(torch.equal(train.images[i, 0], train.images[i, 2]) for i in idx)   # replicated channels
    show_images(train.images[idx], titles=[CLASS_NAMES[int(train.labels[i])] for i in idx], scale=1.4)
    plt.show()

# %% [markdown]
# ## The 64 -> 32 resize
# Each JPEG is decoded at its own size (64x64) and resized to 32x32 (bilinear with antialiasing, then rounded back to 8 bits): `pcnn.data.dataset.resize_uint8`.

# %%
from pcnn.data.dataset import resize_uint8
from torchvision.io import decode_image, ImageReadMode
orig = torch.stack([decode_image(str(DATA / p), mode=ImageReadMode.RGB) for p in train.paths[:4]])
small = resize_uint8(orig, 32)
assert torch.equal(small, train.images[:4])   # exactly what load_split gives
fig, axes = plt.subplots(2, 4, figsize=(8, 4.4))
for k in range(4):
    axes[0, k].imshow(to_hwc(orig[k])); axes[0, k].set_title("x".join(map(str, orig.shape[-2:])) + " file")
    axes[1, k].imshow(to_hwc(small[k]), interpolation="nearest"); axes[1, k].set_title("32x32 model input")
for ax in axes.flat: ax.axis("off")
fig.tight_layout(); plt.show()

# %% [markdown]
# ## Every augmentation
# `pcnn.data.dataset.augment` draws each step per image from one generator and rounds back onto the 8-bit grid once, so the output is again a valid input of the discretised likelihood. Training uses horizontal flips only by default (`AugmentConfig()`), each image flipped with probability 0.5: the "hflip" row flips about half of its images and leaves the rest as they are. Under each row's name: how many of its images the augmentation changed.

# %%
from pcnn.data.augment import AugmentConfig
base = train.images[:N_AUG]
variants = {"original": AugmentConfig(hflip=False), "hflip (p = 0.5)": AugmentConfig(), "rotate 15 deg": AugmentConfig(hflip=False, rotate_deg=15),
            "translate 4 px": AugmentConfig(hflip=False, translate=4), "colour jitter 0.3": AugmentConfig(hflip=False, color_jitter=0.3),
            "noise std 8": AugmentConfig(hflip=False, noise_std=8.0), "cutout 10 px": AugmentConfig(hflip=False, cutout=10),
            "all": AugmentConfig(rotate_deg=10, translate=2, color_jitter=0.2, noise_std=4.0, cutout=8)}
fig, rows = augmentation_rows(base, variants, seed=1)
plt.show()

# %% [markdown]
# ## Why no per-channel normalisation
#
# PixelCNN++'s discretised logistic mixture assigns each 8-bit value its own bin of width 2/255 on
# [-1, 1], with the two edge values owning the open tails. That is what makes the likelihood a
# probability of the 8-bit image (and bits/dim comparable across runs and papers). Subtracting a
# per-channel mean and dividing by a standard deviation moves the data off that grid and outside
# [-1, 1]: the bins no longer centre on data values, their widths are off by 1/std, and the edge rule
# fires at the wrong values, so the "likelihood" is no longer normalised and the per-class scores used
# for classification are distorted. `pcnn` therefore feeds `v / 127.5 - 1` and keeps normalisation
# opt-in only (`AugmentConfig.normalize`, refused by training).
