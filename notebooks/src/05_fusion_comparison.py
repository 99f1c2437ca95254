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
# Where should the class enter the network (`pcnn.model.fusion`)? Every strategy trained from scratch under one preset that differs only in `model.fusion` and the seed (design `cpu10`: size 1/40/5 at 32x32, **10 epochs, seeds 0 and 1, seed 2 for the best three**), then compared on EMA validation accuracy, bits/dim, FID-2048 with 500 samples (beside real images' floor) and the Inception probe, with the best checked against every other strategy **on the same validation images**. The design, why it was chosen, the budget and the rules (which runs, how the best is chosen, what counts as "better") are in `results/fusion/README.md`, committed before the first run.
#
# **Committed outputs:** everything here is read from the committed results files `results/fusion/v2/<strategy>_s<seed>.json` (one per finished run, written by `scripts/fusion_comparison.py --design cpu10`); nothing is trained. The report works on whatever runs are finished and says how many of how many: until all are, every statement is provisional. The old 2-epoch, one-seed comparison (v1) closes the notebook as history.
#
# With `PCNN_SMOKE=1` (CI) the only change is fewer bootstrap draws (500 instead of 10,000), so the intervals and p-values differ slightly from `results/fusion/v2/report.md`.

# %%
import os, sys
SMOKE = os.environ.get("PCNN_SMOKE") == "1"   # CI: fewer bootstrap draws, nothing else
DRAWS = 500 if SMOKE else 10_000              # bootstrap draws of the paired comparison
DESIGN = "cpu10"                              # "gpu30" once the GPU comparison has results

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
from IPython.display import Markdown, display
from pcnn.notebook import runtime as nb
from pcnn.viz.results import plot_results
nb.setup_plots()            # readable sizes: 100 dpi, 11 pt text
ROOT = nb.repo_root()
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]   # studies/ and scripts/ live in the checkout, not the wheel
from studies import experiments
import fusion_v2 as F       # the report's code (scripts/fusion_v2.py; scripts/ is not a package)
design = F.DESIGNS[DESIGN]
RESULTS = ROOT / design["out"]
runs = F.load_runs(RESULTS) if RESULTS.is_dir() else []
rep = F.build_report(RESULTS, design, v1_folder=ROOT / "results" / "fusion", draws=DRAWS)
s = rep["status"]
print(f"{s['done']} of {s['total']} planned runs finished ({len(runs)} results files in {nb.show_path(RESULTS)})")
if s["missing"]:
    print("missing:", ", ".join(s["missing"]))
if s["undecided"]:
    print(f"{s['undecided']} more (seed 2 of the best three) are chosen once seeds 0 and 1 are finished")

# %% [markdown]
# ## Per strategy
# Mean ± sample standard deviation over the finished seeds (their number in brackets). Accuracy, macro F1 and bits/dim belong to the EMA weights on the 519 validation images; FID-2048, the course FID-192, KID and the probe (a logistic regression on Inception features of the training split: how recognisable the samples' classes are) to 500 samples of the same weights, against the test images. The *real floor* row is 500 real validation images under the same protocol: on FID-2048, KID and the probe no model can be expected to beat it. The course's FID-192 is the exception: it ranks real images behind samples (the conclusion says when it does here), so it is no floor. The last column is the v1 run (2 epochs, seed 0) of the same strategy.

# %%
display(Markdown(rep["table"]))

# %% [markdown]
# ## Learning curves
# EMA validation accuracy and bits/dim after every epoch of every run (one colour per strategy, one line style per seed), from each run's metrics log. Curves still climbing at the last epoch mean the ranking may change with a longer budget.

# %%
if runs:
    F.plot_curves(runs)
    plt.show()
else:
    print("no finished run yet")

# %% [markdown]
# ## Every seed at a glance
# Each marker is one run (circle seed 0, square seed 1, triangle seed 2; hollow: trained in fp32), the black tick the strategy's mean; dashed green: real images (FID and probe); black dash-dot: chance accuracy. The paired tests compare runs of the same seed, so compare one marker shape from row to row.

# %%
if runs:
    F.plot_summary(rep["summary"], rep["floor"], rep["best"])
    plt.show()

# %% [markdown]
# ## The best against every other strategy, on the same images
# The best is the conditional strategy with the highest mean EMA accuracy (the rule). Each row compares it with another strategy on the same validation images: the difference in accuracy (points), a bootstrap over images and seeds (its 95% interval and p-value, Holm-adjusted over the rows) and, per seed both ran, the exact McNemar test (images only the best gets right / only the other gets right). "not separated" means this budget cannot tell them apart. The second table does the same for bits/dim (negative: the best models the images better), `none` included.

# %%
if rep["best"]:
    display(Markdown(rep["accuracy_table"] or "(no other conditional strategy has finished yet)"))
    display(Markdown(rep["bpd_table"] or "(no other strategy has finished yet)"))
else:
    print("no conditional strategy has finished yet")

# %% [markdown]
# ## What it shows, and what it cannot
# Written from the numbers above by `fusion_v2.conclusion`.

# %%
print("\n".join("- " + line for line in rep["conclusion"]))

# %% [markdown]
# ## History: the 2-epoch, one-seed comparison (v1)
# `results/fusion/*.json` (`configs/fusion_budget.json`): every strategy for 2 epochs, seed 0, 25 samples per class for FID. At 5.5-5.8 bits/dim and about 2 points of standard error on each accuracy it could not rank the strategies; it is kept as the starting point, not as the answer.

# %%
v1 = experiments.load_results(ROOT / "results" / "fusion")
display(Markdown(experiments.markdown_table(v1)))
plot_results(v1, n_eval=519)   # the 519 validation images each v1 accuracy was measured on
plt.show()
