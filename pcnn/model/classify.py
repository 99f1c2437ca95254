"""Classification by likelihood: ``predict(x) = argmax_c log p(x | c)``.

All classes are scored in one batched pass (image i with class c is row
``c * B + i``), chunked to bound memory; the numbers are exactly those of one
pass per class. Metrics come from scikit-learn.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Optional, Sequence

import torch
from torch.nn.utils import parametrize

from .likelihood import nll
from .network import check_images
from .precision import autocast, compiled_model, resolve_scoring_compile


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def default_batch_size(device: torch.device) -> int:
    """(image, class) pairs per forward pass when scoring: 32 on CPU (a big batch's activations
    fall out of the caches; benchmarks/README.md), 256 elsewhere (GPUs want big batches)."""
    return 32 if torch.device(device).type == "cpu" else 256


def check_finite_weights(model) -> None:
    """Raise ``ValueError`` if any parameter or buffer of ``model`` holds NaN or inf."""
    bad = [n for n, t in [*model.named_parameters(), *model.named_buffers()]
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f"the model's weights are non-finite (NaN or inf in {len(bad)} tensors, e.g. {bad[0]}): "
                         "its scores would be meaningless (a diverged training run?)")


@torch.no_grad()
def log_likelihoods(model, x: torch.Tensor, batch_size: Optional[int] = None, flip_average: bool = False,
                    progress: Optional[Callable[[int, int], None]] = None,
                    precision: str = "fp32", compile: str = "off") -> torch.Tensor:
    """log p(x | c) in nats for every class: x (B, 3, S, S) in [-1, 1] -> (B, num_classes).

    ``batch_size`` bounds how many (image, class) pairs go through the network at
    once (default :func:`default_batch_size` of the model's device). ``flip_average`` averages the log-likelihood of
    x and its horizontal
    mirror (test-time augmentation; still a pure likelihood). The model is put
    in eval mode for the call and restored afterwards. ``progress(done, total)``
    is called after each chunk. ``precision="bf16"`` runs the network (not the
    likelihood, which stays float32) under bf16 autocast; the default is float32
    because bf16 flips some predictions (benchmarks/results/bf16_scoring_cpu.md).
    The result is float64 for a float64 model, float32 otherwise. ``compile`` ("off",
    "default", "reduce-overhead": :func:`pcnn.model.precision.resolve_scoring_compile`) runs the
    network through ``torch.compile`` at one fixed batch of ``batch_size`` pairs (the last
    chunk is padded), so a whole split runs on one graph; the numbers are the eager model's
    within float rounding.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    cfg = model.config
    check_images(x, cfg)
    check_finite_weights(model)
    x = x.to(next(model.parameters()).dtype)  # float64 / float16 input: the model's dtype (grid values survive)
    device = _model_device(model)
    batch_size = default_batch_size(device) if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n, c = x.shape[0], cfg.num_classes if cfg.conditional else 1
    views = torch.stack([x, x.flip(-1)] if flip_average else [x])  # (V, B, 3, S, S)
    # A float64 model is scored in float64 (as pcnn.evidence does); everything else in float32.
    out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = torch.zeros(len(views), c, n, dtype=out_dtype)
    dtype = torch.bfloat16 if precision == "bf16" else None
    for v_idx, labels, img_idx, imgs, out_net in class_pair_outputs(model, views, batch_size, progress, dtype,
                                                                    compile=compile):
        out[v_idx, labels, img_idx] = (-nll(imgs, out_net, cfg.nr_logistic_mix)).to(out_dtype).cpu()
    return out.mean(dim=0).T.contiguous()


def class_pair_outputs(model, views: torch.Tensor, batch_size: int,
                       progress: Optional[Callable[[int, int], None]] = None, autocast_dtype=None,
                       compile: str = "off"):
    """Network outputs for every (view, class, image) pair, ``batch_size`` pairs per forward:
    views (V, B, 3, S, S) -> yields ``(view_idx, class_idx, image_idx, images, outputs)`` per chunk,
    image fastest, then class, then view (the order :func:`log_likelihoods` and
    :func:`pcnn.model.evidence.evidence` both use, so their numbers agree). Half-precision outputs are
    cast to float32: the likelihood never runs in half precision. Eval mode for the call,
    restored afterwards; weight norm is computed once, not per chunk. With ``compile`` other
    than "off" the network is the compiled one (:func:`pcnn.model.precision.compiled_model`) and
    every forward has exactly ``min(batch_size, pairs)`` rows: a short last chunk is padded with
    copies of its first pair, whose outputs are dropped (one graph, no recompile at the end of a
    split). Weight norm is then left to the compiled graph, which fuses it. If compiling fails at
    the first forward, a ``RuntimeWarning`` says so and the call runs eagerly."""
    cfg = model.config
    device = _model_device(model)
    mode = resolve_scoring_compile(compile, device)
    net = model if mode == "off" else compiled_model(model, mode)
    n, c = views.shape[1], cfg.num_classes if cfg.conditional else 1
    v_all = torch.arange(len(views)).repeat_interleave(c * n)
    c_all = torch.arange(c).repeat_interleave(n).repeat(len(views))
    i_all = torch.arange(n).repeat(c * len(views))
    total = len(v_all)
    fixed = min(batch_size, total)  # the compiled graph's one batch (a short job is not padded to a big batch)
    was_training = model.training
    model.eval()
    try:
        # parametrize.cached() stores weight-normed weights outside the graph; compiled, the graph computes them.
        with parametrize.cached() if mode == "off" else contextlib.nullcontext():
            for start in range(0, total, batch_size):
                sl = slice(start, start + batch_size)
                v_idx, labels, img_idx = v_all[sl], c_all[sl], i_all[sl]
                imgs = views[v_idx, img_idx].to(device)
                y = labels.to(device) if cfg.conditional else None
                k = len(imgs)
                if mode != "off" and k < fixed:  # pad to the graph's one shape
                    imgs = torch.cat([imgs, imgs[:1].expand(fixed - k, *imgs.shape[1:])])
                    y = None if y is None else torch.cat([y, y[:1].expand(fixed - k)])
                with autocast(device, autocast_dtype):
                    if mode == "off" or start > 0:
                        out_net = net(imgs, y, check=False)
                    else:  # the first compiled forward compiles: a compiler that fails falls back to eager
                        try:
                            out_net = net(imgs, y, check=False)
                        except Exception as e:  # no C++ compiler, no Triton, an unsupported platform
                            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                            warnings.warn(f"torch.compile(mode={mode}) failed at the first forward "
                                          f"({type(e).__name__}: {first}); scoring eagerly", RuntimeWarning,
                                          stacklevel=3)
                            mode, net = "off", model
                            imgs, y = imgs[:k], None if y is None else y[:k]
                            out_net = net(imgs, y, check=False)
                if mode != "off":
                    # CUDA graphs reuse their output buffer at the next replay: keep our own copy.
                    out_net, imgs = out_net[:k].clone(), imgs[:k]
                if out_net.dtype in (torch.float16, torch.bfloat16):
                    out_net = out_net.float()
                yield v_idx, labels, img_idx, imgs, out_net
                if progress is not None:
                    progress(min(start + batch_size, total), total)
    finally:
        model.train(was_training)


def predict(model=None, x: torch.Tensor = None, log_liks: torch.Tensor = None, **kw) -> torch.Tensor:
    """Predicted labels (B,) = argmax_c log p(x|c); pass images or precomputed log-likelihoods."""
    if log_liks is None:
        if model is None or x is None:
            raise ValueError("predict needs (model, x) or log_liks")
        log_liks = log_likelihoods(model, x, **kw)
    return log_liks.argmax(dim=1)


def posterior(log_liks: torch.Tensor, prior: Optional[Sequence[float] | torch.Tensor] = None) -> torch.Tensor:
    """p(c | x) from log p(x | c) (B, C) under a uniform or given prior (C,) -> (B, C)."""
    if prior is None:
        return torch.softmax(log_liks.double(), dim=1)
    prior = torch.as_tensor(prior, dtype=torch.float64)
    if prior.shape != (log_liks.shape[1],) or (prior < 0).any() or prior.sum() <= 0:
        raise ValueError(f"prior must be {log_liks.shape[1]} non-negative weights, got {prior.tolist()}")
    return torch.softmax(log_liks.double() + torch.log(prior / prior.sum()), dim=1)
