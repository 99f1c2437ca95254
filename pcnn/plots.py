"""Figures the numbered notebooks show, as library functions with tests.

* :func:`to_hwc`, :func:`show_images`, :func:`show_grid` -- images and grids at readable sizes.
* :func:`pixel_histograms`, :func:`augmentation_rows` -- the data and every augmentation (01).
* :func:`plot_run`, :class:`LiveLossPlot` -- one run's curves, readable after one epoch: markers,
  whole-epoch ticks, validation of the EMA weights and of the raw weights where they differ (02).
* :func:`chain_offsets`, :func:`plot_training_curves`, :func:`focus_limits`, :func:`run_summary`
  -- bits/dim and accuracy against a cumulative epoch axis, stages one after another (04).
* :func:`plot_results`, :func:`accuracy_stderr`, :func:`fusion_conclusion` -- the fusion
  comparison with error bars, a chance line, raw and EMA accuracy, and what it shows (05).
* :func:`plot_confusion`, :func:`likelihood_margins`, :func:`confident_mistakes`,
  :func:`mistake_titles`, :func:`confidence_summary`, :func:`margin_by_row` -- classification (03).
* :func:`plot_beside_floor` -- generation figures beside real images (06; rows from
  :func:`pcnn.card.floor_rows`).

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


# --------------------------------------------------------------------------- images

def to_hwc(img: torch.Tensor):
    """uint8 (3, H, W) tensor -> (H, W, 3) numpy array for imshow."""
    return img.detach().cpu().permute(1, 2, 0).numpy()


def show_images(images: torch.Tensor, nrow: int = 8, titles: Optional[Sequence[str]] = None,
                scale: float = 1.5, suptitle: Optional[str] = None, fontsize: int = 10):
    """A grid of uint8 images (N, 3, H, W), one axis per image with optional titles; returns the figure."""
    plt = _plt()
    n = len(images)
    ncol = max(1, min(nrow, n))
    nrows = max(1, math.ceil(n / ncol))
    fig, axes = plt.subplots(nrows, ncol, figsize=(scale * ncol, scale * nrows + (0.3 if suptitle else 0)),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(to_hwc(images[k]), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[k], fontsize=fontsize)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_grid(image: torch.Tensor, title: Optional[str] = None, width: Optional[float] = 8.0):
    """One uint8 (3, H, W) image (e.g. :func:`pcnn.sample.make_grid`) as a figure ``width``
    inches wide; ``width=None``: at its own pixel size (one image pixel per figure pixel)."""
    plt = _plt()
    h, w = image.shape[1:]
    title_in = 0.3 if title else 0.0
    if width is None:
        # Axes fill the figure exactly: tight_layout's margins would shrink (resample) the image
        # and cut into the row labels drawn at its left edge.
        dpi = plt.rcParams["figure.dpi"]
        fig = plt.figure(figsize=(w / dpi, h / dpi + title_in))
        ax = fig.add_axes((0.0, 0.0, 1.0, (h / dpi) / (h / dpi + title_in)))
    else:
        fig, ax = plt.subplots(figsize=(width, width * h / w + title_in))
    ax.imshow(to_hwc(image), interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    if width is not None:
        fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- 02 one run, live

def _epoch_ticks(ax, last: int, most: int = 12) -> None:
    """Whole-epoch ticks (every epoch up to ``most`` of them) and limits half an epoch around them."""
    from matplotlib.ticker import MaxNLocator
    last = max(1, int(last))
    if last <= most:
        ax.set_xticks(range(1, last + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, last + 0.5)


def plot_run(rows, title: str = "training", ema: bool = True):
    """One run's curves, readable after its first epoch: train bits/dim and validation bits/dim
    (left) and validation accuracy (right) against whole epochs, every point marked.
    ``ema=True`` (the run keeps an EMA): validation is labelled "validation (EMA weights)" and the
    raw weights' figures are drawn too where they differ. Partial (interrupted) rows are left out.
    ``rows``: a workdir or metric rows. Returns the figure."""
    plt = _plt()
    rows = [r for r in _rows(rows) if not r.get("partial")]
    fig, (ax_bpd, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))

    def pts(key):
        return [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]

    def differs(a, b):
        return any(abs(x[1] - y[1]) > 1e-9 for x, y in zip(pts(a), pts(b))) and len(pts(b)) > 0

    val = "validation (EMA weights)" if ema else "validation"
    if pts("train_bpd"):
        ax_bpd.plot(*zip(*pts("train_bpd")), "o-", color="C0", label="train (dropout, flips)")
    if pts("val_bpd"):
        ax_bpd.plot(*zip(*pts("val_bpd")), "s--", color="C1", label=val)
    if ema and differs("val_bpd", "val_bpd_raw"):
        ax_bpd.plot(*zip(*pts("val_bpd_raw")), "^:", color="C2", label="validation (raw weights)")
    if pts("val_acc"):
        ax_acc.plot(*zip(*pts("val_acc")), "s--", color="C1", label=val)
    if ema and differs("val_acc", "val_acc_raw"):
        ax_acc.plot(*zip(*pts("val_acc_raw")), "^:", color="C2", label="validation (raw weights)")
    last = max((r["epoch"] for r in rows), default=1)
    ax_bpd.set(xlabel="epoch", ylabel="bits / dim", title="negative log-likelihood (lower is better)")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy", title="likelihood classification")
    ax_acc.set_ylim(0, 1)
    ax_acc.axhline(0.25, color="gray", lw=1, ls=":", label="chance (4 classes)")
    for ax in (ax_bpd, ax_acc):
        ax.grid(alpha=0.3)
        _epoch_ticks(ax, last)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


class LiveLossPlot:
    """:func:`plot_run` redrawn in place in a notebook (one ``display`` handle).

    ``update(workdir)`` re-reads ``metrics.jsonl`` and redraws; outside IPython it
    just keeps the latest figure in ``self.fig``.
    """

    def __init__(self, title: str = "training", ema: bool = True):
        self.title, self.ema = title, ema
        self.handle = None
        self.fig = None

    def update(self, workdir):
        plt = _plt()
        if self.fig is not None:
            plt.close(self.fig)
        self.fig = plot_run(workdir, self.title, self.ema)
        try:
            from IPython import get_ipython
            if get_ipython() is not None:
                from IPython.display import display
                if self.handle is None:
                    self.handle = display(self.fig, display_id=True)
                else:
                    self.handle.update(self.fig)
        except ImportError:  # pragma: no cover - IPython ships with jupyter
            pass
        plt.close(self.fig)
        return self.fig


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
    left above how many of the row's images the augmentation changed (:func:`changed_count`:
    a random flip with p = 0.5 changes about half). Returns ``(figure, rows)`` with ``rows``
    the augmented uint8 batches."""
    plt = _plt()
    rows = [augment(images, cfg, torch.Generator().manual_seed(seed)) for cfg in variants.values()]
    n = len(images)
    fig, axes = plt.subplots(len(rows), n, figsize=(tile * n + 1.8, tile * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(zip(variants, rows)):
        for k in range(n):
            axes[r, k].imshow(imgs[k].permute(1, 2, 0).numpy(), interpolation="nearest")
            axes[r, k].set_xticks([])
            axes[r, k].set_yticks([])
        axes[r, 0].set_ylabel(f"{name}\n{changed_count(images, imgs)} of {n} changed", rotation=0, ha="right",
                              va="center")
    fig.tight_layout()
    return fig, rows


def changed_count(before: torch.Tensor, after: torch.Tensor) -> int:
    """How many images of a batch differ (in any pixel) between ``before`` and ``after``."""
    return int((before != after).flatten(1).any(1).sum())


# --------------------------------------------------------------------------- 04 curves

def _rows(run) -> list:
    return read_metrics(run) if isinstance(run, (str, Path)) else list(run)


def run_summary(run) -> dict:
    """``{"epochs", "rows", "partial_rows", "last_val_bpd"}`` of a run (workdir or metric rows):
    ``epochs`` is the last whole epoch (rows of interrupted epochs and repeated rows are not
    epochs), ``last_val_bpd`` the last validation bits/dim, rounded to 4 decimals (None if none)."""
    rows = _rows(run)
    whole = [r for r in rows if not r.get("partial")]
    val = [r["val_bpd"] for r in rows if r.get("val_bpd") is not None]
    return {"epochs": max((int(r["epoch"]) for r in whole), default=0), "rows": len(rows),
            "partial_rows": len(rows) - len(whole), "last_val_bpd": round(val[-1], 4) if val else None}


def chain_offsets(runs: Mapping[str, object]) -> dict:
    """``{label: epochs before it}`` for runs that continue one another in the given order
    (each stage starts where the previous one ended); ``runs`` maps labels to workdirs or
    lists of metric rows. Only whole epochs count (:func:`run_summary`)."""
    out, total = {}, 0
    for label, run in runs.items():
        out[label] = total
        total += run_summary(run)["epochs"]
    return out


def focus_limits(values: Sequence[float], keep: float = 0.9, margin: float = 0.08) -> tuple:
    """Axis limits that show the lowest ``keep`` fraction of ``values`` (plus ``margin`` of their
    range on both sides), so a curve's first, much higher epochs do not squash everything after
    them; :func:`plot_training_curves` says how many points it left above the axis."""
    v = sorted(float(x) for x in values)
    if not v:
        return 0.0, 1.0
    hi = v[max(0, math.ceil(keep * len(v)) - 1)]
    lo = v[0]
    span = hi - lo or abs(hi) * 0.05 or 1.0
    return lo - margin * span, hi + margin * span


def plot_training_curves(runs: Mapping[str, object], offsets: Optional[Mapping[str, int]] = None,
                         boundaries: bool = True, title: Optional[str] = None, focus: Optional[float] = 0.9):
    """Train (solid) and validation (dots, dashed) bits/dim and validation accuracy of
    several runs against a cumulative epoch axis: run ``label``'s epoch ``e`` is drawn at
    ``offsets[label] + e`` (default 0). One colour per run; the legend sits below the plots
    (never over the curves); ``boundaries`` draws a dotted line where each offset run starts.
    ``focus``: the bits/dim axis shows the lowest ``focus`` fraction of the points
    (:func:`focus_limits`) and notes how many lie above it; None shows all."""
    plt = _plt()
    from matplotlib.lines import Line2D
    offsets = dict(offsets or {})
    fig, (ax_bpd, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.4))
    handles, bpd_values = [], []
    for k, (label, run) in enumerate(runs.items()):
        rows = [r for r in _rows(run) if not r.get("partial")]
        off = int(offsets.get(label, 0))
        color = f"C{k % 10}"
        tr = [(off + r["epoch"], r["train_bpd"]) for r in rows if r.get("train_bpd") is not None]
        va = [(off + r["epoch"], r["val_bpd"]) for r in rows if r.get("val_bpd") is not None]
        acc = [(off + r["epoch"], r["val_acc"]) for r in rows if r.get("val_acc") is not None]
        bpd_values += [y for _, y in tr + va]
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
    if focus is not None and bpd_values:
        lo, hi = focus_limits(bpd_values, keep=focus)
        above = [y for y in bpd_values if y > hi]
        ax_bpd.set_ylim(lo, hi)
        if above:
            ax_bpd.text(0.98, 0.97, f"{len(above)} point(s) above, up to {max(above):.2f}", transform=ax_bpd.transAxes,
                        ha="right", va="top", fontsize=9, color="dimgray")
    if title:
        fig.suptitle(title)
    ncol = min(4, len(handles))
    fig.tight_layout(rect=(0, 0.06 * math.ceil(len(handles) / ncol) + 0.02, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False)
    return fig


# --------------------------------------------------------------------------- 05 fusion bars

#: Metrics of :func:`plot_results`: (key in a results file's "final", title, lower is better,
#: key of the EMA weights' figure drawn beside it or None). Accuracy and F1 are those of the raw
#: weights (``<key>_raw``, else ``<key>``) beside the EMA weights': the two can rank runs differently.
RESULT_METRICS = (("accuracy", "accuracy", False, "accuracy_ema"), ("macro_f1", "macro F1", False, "macro_f1_ema"),
                  ("val_bpd", "bits / dim", True, None), ("fid_192", "FID (192 dims)", True, None),
                  ("fid_2048", "FID (2048 dims)", True, None))


def zoomed_limits(values: Sequence[float], margin: float = 0.25) -> tuple:
    """Axis limits around ``values`` with ``margin`` of their range on both sides (a
    range of 0 gets +-5 % of the value), so small differences between bars show."""
    lo, hi = min(values), max(values)
    span = hi - lo or abs(hi) * 0.1 or 1.0
    return lo - margin * span, hi + margin * span


def accuracy_stderr(p: float, n: int) -> float:
    """Binomial standard error of an accuracy ``p`` measured on ``n`` images: sqrt(p (1 - p) / n)."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def _final(r: dict, key: str):
    f = r.get("final") or {}
    return f.get(f"{key}_raw", f.get(key)) if key in ("accuracy", "macro_f1") else f.get(key)


def plot_results(results: Sequence[dict], metrics=RESULT_METRICS, zoom: Sequence[str] = ("val_bpd",),
                 n_eval: Optional[int] = None, num_classes: int = 4):
    """The comparison of results files (``pcnn.experiments`` format): one horizontal bar
    panel per metric, a row per run (names readable at 10 pt), the value written at each bar.
    Accuracy and F1: the raw weights' bar (solid) with the EMA weights' bar (hatched) under it,
    +-1 standard error on accuracy when ``n_eval`` (images scored) is given, and a dotted chance
    line at 1 / ``num_classes``; no bar is marked best there, as one seed per run cannot rank
    runs closer than a few standard errors (:func:`fusion_conclusion` says which are). The
    other metrics outline their best bar. Metrics in ``zoom`` get :func:`zoomed_limits`
    instead of starting at 0. Missing values are left out; returns the figure."""
    plt = _plt()
    from matplotlib.patches import Patch
    names = [r.get("name", "?") for r in results]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics) + 1.2, 0.5 * len(names) + 2.0),
                             squeeze=False, sharey=True)
    paired = False
    for ax, (key, title, lower, pair) in zip(axes[0], metrics):
        vals = [_final(r, key) for r in results]
        ema = [(r.get("final") or {}).get(pair) for r in results] if pair else [None] * len(results)
        ys = [i for i, v in enumerate(vals) if v is not None]
        h = 0.4 if pair else 0.8
        if ys:
            got = [vals[i] for i in ys]
            everything = got + [v for v in ema if v is not None]
            lo, hi = zoomed_limits(everything) if key in zoom else (0, max(everything) * 1.18 or 1)
            best = None if pair else ys[got.index(min(got) if lower else max(got))]
            off = -h / 2 if pair else 0.0
            err = [accuracy_stderr(v, n_eval) for v in got] if key == "accuracy" and n_eval else None
            ax.barh([i + off for i in ys], [v - lo for v in got], height=h, left=lo, xerr=err, capsize=2,
                    color=[f"C{i % 10}" for i in ys],
                    edgecolor=["black" if i == best else "none" for i in ys], linewidth=1.5)
            for i, v in zip(ys, got):
                ax.text(v, i + off, f" {v:.3f}" if abs(v) < 10 else f" {v:.1f}", va="center", fontsize=8)
            ye = [i for i in ys if ema[i] is not None]
            if ye:
                paired = True
                ev = [ema[i] for i in ye]
                err = [accuracy_stderr(v, n_eval) for v in ev] if key == "accuracy" and n_eval else None
                ax.barh([i + h / 2 for i in ye], [v - lo for v in ev], height=h, left=lo, xerr=err, capsize=2,
                        color=[f"C{i % 10}" for i in ye], alpha=0.45, hatch="///", edgecolor="none")
                for i, v in zip(ye, ev):
                    ax.text(v, i + h / 2, f" {v:.3f}", va="center", fontsize=8, color="dimgray")
            for i in sorted(set(range(len(names))) - set(ys)):
                ax.text(lo, i, " not measured", va="center", fontsize=8, color="gray")
            if pair:
                ax.axvline(1 / num_classes, color="gray", ls=":", lw=1.2)
            ax.set_xlim(lo, hi + (hi - lo) * 0.25)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{title} ({'lower' if lower else 'higher'} is better)"
                     + (" -- zoomed" if key in zoom else ""), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(range(len(names)), names)
    axes[0, 0].invert_yaxis()
    handles = [Patch(color="gray", label="raw weights")]
    if paired:
        handles.append(Patch(facecolor="gray", alpha=0.45, hatch="///", label="EMA weights"))
    handles.append(plt.Line2D([], [], color="gray", ls=":", label=f"chance (1/{num_classes})"))
    if n_eval:
        handles.append(plt.Line2D([], [], color="black", marker="|", ls="none",
                                  label=f"+-1 standard error ({n_eval} images)"))
    handles.append(Patch(facecolor="white", edgecolor="black", label="best (other panels)"))
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    return fig


def fusion_conclusion(results: Sequence[dict], n_eval: int, within: float = 2.0) -> list:
    """What the comparison shows, read from the results: the best run by EMA and by raw
    accuracy and the runs within ``within`` standard errors of each (indistinguishable with one
    seed on ``n_eval`` images), whether the two rankings agree, and the lowest bits/dim."""
    out = []
    for label, key in (("EMA", "accuracy_ema"), ("raw", "accuracy")):
        got = [(r.get("name", "?"), _final(r, key) if key == "accuracy" else (r.get("final") or {}).get(key))
               for r in results]
        got = [(n, v) for n, v in got if v is not None]
        if not got:
            continue
        name, best = max(got, key=lambda t: t[1])
        se = accuracy_stderr(best, n_eval)
        close = [n for n, v in sorted(got, key=lambda t: -t[1]) if n != name and best - v <= within * se]
        out.append(f"Best {label} accuracy: {name} {best:.1%} (+-{se:.1%}); within {within:g} standard errors of it: "
                   + (", ".join(close) if close else "none") + ".")
    bests = [s.split(":")[1].split()[0] for s in out]
    if len(bests) == 2:
        out.append("The EMA and raw weights agree on the best run." if bests[0] == bests[1] else
                   "The EMA and raw weights rank the runs differently: at this budget the ranking is not settled.")
    bpd = [(r.get("name", "?"), (r.get("final") or {}).get("val_bpd")) for r in results]
    bpd = [(n, v) for n, v in bpd if v is not None]
    if bpd:
        name, v = min(bpd, key=lambda t: t[1])
        out.append(f"Lowest validation bits/dim: {name} {v:.3f} (of {len(bpd)} runs, from "
                   f"{min(b for _, b in bpd):.3f} to {max(b for _, b in bpd):.3f}).")
    return out


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


def plot_plausible_tradeoff(res: dict, path=None):
    """Issue #34's trade-off (:func:`pcnn.guidance_tradeoff.score_settings`' results): probe
    accuracy, FID-2048, speckle rate (log scale) and coverage against w; one line per alpha of
    the constant schedule, one per other schedule, all starting from the shared w = 0 set; each
    panel with the real-image floor dashed. Saved to ``path`` when given; returns the figure."""
    plt = _plt()
    panels = (("probe", "Inception-probe accuracy (%)", 100.0), ("fid_2048", "FID-2048 (lower is better)", 1.0),
              ("speckle", "speckle (% of pixels, log scale; 0 drawn at 1e-4)", 100.0), ("coverage", "coverage (higher: more diverse)", 1.0))
    base = next(r for r in res["rows"] if r["w"] == 0)
    lines = {}
    for r in res["rows"]:
        if r["w"] > 0:
            key = f"alpha {r['plausible']:g}" if r["schedule"] == "constant" else f"{r['schedule']}, alpha {r['plausible']:g}"
            lines.setdefault(key, []).append(r)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.0))
    for ax, (key, title, scale) in zip(axes, panels):
        for k, (label, rs) in enumerate(lines.items()):
            rs = [base] + sorted(rs, key=lambda r: r["w"])
            style = "o-" if label.startswith("alpha") else "s--"
            ax.plot([r["w"] for r in rs], [max(r[key] * scale, 1e-4) if key == "speckle" else r[key] * scale
                                            for r in rs], style, color=f"C{k}", label=label, ms=4)
        ax.axhline(max(res["floor"][key] * scale, 1e-4) if key == "speckle" else res["floor"][key] * scale,
                   color="k", ls="--", lw=1, label="real images")
        if key == "speckle":
            ax.axhline(3 * res["floor"][key] * scale, color="r", ls=":", lw=1, label="3x real (the rule's limit)")
            ax.set_yscale("log")
        if key == "fid_2048":
            ax.axhline(base[key], color="0.5", ls=":", lw=1, label="w = 0 (the rule's limit)")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("guidance w")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"class guidance with the plausibility constraint: {res['per_class']} samples per class, seed "
                 f"{res['seed']}, same noise at every setting", fontsize=11)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def confidence_summary(ll: torch.Tensor, labels: torch.Tensor, threshold: float = 0.995) -> dict:
    """How confident p(c | x) (uniform prior) is against how often it is right: ``accuracy``,
    ``share_confident`` (images whose top posterior is >= ``threshold``), ``accuracy_confident``
    (accuracy among them) and ``mean_confidence``; a calibrated classifier has mean confidence
    near its accuracy."""
    post = torch.softmax(ll.double(), dim=1)
    conf, pred = post.max(1)
    right = (pred == labels).double()
    sure = conf >= threshold
    return {"n": len(labels), "accuracy": float(right.mean()), "threshold": threshold,
            "share_confident": float(sure.double().mean()),
            "accuracy_confident": float(right[sure].mean()) if sure.any() else None,
            "mean_confidence": float(conf.mean())}


def margin_by_row(margin_map: torch.Tensor) -> dict:
    """A per-pixel margin map (H, W) in nats (e.g. :func:`pcnn.evidence_margin`) summed per image
    row: ``rows`` (H,), ``total``, ``top_row`` (the row adding the most) and ``top_share`` (its
    sum over the total: above 1 when the other rows pull the other way)."""
    rows = margin_map.double().sum(1)
    total = float(rows.sum())
    top = int(rows.argmax())
    return {"rows": rows, "total": total, "top_row": top, "top_nats": float(rows[top]),
            "top_share": float(rows[top]) / total if total else float("nan")}


def plot_confusion(cm, class_names: Sequence[str] = CPEN455_CLASSES, normalize: bool = False, ax=None,
                   title: str = "confusion matrix (rows: true class)"):
    """Confusion matrix (rows true, columns predicted) as an annotated heat map; returns the figure."""
    import numpy as np
    plt = _plt()
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 3.8))
    else:
        fig = ax.figure
    im = ax.imshow(shown, cmap="Blues", vmin=0)
    n = len(cm)
    names = list(class_names)[:n]
    ax.set_xticks(range(n), names, rotation=30, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    top = shown.max() if shown.size else 1
    for i in range(n):
        for j in range(n):
            txt = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, txt, ha="center", va="center", color="white" if shown[i, j] > 0.6 * top else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- 06 beside the floor

def plot_beside_floor(rows: Sequence[dict], title: Optional[str] = None):
    """One small panel per generation figure: each set's bar (``rows``: dicts with ``metric``,
    ``lower_better`` and ``values`` = {set name: value}, e.g. :func:`pcnn.card.card_floors`),
    real images in gray, generated sets in colour, the value written at each bar. Returns the figure."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(rows), figsize=(3.3 * len(rows), 2.6), squeeze=False)
    for ax, row in zip(axes[0], rows):
        items = [(k, v) for k, v in row["values"].items() if v is not None]
        names = [k for k, _ in items]
        vals = [v for _, v in items]
        colors = ["0.6" if "real" in k else f"C{i % 10}" for i, k in enumerate(names)]
        ax.barh(range(len(vals)), vals, color=colors)
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:.3g}" if v < 1 else f" {v:.1f}", va="center", fontsize=9)
        ax.set_yticks(range(len(vals)), names, fontsize=9)
        ax.invert_yaxis()
        ax.set_xlim(0, max(vals, default=1) * 1.35 or 1)
        ax.set_title(f"{row['metric']}\n({'lower' if row['lower_better'] else 'higher'} is better)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="y", labelleft=ax is axes[0, 0])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
