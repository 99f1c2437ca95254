"""Training curves: :func:`plot_run` and :class:`LiveLossPlot` (one run, readable after one
epoch: markers, whole-epoch ticks, validation of the EMA and of the raw weights where they
differ; notebook 02), and :func:`chain_offsets`, :func:`plot_training_curves`,
:func:`focus_limits`, :func:`run_summary` (bits/dim and accuracy against a cumulative epoch
axis, stages one after another; notebook 04). Rows come from :func:`pcnn.train.read_metrics`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional, Sequence


from pcnn.train import read_metrics
from .images import pyplot


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
    plt = pyplot()
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
        plt = pyplot()
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
    plt = pyplot()
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
