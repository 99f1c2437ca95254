"""Grids of samples drawn from a model, for looking at what a setting does: the same noise for
every class (:func:`same_noise_grid`), for several guidance weights (:func:`guidance_grid`) or
several guidance settings (:func:`setting_grid`); the samples come from
:mod:`pcnn.sampling.sample`, the tiles are laid out by :func:`pcnn.viz.grids.labeled_grid`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from pcnn.sampling.guidance import DEFAULT_GUIDE
from .grids import class_names_for, labeled_grid
from pcnn.sampling.sample import guidance_rows, same_noise_samples, setting_rows


def same_noise_grid(model, per_class: int = 8, seed: int = 0, classes: Optional[Sequence[int]] = None,
                    class_names: Optional[Sequence[str]] = None, temperature: float = 1.0, scale: int = 4,
                    method: str = "cached") -> torch.Tensor:
    """The "same noise, every class" grid: row = class, column k = noise draw k (see :func:`same_noise_samples`)."""
    images, labels = same_noise_samples(model, per_class, seed, classes, temperature, method)
    grid_rows = [list(images[labels == c]) for c in sorted(set(labels.tolist()))]
    names = class_names_for(model.config.num_classes, class_names)
    return labeled_grid(grid_rows, [names[c] for c in sorted(set(labels.tolist()))],
                        col_labels=[f"noise {k}" for k in range(per_class)], scale=scale)


def guidance_grid(model, cls: int, weights: Sequence[float] = (0.0, 1.0, 2.0, 4.0), per_row: int = 8, seed: int = 0,
                  guide: str = DEFAULT_GUIDE, class_names: Optional[Sequence[str]] = None, scale: int = 4,
                  method: str = "cached") -> torch.Tensor:
    """The "same noise, every w" grid of :func:`guidance_rows`: row = guidance weight (labelled
    ``<class> w=<w>``), column k = noise draw k."""
    rows = guidance_rows(model, cls, weights, per_row, seed, guide, method)
    name = class_names_for(model.config.num_classes, class_names)[cls]
    return labeled_grid([list(r) for r in rows], [f"{name} w={w:g}" for w in weights],
                        col_labels=[f"noise {k}" for k in range(per_row)], scale=scale)


def setting_grid(model, settings: Sequence, labels: Optional[Sequence[str]] = None,
                 classes: Optional[Sequence[int]] = None, per_row: int = 8, seed: int = 0,
                 class_names: Optional[Sequence[str]] = None, scale: int = 3, method: str = "cached") -> torch.Tensor:
    """Guided settings side by side on the same noise (:func:`setting_rows`): for each class of
    ``classes`` (default all) one row per setting, labelled ``<class> <label>`` (``labels``
    default: each setting's ``describe()``), column k always noise draw k."""
    classes = list(range(model.config.num_classes)) if classes is None else list(classes)
    labels = [st.describe() if hasattr(st, "describe") else str(st) for st in settings] if labels is None \
        else list(labels)
    if len(labels) != len(settings):
        raise ValueError(f"{len(labels)} labels for {len(settings)} settings")
    names = class_names_for(model.config.num_classes, class_names)
    tiles, row_labels = [], []
    for c in classes:
        for st_row, lab in zip(setting_rows(model, c, settings, per_row, seed, method), labels):
            tiles.append(list(st_row))
            row_labels.append(f"{names[c]}: {lab}")
    return labeled_grid(tiles, row_labels, col_labels=[f"noise {k}" for k in range(per_row)], scale=scale)
