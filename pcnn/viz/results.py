"""Comparisons of results files (the ``pcnn-results-v1`` format of :mod:`studies.experiments`):
:func:`plot_results` (one bar per run and metric with standard errors, a chance line, raw and
EMA accuracy; notebook 05), :func:`accuracy_stderr`, :func:`zoomed_limits`, :func:`final_value`.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence
from .images import pyplot




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


def final_value(r: dict, key: str):
    """A results file's final ``key`` (accuracy and macro F1 of the raw weights where recorded)."""
    f = r.get("final") or {}
    return f.get(f"{key}_raw", f.get(key)) if key in ("accuracy", "macro_f1") else f.get(key)


def plot_results(results: Sequence[dict], metrics=RESULT_METRICS, zoom: Sequence[str] = ("val_bpd",),
                 n_eval: Optional[int] = None, num_classes: int = 4):
    """The comparison of results files (``studies.experiments`` format): one horizontal bar
    panel per metric, a row per run (names readable at 10 pt), the value written at each bar.
    Accuracy and F1: the raw weights' bar (solid) with the EMA weights' bar (hatched) under it,
    +-1 standard error on accuracy when ``n_eval`` (images scored) is given, and a dotted chance
    line at 1 / ``num_classes``; no bar is marked best there, as one seed per run cannot rank
    runs closer than a few standard errors (:func:`fusion_conclusion` says which are). The
    other metrics outline their best bar. Metrics in ``zoom`` get :func:`zoomed_limits`
    instead of starting at 0. Missing values are left out; returns the figure."""
    plt = pyplot()
    from matplotlib.patches import Patch
    names = [r.get("name", "?") for r in results]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics) + 1.2, 0.5 * len(names) + 2.0),
                             squeeze=False, sharey=True)
    paired = False
    for ax, (key, title, lower, pair) in zip(axes[0], metrics):
        vals = [final_value(r, key) for r in results]
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
