"""Value ranges and train-time augmentation of uint8 image batches.

:func:`augment` (training only): horizontal flip (on by default), rotation, colour
jitter, Gaussian noise, cut-out and small translations, drawn per image from the given
``torch.Generator``; computed in float and rounded back onto the 8-bit grid once, so
the output is again uint8 and a valid input for the discretised likelihood.

Normalisation (:func:`channel_stats`, :func:`normalize`) is opt-in only: PixelCNN++'s
discretised logistic likelihood (Salimans et al. 2017) gives each 8-bit value in
[-1, 1] a bin of width 2/255 and the edge values the open tails; normalised data are
off that grid, so the likelihood is no longer a probability of the image and bits/dim
are no longer comparable. The trainer refuses it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pcnn.model.likelihood import to_float


# ---------------------------------------------------------------------------------------------
# Value ranges
# ---------------------------------------------------------------------------------------------

# to_float / to_uint8 live in pcnn.model.likelihood (the grid the likelihood is defined on) and are
# imported above, so pcnn.data.dataset.to_float keeps working.


def channel_stats(split) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (each ``(3,)``, float32) of ``to_float(split.images)``.

    ``split``: a :class:`Split` or a uint8 ``(N, 3, H, W)`` tensor. For opt-in
    :func:`normalize` only (see the module docstring for why it is not a default).
    """
    images = getattr(split, "images", split)  # a Split or a uint8 tensor
    x = to_float(images).to(torch.float64).transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(1).to(torch.float32), x.std(1).to(torch.float32)


def normalize(x_float: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Opt-in per-channel ``(x - mean) / std`` on ``(..., 3, H, W)`` floats in [-1, 1].

    The result is off the 8-bit grid and outside [-1, 1]: do not feed it to the
    discretised likelihood as if it were ordinary data (module docstring).
    """
    mean = torch.as_tensor(mean, dtype=x_float.dtype, device=x_float.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=x_float.dtype, device=x_float.device).view(-1, 1, 1)
    return (x_float - mean) / std


def denormalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`."""
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x * std + mean


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; every random draw is per image. Defaults: flip only."""
    hflip: bool = True          # mirror left-right with probability 0.5
    rotate_deg: float = 0.0     # rotate by an angle uniform in [-rotate_deg, +rotate_deg] degrees (reflect-padded)
    color_jitter: float = 0.0   # strength s in [0, 1): brightness, contrast, saturation factors uniform in [1-s, 1+s]
    noise_std: float = 0.0      # std of added Gaussian noise in 0..255 pixel units (e.g. 2.0 = 2/255 of the range)
    cutout: int = 0             # side in pixels of one square set to mid-grey (128) at a uniform centre; 0 = off
    translate: int = 0          # shift by an integer uniform in [-translate, +translate] pixels in x and y
                                # (reflect-padded)
    normalize: bool = False     # opt-in per-channel mean/std normalisation, applied by the caller after to_float
                                # (not by augment)

    def __post_init__(self):
        for name in ("rotate_deg", "color_jitter", "noise_std"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"AugmentConfig.{name} must be a finite number >= 0, got {v!r}")
        if self.color_jitter >= 1:
            raise ValueError(f"AugmentConfig.color_jitter must be < 1 (factors in [1-s, 1+s]), "
                             f"got {self.color_jitter!r}")
        for name in ("cutout", "translate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"AugmentConfig.{name} must be an int >= 0 (pixels), got {v!r}")

    @property
    def is_identity(self) -> bool:
        return not (self.hflip or self.rotate_deg or self.color_jitter or self.noise_std
                    or self.cutout or self.translate)


def _uniform(n, lo, hi, g):
    return torch.rand(n, generator=g, device=g.device, dtype=torch.float64) * (hi - lo) + lo


def augment(images_uint8: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Randomly augment a uint8 batch ``(B, 3, H, W)``; returns uint8 of the same shape.

    Steps, in this order and each only when enabled: horizontal flip; rotation and
    translation (one bilinear resample, reflection padding); colour jitter
    (brightness, contrast, saturation); cut-out; Gaussian noise. The work is done
    in float and rounded back onto the 8-bit grid once at the end. Random numbers
    come only from ``generator`` (on its own device, moved to the images' device),
    so the same generator state gives the same output. ``cfg.normalize`` is not
    applied here (the output stays uint8).
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4 or images_uint8.shape[1] != 3:
        raise ValueError(f"augment expects uint8 (B, 3, H, W), got {images_uint8.dtype} "
                         f"{tuple(images_uint8.shape)}")
    B, C, H, W = images_uint8.shape
    dev = images_uint8.device
    g = generator
    if B == 0 or cfg.is_identity:
        return images_uint8.clone()
    x = images_uint8
    if cfg.hflip:
        flip = (torch.rand(B, generator=g, device=g.device) < 0.5).to(dev)
        x = torch.where(flip.view(B, 1, 1, 1), x.flip(-1), x)
    x = x.to(torch.float32)  # 0..255

    if cfg.rotate_deg or cfg.translate:
        ang = _uniform(B, -cfg.rotate_deg, cfg.rotate_deg, g) * (math.pi / 180)
        if cfg.translate:
            t = cfg.translate
            tx = torch.randint(-t, t + 1, (B,), generator=g, device=g.device).to(torch.float64)
            ty = torch.randint(-t, t + 1, (B,), generator=g, device=g.device).to(torch.float64)
        else:
            tx = ty = torch.zeros(B, dtype=torch.float64, device=g.device)
        # affine_grid maps output coords (normalised, [-1,1] across W/H) to input coords.
        # Rotation about the centre in pixel units, then shift by (tx, ty) pixels.
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.zeros(B, 2, 3, dtype=torch.float64, device=g.device)
        theta[:, 0, 0] = cos
        theta[:, 0, 1] = -sin * H / W
        theta[:, 1, 0] = sin * W / H
        theta[:, 1, 1] = cos
        theta[:, 0, 2] = -tx * 2 / W  # sample from x - tx: content moves right by tx pixels
        theta[:, 1, 2] = -ty * 2 / H
        grid = F.affine_grid(theta.to(device=dev, dtype=torch.float32), [B, C, H, W], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    if cfg.color_jitter:
        s = cfg.color_jitter
        bri = _uniform(B, 1 - s, 1 + s, g).to(device=dev, dtype=torch.float32).view(B, 1, 1, 1)
        con = _uniform(B, 1 - s, 1 + s, g).to(device=dev, dtype=torch.float32).view(B, 1, 1, 1)
        sat = _uniform(B, 1 - s, 1 + s, g).to(device=dev, dtype=torch.float32).view(B, 1, 1, 1)
        lum = torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)
        x = (x * bri).clamp(0, 255)
        mean_gray = (x * lum).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = ((x - mean_gray) * con + mean_gray).clamp(0, 255)
        gray = (x * lum).sum(1, keepdim=True)
        x = ((x - gray) * sat + gray).clamp(0, 255)

    if cfg.cutout:
        side = cfg.cutout
        cy = torch.randint(0, H, (B,), generator=g, device=g.device).to(dev)
        cx = torch.randint(0, W, (B,), generator=g, device=g.device).to(dev)
        y0 = (cy - side // 2).view(B, 1, 1)
        x0 = (cx - side // 2).view(B, 1, 1)
        yy = torch.arange(H, device=dev).view(1, H, 1)
        xx = torch.arange(W, device=dev).view(1, 1, W)
        box = (yy >= y0) & (yy < y0 + side) & (xx >= x0) & (xx < x0 + side)
        x = torch.where(box.unsqueeze(1), torch.full_like(x, 128.0), x)

    if cfg.noise_std:
        noise = torch.randn(x.shape, generator=g, device=g.device, dtype=torch.float32)
        x = x + noise.to(dev) * float(cfg.noise_std)

    return x.round_().clamp_(0, 255).to(torch.uint8)


def changed_count(before: torch.Tensor, after: torch.Tensor) -> int:
    """How many images of a batch differ (in any pixel) between ``before`` and ``after``."""
    return int((before != after).flatten(1).any(1).sum())


# --------------------------------------------------------------------------- 04 curves
