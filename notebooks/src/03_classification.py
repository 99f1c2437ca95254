# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 Classification by likelihood
#
# `predict(x) = argmax_c log p(x | c)`: accuracy, macro F1, per-class accuracy and the confusion matrix on the validation split, how (over)confident the posterior is, the most confident mistakes and the pixels that decided them, and the test-split predictions in the course's submission layout.
#
# **Committed outputs:** `checkpoints/pcnn_cpu_film40_disc.safetensors` (see `checkpoints/README.md`), trained on the project's 2-core CPU machine; full validation and test splits.
#
# With `PCNN_SMOKE=1` (CI) every size shrinks so the notebook runs in well under a minute on a CPU; no step is skipped.

# %%
import os, sys
SMOKE = os.environ.get("PCNN_SMOKE") == "1"   # CI: shrink every size, skip nothing
N_VAL = 24 if SMOKE else None     # validation images scored (None: all 519)
N_TEST = 16 if SMOKE else None    # test images in the CSV (None: all)
N_MISTAKES = 4 if SMOKE else 8
BATCH = 256

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
from pcnn.eval.classification import confidence_summary, confident_mistakes, likelihood_margins, margin_by_row, mistake_titles
from pcnn.viz.classification import plot_confusion
from pcnn.viz.images import show_images
nb.setup_plots()            # readable sizes: 100 dpi, 11 pt text
if SMOKE and not torch.cuda.is_available():
    torch.set_num_threads(1)   # tiny tensors: one thread is ~10x faster than several on a busy 2-core CI box
DEVICE = nb.device()
ROOT = nb.repo_root()
DATA = nb.ensure_data()      # $PCNN_DATA_DIR, a Kaggle input data set, or <repo>/data (downloaded when missing)
print(nb.describe_setup(DATA, DEVICE, SMOKE))

# %%
model, source = nb.get_model(dev=DEVICE)
print("model:", source); print(model.config)

# %%
from pcnn.data.dataset import load_split
from pcnn.model.config import CPEN455_CLASSES as CLASS_NAMES
from pcnn.model.likelihood import to_float
def subset(split, n):
    return split if n is None else split.subset(torch.linspace(0, len(split) - 1, n).long())
val = subset(load_split("validation", DATA, show_progress=False), N_VAL)
progress = nb.ProgressLine("log p(x|c), validation", unit="(image, class) pairs")
ll = pcnn.log_likelihoods(model, to_float(val.images), batch_size=BATCH, progress=progress)   # (N, 4) nats
pred = ll.argmax(1)
m = pcnn.metrics(val.labels.numpy(), pred.numpy(), model.config.num_classes)
print(f"validation: {m['n']} images, accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}")
for name, a in zip(CLASS_NAMES, m["per_class_accuracy"]):
    print(f"  {name:<10} {a:.3f}")

# %%
plot_confusion(m["confusion_matrix"], CLASS_NAMES)
plt.show()

# %% [markdown]
# ## How sure is p(c | x)?
# Bayes' rule turns the four log-likelihoods into a posterior p(c | x) (uniform prior). Each log p(x | c) sums 3072 sub-pixel terms, so two classes often differ by tens of nats, and exp(tens of nats) makes the posterior all but 0 or 1: the classifier sounds sure far more often than it is right. The line below measures it; the expected calibration error (ECE) is the average gap between confidence and accuracy over 10 confidence bins.

# %%
conf = confidence_summary(ll, val.labels, threshold=0.995)
cal = pcnn.eval.classification.calibration(ll, val.labels)
print(f"p(c|x) of the prediction >= {conf['threshold']} for {conf['share_confident']:.0%} of the images, and those are "
      f"right {conf['accuracy_confident']:.1%} of the time; overall accuracy {conf['accuracy']:.1%} at a mean "
      f"confidence of {conf['mean_confidence']:.1%}; ECE {cal['ece']:.3f}")

# %% [markdown]
# ## Most confident mistakes
# Ranked by how far the (wrong) prediction beats the true class: log p(x | pred) - log p(x | true),
# in nats and in bits/dim. The posterior p(c | x) is no use for this: as above, a gap of a few nats
# already gives p = 1.00.

# %%
DIMS = 3 * model.config.image_size ** 2
order, margin = confident_mistakes(ll, val.labels, N_MISTAKES)
gaps = likelihood_margins(ll, DIMS)
print(f"median margin of the prediction over the runner-up: {gaps['nats'].median():.1f} nats = "
      f"{gaps['bpd'].median():.4f} bits/dim")
if len(order):
    titles = mistake_titles(ll, val.labels, order, DIMS, CLASS_NAMES)
    show_images(val.images[order], nrow=4, titles=titles, scale=2.6, fontsize=10)
    plt.show()
else:
    print("no mistakes")

# %% [markdown]
# ## Which pixels decided? Per-pixel class evidence
# `pcnn.evidence` gives log p(x_ij | x_<ij, c) for every pixel and class (nats; the maps sum exactly to log p(x | c)). Each map below is the predicted class minus the runner-up: red pixels pushed the model towards its answer, blue pixels against it. The first rows are the most clearly **correct** images, the last rows the most confident **mistakes**, where the map compares the (wrong) prediction with the true class.

# %%
ev_right = (pred == val.labels).nonzero().flatten()
show_right = ev_right[gaps["nats"][ev_right].argsort(descending=True)][:2].tolist()   # clearest correct
show_wrong = order[:2].tolist()
picked = show_right + show_wrong
ev = pcnn.evidence(model, to_float(val.images[picked]), batch_size=BATCH)   # (n, 4, 32, 32) nats
assert torch.allclose(ev.sum((2, 3)), ll[picked], rtol=1e-4)              # the maps add up to log p(x|c)
fig, axes = plt.subplots(len(picked), 2, figsize=(6.4, 3.2 * len(picked)), squeeze=False)
for k, i in enumerate(picked):
    wrong = i in show_wrong
    second = int(val.labels[i]) if wrong else None   # mistakes: prediction vs the true class
    pcnn.plot_evidence_margin(val.images[i], ev[k], true_label=int(val.labels[i]), second=second, axes=axes[k],
                              label="mistake" if wrong else "correct")
fig.tight_layout()
plt.show()

# %% [markdown]
# Where the worst mistake's margin comes from, row by row (row 0 is the top of the image): a margin carried by one row, e.g. a border, is a decision the image's content did not make.

# %%
if show_wrong:
    i = show_wrong[0]
    k = picked.index(i)
    m = pcnn.evidence_margin(ev[k:k + 1], first=int(pred[i]), second=int(val.labels[i]))
    rows = margin_by_row(m.maps[0])
    print(f"worst mistake: a {CLASS_NAMES[int(val.labels[i])]} read as {CLASS_NAMES[int(pred[i])]} by "
          f"{rows['total']:.1f} nats; row {rows['top_row']} of {ev.shape[-2]} adds {rows['top_nats']:.1f} nats "
          f"({rows['top_share']:.0%} of the margin), the other rows {rows['total'] - rows['top_nats']:.1f}")

# %% [markdown]
# ## Test-split predictions
# Two files in `runs/notebook_03/`: `test_predictions.csv` in the course's submission layout (no header, rows `test/<file>.jpg,<label>`, the split's CSV with the labels filled in) and `test_loglik.csv` with a header and log p(x | c) for every class.

# %%
test = subset(load_split("test", DATA, show_progress=False), N_TEST)
ll_test = pcnn.log_likelihoods(model, to_float(test.images), batch_size=BATCH,
                               progress=nb.ProgressLine("log p(x|c), test", unit="(image, class) pairs"))
OUT = ROOT / "runs" / "notebook_03"
course_csv = pcnn.eval.classification.write_predictions(OUT / "test_predictions.csv", test.paths, ll_test.argmax(1), course_format=True)
full_csv = pcnn.eval.classification.write_predictions(OUT / "test_loglik.csv", test.paths, ll_test.argmax(1), ll_test,
                                           class_names=CLASS_NAMES)
for out in (course_csv, full_csv):
    lines = out.read_text().splitlines()
    print(f"{nb.show_path(out)}: {len(lines)} lines, e.g.", *lines[:2], sep="\n  ")
