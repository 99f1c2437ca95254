# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 Fusion strategies compared
#
# Where the class enters the network (`pcnn.fusion`), side by side: accuracy, macro F1, bits/dim, FID (192 and 2048 dims), training time and hardware, from the results files `results/fusion/*.json` (one per run, written by `pcnn.experiments.run_and_record`).
#
# **Committed outputs:** the real comparison in `results/fusion/` (scripts/fusion_comparison.py, budget `configs/fusion_budget.json`: 1/40/5, 2 epochs, seed 0, flips, EMA, one thread per run on the project's 2-core CPU machine while another training job used the other core). Two epochs is a short budget: the ranking can change with longer training (see the table's caveats in the README).
#
# With `PCNN_SMOKE=1` (CI) every size shrinks so the notebook runs in well under a minute on a CPU; no step is skipped.

# %%
import os, sys
SMOKE = os.environ.get("PCNN_SMOKE") == "1"   # CI: shrink every size, skip nothing
STRATEGIES = ["input", "input_concat", "first_conv", "middle", "late", "blocks", "blocks_film", "none"]   # tiny runs only
TINY_STEPS = 2 if SMOKE else 20          # steps per strategy when results are made here
TINY_SIZE = 8 if SMOKE else 32           # image size of those tiny runs
PER_CLASS = 1 if SMOKE else 10           # samples per class for their FID
N_REF = 8 if SMOKE else 100              # reference (test) images for their FID
FID_DIMS = (192,) if SMOKE else (192, 2048)

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
from pcnn import notebook as nb, plots
import pcnn.fid
nb.setup_plots()            # readable sizes: 100 dpi, 11 pt text
if SMOKE and not torch.cuda.is_available():
    torch.set_num_threads(1)   # tiny tensors: one thread is ~10x faster than several on a busy 2-core CI box
DEVICE = nb.device()
ROOT = nb.repo_root()
DATA = nb.ensure_data()      # $PCNN_DATA_DIR, a Kaggle input data set, or <repo>/data (downloaded when missing)
print(nb.describe_setup(DATA, DEVICE, SMOKE))

# %%
from pcnn import experiments
RESULTS = ROOT / "results" / "fusion"
results = experiments.load_results(RESULTS) if RESULTS.is_dir() else []
print(f"{len(results)} results file(s) in {nb.show_path(RESULTS)}")

# %% [markdown]
# ## Tiny runs (smoke mode, or when there are no results files)
# Each strategy is trained for a few steps on a tiny network, sampled and scored; the results files go to a temporary folder.

# %%
if SMOKE or not results:
    import tempfile
    from pcnn.data import load_split
    from pcnn.fid import list_images
    from pcnn.sample import copy_subset
    tmp = Path(tempfile.mkdtemp(prefix="pcnn-fusion-"))
    tr = load_split("train", DATA, size=TINY_SIZE, show_progress=False)
    va = load_split("validation", DATA, size=TINY_SIZE, show_progress=False)
    ref = copy_subset(list_images(DATA / "test"), tmp / "ref", n=N_REF)
    inception = pcnn.fid.load_inception("cpu")    # loaded once for all runs
    print("Inception weights:", inception.weights)
    for name in STRATEGIES:
        cfg = nb.tiny_train_config(image_size=TINY_SIZE, steps=TINY_STEPS, fusion=name, batch_size=4, val_subset=8, ema=0.0)
        res = experiments.run_and_record(cfg, tmp / name, tmp / "results" / f"{name}.json", name=name,
                                         train_data=tr, val_data=va, fid_ref_dir=ref, fid_dims=FID_DIMS,
                                         per_class=PER_CLASS, fid_model=inception)
        print(f"{name:<13} acc {res['final']['accuracy']}, bpd {res['final']['val_bpd']:.3f}, FID {res['final']['fid_192']:.1f}")
    results = experiments.load_results(tmp / "results")

# %% [markdown]
# ## Table

# %%
from IPython.display import Markdown, display
display(Markdown(experiments.markdown_table(results)))
print("FID weights:", sorted({r["final"].get("fid_weights") or "-" for r in results}))

# %% [markdown]
# ## Bar plots
# One panel per metric, a row per run. Accuracy and macro F1 show the raw weights (solid) and the EMA weights (hatched) of each run: after two epochs the EMA average lags behind the raw weights in bits/dim but classifies better, and the two rank the runs differently. Accuracy carries +-1 standard error (one seed per run, on the validation images) and a dotted chance line; no accuracy bar is marked best, because most of the runs are within noise of each other. The other panels outline their best run; the bits/dim panel is zoomed onto the values (it does not start at 0): the runs differ by hundredths of a bit.

# %%
from pcnn.data import verify
N_VAL = verify(DATA)["validation"]["n"] if not SMOKE else 8   # images each accuracy was measured on
plots.plot_results(results, n_eval=N_VAL)
plt.show()

# %% [markdown]
# ## What it shows
# Read from the results files above: which runs are within two standard errors of the best (so one seed cannot separate them), whether raw and EMA weights agree, and the likelihood ranking.

# %%
print("\n".join(plots.fusion_conclusion(results, N_VAL)))
