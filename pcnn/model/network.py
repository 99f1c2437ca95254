"""The two-stream PixelCNN++ U-net (Salimans et al. 2017), class-conditional
through the hooks of :mod:`pcnn.model.fusion` (van den Oord et al. 2016).

Layout (``F = nr_filters``, ``n = nr_resnet``)::

    x (B,3,32,32) in [-1, 1]  --fusion.input-->  [x, ones(, one-hot)]
    u  = down_shift(down_shifted_conv 2x3)                 # sees rows above
    ul = down_shift(down_shifted_conv 1x3) + right_shift(down_right_shifted_conv 2x1)
    up pass:   32: n blocks -> /2 -> 16: n blocks -> /2 -> 8: n blocks
               (every output pushed on a stack: the skip connections)
    down pass: 8: n blocks -> x2 -> 16: n+1 blocks -> x2 -> 32: n+1 blocks
               u-blocks take a = popped u; ul-blocks take a = [u, popped ul]
    out = nin(elu(ul)) -> (B, 10*K, 32, 32) in the original channel layout
          (see :func:`pcnn.model.likelihood.mixture_params`).

The ``ones`` channel tells the network where the zero padding is (as in the
original). ``u`` never reads ``ul``, so the vertical stream depends only on rows
above; the fast sampler relies on that.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .fusion import Fusion, count_blocks
from .layers import (DownRightShiftedConv2d, DownRightShiftedDeconv2d, DownShiftedConv2d, DownShiftedDeconv2d,
                     GatedResBlock, NIN, down_shift, right_shift)


def check_images(x: torch.Tensor, cfg: ModelConfig) -> None:
    """Raise ``ValueError`` naming the problem unless x is (B, 3, S, S) float in [-1, 1], B > 0."""
    if not torch.is_tensor(x):
        raise ValueError(f"images must be a torch.Tensor, got {type(x).__name__}")
    s = cfg.image_size
    if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (s, s):
        raise ValueError(f"images must have shape (B, 3, {s}, {s}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("empty batch: images has batch size 0")
    if not x.is_floating_point():
        raise ValueError(f"images must be floating point in [-1, 1], got dtype {x.dtype} "
                         "(convert uint8 images with pcnn.data.dataset.to_float)")
    lo, hi = torch.aminmax(x)
    if not (torch.isfinite(lo) and torch.isfinite(hi)) or lo < -1 or hi > 1:
        raise ValueError(f"image values must lie in [-1, 1], got min {lo.item():.4g}, max {hi.item():.4g}")


def check_labels(y, n: int, cfg: ModelConfig) -> None:
    """Raise ``ValueError`` unless y fits a batch of n images (None for unconditional models)."""
    if not cfg.conditional:
        return
    if y is None:
        raise ValueError(f"this model is class-conditional (fusion {list(cfg.fusion)}): labels are required")
    if not torch.is_tensor(y) or y.dim() != 1 or y.shape[0] != n:
        got = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
        raise ValueError(f"labels must be a 1-D tensor of length {n}, got {got}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= cfg.num_classes):
        raise ValueError(f"labels must be in [0, {cfg.num_classes}), got min {y.min().item()}, "
                         f"max {y.max().item()}")


def check_inputs(x: torch.Tensor, y, cfg: ModelConfig) -> None:
    """Validate an image batch and its labels (see :func:`check_images`, :func:`check_labels`)."""
    check_images(x, cfg)
    check_labels(y, x.shape[0], cfg)


class PixelCNNpp(nn.Module):
    """Conditional PixelCNN++. ``forward(x, y) -> (B, 10*K, S, S)`` mixture parameters."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        f, n, p = config.nr_filters, config.nr_resnet, config.dropout
        self.fusion = Fusion(config)
        cin = 3 + 1 + self.fusion.extra_input_channels
        self.u_init = DownShiftedConv2d(cin, f, (2, 3))
        self.ul_init_v = DownShiftedConv2d(cin, f, (1, 3))
        self.ul_init_h = DownRightShiftedConv2d(cin, f, (2, 1))

        def blocks(count, u_skip, ul_skip):
            return (nn.ModuleList(GatedResBlock(f, DownShiftedConv2d, u_skip, p) for _ in range(count)),
                    nn.ModuleList(GatedResBlock(f, DownRightShiftedConv2d, ul_skip, p) for _ in range(count)))

        up = [blocks(n, 0, f) for _ in range(3)]
        down = [blocks(c, f, 2 * f) for c in (n, n + 1, n + 1)]
        self.up_u = nn.ModuleList(b[0] for b in up)
        self.up_ul = nn.ModuleList(b[1] for b in up)
        self.down_u = nn.ModuleList(b[0] for b in down)
        self.down_ul = nn.ModuleList(b[1] for b in down)
        self.downsample_u = nn.ModuleList(DownShiftedConv2d(f, f, (2, 3), stride=2) for _ in range(2))
        self.downsample_ul = nn.ModuleList(DownRightShiftedConv2d(f, f, (2, 2), stride=2) for _ in range(2))
        self.upsample_u = nn.ModuleList(DownShiftedDeconv2d(f, f) for _ in range(2))
        self.upsample_ul = nn.ModuleList(DownRightShiftedDeconv2d(f, f) for _ in range(2))
        self.out = NIN(f, 10 * config.nr_logistic_mix)
        assert 2 * count_blocks(n) == sum(len(m) for m in (*self.up_u, *self.up_ul, *self.down_u, *self.down_ul))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, check: bool = True) -> torch.Tensor:
        """x: (B, 3, S, S) in [-1, 1]; y: (B,) long labels -> (B, 10*K, S, S).

        ``check=False`` skips the input validation (it costs a device sync;
        the training loop validates its data once instead).
        """
        if check:
            check_inputs(x, y, self.config)
        ctx = self.fusion.context(y)
        x = self.fusion.input(x, ctx)
        ones = x.new_ones(x.shape[0], 1, *x.shape[2:])
        x = torch.cat([x, ones], dim=1)
        u = down_shift(self.u_init(x))
        ul = down_shift(self.ul_init_v(x)) + right_shift(self.ul_init_h(x))
        u, ul = self.fusion.after_first_conv(u, ul, ctx)

        us, uls = [u], [ul]
        k = 0
        for s in range(3):
            for bu, bul in zip(self.up_u[s], self.up_ul[s]):
                u = bu(u, cond=self.fusion.block(k, ctx))
                ul = bul(ul, a=u, cond=self.fusion.block(k + 1, ctx))
                k += 2
                us.append(u)
                uls.append(ul)
            if s < 2:
                u = self.downsample_u[s](u)
                ul = self.downsample_ul[s](ul)
                us.append(u)
                uls.append(ul)

        u, ul = self.fusion.bottleneck(us.pop(), uls.pop(), ctx)
        for s in range(3):
            for bu, bul in zip(self.down_u[s], self.down_ul[s]):
                u = bu(u, a=us.pop(), cond=self.fusion.block(k, ctx))
                ul = bul(ul, a=torch.cat([u, uls.pop()], dim=1), cond=self.fusion.block(k + 1, ctx))
                k += 2
            if s < 2:
                u = self.upsample_u[s](u)
                ul = self.upsample_ul[s](ul)
        assert not us and not uls
        return self.fusion.output(self.out(F.elu(ul)), ctx)
