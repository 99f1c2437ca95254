"""Generation metrics that see what a person sees: speckle, clipped colour, and fidelity and
diversity apart.

FID-2048 and the Inception probe can rate a set of samples well while a person sees saturated
single-pixel speckle (issue #34: at flat w = 4 the probe rose to 90.8 % on colour statistics).
Each metric here is computed on the uint8 images or on the Inception features, and is meant to
be read beside the same figure for real images:

* :func:`speckle_rate`: the share of pixels that differ from the median of their 8 neighbours
  by more than :data:`SPECKLE_LEVELS` levels in some channel (an isolated outlier: what a median
  filter would remove; Tukey's running median as an outlier detector);
* :func:`clipped_rate`: the share of pixels with one channel above :data:`CLIP_HIGH` and another
  below :data:`CLIP_LOW` (saturated, clipped colour such as pure cyan or green);
* :func:`prdc`: improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and
  Recall Metric for Assessing Generative Models") and density and coverage (Naeem et al. 2020,
  "Reliable Fidelity and Diversity Metrics for Generative Models"), from k-nearest-neighbour
  balls around the real features (k = :data:`PRDC_K`): precision and density measure how far
  the samples fall inside the real manifold (fidelity), recall and coverage how much of it they
  reach (diversity). Our own implementation of the published formulas.
"""
from __future__ import annotations

import numpy as np
import torch

SPECKLE_LEVELS = 96
CLIP_HIGH = 245
CLIP_LOW = 10
PRDC_K = 5


def _check_uint8(images) -> torch.Tensor:
    if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images (N, 3, H, W), got {getattr(images, 'dtype', type(images).__name__)} "
                         f"{tuple(getattr(images, 'shape', ()))}")
    if images.shape[0] == 0:
        raise ValueError("no images")
    return images


def speckle_mask(images: torch.Tensor, levels: int = SPECKLE_LEVELS) -> torch.Tensor:
    """bool (N, H-2, W-2): the interior pixels (those with all 8 neighbours) whose value differs
    from the median of their 8 neighbours by more than ``levels`` in at least one channel. The
    median of 8 values is the mean of the 4th and 5th smallest."""
    x = _check_uint8(images).float()
    if x.shape[2] < 3 or x.shape[3] < 3:
        raise ValueError(f"speckle needs images of at least 3x3 pixels, got {tuple(x.shape[2:])}")
    h, w = x.shape[2] - 2, x.shape[3] - 2
    neigh = [x[:, :, 1 + di:1 + di + h, 1 + dj:1 + dj + w]
             for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]
    srt = torch.stack(neigh).sort(dim=0).values                      # (8, N, 3, h, w)
    med = (srt[3] + srt[4]) / 2
    centre = x[:, :, 1:1 + h, 1:1 + w]
    return ((centre - med).abs() > levels).any(dim=1)


def speckle_rate(images: torch.Tensor, levels: int = SPECKLE_LEVELS) -> float:
    """The share (0..1) of interior pixels of uint8 ``images`` (N, 3, H, W) that are speckle
    (:func:`speckle_mask`)."""
    return float(speckle_mask(images, levels).double().mean())


def clipped_rate(images: torch.Tensor, high: int = CLIP_HIGH, low: int = CLIP_LOW) -> float:
    """The share (0..1) of pixels of uint8 ``images`` (N, 3, H, W) with one channel above ``high``
    and another below ``low``."""
    x = _check_uint8(images)
    hi, lo = x.max(dim=1).values > high, x.min(dim=1).values < low
    return float((hi & lo).double().mean())


def _pairwise(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
    return torch.cdist(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64))


def prdc(real: np.ndarray, fake: np.ndarray, k: int = PRDC_K) -> dict:
    """Precision, recall, density and coverage of ``fake`` (M, D) features against ``real`` (N, D).

    r_i = distance of real_i to its k-th nearest other real (the radius of its ball), and s_j the
    same for fake_j among the fakes. precision = share of fakes inside some real ball; recall =
    share of reals inside some fake ball; density = (1 / (k M)) x the number of (fake, real ball)
    pairs with the fake inside; coverage = share of real balls holding at least one fake. Balls
    are closed (distance <= radius). Identical sets give precision = recall = coverage = 1.
    """
    real, fake = np.asarray(real), np.asarray(fake)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected two (N, D) feature arrays of one D, got {real.shape} and {fake.shape}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"k = {k} needs more than k features in each set, got {len(real)} real and {len(fake)} fake")
    d_rr, d_ff, d_rf = _pairwise(real, real), _pairwise(fake, fake), _pairwise(real, fake)   # (N,N) (M,M) (N,M)
    # the k-th smallest distance to another point: index k of the sorted row (index 0 is itself)
    r_real = d_rr.sort(dim=1).values[:, k]
    r_fake = d_ff.sort(dim=1).values[:, k]
    inside = d_rf <= r_real[:, None]                                   # fake j inside real ball i
    return {"precision": float(inside.any(dim=0).double().mean()),
            "recall": float((d_rf <= r_fake[None, :]).any(dim=1).double().mean()),
            "density": float(inside.double().sum() / (k * len(fake))),
            "coverage": float(inside.any(dim=1).double().mean()),
            "k": k}


def prdc_or_none(real: np.ndarray, fake: np.ndarray, k: int = PRDC_K) -> dict:
    """:func:`prdc` without ``k``, or the four figures as None when a set has k features or
    fewer (a tiny smoke run): a report of several metrics need not fail on this one."""
    if min(len(real), len(fake)) <= k:
        return {"precision": None, "recall": None, "density": None, "coverage": None}
    return {key: v for key, v in prdc(real, fake, k).items() if key != "k"}


def pixel_metrics(images: torch.Tensor) -> dict:
    """``{"speckle", "clipped"}`` rates (0..1) of uint8 images (N, 3, H, W)."""
    return {"speckle": speckle_rate(images), "clipped": clipped_rate(images)}
