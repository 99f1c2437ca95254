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
# 25 generated images per class (the course protocol) with `pcnn.sampling.sets.write_sample_set`, shown beside real images, and every generation figure beside its **real-image floor**: the same figure for real validation images under the same protocol. The course's FID (192 Inception dims, 100 images) is computed here for the samples and for 100 real images; FID-2048, KID and the Inception-probe accuracy need 500 images and a probe trained on 3899 features (about an hour on a CPU), so they are read from the shipped model's card (`results/shipped/<card>/card.json`, `pcnn.paths.shipped_card_dir()`, made by `python -m pcnn evaluate`).
#
# **Committed outputs:** `checkpoints/pcnn_cpu_film40_disc.safetensors` (see `checkpoints/README.md`); 25 images per class, FID against the 519 test images, CPU.
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
import pcnn.eval.card
import pcnn.sampling.sets
from pcnn.notebook import runtime as nb
from pcnn.viz.generation import plot_beside_floor
from pcnn.viz.images import show_grid
from pcnn.eval.fid import fid_from_dirs
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
from pcnn.data.dataset import load_split
from pcnn.model.config import CPEN455_CLASSES as CLASS_NAMES
from pcnn.eval.fid import list_images
from pcnn.sampling.sets import copy_subset, read_sample_set, write_sample_set
OUT = ROOT / "runs" / "notebook_06"     # samples, the real-image set and the reference subset (smoke)
paths = write_sample_set(model, OUT / "generated", per_class=PER_CLASS, seed=0, show_progress=nb.show_progress())
val = load_split("validation", DATA, show_progress=False)
real_dir = pcnn.sampling.sets.real_course_set(val, OUT / "real", PER_CLASS)   # the first PER_CLASS validation images per class
print(len(paths), "generated images in", nb.show_path(OUT / "generated"), "e.g.", paths[0].name,
      f"| {len(list_images(real_dir))} real validation images in", nb.show_path(real_dir))

# %% [markdown]
# ## Generated beside real
# For each class a row of generated images (the first `SHOW` of the set, labelled "(generated)") and below it a row of real
# validation images of that class ("(real)"), at 2x (64 px per 32 px image), drawn at their own pixel size.

# %%
gen, gen_labels = read_sample_set(OUT / "generated")
grid = pcnn.class_grid(gen, gen_labels, CLASS_NAMES, real_images=val.images, real_labels=val.labels,
                       per_row=SHOW, scale=2, font_size=13)
show_grid(grid, width=None)
plt.show()

# %% [markdown]
# ## FID, generated and real, same protocol
# The reference statistics are cached (keyed by the files' contents), so a second run only scores the new images. With 100 images the 192- and 2048-d covariances are rank-deficient (the course protocol); the warnings say so, and the real images' figure is the floor each number must be read against.

# %%
import warnings
ref_dir = DATA / "test" if N_REF is None else copy_subset(list_images(DATA / "test"), OUT / "ref", n=N_REF)
scores = {}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for name, folder in (("generated", OUT / "generated"), ("real", real_dir)):
        scores[name] = fid_from_dirs(folder, ref_dir, dims=FID_DIMS, device=str(DEVICE))
for d in FID_DIMS:
    print(f"FID {d:>4} dims: generated {scores['generated']['fid'][d]:.2f}, real validation images {scores['real']['fid'][d]:.2f}")
print(f"{scores['generated']['n_gen']} generated / {scores['real']['n_gen']} real vs {scores['generated']['n_ref']} reference images")
print("Inception weights:", scores["generated"]["weights"])
for w in scores["generated"]["warnings"]:
    print("note:", nb.scrub_paths(w, OUT, DATA))
course_dims = 192 if 192 in FID_DIMS else FID_DIMS[-1]
print(pcnn.eval.card.course_fid_sentence(scores["generated"]["fid"][course_dims], scores["real"]["fid"][course_dims],
                                    scores["generated"]["n_gen"]))

# %% [markdown]
# ## Every figure beside its floor (the shipped model's card)
# FID-2048 and KID compare Inception features of 500 samples (125 per class, seed 3) with the test images; the probe is a logistic regression trained on real training images' features, and its accuracy on the samples says how often a sample looks like its intended class. Gray bars: real validation images under the same protocol. Lower is better except for the probe.

# %%
card = pcnn.eval.card.read_card(pcnn.paths.shipped_card_dir())   # the shipped checkpoint's own card
floors = pcnn.eval.card.card_floors(card)
for row in floors:
    print(f"{row['metric']:<32}", ", ".join(f"{k} {v:.4g}" for k, v in row["values"].items()))
plot_beside_floor(floors, title=f"{card['checkpoint']}: generated images beside real ones")
plt.show()
course = card["course_fid_192"]
print(pcnn.eval.card.course_fid_sentence(course["samples"], course["real"], course["images"]))

# %% [markdown]
# ## With class guidance (`results/guidance/`)
# Class guidance (`pcnn.sample(..., guidance=w)`, notebook 07) pushes each sub-pixel toward what the chosen class predicts more than the class average does. The committed trade-off measured it on 500 samples (125 per class, seed 3, the same noise at every w) beside the same real floor; the default is the setting its rule picked before measuring (the smallest w whose probe accuracy reaches 80 % with FID-2048 no worse than at w = 0). Read from `results/guidance/tradeoff.json`, made by `scripts/guidance_tradeoff.py` (about an hour on a CPU), not recomputed here.

# %%
sys.path.insert(0, str(ROOT))   # studies/ (research drivers) lives in the checkout, not the wheel
from studies.guidance_tradeoff import pick_default, read_tradeoff, tradeoff_floors
tradeoff = read_tradeoff(ROOT / "results" / "guidance" / "tradeoff.json")   # issue #28's trade-off
if tradeoff is None:
    print("no committed trade-off (results/guidance/tradeoff.json): run scripts/guidance_tradeoff.py")
else:
    pick = pick_default(tradeoff)
    guided_rows = tradeoff_floors(tradeoff, pick)
    for row in guided_rows:
        print(f"{row['metric']:<32}", ", ".join(f"{k} {v:.4g}" for k, v in row["values"].items()))
    chosen = "no guided default" if pick is None else f"the default ({pick['guide']}, w = {pick['w']:g})"
    plot_beside_floor(guided_rows, title=f"class guidance: w = 0, {chosen} and real images")
    plt.show()
