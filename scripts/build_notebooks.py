#!/usr/bin/env python
"""Write notebooks/01..07 from the cell sources below (outputs empty; execute with
scripts/execute_notebooks.py). Edit here, not in the .ipynb files, then rerun both."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "notebooks"

SMOKE_NOTE = ("With `PCNN_SMOKE=1` (CI) every size shrinks so the notebook runs in well under a minute on a "
              "CPU; no step is skipped.")
#: What produced each notebook's committed outputs (the first markdown cell says it).
CARD = "`checkpoints/pcnn_cpu_blocks40_stage4.safetensors` (see `checkpoints/README.md`)"
PROVENANCE = {
    "01": "**Committed outputs:** a full (non-smoke) run over the CPEN455 data on the project's 2-core CPU "
          "machine; no model is involved.",
    "02": "**Committed outputs:** a full (non-smoke) run of the `starter.json` preset (1/40/5) on the whole "
          "training split for 1 + 4 epochs (about 20 min) on the project's 2-core CPU machine: a short budget, "
          "so the curves show the start of training only (the shipped checkpoint trained for 16 + 6 + 10 + 10 epochs). "
          "On a GPU, raise `EPOCHS_MORE`.",
    "03": f"**Committed outputs:** {CARD}, trained on the project's 2-core CPU machine; full validation and "
          "test splits.",
    "04": f"**Committed outputs:** the metric logs of {CARD}'s four training stages (`results/shipped/1_pretrain`, "
          "`results/shipped/2_disc_finetune`, `results/shipped/3_disc_finetune_lowlr`, "
          "`results/shipped/4_disc_finetune_dropout01`), of a stopped try "
          "(`results/levers/disc_weight_002`) and of a 4-epoch dropout-0 probe (`results/levers/dropout_0`).",
    "05": "**Committed outputs:** the real comparison in `results/fusion/` (scripts/fusion_comparison.py, budget "
          "`configs/fusion_budget.json`: 1/40/5, 2 epochs, seed 0, flips, EMA, one thread per run on the project's "
          "2-core CPU machine while another training job used the other core). Two epochs is a short budget: "
          "the ranking can change with longer training (see the table's caveats in the README).",
    "06": f"**Committed outputs:** {CARD}; 25 images per class, FID against the 519 test images, CPU.",
    "07": f"**Committed outputs:** {CARD}, on the 2-core CPU machine.",
}


def setup_cell(extra_imports: str = "") -> str:
    return f'''# Environment: Colab / Kaggle install the project at a pinned ref; locally it is already installed.
PCNN_REPO = os.environ.get("PCNN_REPO", "https://github.com/OWNER/pcnn")  # your clone's URL
PCNN_REF = "v0.1.0"                            # pinned tag or commit: never install an unpinned branch
ON_COLAB = "google.colab" in sys.modules
ON_KAGGLE = bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE"))
if ON_COLAB or ON_KAGGLE:
    import subprocess
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+{{PCNN_REPO}}@{{PCNN_REF}}"], check=True)

%matplotlib inline
%config InlineBackend.figure_format = "png"
import matplotlib.pyplot as plt
import torch
import pcnn
from pcnn import notebook as nb
{extra_imports}
plt.rcParams["figure.dpi"] = 72
if SMOKE and not torch.cuda.is_available():
    torch.set_num_threads(1)   # tiny tensors: one thread is ~10x faster than several on a busy 2-core CI box
DEVICE = nb.device()
ROOT = nb.repo_root()
DATA = nb.ensure_data()      # $PCNN_DATA_DIR or <repo>/data; downloaded with pcnn.data.download when missing
print(f"environment: {{nb.environment()}}, device: {{DEVICE}}, data: {{DATA}}, smoke: {{SMOKE}}")'''


def smoke_cell(sizes: str) -> str:
    return ("import os, sys\n"
            'SMOKE = os.environ.get("PCNN_SMOKE") == "1"   # CI: shrink every size, skip nothing\n' + sizes.strip())


def nb_of(title: str, what: str, sizes: str, cells: list, extra_imports: str = ""):
    nbk = new_notebook()
    nbk.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbk.metadata["language_info"] = {"name": "python"}
    nbk.cells = [new_markdown_cell(f"# {title}\n\n{what}\n\n{{PROVENANCE}}\n\n{SMOKE_NOTE}"),
                 new_code_cell(smoke_cell(sizes)),
                 new_code_cell(setup_cell(extra_imports))]
    for c in cells:
        if isinstance(c, tuple) and c[0] == "md":
            nbk.cells.append(new_markdown_cell(c[1].strip()))
        else:
            nbk.cells.append(new_code_cell(c.strip()))
    return nbk


md = lambda s: ("md", s)  # noqa: E731

NOTEBOOKS = {}

# ----------------------------------------------------------------------------------------------- 01
NOTEBOOKS["01_data_exploration_and_augmentation"] = nb_of(
    "01 Data exploration and augmentation",
    "The CPEN455 data: images per class and split, examples, pixel statistics per class, the grayscale "
    "files, the course's 64 -> 32 resize, and every training augmentation of `pcnn.data`.",
    """
N_PER_CLASS = 4 if SMOKE else 10        # examples shown per class
N_STATS = 64 if SMOKE else None         # training images per class for histograms / means (None: all)
N_AUG = 4 if SMOKE else 8               # images in the augmentation previews
""",
    [
        md("## Images per class and split\nCounted from the CSVs (no decoding), so this table is checked "
           "verbatim by nbval."),
        """# NBVAL_CHECK_OUTPUT
from pcnn.data import CLASS_NAMES, verify
report = verify(DATA)
cols = list(CLASS_NAMES) + ["unlabelled"]
print(f"{'split':<11}" + "".join(f"{c:>11}" for c in cols) + f"{'total':>8}")
for split, r in report.items():
    print(f"{split:<11}" + "".join(f"{r['classes'].get(c, 0):>11}" for c in cols) + f"{r['n']:>8}")""",
        """from pcnn.data import load_split
train = load_split("train", DATA, show_progress=False)
val = load_split("validation", DATA, show_progress=False)
print(train, val, sep="\\n")""",
        md("## Examples per class (32x32, as the model sees them)"),
        """g = torch.Generator().manual_seed(0)
picks, titles = [], []
for c, name in enumerate(CLASS_NAMES):
    idx = (train.labels == c).nonzero().flatten()
    idx = idx[torch.randperm(len(idx), generator=g)[:N_PER_CLASS]]
    picks.append(train.images[idx]); titles += [name] * len(idx)
nb.show_images(torch.cat(picks), nrow=N_PER_CLASS, titles=titles, scale=1.1)
plt.show()""",
        md("## Per-channel pixel histograms and mean image per class"),
        """import numpy as np
fig, axes = plt.subplots(2, len(CLASS_NAMES), figsize=(3 * len(CLASS_NAMES), 5.4))
for c, name in enumerate(CLASS_NAMES):
    imgs = train.images[train.labels == c][:N_STATS]
    for ch, color in enumerate(("red", "green", "blue")):
        axes[0, c].hist(imgs[:, ch].flatten().numpy(), bins=64, range=(0, 255), color=color, alpha=0.45,
                        density=True, label=color[0].upper())
    axes[0, c].set_title(f"{name} ({len(imgs)} images)", fontsize=9)
    axes[0, c].set_yticks([]); axes[0, c].legend(fontsize=7)
    axes[1, c].imshow(imgs.float().mean(0).round().byte().permute(1, 2, 0).numpy())
    axes[1, c].set_title(f"mean {name}", fontsize=9); axes[1, c].axis("off")
fig.tight_layout(); plt.show()
mean, std = pcnn.data.channel_stats(train)
print("per-channel mean / std in [-1, 1] units:", [round(v, 3) for v in mean.tolist()], [round(v, 3) for v in std.tolist()])""",
        md("## Grayscale files\nSome JPEGs are stored with one (gray) channel, found from the file headers. "
           "Decoding replicates the gray channel into R, G and B, so the model sees them as colour images with "
           "three equal channels."),
        """from PIL import Image
gray = {}
for split in (train, val):
    modes = [(p, lab) for p, lab in zip(split.paths, split.labels.tolist()) if Image.open(DATA / p).mode != "RGB"]
    gray[split.name] = modes
    print(f"{split.name}: {len(modes)} non-RGB file(s) of {len(split)}",
          {n: sum(lab == c for _, lab in modes) for c, n in enumerate(CLASS_NAMES)})
idx = [train.paths.index(p) for p, _ in gray["train"][:8]]
if idx:
    assert all(torch.equal(train.images[i, 0], train.images[i, 2]) for i in idx)   # replicated channels
    nb.show_images(train.images[idx], titles=[CLASS_NAMES[int(train.labels[i])] for i in idx], scale=1.1)
    plt.show()""",
        md("## The 64 -> 32 resize\nEach JPEG is decoded at its own size (64x64) and resized to 32x32 "
           "(bilinear with antialiasing, then rounded back to 8 bits): `pcnn.data.resize_uint8`."),
        """from pcnn.data import resize_uint8
from torchvision.io import decode_image, ImageReadMode
orig = torch.stack([decode_image(str(DATA / p), mode=ImageReadMode.RGB) for p in train.paths[:4]])
small = resize_uint8(orig, 32)
assert torch.equal(small, train.images[:4])   # exactly what load_split gives
fig, axes = plt.subplots(2, 4, figsize=(8, 4.2))
for k in range(4):
    axes[0, k].imshow(nb.to_hwc(orig[k])); axes[0, k].set_title(f"{tuple(orig.shape[-2:])}", fontsize=8)
    axes[1, k].imshow(nb.to_hwc(small[k]), interpolation="nearest"); axes[1, k].set_title("32x32", fontsize=8)
for ax in axes.flat: ax.axis("off")
fig.tight_layout(); plt.show()""",
        md("## Every augmentation\n`pcnn.data.augment` draws each step per image from one generator and "
           "rounds back onto the 8-bit grid once, so the output is again a valid input of the discretised "
           "likelihood. Training uses horizontal flips only by default (`AugmentConfig()`)."),
        """from pcnn.data import AugmentConfig, augment
base = train.images[:N_AUG]
variants = {"original": AugmentConfig(hflip=False), "hflip": AugmentConfig(), "rotate 15 deg": AugmentConfig(hflip=False, rotate_deg=15),
            "translate 4 px": AugmentConfig(hflip=False, translate=4), "colour jitter 0.3": AugmentConfig(hflip=False, color_jitter=0.3),
            "noise std 8": AugmentConfig(hflip=False, noise_std=8.0), "cutout 10 px": AugmentConfig(hflip=False, cutout=10),
            "all": AugmentConfig(rotate_deg=10, translate=2, color_jitter=0.2, noise_std=4.0, cutout=8)}
rows = [augment(base, cfg, torch.Generator().manual_seed(1)) for cfg in variants.values()]
fig, axes = plt.subplots(len(rows), N_AUG, figsize=(1.2 * N_AUG + 1.2, 1.2 * len(rows)), squeeze=False)
for r, (name, imgs) in enumerate(zip(variants, rows)):
    for k in range(N_AUG):
        axes[r, k].imshow(nb.to_hwc(imgs[k]), interpolation="nearest"); axes[r, k].set_xticks([]); axes[r, k].set_yticks([])
    axes[r, 0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
fig.tight_layout(); plt.show()""",
        md("""## Why no per-channel normalisation

PixelCNN++'s discretised logistic mixture assigns each 8-bit value its own bin of width 2/255 on
[-1, 1], with the two edge values owning the open tails. That is what makes the likelihood a
probability of the 8-bit image (and bits/dim comparable across runs and papers). Subtracting a
per-channel mean and dividing by a standard deviation moves the data off that grid and outside
[-1, 1]: the bins no longer centre on data values, their widths are off by 1/std, and the edge rule
fires at the wrong values, so the "likelihood" is no longer normalised and the per-class scores used
for classification are distorted. `pcnn` therefore feeds `v / 127.5 - 1` and keeps normalisation
opt-in only (`AugmentConfig.normalize`, refused by training)."""),
    ])

# ----------------------------------------------------------------------------------------------- 02
NOTEBOOKS["02_training"] = nb_of(
    "02 Training",
    "Pick a preset from `configs/`, train with a progress bar and a loss plot that redraws after every "
    "epoch, interrupt and resume the run exactly, and export the checkpoint.",
    """
PRESET = "smoke.json" if SMOKE else "starter.json"   # any file in configs/
N_TRAIN = 16 if SMOKE else None                       # training images (None: the whole split)
EPOCHS_MORE = 1 if SMOKE else 4                       # epochs after the resume
OVERRIDES = (["batch_size=4", "max_steps=null", "val_subset=8", "eval_batch_size=64"] if SMOKE
             else ["val_every=1"])""",
    [
        md("## Presets"),
        """import json, shutil
from pcnn.train import TrainConfig, apply_overrides
for p in sorted((ROOT / "configs").glob("*.json")):
    print(f"{p.name:<22} {json.loads(p.read_text()).get('description', '')[:110]}")
cfg = TrainConfig.from_dict(apply_overrides(json.loads((ROOT / "configs" / PRESET).read_text()), OVERRIDES))
print("\\nmodel:", cfg.model)
print(f"epochs (full run) {cfg.epochs}, batch {cfg.batch_size}, lr {cfg.lr}, EMA {cfg.ema}")""",
        """from pcnn.data import load_split
train_split = load_split("train", DATA, size=cfg.model.image_size, show_progress=False)
val_split = load_split("validation", DATA, size=cfg.model.image_size, show_progress=False)
if N_TRAIN:
    train_split = train_split.subset(torch.randperm(len(train_split), generator=torch.Generator().manual_seed(0))[:N_TRAIN])
WORKDIR = ROOT / "runs" / "notebook_02"
shutil.rmtree(WORKDIR, ignore_errors=True)   # a fresh run every time the notebook is executed
print(f"{len(train_split)} training images, {len(train_split) // cfg.batch_size} batches per epoch -> {WORKDIR}")""",
        md("## Train one epoch\n`nb.train_live` calls `pcnn.train.train` one epoch at a time with "
           "`resume=True` and redraws the plot from `metrics.jsonl` after each."),
        """plot = nb.LiveLossPlot(PRESET)
history = nb.train_live(cfg, WORKDIR, epochs=1, train_data=train_split, val_data=val_split, plot=plot)
print(sorted(p.name for p in WORKDIR.iterdir()))""",
        md("## Interrupt and resume\nThe kernel could die here: everything needed to continue exactly "
           "(weights, optimizer, EMA, RNG states, data order) is in `last.pt`. A new `train(..., resume=True)` "
           "call picks it up; on CPU the result is bitwise what an uninterrupted run gives. "
           "From the command line: `python -m pcnn train --workdir runs/x --resume`."),
        """state = torch.load(WORKDIR / "last.pt", weights_only=True)
print(f"saved state: epoch {state['epoch']}, step {state['step']}")
del state
plot = nb.LiveLossPlot(PRESET)   # a fresh plot in this cell; it reads the whole metrics.jsonl
history = nb.train_live(cfg, WORKDIR, epochs=EPOCHS_MORE, train_data=train_split, val_data=val_split, plot=plot)
for row in history:
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
           if k in ("epoch", "step", "train_bpd", "val_bpd", "val_acc", "seconds")})""",
        md("## Export\n`model.safetensors` in the workdir holds the weights to use (EMA or raw, whichever "
           "had the lower validation bits/dim) with the model config inside, so `pcnn.load` needs nothing "
           "else. `pcnn.course.export_for_course` writes the file the CPEN455 scripts load."),
        """model = pcnn.load(WORKDIR / "model.safetensors", device=DEVICE)
meta = pcnn.read_metadata(WORKDIR / "model.safetensors")
print(model.config)
print({k: meta[k] for k in ("weights", "epoch", "step", "val_bpd", "val_acc")})
from pcnn.course import export_for_course, load_course_model
course_file = export_for_course(WORKDIR / "model.safetensors", WORKDIR / "conditional_pixelcnn.pth")
print(course_file.name, course_file.stat().st_size, "bytes; reloads:", load_course_model(course_file).config == model.config)""",
    ])

# ----------------------------------------------------------------------------------------------- 03
NOTEBOOKS["03_classification"] = nb_of(
    "03 Classification by likelihood",
    "`predict(x) = argmax_c log p(x | c)`: accuracy, macro F1, per-class accuracy and the confusion "
    "matrix on the validation split, the most confident mistakes with their per-class log-likelihoods, "
    "and the test-split prediction CSV.",
    """
N_VAL = 24 if SMOKE else None     # validation images scored (None: all 519)
N_TEST = 16 if SMOKE else None    # test images in the CSV (None: all)
N_MISTAKES = 4 if SMOKE else 8
BATCH = 256""",
    [
        """model, source = nb.get_model(dev=DEVICE)
print("model:", source); print(model.config)""",
        """from pcnn.data import CLASS_NAMES, load_split, to_float
from tqdm.auto import tqdm
def subset(split, n):
    return split if n is None else split.subset(torch.linspace(0, len(split) - 1, n).long())
val = subset(load_split("validation", DATA, show_progress=False), N_VAL)
bar = tqdm(desc="log p(x|c)", total=1)
def tick(done, total):
    bar.total = total; bar.n = done; bar.refresh()
ll = pcnn.log_likelihoods(model, to_float(val.images), batch_size=BATCH, progress=tick)   # (N, 4) nats
bar.close()
pred = ll.argmax(1)
m = pcnn.metrics(val.labels.numpy(), pred.numpy(), model.config.num_classes)
print(f"validation: {m['n']} images, accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}")
for name, a in zip(CLASS_NAMES, m["per_class_accuracy"]):
    print(f"  {name:<10} {a:.3f}")""",
        """nb.plot_confusion(m["confusion_matrix"], CLASS_NAMES)
plt.show()""",
        md("## Most confident mistakes\nConfidence is the posterior p(c | x) under a uniform prior. "
           "Titles give log p(x | c) per class in bits/dim (lower is a better fit); * marks the prediction."),
        """post = pcnn.posterior(ll)
wrong = (pred != val.labels).nonzero().flatten()
order = wrong[post[wrong, pred[wrong]].argsort(descending=True)][:N_MISTAKES]
dims = 3 * model.config.image_size ** 2
bpd = -ll / (dims * torch.log(torch.tensor(2.0)))
titles = []
for i in order.tolist():
    scores = " ".join(f"{n[:3]}{'*' if c == pred[i] else ''} {bpd[i, c]:.3f}" for c, n in enumerate(CLASS_NAMES))
    titles.append(f"true {CLASS_NAMES[val.labels[i]]}, p={post[i, pred[i]]:.2f}\\n{scores}")
if len(order):
    nb.show_images(val.images[order], nrow=4, titles=titles, scale=2.4, fontsize=7)
    plt.show()
else:
    print("no mistakes")""",
        md("## Which pixels decided? Per-pixel class evidence\n`pcnn.evidence` gives log p(x_ij | x_<ij, c) "
           "for every pixel and class (nats; the maps sum exactly to log p(x | c)). Each map below is the "
           "predicted class minus the runner-up: red pixels pushed the model towards its answer, blue "
           "pixels against it. First the most clearly correct images, then the most confident mistakes, "
           "where the right-hand map compares the (wrong) prediction with the true class."),
        """ev_right = (pred == val.labels).nonzero().flatten()
gap = ll.sort(1, descending=True).values
gap = gap[:, 0] - gap[:, 1]                              # nats between the two best classes
show_right = ev_right[gap[ev_right].argsort(descending=True)][:2].tolist()
show_wrong = order[:2].tolist()
picked = show_right + show_wrong
ev = pcnn.evidence(model, to_float(val.images[picked]), batch_size=BATCH)   # (n, 4, 32, 32) nats
assert torch.allclose(ev.sum((2, 3)), ll[picked], rtol=1e-4)              # the maps add up to log p(x|c)
fig, axes = plt.subplots(len(picked), 2, figsize=(6.4, 3.0 * len(picked)), squeeze=False)
for k, i in enumerate(picked):
    second = int(val.labels[i]) if i in show_wrong else None   # mistakes: prediction vs the true class
    pcnn.plot_evidence_margin(val.images[i], ev[k], true_label=int(val.labels[i]), second=second, axes=axes[k])
fig.tight_layout()
plt.show()""",
        md("## Test-split predictions\nOne row per test image: its id (CSV path), the predicted label and "
           "log p(x | c) for every class, in a run folder."),
        """import csv
test = subset(load_split("test", DATA, show_progress=False), N_TEST)
ll_test = pcnn.log_likelihoods(model, to_float(test.images), batch_size=BATCH)
RUN = ROOT / "runs" / "notebook_03"; RUN.mkdir(parents=True, exist_ok=True)
out = RUN / "test_predictions.csv"
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "label", *[f"loglik_{n}" for n in CLASS_NAMES]])
    for p, lab, row in zip(test.paths, ll_test.argmax(1).tolist(), ll_test.tolist()):
        w.writerow([p, lab, *[f"{v:.4f}" for v in row]])
print(f"wrote {len(test)} rows to {out.relative_to(ROOT)}")
print(out.read_text().splitlines()[0])
print(out.read_text().splitlines()[1][:100])""",
    ])

# ----------------------------------------------------------------------------------------------- 04
NOTEBOOKS["04_loss_curves"] = nb_of(
    "04 Loss curves",
    "Train / validation bits per dimension and validation accuracy against epochs for one or several "
    "runs, read from their `metrics.jsonl` (in `results/` and `runs/`).",
    """
TINY_EPOCHS = 2 if SMOKE else 3       # the tiny run made when there is nothing to plot
MAX_RUNS = 8                          # most runs drawn in one figure""",
    [
        """runs = nb.find_runs(ROOT / "results", ROOT / "runs")
runs = [r for r in runs if r.name != "notebook_tiny_curves"]
for r in runs:
    rows = nb.read_metrics(r)
    print(f"{str(r.relative_to(ROOT)):<45} {len(rows):>4} epochs, last val bpd {next((x['val_bpd'] for x in reversed(rows) if x.get('val_bpd') is not None), None)}")""",
        md("## A tiny run\nIn smoke mode (or when no run is found) a tiny model is trained for a few epochs "
           "on a few images so the plots below have data."),
        """if SMOKE or not runs:
    import shutil
    from pcnn.data import load_split
    tiny_dir = ROOT / "runs" / "notebook_tiny_curves"
    shutil.rmtree(tiny_dir, ignore_errors=True)
    tr = load_split("train", DATA, show_progress=False)
    tr = tr.subset(torch.randperm(len(tr), generator=torch.Generator().manual_seed(0))[:16])
    va = load_split("validation", DATA, show_progress=False)
    cfg = nb.tiny_train_config(steps=None, batch_size=4, val_subset=8)
    nb.train_live(cfg, tiny_dir, epochs=TINY_EPOCHS, train_data=tr, val_data=va, progress=False)
    runs = [tiny_dir] + runs
print(len(runs), "run(s)")""",
        """nb.plot_curves({str(r.relative_to(ROOT)): r for r in runs[:MAX_RUNS]})
plt.show()""",
    ])

# ----------------------------------------------------------------------------------------------- 05
NOTEBOOKS["05_fusion_comparison"] = nb_of(
    "05 Fusion strategies compared",
    "Where the class enters the network (`pcnn.fusion`), side by side: accuracy, macro F1, bits/dim, "
    "FID (192 and 2048 dims), training time and hardware, from the results files "
    "`results/fusion/*.json` (one per run, written by `pcnn.experiments.run_and_record`).",
    """
STRATEGIES = ["input", "input_concat", "first_conv", "middle", "late", "blocks", "blocks_film", "none"]   # tiny runs only
TINY_STEPS = 2 if SMOKE else 20          # steps per strategy when results are made here
TINY_SIZE = 8 if SMOKE else 32           # image size of those tiny runs
PER_CLASS = 1 if SMOKE else 10           # samples per class for their FID
N_REF = 8 if SMOKE else 100              # reference (test) images for their FID
FID_DIMS = (192,) if SMOKE else (192, 2048)""",
    [
        """from pcnn import experiments
RESULTS = ROOT / "results" / "fusion"
results = experiments.load_results(RESULTS) if RESULTS.is_dir() else []
print(f"{len(results)} results file(s) in {RESULTS.relative_to(ROOT)}")""",
        md("## Tiny runs (smoke mode, or when there are no results files)\nEach strategy is trained for a "
           "few steps on a tiny network, sampled and scored; the results files go to a temporary folder."),
        """if SMOKE or not results:
    import tempfile
    from pcnn.data import load_split
    from pcnn.fid import list_images
    tmp = Path(tempfile.mkdtemp(prefix="pcnn-fusion-"))
    tr = load_split("train", DATA, size=TINY_SIZE, show_progress=False)
    va = load_split("validation", DATA, size=TINY_SIZE, show_progress=False)
    ref = nb.copy_subset(list_images(DATA / "test"), tmp / "ref", n=N_REF)
    inception = pcnn.fid.load_inception("cpu")    # loaded once for all runs
    print("Inception weights:", inception.weights)
    for name in STRATEGIES:
        cfg = nb.tiny_train_config(image_size=TINY_SIZE, steps=TINY_STEPS, fusion=name, batch_size=4, val_subset=8, ema=0.0)
        res = experiments.run_and_record(cfg, tmp / name, tmp / "results" / f"{name}.json", name=name,
                                         train_data=tr, val_data=va, fid_ref_dir=ref, fid_dims=FID_DIMS,
                                         per_class=PER_CLASS, fid_model=inception)
        print(f"{name:<13} acc {res['final']['accuracy']}, bpd {res['final']['val_bpd']:.3f}, FID {res['final']['fid_192']:.1f}")
    results = experiments.load_results(tmp / "results")""",
        md("## Table"),
        """from IPython.display import Markdown, display
display(Markdown(experiments.markdown_table(results)))
print("FID weights:", sorted({r["final"].get("fid_weights") or "-" for r in results}))""",
        md("## Bar plots"),
        """experiments.plot_results(results)
plt.show()""",
    ], extra_imports="from pathlib import Path\nimport pcnn.fid")

# ----------------------------------------------------------------------------------------------- 06
NOTEBOOKS["06_fid_evaluation"] = nb_of(
    "06 FID evaluation",
    "25 generated images per class (the course protocol) with `pcnn.sample.write_sample_set`, a grid per "
    "class, and FID at 192 and 2048 Inception dims against the test images with `pcnn.fid.fid_from_dirs` "
    "(offline Inception weights; the notebook prints which).",
    """
PER_CLASS = 2 if SMOKE else 25        # generated images per class
N_REF = 16 if SMOKE else None         # test images used as reference (None: the whole test split)
FID_DIMS = (64, 192) if SMOKE else (192, 2048)   # 2048-d: a 2048x2048 matrix square root, minutes on a CPU""",
    [
        """model, source = nb.get_model(dev=DEVICE)
print("model:", source)""",
        """import tempfile
from pathlib import Path
from pcnn.data import CLASS_NAMES
from pcnn.fid import list_images
OUT = Path(tempfile.mkdtemp(prefix="pcnn-fid-"))
paths, grid = nb.write_fid_samples(model, OUT / "generated", per_class=PER_CLASS, seed=0)
print(len(paths), "images, e.g.", paths[0].name)""",
        """from PIL import Image
import numpy as np
for c, name in enumerate(CLASS_NAMES):
    files = sorted((OUT / "generated").glob(f"Class{c}_image_*.png"))
    imgs = torch.stack([torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1) for f in files])
    nb.show_grid(make_grid(imgs, nrow=min(len(imgs), 13)), title=f"Class{c}: {name}", width=min(10, 0.8 * len(imgs)))
    plt.show()""",
        md("## FID\nThe reference statistics are cached (keyed by the files' contents), so a second run "
           "only scores the generated images. With 100 generated images the 192- and 2048-d covariances "
           "are rank-deficient (the course protocol); the warnings say so."),
        """import warnings
ref_dir = DATA / "test" if N_REF is None else nb.copy_subset(list_images(DATA / "test"), OUT / "ref", n=N_REF)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    res = fid_from_dirs(OUT / "generated", ref_dir, dims=FID_DIMS, device=str(DEVICE))
for d, v in res["fid"].items():
    print(f"FID {d:>4} dims: {v:.2f}")
print(f"{res['n_gen']} generated vs {res['n_ref']} reference images")
print("Inception weights:", res["weights"])
for w in res["warnings"]:
    print("note:", w)""",
    ], extra_imports="from pcnn.fid import fid_from_dirs\nfrom pcnn.sample import make_grid")

# ----------------------------------------------------------------------------------------------- 07
NOTEBOOKS["07_interactive_sampling"] = nb_of(
    "07 Interactive sampling",
    "Pick a class by name, the number of images and a seed, press **Sample**: the progress bar advances "
    "row by row (the sampler reports each finished row; the images appear when the last row is done) "
    "and **Save PNGs** writes them to `runs/notebook_07/`.",
    """
COUNT = 2 if SMOKE else 8        # images per click in the scripted run below""",
    [
        """from pcnn.widgets import SamplerWidget
model, source = nb.get_model(dev=DEVICE)
print("model:", source)
w = SamplerWidget(model, out_dir=ROOT / "runs" / "notebook_07")
w.display();""",
        md("## The same path, scripted\nThe buttons call `w.on_sample` and `w.on_save`; calling them here "
           "runs exactly what a click runs (and lets CI execute it)."),
        """w.class_dropdown.value = 1      # panda
w.count.value = COUNT
w.seed.value = 0
images = w.on_sample(w.sample_button)
print(w.status.value, "| progress", w.progress.value, "%")
nb.show_images(images, titles=[w.class_names[1]] * len(images), scale=1.6)
plt.show()
saved = w.on_save(w.save_button)
print([p.name for p in saved])""",
        md("## Same noise, every class\nEach column uses one noise draw for all four classes, so what changes "
           "down a column is only the class: how much the class steers a sample."),
        """PER_CLASS = 2 if SMOKE else 6
grid = pcnn.same_noise_grid(model, per_class=PER_CLASS, seed=0)
nb.show_grid(grid, width=2.0 + 1.3 * PER_CLASS)
plt.show()""",
        md("## Finish this panda as a pizza: class-conditional completion\n`pcnn.complete` keeps the top "
           "`KEEP_ROWS` rows of a validation image and samples the rest under each class, with the same noise "
           "(the cached sampler, its layer caches filled from the kept rows)."),
        """from pcnn.data import load_split
from pcnn.widgets import CompletionWidget
val = load_split("validation", DATA, show_progress=False)
cw = CompletionWidget(model, val.images, val.labels)   # pick an image index, the rows to keep, press Complete
cw.display();""",
        md("Scripted, as CI runs it: the first panda and the first pizza of the validation split, top half kept."),
        """KEEP_ROWS = 16                    # of 32
picks = [int((val.labels == c).nonzero()[0]) for c in (1, 3)]   # the first panda and the first pizza
originals = val.images[picks]
completions = pcnn.complete_as_every_class(model, originals, KEEP_ROWS, seed=0)   # (2, 4, 3, 32, 32)
assert torch.equal(completions[:, :, :, :KEEP_ROWS], originals[:, None, :, :KEEP_ROWS].expand_as(completions[:, :, :, :KEEP_ROWS]))
nb.show_grid(pcnn.completion_grid(originals, completions, KEEP_ROWS), width=9.0)
plt.show()""",
    ])


def main(argv=None) -> int:
    """Write every notebook, or those whose names start with one of the arguments."""
    names = sys.argv[1:] if argv is None else argv
    OUT.mkdir(exist_ok=True)
    for name, nbk in NOTEBOOKS.items():
        if names and not any(name.startswith(n) for n in names):
            continue
        first = nbk.cells[0]
        first.source = first.source.replace("{PROVENANCE}", PROVENANCE[name[:2]])
        nbformat.validate(nbk)
        path = OUT / f"{name}.ipynb"
        nbformat.write(nbk, str(path))
        print("wrote", path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
