"""Autoregressive class-conditional sampling: the one sampler that the CLI, the
widget and FID share.

All randomness is drawn up front from the caller's ``torch.Generator``: a
uniform for the Gumbel-max component choice (B, K, S, S) and one for the
inverse-CDF logistic draw (B, 3, S, S). Every method consumes the *same*
numbers at the same pixel, so methods are comparable image for image.
"""
from __future__ import annotations

import numbers
from typing import Callable, Optional, Sequence

import torch
from torch.nn.utils import parametrize

from .cached import cached_sample
from .guidance import DEFAULT_GUIDE, GuidedDraw, resolve_guidance
from pcnn.model.likelihood import check_temperature, draw_noise, mixture_params, sample_from_params, to_uint8
from pcnn.model.network import check_labels


METHODS = ("cached", "naive")


def _naive(model, labels, u_mix, u_log, progress, temperature: float = 1.0, known=None, keep_rows: int = 0,
           draw=None):
    """The reference sampler: the whole network once per pixel. ``known`` (B,3,S,S) grid
    values fix the first ``keep_rows`` rows (completion); the rest are sampled. ``draw``:
    the per-pixel hook of :func:`pcnn.sampling.cached.cached_sample` (guided sampling); it also
    sees the kept pixels, so the network runs there too."""
    cfg = model.config
    s, k = cfg.image_size, cfg.nr_logistic_mix
    dtype = next(model.parameters()).dtype
    x = torch.zeros(u_mix.shape[0], 3, s, s, device=u_mix.device, dtype=dtype)
    if keep_rows:
        x[:, :, :keep_rows] = known[:, :, :keep_rows].to(dtype)
    for i in range(s):
        if draw is not None:
            for j in range(s):
                out = model(x, labels, check=False)[:, :, i, j]
                x[:, :, i, j] = draw(out, i, j, known[:, :, i, j] if i < keep_rows else None)
        elif i >= keep_rows:
            for j in range(s):
                out = model(x, labels, check=False)[:, :, i:i + 1, j:j + 1]
                p = mixture_params(out, k)
                x[:, :, i:i + 1, j:j + 1] = sample_from_params(p, u_mix[:, :, i:i + 1, j:j + 1],
                                                               u_log[:, :, i:i + 1, j:j + 1], temperature)
        if progress is not None:
            progress(i + 1, s, x)
    return x


def check_class_values(values, cfg, what: str = "labels") -> None:
    """``ValueError`` unless a list/tuple of classes holds ints in [0, num_classes) (tensors: check_labels)."""
    if not isinstance(values, (list, tuple)):
        return
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Integral)]
    if bad:
        raise ValueError(f"{what} must be class indices (ints), got {bad[0]!r} ({type(bad[0]).__name__}); "
                         "map a name with pcnn.model.config.CPEN455_CLASSES.index(name)")
    out = [v for v in values if not 0 <= v < cfg.num_classes]
    if out:
        raise ValueError(f"{what} must be in [0, {cfg.num_classes}), got {out[0]}")


@torch.no_grad()
def sample(model, labels, generator: Optional[torch.Generator] = None, method: str = "cached",
           progress: Optional[Callable[[int, int], None]] = None,
           return_float: bool = False,
           preview: Optional[Callable[[int, torch.Tensor], None]] = None,
           temperature: float = 1.0, return_outputs: bool = False, guidance=0.0,
           guide: str = DEFAULT_GUIDE, exact_bins: bool = False, plausible: float = 0.0,
           schedule="constant"):
    """Sample images of the given classes: labels (B,) -> uint8 images (B, 3, S, S).

    ``method``: ``"cached"`` (default) computes each layer only where a new pixel
    makes it computable, keeping per-layer caches (:mod:`pcnn.sampling.cached`): the
    work of about one forward pass per image; ``"naive"`` reruns the whole
    network for each of the S*S pixels. Both consume the same noise and give the
    same images (up to floating-point summation order).
    ``generator``: a CPU ``torch.Generator`` for reproducibility.
    ``progress(rows_done, rows_total)`` is called after each image row, and
    ``preview(rows_done, images_uint8)`` with the images so far (rows not yet
    sampled are mid-grey, value 128), so a widget can show them forming.
    Runs in eval mode without autograd and restores the model's mode afterwards.
    ``return_float=True`` returns the [-1, 1] grid values instead of uint8.
    ``temperature`` T (finite, > 0; default 1, the model's own distribution):
    every pixel is drawn with the mixture logits divided by T and the logistic
    scales multiplied by T (:func:`pcnn.model.likelihood.sample_from_params`), in both
    methods; T = 1 is bitwise the untempered sampler.
    ``return_outputs=True`` (cached method only) returns ``(images, outputs)`` with the
    network output (B, 10K, S, S) the sampler computed at every pixel, for checks against
    one teacher-forced forward pass on the images.
    ``guidance`` w (>= 0, default 0): class guidance by the model's own likelihood classifier,
    each sub-pixel drawn exactly from ``p(x_i | x_<i, c) * p(c | x_<=i)^w`` over its 256 bins
    (:mod:`pcnn.sampling.guidance`; ``guide`` chooses the class weights: ``"flat"``, the default and the
    one that measured best in results/guidance/, ``"posterior"`` or ``"tempered"``). The network
    then runs on every class at once (C times the work). ``plausible`` alpha in [0, 1]: bins
    whose probability under the target class is below alpha times the largest are excluded
    before the tilt (0, the default, excludes none: exactly the untruncated draw);
    ``schedule``: ``"constant"``, ``"ramp"`` (w rising linearly from 0 at the first row to w at
    the last) or ``"interval:A:B"`` (guidance on rows [A, B) only), see :mod:`pcnn.sampling.guidance`.
    ``guidance="recommended"`` takes w, guide, alpha and schedule from the checkpoint's metadata
    (:func:`pcnn.sampling.guidance.recommended_guidance`); the default stays w = 0.
    ``exact_bins=True` uses that draw even at w = 0 (the model's own distribution, drawn
    per sub-pixel by inverse CDF, the network on the image's own class only), so images at
    several w from one seed share their noise and differ only by w. Without either, the mixture is drawn as above
    (bitwise today's).
    """
    return _run(model, labels, generator, method, progress, return_float, preview, temperature,
                return_outputs=return_outputs, guidance=guidance, guide=guide, exact_bins=exact_bins,
                plausible=plausible, schedule=schedule)


def _run(model, labels, generator, method, progress, return_float, preview, temperature,
         known=None, keep_rows: int = 0, return_outputs: bool = False, guidance=0.0,
         guide: str = DEFAULT_GUIDE, exact_bins: bool = False, plausible: float = 0.0, schedule="constant"):
    """The shared body of :func:`sample` and :func:`complete`."""
    temperature = check_temperature(temperature)
    guidance, guide, plausible, schedule = resolve_guidance(model, guidance, guide, plausible, schedule)
    schedule.check_rows(model.config.image_size)
    guided = guidance > 0 or bool(exact_bins)
    cfg = model.config
    check_class_values(labels, cfg)
    device = next(model.parameters()).device
    if method not in METHODS:
        raise ValueError(f"unknown sampling method {method!r}; choose from {list(METHODS)}")
    if return_outputs and method != "cached":
        raise ValueError("return_outputs needs method='cached' (the naive sampler keeps no per-pixel outputs)")
    if guided and not cfg.conditional:
        raise ValueError("guidance needs a class-conditional model (this one has no classes to guide by)")
    if guided and return_outputs:
        raise ValueError("return_outputs is not available with guidance or exact_bins (the network runs on "
                         "every class)")
    labels = torch.as_tensor(labels, dtype=torch.long) if not torch.is_tensor(labels) else labels
    if labels.dim() != 1 or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {tuple(labels.shape)}")
    if cfg.conditional:
        check_labels(labels, labels.shape[0], cfg)
    labels = labels.to(device)
    u_mix, u_log = draw_noise(labels.shape[0], cfg.nr_logistic_mix, cfg.image_size, generator)
    u_mix, u_log = u_mix.to(device), u_log.to(device)
    n = labels.shape[0]
    draw = None
    if guided and guidance == 0:  # the exact draw of the own class only: no other class is needed
        draw = GuidedDraw(torch.zeros_like(labels), 1, cfg.nr_logistic_mix, u_log, 0.0, guide, temperature)
    elif guided:  # every image under every class, class-major; the hook keeps the copies equal
        nc = cfg.num_classes
        draw = GuidedDraw(labels, nc, cfg.nr_logistic_mix, u_log, guidance, guide, temperature, plausible, schedule)
        labels = torch.arange(nc, device=device).repeat_interleave(n)
        u_mix, u_log = u_mix.repeat(nc, 1, 1, 1), u_log.repeat(nc, 1, 1, 1)
        known = None if known is None else known.repeat(nc, 1, 1, 1)
    on_row = None
    if progress is not None or preview is not None:
        def on_row(rows, total, x_so_far):
            if progress is not None:
                progress(rows, total)
            if preview is not None:
                preview(rows, to_uint8(x_so_far[:n]))
    extra = {}
    if return_outputs:
        p0 = next(model.parameters())
        extra["outputs"] = p0.new_zeros(labels.shape[0], 10 * cfg.nr_logistic_mix, cfg.image_size, cfg.image_size)
    was_training = model.training
    model.eval()
    try:
        with parametrize.cached():
            x = _SAMPLERS[method](model, labels if cfg.conditional else None, u_mix, u_log, on_row,
                                  temperature=temperature,
                                  known=None if known is None else known.to(device), keep_rows=keep_rows,
                                  draw=draw, **extra)
    finally:
        model.train(was_training)
    x = x[:n]
    x = x if return_float else to_uint8(x)
    return (x, extra["outputs"]) if return_outputs else x


_SAMPLERS = {"naive": _naive, "cached": cached_sample}


@torch.no_grad()
def complete(model, images: torch.Tensor, labels, keep_rows: int, generator: Optional[torch.Generator] = None,
             method: str = "cached", temperature: float = 1.0,
             progress: Optional[Callable[[int, int], None]] = None, return_float: bool = False,
             preview: Optional[Callable[[int, torch.Tensor], None]] = None, guidance=0.0,
             guide: str = DEFAULT_GUIDE, exact_bins: bool = False, plausible: float = 0.0,
             schedule="constant") -> torch.Tensor:
    """Class-conditional completion: keep the first ``keep_rows`` rows of each image, sample the rest.

    ``images``: uint8 (B, 3, S, S) at the model's size (e.g. ``load_split(...).images``);
    ``labels`` (B,): the class each image is completed as (repeat an image to
    complete it as several classes). Returns uint8 (B, 3, S, S) whose first
    ``keep_rows`` rows are the input's, bitwise. The same samplers and noise as
    :func:`sample` (all noise is drawn for the whole image, so ``keep_rows=0``
    gives exactly ``sample(model, labels, generator)``): the cached sampler
    feeds the kept rows through its per-layer caches (teacher-forced, nothing
    drawn there), so its caches start from the kept rows and the sampled rows
    see them exactly as the naive reference does; the cost is that of sampling
    a whole image. ``temperature``, ``progress``, ``preview``, ``return_float``:
    as in :func:`sample` (``progress`` is also called for the kept rows). ``guidance``,
    ``guide``, ``exact_bins``, ``plausible``, ``schedule``: as in :func:`sample` (the schedule counts
    the image's rows, kept ones included); every sampled sub-pixel is guided given the
    kept rows, and with the ``posterior`` and ``tempered`` guides the kept rows also count as
    evidence in the class weights (completing a panda as a pizza is then guided away from the
    panda that the kept rows show; the default ``flat`` weights ignore them).
    """
    cfg = model.config
    s = cfg.image_size
    if not torch.is_tensor(images):
        raise ValueError(f"images must be a uint8 tensor (B, 3, {s}, {s}), got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0..255) like load_split(...).images, got {images.dtype}; "
                         "convert [-1, 1] floats with pcnn.sampling.sample.to_uint8")
    if images.dim() != 4 or tuple(images.shape[1:]) != (3, s, s):
        raise ValueError(f"images must have shape (B, 3, {s}, {s}) for this model, got {tuple(images.shape)}")
    if isinstance(keep_rows, bool) or not isinstance(keep_rows, int) or not 0 <= keep_rows <= s:
        raise ValueError(f"keep_rows must be an integer in [0, {s}] (the image has {s} rows), got {keep_rows!r}")
    n_labels = len(labels) if not torch.is_tensor(labels) else (labels.shape[0] if labels.dim() else 1)
    if n_labels != images.shape[0]:
        raise ValueError(f"need one label per image: {images.shape[0]} images, {n_labels} labels")
    known = images.to(next(model.parameters()).dtype) / 127.5 - 1   # as pcnn.data.dataset.to_float, in the model's
                                                                    # dtype
    return _run(model, labels, generator, method, progress, return_float, preview, temperature,
                known=known, keep_rows=keep_rows, guidance=guidance, guide=guide, exact_bins=exact_bins,
                plausible=plausible, schedule=schedule)


def complete_as_every_class(model, images: torch.Tensor, keep_rows: int, seed: int = 0,
                            classes: Optional[Sequence[int]] = None, method: str = "cached",
                            temperature: float = 1.0, guidance=0.0, guide: str = DEFAULT_GUIDE,
                            exact_bins: bool = False, plausible: float = 0.0, schedule="constant") -> torch.Tensor:
    """Complete every image as every class: uint8 (N, 3, S, S) -> uint8 (N, C, 3, S, S).

    Each class is completed with ``torch.Generator().manual_seed(seed)``, so the
    completions of one image differ only by the class ("finish this panda as a
    pizza"); see :func:`pcnn.viz.grids.completion_grid` to draw them. ``guidance``, ``guide``,
    ``exact_bins``, ``plausible``, ``schedule``: as in :func:`complete`.
    """
    cfg = model.config
    if not cfg.conditional:
        raise ValueError("completing as every class needs a class-conditional model")
    classes = list(range(cfg.num_classes)) if classes is None else list(classes)
    outs = [complete(model, images, [c] * images.shape[0], keep_rows, torch.Generator().manual_seed(seed),
                     method=method, temperature=temperature, guidance=guidance, guide=guide, exact_bins=exact_bins,
                     plausible=plausible, schedule=schedule)
            for c in classes]
    return torch.stack(outs, dim=1)


def same_noise_samples(model, per_class: int = 8, seed: int = 0, classes: Optional[Sequence[int]] = None,
                       temperature: float = 1.0, method: str = "cached") -> tuple:
    """Sample ``per_class`` images of every class from one noise draw: returns (images, labels).

    Each class is sampled with ``torch.Generator().manual_seed(seed)`` and the
    same batch size, so image k of every class consumes the same random numbers
    (:func:`pcnn.model.likelihood.draw_noise`); only the class differs.
    """
    cfg = model.config
    if not cfg.conditional:
        raise ValueError("a same-noise grid needs a class-conditional model")
    classes = list(range(cfg.num_classes)) if classes is None else list(classes)
    imgs = [sample(model, [c] * per_class, generator=torch.Generator().manual_seed(seed),
                   temperature=temperature, method=method) for c in classes]
    labels = torch.tensor([c for c in classes for _ in range(per_class)])
    return torch.cat(imgs).cpu(), labels


def guidance_rows(model, cls: int, weights: Sequence[float] = (0.0, 1.0, 2.0, 4.0), per_row: int = 8, seed: int = 0,
                  guide: str = DEFAULT_GUIDE, method: str = "cached") -> torch.Tensor:
    """``per_row`` images of class ``cls`` at every guidance weight, one noise draw for all:
    uint8 (len(weights), per_row, 3, S, S). Every row uses the exact 256-bin draw
    (``exact_bins=True``) with ``torch.Generator().manual_seed(seed)``, so column k of every row
    consumes the same random numbers and the rows differ only by w."""
    check_class_values([cls], model.config, "cls")
    rows = [sample(model, [cls] * per_row, generator=torch.Generator().manual_seed(seed), guidance=w, guide=guide,
                   exact_bins=True, method=method) for w in weights]
    return torch.stack([r.cpu() for r in rows])


def setting_rows(model, cls: int, settings: Sequence, per_row: int = 8, seed: int = 0,
                 method: str = "cached") -> torch.Tensor:
    """``per_row`` images of class ``cls`` under each guided setting of ``settings``
    (:class:`pcnn.sampling.guidance.GuidanceSetting` s, or dicts of :func:`sample`'s guidance keywords),
    one noise draw for all: uint8 (len(settings), per_row, 3, S, S); the exact 256-bin draw
    with ``torch.Generator().manual_seed(seed)`` in every row, so the rows differ only by the
    setting."""
    check_class_values([cls], model.config, "cls")
    rows = []
    for st in settings:
        kw = st.kwargs() if hasattr(st, "kwargs") else dict(st)
        rows.append(sample(model, [cls] * per_row, generator=torch.Generator().manual_seed(seed), exact_bins=True,
                           method=method, **kw).cpu())
    return torch.stack(rows)
