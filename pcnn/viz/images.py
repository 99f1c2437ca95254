"""Image figures: :func:`to_hwc`, :func:`show_images`, :func:`show_grid` (images and grids at
readable sizes), :func:`pixel_histograms` and :func:`augmentation_rows` (the data and every
augmentation; notebook 01); :func:`pyplot` (matplotlib, imported on first use, for every figure
module here). Every function returns the figure and leaves showing it to the caller.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import torch

from pcnn.model.config import class_names_for
from pcnn.data.augment import augment, changed_count


CHANNELS = (("R", "red"), ("G", "green"), ("B", "blue"))


def pyplot():
    """matplotlib.pyplot, imported on first use (importing pcnn does not load matplotlib)."""
    import matplotlib.pyplot as plt
    return plt

def to_hwc(img: torch.Tensor):
    """uint8 (3, H, W) tensor -> (H, W, 3) numpy array for imshow."""
    return img.detach().cpu().permute(1, 2, 0).numpy()


def show_images(images: torch.Tensor, nrow: int = 8, titles: Optional[Sequence[str]] = None,
                scale: float = 1.5, suptitle: Optional[str] = None, fontsize: int = 10):
    """A grid of uint8 images (N, 3, H, W), one axis per image with optional titles; returns the figure."""
    plt = pyplot()
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
    """One uint8 (3, H, W) image (e.g. :func:`pcnn.sampling.sets.make_grid`) as a figure ``width``
    inches wide; ``width=None``: at its own pixel size (one image pixel per figure pixel)."""
    plt = pyplot()
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


def pixel_histograms(images: torch.Tensor, labels: torch.Tensor, class_names: Optional[Sequence[str]] = None,
                     per_class: Optional[int] = None, bins: int = 64):
    """Top row: the R, G, B value histograms (density) of each class's images (uint8
    (N, 3, H, W), the first ``per_class`` of each class; None: all); bottom row: the class's
    mean image. Axes are labelled; returns the figure."""
    plt = pyplot()
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    names = class_names_for(num_classes, class_names)
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
    through :func:`pcnn.data.dataset.augment` with one seeded generator per row, the name at the
    left above how many of the row's images the augmentation changed (:func:`changed_count`:
    a random flip with p = 0.5 changes about half). Returns ``(figure, rows)`` with ``rows``
    the augmented uint8 batches."""
    plt = pyplot()
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
