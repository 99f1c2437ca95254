"""Where the class label enters the network: every fusion mode in one place.

Each mode is a few lines below; the model calls the hooks of :class:`Fusion`
at fixed points and every hook is the identity when its mode is off, so modes
combine freely by name (``ModelConfig(fusion="first_conv+blocks")``).

Sources:

* ``input`` -- a learned per-class map added to the image, ``x <- x + e_y``
  ("early fusion"; Shakouri 2024, CPEN455 report, table 1; Chan 2024, CPEN455
  report, section 2.1).
* ``input_concat`` -- class planes concatenated to the input channels; Chan's
  report found it worse than adding, the best public peer used it early. We use
  one-hot planes: the first convolutions' weights on those planes are the
  learned embedding.
* ``first_conv`` -- per-class embeddings added to u and ul after the first
  convolutions (Shakouri's "up-stream initial"; the best variant in Chan's
  report).
* ``middle`` -- added to u and ul at the 8x8 bottleneck (Shakouri's "middle
  fusion"; the ~85 % bottleneck-only peer).
* ``late`` -- a per-class bias on the 10*K mixture parameters (Shakouri's "late
  fusion / logits").
* ``blocks`` -- a per-class bias on the gate pre-activation of every gated
  block: the conditional PixelCNN's ``V^T h`` with one-hot ``h`` (van den Oord
  et al. 2016, eq. 4; the original PixelCNN++ TF code's ``h``).
* ``blocks_film`` -- FiLM (Perez et al. 2018) of the same pre-activation,
  ``c2 * (1 + gamma_y) + beta_y`` (the 88 % peer used FiLM in every block).

Initialisation: every learned class parameter starts at **zero** (FiLM as
``1 + gamma`` with gamma = 0). At step 0 the conditional network is therefore
exactly the unconditional one -- no class-dependent noise is injected into a
freshly initialised deep network -- while the gradient reaching each embedding
is non-zero because the weights downstream are not, so the class signal grows
from the data. (The one-hot planes of ``input_concat`` are fixed; the conv
weights reading them are initialised like all other conv weights.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig


def count_blocks(nr_resnet: int) -> int:
    """Gated blocks in one stream: 3 up stages of n, down stages of n, n+1, n+1."""
    return 3 * nr_resnet + nr_resnet + 2 * (nr_resnet + 1)


@dataclass
class FusionContext:
    """Per-forward class tensors, gathered once from the labels."""
    y: Optional[torch.Tensor]
    block_bias: Optional[torch.Tensor] = None   # (B, n_blocks, 2F)
    block_scale: Optional[torch.Tensor] = None  # (B, n_blocks, 2F), already 1 + gamma
    block_shift: Optional[torch.Tensor] = None  # (B, n_blocks, 2F)


class Fusion(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        m, c, f = cfg.fusion, cfg.num_classes, cfg.nr_filters
        self.modes = m
        n_blocks = 2 * count_blocks(cfg.nr_resnet)  # u and ul streams
        z = lambda *s: nn.Parameter(torch.zeros(*s))  # noqa: E731  (zero init: see module doc)
        self.input_map = z(c, 3, cfg.image_size, cfg.image_size) if "input" in m else None
        self.extra_input_channels = c if "input_concat" in m else 0
        self.first = z(c, 2, f) if "first_conv" in m else None
        self.mid = z(c, 2, f) if "middle" in m else None
        self.late_bias = z(c, 10 * cfg.nr_logistic_mix) if "late" in m else None
        self.block_bias = z(c, n_blocks, 2 * f) if "blocks" in m else None
        self.film_gamma = z(c, n_blocks, 2 * f) if "blocks_film" in m else None
        self.film_beta = z(c, n_blocks, 2 * f) if "blocks_film" in m else None
        self.num_classes = c

    def context(self, y: Optional[torch.Tensor]) -> FusionContext:
        ctx = FusionContext(y=y)
        if y is None:
            return ctx
        if self.block_bias is not None:
            ctx.block_bias = self.block_bias[y]
        if self.film_gamma is not None:
            ctx.block_scale = 1.0 + self.film_gamma[y]
            ctx.block_shift = self.film_beta[y]
        return ctx

    # -- hooks, in the order the model calls them -------------------------------
    def input(self, x, ctx):
        """(B, 3, H, W) -> (B, 3 + C_extra, H, W): early fusion of the image."""
        if self.input_map is not None:
            x = x + self.input_map[ctx.y]
        if self.extra_input_channels:
            planes = F.one_hot(ctx.y, self.num_classes).to(x.dtype)
            x = torch.cat([x, planes[:, :, None, None].expand(-1, -1, *x.shape[-2:])], dim=1)
        return x

    def after_first_conv(self, u, ul, ctx):
        if self.first is None:
            return u, ul
        e = self.first[ctx.y]
        return u + e[:, 0, :, None, None], ul + e[:, 1, :, None, None]

    def bottleneck(self, u, ul, ctx):
        if self.mid is None:
            return u, ul
        e = self.mid[ctx.y]
        return u + e[:, 0, :, None, None], ul + e[:, 1, :, None, None]

    def block(self, k: int, ctx):
        """Conditioning of gated block ``k`` as a function of its gate pre-activation, or None."""
        if ctx.block_bias is None and ctx.block_scale is None:
            return None

        def cond(c2):
            if ctx.block_scale is not None:
                c2 = c2 * ctx.block_scale[:, k, :, None, None] + ctx.block_shift[:, k, :, None, None]
            if ctx.block_bias is not None:
                c2 = c2 + ctx.block_bias[:, k, :, None, None]
            return c2
        return cond

    def output(self, out, ctx):
        if self.late_bias is None:
            return out
        return out + self.late_bias[ctx.y][:, :, None, None]
