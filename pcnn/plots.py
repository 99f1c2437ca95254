"""Figures the numbered notebooks show, as library functions with tests.

* :func:`pixel_histograms` -- per-class, per-channel pixel histograms and mean images (01).
* :func:`augmentation_rows` -- one row per augmentation setting of :func:`pcnn.data.augment` (01).
* :func:`chain_offsets`, :func:`plot_training_curves` -- bits/dim and accuracy against a
  cumulative epoch axis, training stages one after another (04).
* :func:`plot_results` -- the fusion comparison as bars with readable labels; the bits/dim
  axis is zoomed onto the values so their differences show (05).
* :func:`likelihood_margins`, :func:`confident_mistakes`, :func:`mistake_titles` -- mistakes
  ranked by the log-likelihood margin (nats, bits/dim), not by a saturated posterior (03).

Every function returns the figure (or tensors) and leaves showing to the caller.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch

from .config import CPEN455_CLASSES
from .data import augment
from .likelihood import bits_per_dim
from .train import read_metrics

CHANNELS = (("R", "red"), ("G", "green"), ("B", "blue"))


def _plt():
    import matplotlib.pyplot as plt
    return plt


def _names(n: int, class_names: Optional[Sequence[str]]) -> list:
    names = list(class_names or CPEN455_CLASSES)[:n]
    return names + [f"Class{c}" for c in range(len(names), n)]


# --------------------------------------------------------------------------- 01 data

def pixel_histograms(images: torch.Tensor, labels: torch.Tensor, class_names: Optional[Sequence[str]] = None,
                     per_class: Optional[int] = None, bins: int = 64):
    """Top row: the R, G, B value histograms (density) of each class's images (uint8
    (N, 3, H, W), the first ``per_class`` of each class; None: all); bottom row: the class's
    mean image. Axes are labelled; returns the figure."""
    plt = _plt()
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    names = _names(num_classes, class_names)
    fig, axes = plt.subplots(2, num_classes, figsize=(3.6 * num_classes, 6.4), squeeze=False,
                             gridspec_kw={"height_ratios": [1, 1.15]})
    for c, name in enumerate(names):
        imgs = images[labels == c][:per_class]
        ax = axes[0, c]
        for ch, (short, color) in enumerate(CHANNELS):
            ax.hist(imgs[:, ch].flatten().numpy(), bins=bins, range=(0, 255), color=color, alpha=0.45,
                    density=True, label=short)
        ax.set_title(f"{name} ({len(imgs)} images)")
        ax.set_xlabel("pixel value (0-255)")
        ax.set_xlim(0, 255)
        if c == 0:
            ax.set_ylabel("density")
            ax.legend(title="channel")
        ax.tick_params(axis="y", labelleft=c == 0)
        mean = imgs.float().mean(0).round().byte().permute(1, 2, 0).numpy() if len(imgs) else None
        if mean is not None:
            axes[1, c].imshow(mean, interpolation="nearest")
        axes[1, c].set_title(f"mean {name} image")
        axes[1, c].axis("off")
    ymax = max(ax.get_ylim()[1] for ax in axes[0])
    for ax in axes[0]:
        ax.set_ylim(0, ymax)   # one density scale, so the classes compare
    fig.tight_layout()
    return fig


def augmentation_rows(images: torch.Tensor, variants: Mapping[str, object], seed: int = 1, tile: float = 1.1):
    """One row per ``{name: AugmentConfig}`` of ``variants``: ``images`` (uint8 (N, 3, H, W))
    through :func:`pcnn.data.augment` with one seeded generator per row, the name at the
    left. Returns ``(figure, rows)`` with ``rows`` the augmented uint8 batches."""
    plt = _plt()
    rows = [augment(images, cfg, torch.Generator().manual_seed(seed)) for cfg in variants.values()]
    n = len(images)
    fig, axes = plt.subplots(len(rows), n, figsize=(tile * n + 1.8, tile * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(zip(variants, rows)):
        for k in range(n):
            axes[r, k].imshow(imgs[k].permute(1, 2, 0).numpy(), interpolation="nearest")
            axes[r, k].set_xticks([])
            axes[r, k].set_yticks([])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig, rows


# --------------------------------------------------------------------------- 04 curves

def _rows(run) -> list:
    return read_metrics(run) if isinstance(run, (str, Path)) else list(run)


def chain_offsets(runs: Mapping[str, object]) -> dict:
    """``{label: epochs before it}`` for runs that continue one another in the given order
    (each stage starts where the previous one ended); ``runs`` maps labels to workdirs or
    lists of metric rows. Partial (interrupted-epoch) rows do not count."""
    out, total = {}, 0
    for label, run in runs.items():
        out[label] = total
        total += len([r for r in _rows(run) if not r.get("partial")])
    return out


def plot_training_curves(runs: Mapping[str, object], offsets: Optional[Mapping[str, int]] = None,
                         boundaries: bool = True, title: Optional[str] = None):
    """Train (solid) and validation (dots, dashed) bits/dim and validation accuracy of
    several runs against a cumulative epoch axis: run ``label``'s epoch ``e`` is drawn at
    ``offsets[label] + e`` (default 0). One colour per run; the legend sits below the plots
    (never over the curves); ``boundaries`` draws a dotted line where each offset run starts."""
    plt = _plt()
    from matplotlib.lines import Line2D
    offsets = dict(offsets or {})
    fig, (ax_bpd, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.4))
    handles = []
    for k, (label, run) in enumerate(runs.items()):
        rows = [r for r in _rows(run) if not r.get("partial")]
        off = int(offsets.get(label, 0))
        color = f"C{k % 10}"
        tr = [(off + r["epoch"], r["train_bpd"]) for r in rows if r.get("train_bpd") is not None]
        va = [(off + r["epoch"], r["val_bpd"]) for r in rows if r.get("val_bpd") is not None]
        acc = [(off + r["epoch"], r["val_acc"]) for r in rows if r.get("val_acc") is not None]
        if tr:
            ax_bpd.plot(*zip(*tr), "-", color=color)
        if va:
            ax_bpd.plot(*zip(*va), "o--", color=color, markersize=3.5)
        if acc:
            ax_acc.plot(*zip(*acc), "o-", color=color, markersize=3.5)
        if boundaries and off:
            for ax in (ax_bpd, ax_acc):
                ax.axvline(off + 0.5, color=color, ls=":", lw=1)
        handles.append(Line2D([], [], color=color, lw=2, label=label))
    handles += [Line2D([], [], color="gray", ls="-", label="train"),
                Line2D([], [], color="gray", ls="--", marker="o", markersize=3.5, label="validation")]
    from matplotlib.ticker import MaxNLocator
    xlabel = "epoch (cumulative over stages)" if any(offsets.values()) else "epoch"
    ax_bpd.set(xlabel=xlabel, ylabel="bits / dim", title="negative log-likelihood")
    ax_acc.set(xlabel=xlabel, ylabel="validation accuracy", title="likelihood classification")
    for ax in (ax_bpd, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    ncol = min(4, len(handles))
    fig.tight_layout(rect=(0, 0.06 * math.ceil(len(handles) / ncol) + 0.02, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False)
    return fig


# --------------------------------------------------------------------------- 05 fusion bars

#: Metrics of :func:`plot_results`: (key in a results file's "final", title, lower is better).
RESULT_METRICS = (("accuracy", "accuracy", False), ("macro_f1", "macro F1", False),
                  ("val_bpd", "bits / dim", True), ("fid_192", "FID (192 dims)", True),
                  ("fid_2048", "FID (2048 dims)", True))


def zoomed_limits(values: Sequence[float], margin: float = 0.25) -> tuple:
    """Axis limits around ``values`` with ``margin`` of their range on both sides (a
    range of 0 gets +-5 % of the value), so small differences between bars show."""
    lo, hi = min(values), max(values)
    span = hi - lo or abs(hi) * 0.1 or 1.0
    return lo - margin * span, hi + margin * span


def plot_results(results: Sequence[dict], metrics=RESULT_METRICS, zoom: Sequence[str] = ("val_bpd",)):
    """The comparison of results files (``pcnn.experiments`` format): one horizontal bar
    panel per metric, a row per run (names readable at 10 pt), the value written at each
    bar, the best run's bar outlined. Metrics in ``zoom`` get :func:`zoomed_limits`
    instead of starting at 0. Missing values are left out; returns the figure."""
    plt = _plt()
    names = [r.get("name", "?") for r in results]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics) + 1.2, 0.42 * len(names) + 1.6),
                             squeeze=False, sharey=True)
    for ax, (key, title, lower) in zip(axes[0], metrics):
        vals = [(r.get("final") or {}).get(key) for r in results]
        ys = [i for i, v in enumerate(vals) if v is not None]
        if ys:
            got = [vals[i] for i in ys]
            best = ys[got.index(min(got) if lower else max(got))]
            lo, hi = zoomed_limits(got) if key in zoom else (0, max(got) * 1.18 or 1)
            ax.barh(ys, [v - lo for v in got], left=lo, color=[f"C{i % 10}" for i in ys],
                    edgecolor=["black" if i == best else "none" for i in ys], linewidth=1.5)
            for i, v in zip(ys, got):
                ax.text(v, i, f" {v:.3f}" if abs(v) < 10 else f" {v:.1f}", va="center", fontsize=9)
            for i in sorted(set(range(len(names))) - set(ys)):
                ax.text(lo, i, " not measured", va="center", fontsize=8, color="gray")
            ax.set_xlim(lo, hi + (hi - lo) * 0.25)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{title} ({'lower' if lower else 'higher'} is better)"
                     + (" -- zoomed" if key in zoom else ""), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(range(len(names)), names)
    axes[0, 0].invert_yaxis()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- 03 mistakes

def likelihood_margins(ll: torch.Tensor, num_dims: int) -> dict:
    """For log-likelihoods ``ll`` (N, C) in nats: the prediction (argmax), the runner-up
    class and the margin between them in nats and in bits/dim (``num_dims`` = 3*H*W);
    the margin stays informative where the posterior p(c | x) saturates at 1.00."""
    top = ll.topk(2, dim=1)
    nats = top.values[:, 0] - top.values[:, 1]
    return {"pred": top.indices[:, 0], "second": top.indices[:, 1], "nats": nats,
            "bpd": bits_per_dim(nats, num_dims)}


def confident_mistakes(ll: torch.Tensor, labels: torch.Tensor, n: int) -> tuple:
    """The ``n`` wrong predictions with the largest margin of the prediction over the true
    class, ``log p(x | pred) - log p(x | true)`` in nats: ``(indices, margins)``, largest first."""
    pred = ll.argmax(1)
    wrong = (pred != labels).nonzero().flatten()
    margin = ll[wrong, pred[wrong]] - ll[wrong, labels[wrong]]
    order = margin.argsort(descending=True)[:n]
    return wrong[order], margin[order]


def mistake_titles(ll: torch.Tensor, labels: torch.Tensor, indices: Sequence[int], num_dims: int,
                   class_names: Optional[Sequence[str]] = None) -> list:
    """Two-line titles for mistakes: ``true <c> -> <pred>`` and the margin of the prediction
    over the true class in nats and bits/dim."""
    names = _names(ll.shape[1], class_names)
    out = []
    for i in [int(j) for j in indices]:
        p, t = int(ll[i].argmax()), int(labels[i])
        nats = float(ll[i, p] - ll[i, t])
        out.append(f"true {names[t]} -> {names[p]}\nby {nats:.1f} nats = "
                   f"{float(bits_per_dim(torch.tensor(nats), num_dims)):.4f} bpd")
    return out


def plot_guidance_tradeoff(res: dict, path=None):
    """The guidance trade-off (:func:`pcnn.guidance_tradeoff.guidance_tradeoff`'s results): probe
    accuracy, FID-2048, KID and the course FID@192 against w, one line per guide (w = 0 shared),
    each panel with the real-image floor dashed. Saved to ``path`` when given; returns the figure."""
    import matplotlib.pyplot as plt
    panels = (("probe", "Inception-probe accuracy (%)", 100.0), ("fid_2048", "FID-2048 (lower is better)", 1.0),
              ("kid_mean", "KID (lower is better)", 1.0), ("course_fid_192", "course FID@192 (100 images)", 1.0))
    base = next(r for r in res["rows"] if r["w"] == 0)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, (key, title, scale) in zip(axes, panels):
        for k, guide in enumerate(res["guides"]):
            rs = [base] + sorted((r for r in res["rows"] if r["guide"] == guide), key=lambda r: r["w"])
            ax.plot([r["w"] for r in rs], [r[key] * scale for r in rs], "o-", color=f"C{k}", label=guide)
        ax.axhline(res["floor"][key] * scale, color="k", ls="--", lw=1, label="real images")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("guidance w")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"class guidance: {res['per_class']} samples per class, seed {res['seed']}", fontsize=11)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
