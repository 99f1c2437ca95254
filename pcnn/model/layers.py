"""Causal building blocks of PixelCNN++ (Salimans et al. 2017).

Causality comes from *shifting*, not from masks: a "down-shifted" convolution
pads only above (and symmetrically left/right), so output row i sees input rows
<= i; a "down-right-shifted" convolution pads above and to the left, so output
(i, j) sees inputs at rows <= i and columns <= j. The first layer of each stream
is followed by an explicit shift (:func:`down_shift`, :func:`right_shift`) so
that no position sees its own pixel.

All convolutions use weight normalisation
(``torch.nn.utils.parametrizations.weight_norm``). No tensor is cached between
calls: padding is done with ``F.pad`` on every call so any batch size works.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """ELU of ``[x, -x]`` along channels: (B, C, H, W) -> (B, 2C, H, W).

    Same values as ``F.elu(torch.cat([x, -x], 1))``; when a gradient is needed it
    runs as one autograd node (:class:`_ConcatELU`) that keeps only its output
    for the backward pass.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return _ConcatELU.apply(x)
    return _concat_elu_values(x)


def _concat_elu_values(x: torch.Tensor) -> torch.Tensor:
    # ELU in place on the fresh concatenation: no second (B, 2C, H, W) buffer.
    return F.elu(torch.cat([x, x.neg()], dim=1), inplace=True)


class _ConcatELU(torch.autograd.Function):
    """concat_elu as one node. Why: eager autograd records neg, cat and elu
    separately, so the backward pass runs elu's backward, then negates one half
    and adds the two halves as a separate accumulation; here the ELU is applied
    in place on the fresh concatenation, its derivative is taken from the saved
    output (elu'(z) = 1 if z > 0 else elu(z) + 1) and the halves are combined
    in one subtraction, which is faster on CPU (benchmarks/README.md, "Why the code
    looks the way it does").
    """

    @staticmethod
    def forward(ctx, x):
        out = _concat_elu_values(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        d = torch.ops.aten.elu_backward(grad, 1.0, 1.0, 1.0, True, out)
        c = d.shape[1] // 2
        return d[:, :c] - d[:, c:]


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Shift rows down by one, zero row on top: out[:, :, i] = x[:, :, i-1]."""
    return F.pad(x[:, :, :-1, :], (0, 0, 1, 0))


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Shift columns right by one, zero column on the left."""
    return F.pad(x[:, :, :, :-1], (1, 0, 0, 0))


def _wn_conv(cin, cout, kernel, stride=1, init_scale=1.0, transposed=False):
    cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    conv = cls(cin, cout, kernel, stride=stride)
    # Transposed conv weights are (Cin, Cout, kh, kw): normalise per output channel.
    conv = weight_norm(conv, dim=1 if transposed else 0)
    if init_scale != 1.0:
        # Stand-in for the original's data-dependent init_scale=0.1 on the last
        # conv of each residual branch: residual branches start small, so a deep
        # network starts close to identity and training starts stable.
        with torch.no_grad():
            conv.parametrizations.weight.original0.mul_(init_scale)
    return conv


class DownShiftedConv2d(nn.Module):
    """Conv whose output row i sees input rows i-kh+1..i (pad top and both sides)."""

    def __init__(self, cin, cout, kernel=(2, 3), stride=1, init_scale=1.0):
        super().__init__()
        self.kernel = tuple(kernel)
        kh, kw = self.kernel
        self.pad = ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)  # left, right, top, bottom
        self.conv = _wn_conv(cin, cout, kernel, stride, init_scale)

    def forward(self, x):
        return self.conv(F.pad(x, self.pad))


class DownRightShiftedConv2d(nn.Module):
    """Conv whose output (i, j) sees inputs (i-kh+1..i, j-kw+1..j) (pad top and left)."""

    def __init__(self, cin, cout, kernel=(2, 2), stride=1, init_scale=1.0):
        super().__init__()
        self.kernel = tuple(kernel)
        kh, kw = self.kernel
        self.pad = (kw - 1, 0, kh - 1, 0)
        self.conv = _wn_conv(cin, cout, kernel, stride, init_scale)

    def forward(self, x):
        return self.conv(F.pad(x, self.pad))


class DownShiftedDeconv2d(nn.Module):
    """Stride-2 transposed conv, cropped so output row r depends on input row r // 2."""

    def __init__(self, cin, cout, kernel=(2, 3), stride=2):
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = stride
        self.conv = _wn_conv(cin, cout, kernel, stride, transposed=True)

    def forward(self, x):
        h, w = x.shape[-2] * self.stride, x.shape[-1] * self.stride
        left = (self.kernel[1] - 1) // 2
        return self.conv(x)[:, :, :h, left:left + w]


class DownRightShiftedDeconv2d(nn.Module):
    """Stride-2 transposed conv, cropped so output (r, c) depends on input (r//2, c//2)."""

    def __init__(self, cin, cout, kernel=(2, 2), stride=2):
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = stride
        self.conv = _wn_conv(cin, cout, kernel, stride, transposed=True)

    def forward(self, x):
        h, w = x.shape[-2] * self.stride, x.shape[-1] * self.stride
        return self.conv(x)[:, :, :h, :w]


class NIN(nn.Module):
    """"Network in network": a weight-normed 1x1 conv (no permutes needed in NCHW)."""

    def __init__(self, cin, cout, init_scale=1.0):
        super().__init__()
        self.conv = _wn_conv(cin, cout, 1, init_scale=init_scale)

    def forward(self, x):
        return self.conv(x)


class ByteDropout(nn.Module):
    """Element-wise dropout (as the original TF code; not channel-wise ``Dropout2d``).

    Why not ``nn.Dropout``: on CPU its Bernoulli sampling is a large share of a
    training step (benchmarks/README.md). We draw random int64 words, view them as
    bytes, and keep an element when its byte is below ``round(256 * (1 - p))``,
    about ten times cheaper. The keep probability is
    therefore rounded to a multiple of 1/256 (exact for p = 0.5) and the kept
    values are scaled by the inverse of that rounded probability, so the
    expectation is preserved exactly. Uses the global torch RNG of the tensor's
    device, so seeding and checkpointed RNG states reproduce it.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.threshold = int(round(256 * (1.0 - p)))
        self.scale = 256.0 / self.threshold if self.threshold else 0.0

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        # A multiply by a {0, scale} float mask, not ``torch.where``: the select is
        # about three times slower forward + backward on CPU (benchmarks/README.md).
        return x * self.keep_mask(x).to(x.dtype).mul_(self.scale)

    def keep_mask(self, x: torch.Tensor) -> torch.Tensor:
        """A fresh bool mask shaped like x, True where an element is kept (from the global RNG)."""
        n = x.numel()
        words = torch.randint(-2**63, 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=x.device)
        return words.view(torch.uint8)[:n].view(x.shape) < self.threshold

    def extra_repr(self):
        return f"p={self.p} (keep threshold {self.threshold}/256)"


class GatedResBlock(nn.Module):
    """Gated residual block of PixelCNN++.

    ``c1 = conv(concat_elu(x)) [+ nin(concat_elu(a))]``, ``c2 = conv(dropout(concat_elu(c1)))``
    with 2F channels, class conditioning applied to ``c2`` (the gate
    pre-activation) by ``cond``, then ``x + c2[:F] * sigmoid(c2[F:])``. The
    residual is added exactly once, here.

    Shapes: x (B, F, H, W); a (B, Fa, H, W) or None; returns (B, F, H, W).
    """

    def __init__(self, nr_filters: int, conv_cls, skip_channels: int = 0, dropout: float = 0.0):
        super().__init__()
        f = nr_filters
        self.conv1 = conv_cls(2 * f, f)
        self.skip = NIN(2 * skip_channels, f) if skip_channels else None
        self.dropout = ByteDropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv_cls(2 * f, 2 * f, init_scale=0.1)

    def forward(self, x, a=None, cond=None):
        c1 = self.conv1(concat_elu(x))
        if self.skip is not None:
            c1 = c1 + self.skip(concat_elu(a))
        c2 = self.conv2(self.dropout(concat_elu(c1)))
        if cond is not None:
            c2 = cond(c2)
        return x + gate(c2)


def gate(c2: torch.Tensor) -> torch.Tensor:
    """Gated activation: (B, 2F, ...) -> (B, F, ...) as a * sigmoid(b)."""
    a, b = c2.chunk(2, dim=1)
    return a * torch.sigmoid(b)
