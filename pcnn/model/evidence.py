"""Per-pixel class evidence: which pixels make the model say pizza.

``evidence(model, x)`` -> (B, C, S, S): entry [b, c, i, j] is
log p(x_ij | x_<ij, c) in nats with the three sub-pixels summed
(:func:`pcnn.model.likelihood.pixel_log_likelihood`, the per-pixel reduction that
:func:`pcnn.model.likelihood.nll` sums). Summing class c's map over the image gives
log p(x | c), the number :func:`pcnn.log_likelihoods` classifies by.

``evidence_margin(ev)`` turns that into one map per image: the predicted class's
evidence minus the runner-up's, whose sum is the log-likelihood gap that decided
the prediction (positive pixels argued for the prediction, negative ones against).
``plot_evidence_margin`` draws the image beside that map.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch

from pcnn.model.classify import class_pair_outputs, default_batch_size
from pcnn.model.likelihood import pixel_log_likelihood
from pcnn.model.network import check_images


@torch.no_grad()
def evidence(model, x: torch.Tensor, batch_size: Optional[int] = None,
             progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Per-pixel log p(x_ij | x_<ij, c) in nats: x (B, 3, S, S) in [-1, 1] -> (B, C, S, S).

    C is the number of classes (1 for an unconditional model). The (image,
    class) pairs are batched in the order and chunks of
    :func:`pcnn.log_likelihoods` (``batch_size`` pairs per forward pass, default
    :func:`pcnn.model.classify.default_batch_size`), so the maps sum to its numbers.
    Returned on the CPU in float64 for a float64 model, else float32. The model
    runs in eval mode and is restored afterwards; ``progress(done, total)`` is
    called after each chunk. No mirror averaging: a pixel's conditional is not
    the same quantity in the mirrored image.
    """
    cfg = model.config
    check_images(x, cfg)
    p0 = next(model.parameters())
    device = p0.device
    batch_size = default_batch_size(device) if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n, c = x.shape[0], cfg.num_classes if cfg.conditional else 1
    dtype = torch.float64 if p0.dtype == torch.float64 else torch.float32
    out = torch.zeros(c, n, cfg.image_size, cfg.image_size, dtype=dtype)
    for _, labels, idx, imgs, net_out in class_pair_outputs(model, x[None], batch_size, progress):
        out[labels, idx] = pixel_log_likelihood(imgs, net_out, cfg.nr_logistic_mix).to(dtype).cpu()
    return out.transpose(0, 1).contiguous()


class Margin(NamedTuple):
    """:func:`evidence_margin`'s result for B images."""
    maps: torch.Tensor        # (B, S, S): evidence[first] - evidence[second], nats per pixel
    first: torch.Tensor       # (B,) the class compared (default: the predicted one)
    second: torch.Tensor      # (B,) the class it is compared with (default: the runner-up)
    total: torch.Tensor       # (B,) maps summed: log p(x | first) - log p(x | second)


def evidence_margin(ev: torch.Tensor, first=None, second=None) -> Margin:
    """Per-pixel margin between two classes from :func:`evidence` (B, C, S, S).

    By default ``first`` is each image's predicted class (the largest summed
    evidence) and ``second`` the runner-up, so ``total`` is the winning
    log-likelihood gap (>= 0). Pass ``first``/``second`` (ints or (B,) tensors),
    e.g. the true class, to see the evidence for one class over another.
    """
    if ev.dim() != 4 or ev.shape[1] < 2:
        raise ValueError(f"need evidence (B, C, S, S) with C >= 2 classes, got {tuple(ev.shape)}")
    b, c = ev.shape[:2]
    ll = ev.flatten(2).sum(-1)                                   # (B, C)
    order = ll.argsort(dim=1, descending=True)

    def pick(arg, default):
        if arg is None:
            return default
        t = torch.as_tensor(arg, dtype=torch.long).expand(b).clone()
        if ((t < 0) | (t >= c)).any():
            raise ValueError(f"classes must be in [0, {c}), got {t.tolist()}")
        return t
    first = pick(first, order[:, 0])
    if second is None:
        second = torch.where(order[:, 0] == first, order[:, 1], order[:, 0])
    second = pick(second, None)
    rows = torch.arange(b)
    maps = ev[rows, first] - ev[rows, second]
    return Margin(maps, first, second, maps.flatten(1).sum(-1))
