"""Discretised mixture-of-logistics likelihood of PixelCNN++ (Salimans et al. 2017, sec. 2.1-2.2).

Pure functions, no model imports. The pipeline, with shapes::

    network output (B, 10K, H, W)
      -> mixture_params            MixtureParams: logits (B,K,H,W); means, log_scales,
                                   coeffs (B,3,K,H,W)
      -> subpixel_log_probs(x, p)  (B, 3, K, H, W)  log P(x_c | component k, x_<c)
      -> pixel_log_probs(x, p)     (B, H, W)        log P(x_ij) (log-softmax + log-sum-exp over k)
      -> pixel_log_likelihood(x, out, K) (B, H, W)  the same from the network output (the per-pixel
                                                    reduction nll sums; pcnn.evidence maps it)
      -> nll(x, out, K, reduction) (B,) / ()        nats per image
      -> bits_per_dim(nll, dims)                    nats / (dims * ln 2)

Data lives in [-1, 1] on the 8-bit grid: value v in {0..255} is x = v / 127.5 - 1,
and its bin is [x - 1/255, x + 1/255]. Channel layout of the 10K outputs is the
original code's: K mixture logits, then for each of R, G, B the K means, K
log-scales and K raw coupling coefficients. The three coefficient slots (R, G, B
order) act after a tanh as: mean_G += c0 * R, mean_B += c1 * R + c2 * G.

Numerics (as in the original, made safe for every finite input):
edge bins use the CDF tails (x = -1: log F(x + 1/255); x = 1: log(1 - F(x - 1/255)));
interior bins use log(F(+) - F(-)) unless that difference is below 1e-5, where
the log density at the bin centre plus log(2/255) is used. Log-scales are clamped
at >= -7 (the original) and, our addition, at <= 1e4; standardised arguments
at |t| <= 1e4 and log mixture weights at >= -1e4, so that no branch of a select
(selected or not) is inf or NaN, in value or gradient, for any finite output,
even in float32. These extra clamps only touch probabilities below exp(-1e4),
which are zero in every floating-point format anyway.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

HALF_BIN = 1.0 / 255.0        # half-width of an 8-bit bin in [-1, 1]
LOG_SCALE_MIN = -7.0          # as the original: scales below e^-7 add nothing but instability
LOG_SCALE_MAX = 1e4           # our addition: e^1e4 is already infinite; keeps sums finite
LOG_WEIGHT_MIN = -1e4         # our addition: floor of log mixture weights (exp(-1e4) == 0 anyway)
MIDPOINT_THRESHOLD = 1e-5     # bins with probability below this use the centre density
ARG_CLAMP = 1e4               # |standardised argument| cap: keeps every branch finite


class MixtureParams(NamedTuple):
    logits: torch.Tensor      # (B, K, H, W) unnormalised mixture weights
    means: torch.Tensor       # (B, 3, K, H, W) uncoupled means (coupling applied with data)
    log_scales: torch.Tensor  # (B, 3, K, H, W) clamped to [LOG_SCALE_MIN, LOG_SCALE_MAX]
    coeffs: torch.Tensor      # (B, 3, K, H, W) tanh-ed coefficients: [G<-R, B<-R, B<-G]


def mixture_params(out: torch.Tensor, nr_mix: int) -> MixtureParams:
    """Split network output (B, 10K, H, W) into :class:`MixtureParams` (original layout)."""
    b, c, h, w = out.shape
    if c != 10 * nr_mix:
        raise ValueError(f"network output has {c} channels, expected 10*K = {10 * nr_mix}")
    logits = out[:, :nr_mix]
    rest = out[:, nr_mix:].reshape(b, 3, 3 * nr_mix, h, w)
    means = rest[:, :, :nr_mix]
    log_scales = rest[:, :, nr_mix:2 * nr_mix].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
    coeffs = torch.tanh(rest[:, :, 2 * nr_mix:])
    return MixtureParams(logits, means, log_scales, coeffs)


def coupled_means(x: torch.Tensor, p: MixtureParams) -> torch.Tensor:
    """Means after the autoregressive channel coupling: x (B,3,H,W) -> (B,3,K,H,W)."""
    r, g = x[:, 0:1, None], x[:, 1:2, None]  # (B,1,1,H,W), broadcast over K
    m = p.means
    m_g = m[:, 1:2] + p.coeffs[:, 0:1] * r
    m_b = m[:, 2:3] + p.coeffs[:, 1:2] * r + p.coeffs[:, 2:3] * g
    return torch.cat(torch.broadcast_tensors(m[:, 0:1], m_g, m_b), dim=1)


def logistic_bin_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(bin of x) under a discretised logistic; all arguments broadcast.

    x on the 8-bit grid in [-1, 1]; returns the same broadcast shape.
    """
    inv_s = torch.exp(-log_scale)
    centred = x - mean
    t_plus = (inv_s * (centred + HALF_BIN)).clamp(-ARG_CLAMP, ARG_CLAMP)
    t_minus = (inv_s * (centred - HALF_BIN)).clamp(-ARG_CLAMP, ARG_CLAMP)
    t_mid = (inv_s * centred).clamp(-ARG_CLAMP, ARG_CLAMP)
    log_cdf_plus = -F.softplus(-t_plus)              # log sigmoid(t+): edge bin 0
    log_one_minus_cdf_minus = -F.softplus(t_minus)   # log(1 - sigmoid(t-)): edge bin 255
    delta = torch.sigmoid(t_plus) - torch.sigmoid(t_minus)
    log_delta = torch.log(delta.clamp(min=1e-12))
    # log pdf at the centre times the bin width 2/255 (the original's "- log(127.5)").
    log_mid = t_mid - log_scale - 2.0 * F.softplus(t_mid) + math.log(2 * HALF_BIN)
    interior = torch.where(delta > MIDPOINT_THRESHOLD, log_delta, log_mid)
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_minus, interior))


def subpixel_log_probs(x: torch.Tensor, p: MixtureParams) -> torch.Tensor:
    """x (B,3,H,W) in [-1,1] -> (B,3,K,H,W): log P(x_c | k, x_<c) per component."""
    return logistic_bin_log_prob(x[:, :, None], coupled_means(x, p), p.log_scales)


def pixel_log_probs(x: torch.Tensor, p: MixtureParams) -> torch.Tensor:
    """x (B,3,H,W) -> (B,H,W): log sum_k pi_k prod_c P(x_c | k, x_<c)."""
    log_pi = torch.log_softmax(p.logits, dim=1).clamp(min=LOG_WEIGHT_MIN)
    return torch.logsumexp(log_pi + subpixel_log_probs(x, p).sum(dim=1), dim=1)


def pixel_log_likelihood(x: torch.Tensor, out: torch.Tensor, nr_mix: int) -> torch.Tensor:
    """Per-pixel log p(x_ij | x_<ij) in nats (sub-pixels summed): x (B,3,H,W), output (B,10K,H,W) -> (B,H,W).

    The per-pixel reduction that :func:`nll` sums over the image (so the two agree
    exactly). Computed in float32 (or float64 if the output is float64) even under autocast.
    """
    if x.shape[0] != out.shape[0] or x.shape[2:] != out.shape[2:] or x.shape[1] != 3:
        raise ValueError(f"images {tuple(x.shape)} and network output {tuple(out.shape)} do not match")
    dtype = torch.float64 if out.dtype == torch.float64 else torch.float32
    p = mixture_params(out.to(dtype), nr_mix)
    return pixel_log_probs(x.to(dtype), p)


def nll(x: torch.Tensor, out: torch.Tensor, nr_mix: int, reduction: str = "none") -> torch.Tensor:
    """Negative log-likelihood in nats of images x (B,3,H,W) given network output (B,10K,H,W).

    reduction: ``"none"`` -> (B,), ``"sum"`` or ``"mean"`` over the batch -> ().
    Computed in float32 (or float64 if the output is float64) even under autocast.
    """
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")
    per_image = -pixel_log_likelihood(x, out, nr_mix).flatten(1).sum(dim=1)
    if reduction == "none":
        return per_image
    return per_image.sum() if reduction == "sum" else per_image.mean()


def class_nll(log_px_given_c: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log p(y | x) in nats from class log-likelihoods, under a uniform class prior.

    log_px_given_c (B,C): log p(x | c) for every class c; y (B,) int64 -> (B,).
    p(y | x) = p(x | y) / sum_c p(x | c) (Bayes with p(c) = 1/C), i.e. the
    cross-entropy of the softmax of the log-likelihoods. This is the
    discriminative term of hybrid training (see :class:`pcnn.train.TrainConfig`
    ``disc_weight``); prediction stays ``argmax_c log p(x | c)``.
    """
    if log_px_given_c.dim() != 2 or y.shape != log_px_given_c.shape[:1]:
        raise ValueError(f"need log-likelihoods (B,C) and labels (B,), got {tuple(log_px_given_c.shape)} "
                         f"and {tuple(y.shape)}")
    return torch.logsumexp(log_px_given_c, dim=1) - log_px_given_c.gather(1, y[:, None]).squeeze(1)


def bits_per_dim(nll_nats: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Convert nats per image to bits per sub-pixel: nll / (num_dims * ln 2); num_dims = 3*H*W."""
    return nll_nats / (num_dims * math.log(2.0))


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Snap values in [-1, 1] to the nearest of the 256 grid points (clipping outside)."""
    return torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def check_temperature(temperature) -> float:
    """``temperature`` as a float; a ``ValueError`` unless it is finite and > 0."""
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}") from None
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r} (1 = the model's distribution)")
    return t


def sample_from_params(p: MixtureParams, u_mix: torch.Tensor, u_logistic: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """Draw one pixel per position from the mixture, given uniform noise.

    p: MixtureParams at the positions to sample (H, W may be 1); u_mix (B,K,H,W)
    and u_logistic (B,3,H,W) uniform in (0,1). Returns (B,3,H,W) on the 8-bit grid.
    The component is chosen by Gumbel-max; each channel by the inverse logistic
    CDF, then snapped to the grid **before** it conditions the next channel, so
    the coupling sees what training saw (the original samples continuously).
    ``temperature`` T (finite, > 0): the mixture logits are divided by T and the
    logistic scales multiplied by T, so T < 1 sharpens the distribution and T > 1
    flattens it; T = 1 runs exactly the untempered arithmetic (bitwise the same).
    """
    t = check_temperature(temperature)
    u_mix = u_mix.clamp(1e-5, 1 - 1e-5)
    u = u_logistic.clamp(1e-5, 1 - 1e-5)
    logits = p.logits if t == 1.0 else p.logits / t
    k = torch.argmax(logits - torch.log(-torch.log(u_mix)), dim=1, keepdim=True)  # (B,1,H,W)
    pick = lambda t: torch.gather(t, 2, k[:, None].expand(-1, 3, -1, -1, -1))[:, :, 0]  # noqa: E731
    mean, log_s, c = pick(p.means), pick(p.log_scales), pick(p.coeffs)
    scale = torch.exp(log_s) if t == 1.0 else torch.exp(log_s) * t
    noise = scale * (torch.log(u) - torch.log1p(-u))
    r = quantize(mean[:, 0] + noise[:, 0])
    g = quantize(mean[:, 1] + c[:, 0] * r + noise[:, 1])
    b = quantize(mean[:, 2] + c[:, 1] * r + c[:, 2] * g + noise[:, 2])
    return torch.stack([r, g, b], dim=1)


def draw_noise(batch: int, nr_mix: int, size: int, generator=None) -> tuple:
    """All the uniform noise of one sampling run, drawn up front on the CPU (so a seed gives the
    same images on every device): ``(u_mix (B, K, S, S), u_logistic (B, 3, S, S))``, float32,
    the arguments of :func:`sample_from_params` at every pixel."""
    u_mix = torch.rand(batch, nr_mix, size, size, generator=generator)
    u_log = torch.rand(batch, 3, size, size, generator=generator)
    return u_mix, u_log


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [-1, 1] as ``v / 127.5 - 1`` (the exact 8-bit grid)."""
    return images_uint8.to(torch.float32) / 127.5 - 1.0


def to_uint8(x_float: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_float`: ``round((x + 1) * 127.5)`` clamped to 0..255, uint8."""
    return ((x_float.to(torch.float32) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
