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
# `predict(x) = argmax_c log p(x | c)`: accuracy, macro F1, per-class accuracy and the confusion matrix on the validation split, the most confident mistakes with their per-class log-likelihoods, and the test-split prediction CSV.
#
# **Committed outputs:** `checkpoints/pcnn_cpu_film40.safetensors` (see `checkpoints/README.md`), trained on the project's 2-core CPU machine; full validation and test splits.
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

# %%
model, source = nb.get_model(dev=DEVICE)
print("model:", source); print(model.config)

# %%
from pcnn.data import CLASS_NAMES, load_split, to_float
from pcnn import plots
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
nb.plot_confusion(m["confusion_matrix"], CLASS_NAMES)
plt.show()

# %% [markdown]
# ## Most confident mistakes
# Ranked by how far the (wrong) prediction beats the true class: log p(x | pred) - log p(x | true),
# in nats and in bits/dim. The posterior p(c | x) is no use for this: with 3072 sub-pixels a gap of a
# few nats already gives p = 1.00 (the table below shows how often).

# %%
DIMS = 3 * model.config.image_size ** 2
order, margin = plots.confident_mistakes(ll, val.labels, N_MISTAKES)
gaps = plots.likelihood_margins(ll, DIMS)
post = pcnn.posterior(ll).max(1).values
print(f"posterior of the prediction >= 0.995 for {(post >= 0.995).float().mean():.0%} of the images; "
      f"median margin to the runner-up {gaps['nats'].median():.1f} nats = {gaps['bpd'].median():.4f} bits/dim")
if len(order):
    titles = plots.mistake_titles(ll, val.labels, order, DIMS, CLASS_NAMES)
    nb.show_images(val.images[order], nrow=4, titles=titles, scale=2.6, fontsize=10)
    plt.show()
else:
    print("no mistakes")

# %% [markdown]
# ## Which pixels decided? Per-pixel class evidence
# `pcnn.evidence` gives log p(x_ij | x_<ij, c) for every pixel and class (nats; the maps sum exactly to log p(x | c)). Each map below is the predicted class minus the runner-up: red pixels pushed the model towards its answer, blue pixels against it. First the most clearly correct images, then the most confident mistakes, where the right-hand map compares the (wrong) prediction with the true class.

# %%
ev_right = (pred == val.labels).nonzero().flatten()
show_right = ev_right[gaps["nats"][ev_right].argsort(descending=True)][:2].tolist()   # clearest correct
show_wrong = order[:2].tolist()
picked = show_right + show_wrong
ev = pcnn.evidence(model, to_float(val.images[picked]), batch_size=BATCH)   # (n, 4, 32, 32) nats
assert torch.allclose(ev.sum((2, 3)), ll[picked], rtol=1e-4)              # the maps add up to log p(x|c)
fig, axes = plt.subplots(len(picked), 2, figsize=(6.4, 3.0 * len(picked)), squeeze=False)
for k, i in enumerate(picked):
    second = int(val.labels[i]) if i in show_wrong else None   # mistakes: prediction vs the true class
    pcnn.plot_evidence_margin(val.images[i], ev[k], true_label=int(val.labels[i]), second=second, axes=axes[k])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Test-split predictions
# One row per test image: its id (CSV path), the predicted label and log p(x | c) for every class, in a run folder.

# %%
test = subset(load_split("test", DATA, show_progress=False), N_TEST)
ll_test = pcnn.log_likelihoods(model, to_float(test.images), batch_size=BATCH,
                               progress=nb.ProgressLine("log p(x|c), test", unit="(image, class) pairs"))
out = pcnn.classify.write_predictions(ROOT / "runs" / "notebook_03" / "test_predictions.csv", test.paths,
                                      ll_test.argmax(1), ll_test, class_names=CLASS_NAMES)
lines = out.read_text().splitlines()
print(f"wrote {len(lines) - 1} rows to {nb.show_path(out)}")
print(lines[0])
print(lines[1][:100])
