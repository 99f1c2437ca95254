"""Figures of classification by likelihood: :func:`plot_confusion` (notebook 03),
:func:`reliability_plot` (the model card's calibration) and :func:`plot_evidence_margin`
(where in an image the evidence for one class over another sits, :mod:`pcnn.model.evidence`).
Each returns its figure and leaves showing it to the caller.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence
from pcnn.model.config import CPEN455_CLASSES
import torch
from .images import pyplot
from pcnn.model.config import class_names_for
from pcnn.model.evidence import evidence_margin


def reliability_plot(cal: dict, path, title: str = ""):
    """The reliability diagram of :func:`pcnn.eval.classification.calibration`: accuracy against mean
    confidence per bin (bar width = bin, shade = share of images), the diagonal for reference."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    n = max(1, cal["n"])
    for b in cal["bins"]:
        if b["count"]:
            ax.bar(b["lo"], b["accuracy"], width=b["hi"] - b["lo"], align="edge", color="C0",
                   alpha=0.3 + 0.7 * b["count"] / n, edgecolor="k", linewidth=0.5)
            ax.text((b["lo"] + b["hi"]) / 2, b["accuracy"] + 0.01, str(b["count"]), ha="center", fontsize=8)
    lo = cal["bins"][0]["lo"]
    ax.plot([lo, 1], [lo, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(lo, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("confidence: max_c p(c | x)")
    ax.set_ylabel("accuracy of the images in the bin")
    ax.set_title(title or f"Reliability (ECE {cal['ece']:.3f}; numbers: images per bin)", fontsize=10)
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_evidence_margin(image: torch.Tensor, ev: torch.Tensor, class_names: Sequence[str] = CPEN455_CLASSES,
                         true_label: Optional[int] = None, first=None, second=None, axes=None, vmax=None,
                         label: Optional[str] = None):
    """Draw one image beside its margin map (predicted class vs runner-up by default).

    ``image``: uint8 (3, S, S); ``ev``: its evidence (C, S, S) or (1, C, S, S).
    Red pixels favour the first class, blue the second (a diverging colour map
    centred on 0, symmetric at ``vmax``, default the largest |margin|); the title
    gives both classes and the total gap in nats. ``axes``: two matplotlib axes
    to draw into (else a new figure). ``label`` (e.g. ``"correct"``, ``"mistake"``) heads the
    image's title. Returns the figure.
    """
    import matplotlib.pyplot as plt
    ev = ev[None] if ev.dim() == 3 else ev
    if ev.shape[0] != 1:
        raise ValueError(f"plot one image at a time, got evidence for {ev.shape[0]}")
    if image.dim() != 3 or image.shape[0] != 3 or image.shape[1:] != ev.shape[2:]:
        raise ValueError(f"image must be uint8 (3, {ev.shape[2]}, {ev.shape[3]}), got {tuple(image.shape)}")
    m = evidence_margin(ev, first, second)
    names = class_names_for(ev.shape[1], class_names)
    a, b = names[int(m.first[0])], names[int(m.second[0])]
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.2))
    else:
        fig = axes[0].figure
    mp = m.maps[0].double().numpy()
    lim = float(vmax) if vmax is not None else max(float(abs(mp).max()), 1e-9)
    axes[0].imshow(image.permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
    title = "image" if true_label is None else f"true: {names[int(true_label)]}"
    axes[0].set_title(title if label is None else f"{label}\n{title}", fontsize=9)
    im = axes[1].imshow(mp, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    axes[1].set_title(f"{a} - {b}: {float(m.total[0]):+.1f} nats", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04, label="nats / pixel")
    return fig


def plot_confusion(cm, class_names: Sequence[str] = CPEN455_CLASSES, normalize: bool = False, ax=None,
                   title: str = "confusion matrix (rows: true class)"):
    """Confusion matrix (rows true, columns predicted) as an annotated heat map; returns the figure."""
    import numpy as np
    plt = pyplot()
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
