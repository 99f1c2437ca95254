"""Per-pixel class evidence: which pixels make the model say pizza.

``evidence(model, x)`` -> (B, C, S, S): entry [b, c, i, j] is
log p(x_ij | x_<ij, c) in nats with the three sub-pixels summed
(:func:`pcnn.likelihood.pixel_log_likelihood`, the per-pixel reduction that
:func:`pcnn.likelihood.nll` sums). Summing class c's map over the image gives
log p(x | c), the number :func:`pcnn.log_likelihoods` classifies by.

``evidence_margin(ev)`` turns that into one map per image: the predicted class's
evidence minus the runner-up's, whose sum is the log-likelihood gap that decided
the prediction (positive pixels argued for the prediction, negative ones against).
``plot_evidence_margin`` draws the image beside that map.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import torch

from .config import CPEN455_CLASSES
from .classify import class_pair_outputs, default_batch_size
from .likelihood import pixel_log_likelihood
from .model import check_images


@torch.no_grad()
def evidence(model, x: torch.Tensor, batch_size: Optional[int] = None,
             progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Per-pixel log p(x_ij | x_<ij, c) in nats: x (B, 3, S, S) in [-1, 1] -> (B, C, S, S).

    C is the number of classes (1 for an unconditional model). The (image,
    class) pairs are batched in the order and chunks of
    :func:`pcnn.log_likelihoods` (``batch_size`` pairs per forward pass, default
    :func:`pcnn.classify.default_batch_size`), so the maps sum to its numbers.
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


def plot_evidence_margin(image: torch.Tensor, ev: torch.Tensor, class_names: Sequence[str] = CPEN455_CLASSES,
                         true_label: Optional[int] = None, first=None, second=None, axes=None, vmax=None,
                         label: Optional[str] = None):
    """Draw one image beside its margin map (predicted class vs runner-up by default).

    ``image``: uint8 (3, S, S); ``ev``: its evidence (C, S, S) or (1, C, S, S).
    Red pixels favour the first class, blue the second (a diverging colour map
    centred on 0, symmetric at ``vmax``, default the largest |margin|); the title
    gives both classes and the total gap in nats. ``axes``: two matplotlib axes
    to draw into (else a new figure). ``label`` (e.g. ``"correct"``, ``"mistake"``) heads the
    image's title. Returns the figure.
    """
    import matplotlib.pyplot as plt
    ev = ev[None] if ev.dim() == 3 else ev
    if ev.shape[0] != 1:
        raise ValueError(f"plot one image at a time, got evidence for {ev.shape[0]}")
    if image.dim() != 3 or image.shape[0] != 3 or image.shape[1:] != ev.shape[2:]:
        raise ValueError(f"image must be uint8 (3, {ev.shape[2]}, {ev.shape[3]}), got {tuple(image.shape)}")
    m = evidence_margin(ev, first, second)
    names = list(class_names) + [f"Class{k}" for k in range(len(class_names), ev.shape[1])]
    a, b = names[int(m.first[0])], names[int(m.second[0])]
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.2))
    else:
        fig = axes[0].figure
    mp = m.maps[0].double().numpy()
    lim = float(vmax) if vmax is not None else max(float(abs(mp).max()), 1e-9)
    axes[0].imshow(image.permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
    title = "image" if true_label is None else f"true: {names[int(true_label)]}"
    axes[0].set_title(title if label is None else f"{label}\n{title}", fontsize=9)
    im = axes[1].imshow(mp, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    axes[1].set_title(f"{a} - {b}: {float(m.total[0]):+.1f} nats", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04, label="nats / pixel")
    return fig
