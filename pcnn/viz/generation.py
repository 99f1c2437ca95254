"""Figures of generation quality: the guidance trade-offs (:func:`plot_guidance_tradeoff`, issue
#28; :func:`plot_plausible_tradeoff`, issue #34) and metrics of samples beside their real-image
floors (:func:`plot_beside_floor`, notebook 06; rows from :func:`pcnn.eval.card.floor_rows`).
"""
from __future__ import annotations

from typing import Optional, Sequence
from .images import pyplot




def plot_guidance_tradeoff(res: dict, path=None):
    """The guidance trade-off (:func:`studies.guidance_tradeoff.guidance_tradeoff`'s results): probe
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
    """Issue #34's trade-off (:func:`studies.guidance_tradeoff.score_settings`' results): probe
    accuracy, FID-2048, speckle rate (log scale) and coverage against w; one line per alpha of
    the constant schedule, one per other schedule, all starting from the shared w = 0 set; each
    panel with the real-image floor dashed. Saved to ``path`` when given; returns the figure."""
    plt = pyplot()
    panels = (("probe", "Inception-probe accuracy (%)", 100.0), ("fid_2048", "FID-2048 (lower is better)", 1.0),
              ("speckle", "speckle (% of pixels, log scale; 0 drawn at 1e-4)", 100.0),
              ("coverage", "coverage (higher: more diverse)", 1.0))
    base = next(r for r in res["rows"] if r["w"] == 0)
    lines = {}
    for r in res["rows"]:
        if r["w"] > 0:
            alpha = f"alpha {r['plausible']:g}"
            key = alpha if r["schedule"] == "constant" else f"{r['schedule']}, {alpha}"
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


def plot_beside_floor(rows: Sequence[dict], title: Optional[str] = None):
    """One small panel per generation figure: each set's bar (``rows``: dicts with ``metric``,
    ``lower_better`` and ``values`` = {set name: value}, e.g. :func:`pcnn.eval.card.card_floors`),
    real images in gray, generated sets in colour, the value written at each bar. Returns the figure."""
    plt = pyplot()
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
