"""Fast, exact, cached incremental sampling for :class:`pcnn.model.network.PixelCNNpp`.

The idea is that of Ramachandran et al. 2017 ("Fast Generation for
Convolutional Autoregressive Models"): instead of rerunning the whole network
for each of the S*S pixels (the naive sampler), keep per-layer caches and
compute every layer only at the positions that a new pixel makes computable.
This is our own implementation for this model's two-stream U-net.

Schedule (level L = 0, 1, 2 is resolution S, S/2, S/4; level-L row/col
``r = i >> L``, ``c = j >> L``):

* **Vertical stream ``u``, one row at a time.** ``u`` never reads ``ul`` and is
  down-shifted, so ``u`` at image row i depends only on image rows < i. At the
  start of image row i every level-0 ``u`` layer is computed for row i; a
  level-L layer for row ``i >> L`` when ``i % 2**L == 0`` (its inputs, rows
  ``2r-1, 2r`` of the finer level, are then done). The down pass's ``u``
  deconvolution gives level-L row R from level-(L+1) row ``R // 2`` only (kernel
  row ``R % 2``). Row computations use ``F.conv2d`` on a two-row input; every
  conv keeps only the previous row of its input.
* **Horizontal stream ``ul``, one pixel at a time.** At step (i, j) every
  level-0 ``ul`` layer is computed at (i, j); level-L layers at (r, c) only when
  ``i`` and ``j`` are multiples of ``2**L``. The 2x2 down-right-shifted
  kernels read rows r-1 and r: the row r-1 half (plus the bias, the ``u``-part of
  the skip connections, the per-class block bias and the ``first_conv``
  embedding) is computed for the whole row in one matrix product at the start
  of the row (``pre``); per pixel only the current-row half remains, one
  ``addmm`` on a strided view of a one-row cache (no copy, no cat). The
  ``ul`` deconvolution output (R, C) comes from input (R//2, C//2) and kernel tap
  (R%2, C%2): when a level-(L+1) pixel is computed, all four level-L outputs it
  feeds are computed in one ``addmm`` and cached until used.

Caches: per 2x2 ``ul`` conv a one-row buffer of its (concat-ELU'd) input,
(B, W+1, Cin) channels-last with a zero column on the left, and its row
precomputation (B, W, Cout); per ``u`` conv its input's previous row; the
``ul`` deconv outputs for two fine rows; the input image. Memory is
O(layers * B * S * F) (our estimate: about 0.4 GB for nr_resnet=5,
nr_filters=160, batch 100), never O(layers * B * S * S * F).

Weight norm is a parametrization recomputed on every access: the effective
weights are read once per call. Dropout is not applied (eval semantics). The
class enters through ``model.fusion``: its ``input`` hook gives the constant
input planes, ``after_first_conv``/``bottleneck``/``output`` are applied to the
``u`` rows and to zeros (which yields the additive embeddings folded into the
``ul`` precomputation), and ``fusion.context(y)`` gives the per-block bias /
FiLM scale and shift. The input hook must be additive in the image (as every
current mode is): the sampled pixel is added to the constant planes.

Every pixel is drawn with ``sample_from_params(mixture_params(...))`` and the
same pre-drawn noise as the naive sampler, so both methods give the same
images up to floating-point reassociation (the same numbers in a different
summation order). The result is in the model's dtype.

It is one module of about 450 lines because it mirrors the model layer by layer
(``tests/test_fast_sample.py`` checks every config field against one full forward);
split up, the mirror would sit apart from what it mirrors.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from pcnn.model.layers import concat_elu, gate
from pcnn.model.likelihood import mixture_params, sample_from_params

_elu_ = getattr(torch._C._nn, "elu_", None) or (lambda t: F.elu(t, inplace=True))


def _wb(module):
    """Effective (weight, bias) of a layer wrapping a weight-normed ``.conv``."""
    conv = module.conv
    return conv.weight.detach(), conv.bias.detach()


class _RowConv:
    """A down-shifted conv of the ``u`` stream (kernel (2, 3), stride 1 or 2), one output row per call.

    Keeps only the previous row of its input; zeros before the first row are the
    zero padding above the image.
    """

    def __init__(self, module, prev_shape, like, stride=1):
        self.w, self.b = _wb(module)
        self.stride = stride
        self.prev = like.new_zeros(prev_shape)

    def __call__(self, cur):
        inp = torch.cat([self.prev, cur], dim=2)
        self.prev = cur
        return F.conv2d(F.pad(inp, (1, 1, 0, 0)), self.w, self.b, stride=self.stride)


class _URowBlock:
    """A GatedResBlock of the ``u`` stream evaluated one row at a time."""

    def __init__(self, blk, batch, nf, width, like):
        shape = (batch, 2 * nf, 1, width)
        self.conv1 = _RowConv(blk.conv1, shape, like)
        self.conv2 = _RowConv(blk.conv2, shape, like)
        self.skip = None if blk.skip is None else _wb(blk.skip)

    def __call__(self, x, a=None, cond=None):
        c1 = self.conv1(concat_elu(x))
        if self.skip is not None:
            c1 = c1 + F.conv2d(concat_elu(a), *self.skip)
        c2 = self.conv2(concat_elu(c1))
        if cond is not None:
            c2 = cond(c2)
        return x + gate(c2)


class _PixConv:
    """A 2x2 down-right-shifted conv (stride 1 or 2) evaluated one output pixel at a time.

    ``buf`` (B, W_in + 1, Cin) holds the current input row (channels last,
    column 0 is the zero padding on the left). :meth:`row_start` turns the
    previous input row (still in ``buf``) into ``pre`` = bias + top-row taps
    (+ extra); :meth:`at` adds the current-row taps for one output column.
    """

    def __init__(self, weight, bias, batch, w_in, stride, like):
        cout, cin = weight.shape[:2]
        self.cin = cin
        self.w_top_t = weight[:, :, 0, :].permute(0, 2, 1).reshape(cout, 2 * cin).t().contiguous()
        self.w_cur_t = weight[:, :, 1, :].permute(0, 2, 1).reshape(cout, 2 * cin).t().contiguous()
        self.bias = bias
        w_out = w_in // stride
        self.buf = like.new_zeros(batch, w_in + 1, cin)
        self.pre = like.new_zeros(batch, w_out, cout)
        self.pre2d = self.pre.view(batch * w_out, cout)
        self.win = self.buf.as_strided((batch, w_out, 2 * cin), (self.buf.stride(0), stride * cin, 1))
        self.pre_at = [self.pre[:, c] for c in range(w_out)]
        self.patch = [self.buf[:, stride * c:stride * c + 2].view(batch, 2 * cin) for c in range(w_out)]
        self.slot = [self.buf[:, c + 1] for c in range(w_in)]
        self.slot2 = [s.view(batch, 2, cin // 2) for s in self.slot] if cin % 2 == 0 else None

    def row_start(self, extra=None):
        # one (B * W_out, 2 Cin) x (2 Cin, Cout) product (F.linear on the 3-D strided
        # window view would take a slow batched path)
        torch.addmm(self.bias, self.win.reshape(self.pre2d.shape[0], -1), self.w_top_t, out=self.pre2d)
        if extra is not None:
            self.pre += extra

    def at(self, c):
        return torch.addmm(self.pre_at[c], self.patch[c], self.w_cur_t)


_SIGN = {}


def _sign(like):
    key = (like.dtype, like.device)
    if key not in _SIGN:
        _SIGN[key] = torch.tensor([[1.0], [-1.0]], dtype=like.dtype, device=like.device)
    return _SIGN[key]


class _PixBlock:
    """A GatedResBlock of the ``ul`` stream evaluated one pixel at a time."""

    def __init__(self, blk, batch, nf, width, like, k, ctx):
        w1, b1 = _wb(blk.conv1)
        w2, b2 = _wb(blk.conv2)
        self.nf = nf
        self.conv1 = _PixConv(w1, b1, batch, width, 1, like)
        self.conv2 = _PixConv(w2, b2, batch, width, 1, like)
        self.sign = _sign(like)
        self.skip_u = self.skip_ul_t = None
        if blk.skip is not None:
            ws, bs = _wb(blk.skip)
            ws = ws[:, :, 0, 0]
            half = ws.shape[1] // 2   # concat_elu(a) = [elu(a), elu(-a)]
            if half == nf:            # up pass: a = u
                self.skip_u = (ws[:, :, None, None], bs)
            else:                     # down pass: a = [u, ul]; split the weight instead of cat
                wu = torch.cat([ws[:, :nf], ws[:, half:half + nf]], 1)
                wl = torch.cat([ws[:, nf:half], ws[:, half + nf:]], 1)
                self.skip_u = (wu[:, :, None, None], bs)
                self.skip_ul_t = wl.t().contiguous()
        # class conditioning of the gate pre-activation: a per-class bias is folded into the row
        # precomputation of conv2; FiLM (c2 * scale + shift, then + bias) is applied per pixel.
        self.bias2 = None   # (B, 1, 2F) added to conv2's row precomputation
        self.scale = self.shift = None
        if ctx.block_scale is not None:
            self.scale = ctx.block_scale[:, k].contiguous()
            self.shift = ctx.block_shift[:, k].contiguous()
            if ctx.block_bias is not None:
                self.shift = self.shift + ctx.block_bias[:, k]
        elif ctx.block_bias is not None:
            self.bias2 = ctx.block_bias[:, k][:, None, :]

    def row_start(self, u_row):
        """u_row: (B, F, 1, W), this block's ``a`` (u part) for the whole row."""
        extra = None
        if self.skip_u is not None:
            extra = F.conv2d(concat_elu(u_row), *self.skip_u)[:, :, 0].transpose(1, 2)
        self.conv1.row_start(extra=extra)
        self.conv2.row_start(extra=self.bias2)

    def write_ce(self, x, c):
        """concat_elu(x) into conv1's cache at column c; returns that (B, 2F) view."""
        torch.mul(x.unsqueeze(1), self.sign, out=self.conv1.slot2[c])
        return _elu_(self.conv1.slot[c])

    def step(self, c, x, a_ce=None, out=None):
        self.write_ce(x, c)
        c1 = self.conv1.at(c)
        if a_ce is not None:
            c1 = c1.addmm_(a_ce, self.skip_ul_t)
        torch.mul(c1.unsqueeze(1), self.sign, out=self.conv2.slot2[c])
        _elu_(self.conv2.slot[c])
        c2 = self.conv2.at(c)
        if self.scale is not None:
            c2 = torch.addcmul(self.shift, c2, self.scale)
        nf = self.nf
        if out is None:
            return torch.addcmul(x, c2[:, :nf], torch.sigmoid(c2[:, nf:]))
        return torch.addcmul(x, c2[:, :nf], torch.sigmoid(c2[:, nf:]), out=out)


class _CachedSampler:
    def __init__(self, model, labels, batch):
        cfg = model.config
        self.model, self.cfg = model, cfg
        p0 = next(model.parameters())
        like = torch.empty(0, dtype=p0.dtype, device=p0.device)
        self.like = like
        self.B = B = batch
        self.S = S = cfg.image_size
        self.nf = nf = cfg.nr_filters
        self.n = n = cfg.nr_resnet
        self.K = cfg.nr_logistic_mix
        self.width = [S >> L for L in range(3)]
        fus = model.fusion
        self.fusion = fus
        self.ctx = ctx = fus.context(labels)
        self.Z = like.new_zeros(B, nf, 1, 1)

        # input: constant planes (fusion.input of a zero image, then the `ones` channel), channels last
        xin = fus.input(like.new_zeros(B, 3, S, S), ctx)
        xin = torch.cat([xin, xin.new_ones(B, 1, S, S)], dim=1)
        self.cin = xin.shape[1]
        self.xin = xin.permute(0, 2, 3, 1).contiguous()            # (B, S, S, Cin)
        self.xin_nchw = self.xin.permute(0, 3, 1, 2)                # view
        self.x = like.new_zeros(B, 3, S, S)

        # first convs
        self.wu0, self.bu0 = _wb(model.u_init)
        self.wv, self.bv = _wb(model.ul_init_v)
        wh, self.bh = _wb(model.ul_init_h)                          # (F, Cin, 2, 1)
        self.wh_top_t = wh[:, :, 0, 0].t().contiguous()
        self.wh_cur_t = wh[:, :, 1, 0].t().contiguous()
        self.pre_init = like.new_zeros(B, S, nf)
        self.pre_init_at = [self.pre_init[:, c] for c in range(S)]
        # per-pixel views, made in C++ by unbind (cheaper than Python slicing per pixel)
        self.xin_at = [r.unbind(1) for r in self.xin.unbind(1)]                  # (B, Cin)
        self.xin3_at = [r.unbind(1) for r in self.xin[..., :3].unbind(1)]        # (B, 3)
        self.x_at = [r.unbind(2) for r in self.x.unbind(2)]                      # (B, 3)

        # k indices of the blocks, as the forward counts them
        k = 0
        self.k_up, self.k_down = [], []
        for s in range(3):
            self.k_up.append([k + 2 * t for t in range(n)])
            k += 2 * n
        for s, cnt in enumerate((n, n + 1, n + 1)):
            self.k_down.append([k + 2 * t for t in range(cnt)])
            k += 2 * cnt
        # level L (0: S, 1: S/2, 2: S/4); model stage s of the up pass is level s, of the down pass 2 - s
        W = self.width
        self.up_u = [[_URowBlock(b, B, nf, W[L], like) for b in model.up_u[L]] for L in range(3)]
        self.up_ul = [[_PixBlock(b, B, nf, W[L], like, self.k_up[L][t] + 1, ctx)
                       for t, b in enumerate(model.up_ul[L])] for L in range(3)]
        self.down_u = [None] * 3
        self.down_ul = [None] * 3
        for s in range(3):
            L = 2 - s
            self.down_u[L] = [_URowBlock(b, B, nf, W[L], like) for b in model.down_u[s]]
            self.down_ul[L] = [_PixBlock(b, B, nf, W[L], like, self.k_down[s][t] + 1, ctx)
                               for t, b in enumerate(model.down_ul[s])]
        self.k_down = [self.k_down[2 - L] for L in range(3)]
        # downsampling into level L (1, 2) from level L-1
        self.ds_u = [None] + [_RowConv(model.downsample_u[L - 1], (B, nf, 1, W[L - 1]), like, stride=2)
                              for L in (1, 2)]
        self.ds_ul = [None] + [_PixConv(*_wb(model.downsample_ul[L - 1]), B, W[L - 1], 2, like) for L in (1, 2)]
        # upsampling into level L (0, 1) from level L+1; model's upsample index s = 1 - L
        self.u_dec = [None, None]    # (weight, bias) of the u deconv into level L
        self.ul_dec = [None, None]   # (weight as (Cin, 4 Cout), bias repeated 4x) of the ul deconv
        self.dec = [None, None]
        self.dec_read = [None, None]
        self.dec_write = [None, None]
        for L in (0, 1):
            self.u_dec[L] = _wb(model.upsample_u[1 - L])
            wd, bd = _wb(model.upsample_ul[1 - L])                 # (Cin, Cout, 2, 2)
            wmat = wd.permute(0, 2, 3, 1).reshape(wd.shape[0], 4 * wd.shape[1]).contiguous()
            self.ul_dec[L] = (wmat, bd.repeat(4))
            dec = like.new_zeros(B, W[L + 1], 2, 2, nf)            # [coarse col, row parity, col parity]
            self.dec[L] = dec
            self.dec_read[L] = [[dec[:, c // 2, par, c % 2] for c in range(W[L])] for par in (0, 1)]
            self.dec_write[L] = [dec[:, c].view(B, 4 * nf) for c in range(W[L + 1])]
        self.u_last = [None, None, None]
        self.e_mid_ul = None
        # output head; `late` through the output hook (applied to zeros it is the per-class bias)
        wo, bo = _wb(model.out)
        self.wo_t = wo[:, :, 0, 0].t().contiguous()
        late = fus.output(like.new_zeros(B, wo.shape[0], 1, 1), ctx)[:, :, 0, 0]
        self.bo = (bo + late).contiguous()
        self.ce_tmp = [like.new_zeros(B, 2 * nf) for _ in range(3)]
        self.sign = _sign(like)

    # ---------------------------------------------------------------- row start
    def _u_deconv(self, L, row_coarse, kh):
        w, b = self.u_dec[L]
        out = F.conv_transpose2d(row_coarse, w[:, :, kh:kh + 1], b, stride=(1, 2))
        return out[:, :, :, 1:1 + self.width[L]]

    def row_start(self, i):
        m = 1 + (i % 2 == 0) + (i % 4 == 0)
        B, S, nf = self.B, self.S, self.nf
        fus, ctx = self.fusion, self.ctx
        # first convs: u row i from input rows i-2, i-1; ul precomputation from input row i-1
        if i == 0:
            u = self.like.new_zeros(B, nf, 1, S)
        else:
            rows = self.xin_nchw[:, :, max(i - 2, 0):i]
            u = F.conv2d(F.pad(rows, (1, 1, 1 if i == 1 else 0, 0)), self.wu0, self.bu0)
        u, e_ul = fus.after_first_conv(u, self.Z, ctx)
        h = self.bh.expand(B, S - 1, nf)
        pre = e_ul[:, :, 0].transpose(1, 2).expand(B, S, nf)
        if i > 0:
            prev = self.xin_nchw[:, :, i - 1:i]
            v = F.conv2d(F.pad(prev, (1, 1, 0, 0)), self.wv, self.bv)[:, :, 0].transpose(1, 2)
            pre = v + pre
            h = torch.addmm(self.bh, self.xin[:, i - 1, :S - 1].reshape(B * (S - 1), -1),
                            self.wh_top_t).view(B, S - 1, nf)
        self.pre_init.copy_(pre)
        self.pre_init[:, 1:] += h

        us = [[u], [], []]
        ds_out = None
        for L in range(m):
            if L > 0:
                u = ds_out
                us[L].append(u)
                self.ds_ul[L].row_start()
            for t in range(self.n):
                u = self.up_u[L][t](u, None, fus.block(self.k_up[L][t], ctx))
                self.up_ul[L][t].row_start(u)
                us[L].append(u)
            if L < 2:
                r = i >> L
                ds = self.ds_u[L + 1]
                if r % 2:
                    ds.prev = u
                else:
                    ds_out = ds(u)
        for L in reversed(range(m)):
            if L == 2:
                u, e = fus.bottleneck(us[2].pop(), self.Z, ctx)
                self.e_mid_ul = None if e is self.Z else e[:, :, 0, 0]
            else:
                u = self._u_deconv(L, self.u_last[L + 1], (i >> L) % 2)
            for t, blk in enumerate(self.down_u[L]):
                u = blk(u, us[L].pop(), fus.block(self.k_down[L][t], ctx))
                self.down_ul[L][t].row_start(u)
            self.u_last[L] = u

    # ---------------------------------------------------------------- one pixel
    def pixel(self, i, j):
        m = 1 + (i % 2 == 0 and j % 2 == 0) + (i % 4 == 0 and j % 4 == 0)
        n = self.n
        if j == 0:
            x = self.pre_init_at[0]
        else:
            x = torch.addmm(self.pre_init_at[j], self.xin_at[i][j - 1], self.wh_cur_t)
        ups = [None, None, None]
        for L in range(m):
            c = j >> L
            if L > 0:
                x = self.ds_ul[L].at(c)
            vals = [x]
            blocks = self.up_ul[L]
            for t in range(n):
                out = self.ds_ul[L + 1].slot[c] if (t == n - 1 and L < 2) else None
                x = blocks[t].step(c, x, None, out)
                vals.append(x)
            ups[L] = vals
        for L in reversed(range(m)):
            c = j >> L
            vals = ups[L]
            if L == 2:
                x = vals.pop()
                if self.e_mid_ul is not None:
                    x = x + self.e_mid_ul
            else:
                x = self.dec_read[L][(i >> L) & 1][c]
            blocks = self.down_ul[L]
            for t, blk in enumerate(blocks):
                idx = len(vals) - 1
                a = vals.pop()
                if idx < n:          # it was the input of up block idx: its concat_elu is cached there
                    a_ce = self.up_ul[L][idx].conv1.slot[c]
                else:
                    tmp = self.ce_tmp[L]
                    torch.mul(a.unsqueeze(1), self.sign, out=tmp.view(self.B, 2, self.nf))
                    a_ce = _elu_(tmp)
                x = blk.step(c, x, a_ce)
            if L > 0:
                wmat, b4 = self.ul_dec[L - 1]
                torch.addmm(b4, x, wmat, out=self.dec_write[L - 1][c])
        return torch.addmm(self.bo, F.elu(x), self.wo_t)


@torch.no_grad()
def cached_sample(model, labels: Optional[torch.Tensor], u_mix: torch.Tensor, u_log: torch.Tensor,
                  progress: Optional[Callable[[int, int, torch.Tensor], None]] = None,
                  outputs: Optional[torch.Tensor] = None, temperature: float = 1.0,
                  known: Optional[torch.Tensor] = None, keep_rows: int = 0,
                  draw: Optional[Callable] = None) -> torch.Tensor:
    """Sample with per-layer caches: the compute of about one forward pass per image.

    Same contract as the naive sampler of :mod:`pcnn.sampling.sample` (labels (B,) or
    None for unconditional models; noise from :func:`pcnn.model.likelihood.draw_noise` on
    the model's device) and the same images. Returns grid values (B, 3, S, S)
    in [-1, 1], in the model's dtype. ``outputs``: an optional (B, 10K, S, S)
    tensor that receives the network output computed at every pixel (for
    teacher-forced checks against one full forward on the result).
    Dropout is never applied (the sampler is the eval-mode network).
    ``temperature``: see :func:`pcnn.model.likelihood.sample_from_params`. ``known``
    (B, 3, S, S) grid values and ``keep_rows``: the first ``keep_rows`` rows are
    taken from ``known`` instead of sampled (completion); they still pass
    through every layer's cache, so the rows after them are computed from them
    exactly as if the sampler had drawn them.
    ``draw(out, i, j, known_px)``: an optional hook that replaces the mixture draw at every
    pixel (guided sampling, :class:`pcnn.sampling.guidance.GuidedDraw`): it gets the network output
    (B, 10K) at (i, j) and the kept pixel (B, 3) or None, and returns the pixel (B, 3).
    """
    batch = u_mix.shape[0]
    st = _CachedSampler(model, labels, batch)
    S, K = st.S, st.K
    # (B, C, 1, 1) views of the noise at each pixel, the same numbers the naive sampler slices
    um_at = [r.unbind(2) for r in u_mix.unsqueeze(-1).unsqueeze(-1).unbind(2)]
    ul_at = [r.unbind(2) for r in u_log.unsqueeze(-1).unsqueeze(-1).unbind(2)]
    if keep_rows:
        known = known.to(st.x.dtype)
    for i in range(S):
        st.row_start(i)
        for j in range(S):
            out = st.pixel(i, j)
            if outputs is not None:
                outputs[:, :, i, j] = out
            if draw is not None:
                px = draw(out, i, j, known[:, :, i, j] if i < keep_rows else None)
            elif i < keep_rows:
                px = known[:, :, i, j]
            else:
                p = mixture_params(out.view(batch, -1, 1, 1), K)
                px = sample_from_params(p, um_at[i][j], ul_at[i][j], temperature).view(batch, 3)
            st.x_at[i][j].copy_(px)
            st.xin3_at[i][j].add_(px)
        if progress is not None:
            progress(i + 1, S, st.x)
    return st.x
