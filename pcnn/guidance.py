"""Class guidance by the model's own likelihood classifier: exact 256-bin sub-pixel draws.

PixelCNN++ (Salimans et al. 2017) models each pixel as a mixture of discretised logistics over
R, then G given R, then B given R and G; a class-conditional PixelCNN (van den Oord et al. 2016)
gives one such distribution per class. Guidance sharpens the samples of a class c without a
classifier head or a null class: with class weights pi(c' | x_<i) the unconditional next
sub-pixel distribution is the mixture ``sum_c' pi_c' p(x_i | x_<i, c')``, and the guided
distribution is

    q(x_i) ∝ p(x_i | x_<i, c) * p(c | x_<=i)^w  ∝  p(x_i | c)^(1+w) / (sum_c' pi_c' p(x_i | c'))^w,

classifier guidance (as Dhariwal & Nichol's, and GeDi's for text) where the classifier is the
generative model itself. It is applied per sub-pixel, exactly: the 256 bin probabilities of
R, G | R and B | R, G are computed under every class (:func:`channel_probs`, the mixture's
CDF differenced at the bin edges, the shared components' weights re-weighted by their
likelihood of the sub-pixels already drawn, computed by the very
:func:`pcnn.likelihood.logistic_bin_log_prob` the likelihood uses), combined in log
space (:func:`guided_log_probs`) and drawn by inverse CDF from one uniform per sub-pixel
(:func:`draw_bins`). ``w = 0`` draws from the model's own distribution.

The class weights pi (``GUIDES``), because the running posterior saturates after a few rows:

* ``"posterior"``: pi = p(c' | x_<i), the model's running posterior (uniform prior).
* ``"flat"``: pi = 1/C at every step (guidance against the plain class average).
* ``"tempered"``: pi = softmax(tau * log p(x_<i | c')), log-likelihoods scaled by
  :data:`TEMPER` fixed before measuring (results/guidance/README.md).

This module is part of the core: pure tensor functions plus :class:`GuidedDraw`, the per-pixel
hook the samplers of :mod:`pcnn.sample` call.
"""
from __future__ import annotations

import math
import numbers

import torch

from .likelihood import LOG_WEIGHT_MIN, logistic_bin_log_prob, mixture_params

GUIDES = ("posterior", "flat", "tempered")
#: The guide used when none is named: the one that measured best (results/guidance/: at w = 4
#: flat reaches 90.8 % probe accuracy and FID-2048 214.5 against w = 0's 56.8 % and 230.6; the
#: running posterior saturates and stays at 56 to 58 % at every w; tempered reaches 70.2 %).
DEFAULT_GUIDE = "flat"
#: Scale of the accumulated log-likelihoods in the ``"tempered"`` weights, fixed before the
#: trade-off was measured: a whole image's median class margin (about 24 nats on the shipped
#: model) becomes about 1.2 nats, so the weights never saturate.
TEMPER = 0.05
#: Largest guidance weight accepted; beyond it q is a near-deterministic argmax.
MAX_GUIDANCE = 64.0


def check_guidance(w, guide: str = DEFAULT_GUIDE) -> float:
    """``w`` as a float; ``ValueError`` unless finite and in [0, MAX_GUIDANCE] and ``guide`` is known."""
    if isinstance(w, bool) or not isinstance(w, numbers.Real):
        raise ValueError(f"guidance must be a number >= 0 (0 = the model's own distribution), got {w!r}")
    w = float(w)
    if not math.isfinite(w) or not 0 <= w <= MAX_GUIDANCE:
        raise ValueError(f"guidance must be finite and in [0, {MAX_GUIDANCE:g}], got {w!r}")
    if guide not in GUIDES:
        raise ValueError(f"unknown guide {guide!r}; choose from {list(GUIDES)}")
    return w


def bin_values(like: torch.Tensor) -> torch.Tensor:
    """The 256 grid values ``v / 127.5 - 1`` (v = 0..255) in ``like``'s dtype and device."""
    return torch.arange(256, device=like.device, dtype=like.dtype) / 127.5 - 1


def channel_probs(log_w: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """One channel's 256 bin probabilities under a mixture of discretised logistics.

    ``log_w`` (..., K): log weights of the components (any normalisation: the pixel's mixture
    weights, re-weighted by each component's likelihood of the channels already drawn);
    ``mean``, ``log_scale`` (..., K): each component's (coupled) mean and clamped log-scale.
    Returns (..., 256), summing to 1: the mixture's CDF at the 255 bin edges
    ``(v - 1/2) / 127.5 - 1`` (0 below the first, 1 above the last: the edge bins take the
    tails, as in the likelihood), differenced. This is the likelihood's bin probability
    ``F(x + 1/255) - F(x - 1/255)`` of every value at once; the likelihood code replaces
    bins below 1e-5 by the density at their centre (for a finite gradient), so the two agree
    to within that where it matters for sampling (tests/test_guidance.py).
    """
    edges = bin_values(mean)[1:] - 1.0 / 255.0                                       # (255,)
    cdf_k = torch.sigmoid((edges - mean[..., None]) * torch.exp(-log_scale)[..., None])  # (..., K, 255)
    w = torch.softmax(log_w, dim=-1)
    cdf = (w[..., None] * cdf_k).sum(-2)                                             # (..., 255)
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf, torch.ones_like(cdf[..., :1])], dim=-1)
    return (cdf[..., 1:] - cdf[..., :-1]).clamp(min=0)


def guided_log_probs(log_p: torch.Tensor, target: torch.Tensor, log_pi: torch.Tensor, w: float) -> torch.Tensor:
    """Normalised log q over the 256 bins: log_p (B, C, 256) per-class log-probabilities,
    target (B,) class indices, log_pi (B, C) log class weights (normalised) -> (B, 256).

    ``log q = (1 + w) log p_target - w logsumexp_c(log_pi_c + log p_c)``, renormalised; at
    ``w = 0`` it is ``log p_target`` renormalised (the discretised logistic sums to 1 up to the
    tail bins that use the density at their centre, below 1e-5).
    """
    own = log_p.gather(1, target.view(-1, 1, 1).expand(-1, 1, log_p.shape[2])).squeeze(1)
    if w == 0:
        return torch.log_softmax(own, dim=1)
    mix = torch.logsumexp(log_pi[..., None] + log_p, dim=1)
    return torch.log_softmax((1 + w) * own - w * mix, dim=1)


def draw_bins(log_q: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: log_q (B, 256) normalised log-probabilities, u (B,) uniform in [0, 1)
    -> (B,) bin indices in 0..255 (the first bin whose CDF exceeds u; exact up to rounding)."""
    cdf = torch.cumsum(torch.exp(log_q), dim=1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1).to(cdf.dtype), right=True).squeeze(1)
    return idx.clamp(max=255)


class GuidedDraw:
    """The per-pixel hook of a guided sampler (one call per pixel, raster order).

    The sampler runs the network on ``B * C`` rows, class-major (row ``c * B + b`` is image b
    under class c), and calls ``draw(out, i, j, known)`` with the network output at pixel
    (i, j), (B*C, 10K). The hook draws R, G, B of each image from the guided distribution
    (:func:`guided_log_probs`, ``u`` (B, 3, S, S) the uniforms) and returns them as grid
    values (B*C, 3), the same pixel in every class row; for a ``known`` pixel (B, 3)
    (completion) it draws nothing and returns it. Either way the class log-likelihoods of
    what was placed are accumulated (``log_lik`` (B, C), nats), which the ``"posterior"`` and
    ``"tempered"`` weights read. ``temperature`` T: each class's mixture logits / T and
    logistic scales * T before guidance, as in :func:`pcnn.likelihood.sample_from_params`.
    """

    def __init__(self, targets: torch.Tensor, num_classes: int, nr_mix: int, u: torch.Tensor, w: float,
                 guide: str = DEFAULT_GUIDE, temperature: float = 1.0):
        self.w = check_guidance(w, guide)
        self.guide, self.C, self.K, self.T = guide, num_classes, nr_mix, float(temperature)
        self.targets, self.u = targets, u
        self.B = targets.shape[0]
        self.log_lik = u.new_zeros(self.B, num_classes, dtype=torch.float64)

    def log_weights(self) -> torch.Tensor:
        """log pi (B, C) for the next sub-pixel (normalised)."""
        if self.guide == "flat":
            return self.log_lik.new_full((self.B, self.C), -math.log(self.C))
        scale = TEMPER if self.guide == "tempered" else 1.0
        return torch.log_softmax(scale * self.log_lik, dim=1)

    def _params(self, out: torch.Tensor):
        """(B, C, K) logits and (B, C, 3, K) means, log-scales, coefficients of each class."""
        p = mixture_params(out.reshape(out.shape[0], -1, 1, 1), self.K)
        to_bc = lambda t: t.reshape(self.C, self.B, *t.shape[1:-2]).transpose(0, 1)  # noqa: E731
        logits, means, log_s, coeffs = (to_bc(t) for t in p)
        if self.T != 1.0:
            logits, log_s = logits / self.T, log_s + math.log(self.T)
        return logits, means, log_s, coeffs

    def __call__(self, out: torch.Tensor, i: int, j: int, known: torch.Tensor | None = None) -> torch.Tensor:
        if known is not None and known.shape[0] != self.B:   # the sampler's class-major copies
            known = known[:self.B]
        logits, means, log_s, coeffs = self._params(out)
        log_w = torch.log_softmax(logits, dim=2).clamp(min=LOG_WEIGHT_MIN)                 # (B, C, K)
        tiny = torch.finfo(log_w.dtype).tiny
        vals = []
        for ch in range(3):
            mean = means[:, :, ch]
            if ch == 1:
                mean = mean + coeffs[:, :, 0] * vals[0][:, None, None]
            elif ch == 2:
                mean = mean + coeffs[:, :, 1] * vals[0][:, None, None] + coeffs[:, :, 2] * vals[1][:, None, None]
            if known is None:
                log_p = torch.log(channel_probs(log_w, mean, log_s[:, :, ch]).clamp(min=tiny))   # (B, C, 256)
                log_q = guided_log_probs(log_p, self.targets, self.log_weights().to(log_p.dtype), self.w)
                x = bin_values(mean)[draw_bins(log_q, self.u[:, ch, i, j].to(log_q.dtype))]
            else:
                x = known[:, ch].to(mean.dtype)
            # the drawn value's exact log-probability per component (the likelihood's own
            # numbers): the class log-likelihoods, and the components re-weighted by it
            comp = logistic_bin_log_prob(x[:, None, None], mean, log_s[:, :, ch])                # (B, C, K)
            self.log_lik += (torch.logsumexp(log_w + comp, 2) - torch.logsumexp(log_w, 2)).double()
            log_w = log_w + comp
            vals.append(x)
        px = torch.stack(vals, dim=1).to(out.dtype)                                         # (B, 3)
        return px.repeat(self.C, 1)
