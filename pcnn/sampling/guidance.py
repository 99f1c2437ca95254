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
:func:`pcnn.model.likelihood.logistic_bin_log_prob` the likelihood uses), combined in log
space (:func:`guided_log_probs`) and drawn by inverse CDF from one uniform per sub-pixel
(:func:`draw_bins`). ``w = 0`` draws from the model's own distribution.

Two guards on the tilt (issue #34), because at w = 4 the ratio ``(p_c / p_avg)^w`` lifts bins that the
class model itself finds implausible but the other classes find even less likely (saturated
single-pixel speckle):

* **plausibility constraint** ``plausible`` = alpha: before the tilt, the bins whose probability
  under the target class is below ``alpha * max p_c`` are excluded, then q is renormalised over
  the rest: the adaptive plausibility constraint of contrastive decoding (Li et al., ACL 2023,
  "Contrastive Decoding: Open-ended Text Generation as Optimization"), which is also min-p
  sampling (Nguyen et al. 2024). ``alpha = 0`` is the untruncated draw, bit for bit.
* **schedules** of w over the raster rows (:class:`Schedule`): ``constant``; ``ramp``, w rising
  linearly from 0 at the first row to w at the last (the linear guidance schedules of MUSE,
  Chang et al. 2023, and MAR, Li et al. 2024, linear in the tokens drawn); ``interval:A:B``,
  guidance only on rows [A, B) (guidance in a limited interval, Kynkäänniemi et al. 2024, and
  LlamaGen's ``cfg-interval``, Sun et al. 2024, which guides only the early tokens). The
  constraint goes with the tilt: on a row whose scheduled w is 0 the draw is the model's own.

The recommended setting of a checkpoint (:class:`GuidanceSetting`: w, guide, alpha, schedule and
the trade-off file it came from) travels in the checkpoint's metadata under
:data:`METADATA_KEY`; ``guidance="recommended"`` reads it there (:func:`resolve_guidance`).

The class weights pi (``GUIDES``), because the running posterior saturates after a few rows:

* ``"posterior"``: pi = p(c' | x_<i), the model's running posterior (uniform prior).
* ``"flat"``: pi = 1/C at every step (guidance against the plain class average).
* ``"tempered"``: pi = softmax(tau * log p(x_<i | c')), log-likelihoods scaled by
  :data:`TEMPER` fixed before measuring (results/guidance/README.md).

This module is part of the core: pure tensor functions plus :class:`GuidedDraw`, the per-pixel
hook the samplers of :mod:`pcnn.sampling.sample` call.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from pcnn.model.likelihood import LOG_WEIGHT_MIN, logistic_bin_log_prob, mixture_params

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
#: The schedules of w over the raster rows (:class:`Schedule`).
SCHEDULES = ("constant", "ramp", "interval")
#: The key of the recommended guidance in a checkpoint's metadata (:class:`GuidanceSetting`).
METADATA_KEY = "recommended_guidance"
#: The word that asks for the checkpoint's recommended guidance instead of a number.
RECOMMENDED = "recommended"


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


def check_plausible(alpha) -> float:
    """``alpha`` as a float; ``ValueError`` unless a finite number in [0, 1] (0 = no constraint)."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise ValueError(f"plausible (alpha) must be a number in [0, 1] (0 = no constraint), got {alpha!r}")
    alpha = float(alpha)
    if not math.isfinite(alpha) or not 0 <= alpha <= 1:
        raise ValueError(f"plausible (alpha) must be in [0, 1]: bins below alpha * max p_c are excluded; got {alpha!r}")
    return alpha


@dataclass(frozen=True)
class Schedule:
    """How w varies over the raster rows: ``kind`` in :data:`SCHEDULES`; ``start``, ``stop`` the
    guided rows [start, stop) of ``"interval"`` (None otherwise). Written and parsed as
    ``"constant"``, ``"ramp"`` or ``"interval:START:STOP"`` (:meth:`parse`, ``str``)."""
    kind: str = "constant"
    start: Optional[int] = None
    stop: Optional[int] = None

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose from constant, ramp, interval:START:STOP")
        if self.kind == "interval":
            ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.start, self.stop))
            if not ok or not 0 <= self.start < self.stop:
                raise ValueError(f"an interval schedule needs rows 0 <= START < STOP, got [{self.start}, {self.stop})")
        elif self.start is not None or self.stop is not None:
            raise ValueError(f"only the interval schedule takes rows, not {self.kind!r}")

    @classmethod
    def parse(cls, spec) -> "Schedule":
        """A :class:`Schedule` from itself or from ``"constant"``, ``"ramp"``, ``"interval:A:B"``."""
        if isinstance(spec, Schedule):
            return spec
        if not isinstance(spec, str):
            raise ValueError(f"schedule must be 'constant', 'ramp' or 'interval:START:STOP', got {spec!r}")
        parts = spec.strip().split(":")
        if parts[0] == "interval":
            if len(parts) != 3 or not all(p.strip().isdigit() for p in parts[1:]):
                raise ValueError(f"an interval schedule is written interval:START:STOP (rows [START, STOP)), "
                                 f"got {spec!r}")
            return cls("interval", int(parts[1]), int(parts[2]))
        if len(parts) != 1:
            raise ValueError(f"schedule {spec!r}: only interval takes rows (interval:START:STOP)")
        return cls(parts[0])

    def __str__(self) -> str:
        return f"interval:{self.start}:{self.stop}" if self.kind == "interval" else self.kind

    def check_rows(self, rows: int) -> None:
        """``ValueError`` if an interval reaches past an image of ``rows`` rows."""
        if self.kind == "interval" and self.stop > rows:
            raise ValueError(f"schedule {self}: the image has {rows} rows, so STOP must be at most {rows}")

    def scale(self, row: int, rows: int) -> float:
        """The factor of w at image row ``row`` (0-based) of ``rows``: 1 (constant), ``row / (rows - 1)``
        (ramp: 0 at the first row, 1 at the last) or 1 inside [start, stop) and 0 outside (interval)."""
        if self.kind == "constant":
            return 1.0
        if self.kind == "ramp":
            return row / (rows - 1) if rows > 1 else 1.0
        return 1.0 if self.start <= row < self.stop else 0.0


@dataclass(frozen=True)
class GuidanceSetting:
    """One guided setting: ``w``, ``guide``, ``plausible`` (alpha), ``schedule`` (a spec string) and
    ``source`` (the trade-off file it was chosen from, or None). Validated on creation; what a
    checkpoint's metadata holds under :data:`METADATA_KEY` (:meth:`to_dict` / :meth:`from_dict`)."""
    w: float = 0.0
    guide: str = DEFAULT_GUIDE
    plausible: float = 0.0
    schedule: str = "constant"
    source: Optional[str] = None

    def __post_init__(self):
        object.__setattr__(self, "w", check_guidance(self.w, self.guide))
        object.__setattr__(self, "plausible", check_plausible(self.plausible))
        object.__setattr__(self, "schedule", str(Schedule.parse(self.schedule)))

    @classmethod
    def from_dict(cls, d: dict) -> "GuidanceSetting":
        if not isinstance(d, dict):
            raise ValueError(f"a guidance setting is a dict with w, guide, plausible, schedule, got {d!r}")
        unknown = set(d) - {"w", "guide", "plausible", "schedule", "source"}
        if unknown:
            raise ValueError(f"unknown keys in a guidance setting: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def kwargs(self) -> dict:
        """The keyword arguments of :func:`pcnn.sampling.sample.sample` for this setting."""
        return {"guidance": self.w, "guide": self.guide, "plausible": self.plausible, "schedule": self.schedule}

    def describe(self) -> str:
        """A short human label, e.g. ``"flat w=4, alpha 0.1, ramp"``."""
        if self.w == 0:
            return "w=0"
        return f"{self.guide} w={self.w:g}, alpha {self.plausible:g}, {self.schedule}"


def recommended_guidance(model) -> GuidanceSetting:
    """The guided setting recommended for ``model``, from the metadata of the checkpoint it was
    loaded from (:func:`pcnn.model.checkpoint.load` keeps it as ``model.checkpoint_metadata``);
    ``ValueError`` when the checkpoint carries none."""
    meta = getattr(model, "checkpoint_metadata", None) or {}
    rec = meta.get(METADATA_KEY)
    if rec is None:
        raise ValueError(f"this model carries no recommended guidance (its checkpoint's metadata has no "
                         f"{METADATA_KEY!r}); give guidance as a number, e.g. guidance=4")
    return GuidanceSetting.from_dict(rec)


def resolve_guidance(model, guidance, guide: str = DEFAULT_GUIDE, plausible=0.0, schedule="constant") -> tuple:
    """``(w, guide, alpha, Schedule)`` checked; ``guidance="recommended"`` takes all four from
    :func:`recommended_guidance` (the ``guide``, ``plausible`` and ``schedule`` given are then not used)."""
    if isinstance(guidance, str):
        if guidance.strip().lower() != RECOMMENDED:
            raise ValueError(f"guidance must be a number >= 0 or {RECOMMENDED!r}, got {guidance!r}")
        rec = recommended_guidance(model)
        guidance, guide, plausible, schedule = rec.w, rec.guide, rec.plausible, rec.schedule
    return check_guidance(guidance, guide), guide, check_plausible(plausible), Schedule.parse(schedule)


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


def guided_log_probs(log_p: torch.Tensor, target: torch.Tensor, log_pi: torch.Tensor, w: float,
                     plausible: float = 0.0) -> torch.Tensor:
    """Normalised log q over the 256 bins: log_p (B, C, 256) per-class log-probabilities,
    target (B,) class indices, log_pi (B, C) log class weights (normalised) -> (B, 256).

    ``log q = (1 + w) log p_target - w logsumexp_c(log_pi_c + log p_c)``, renormalised; at
    ``w = 0`` it is ``log p_target`` renormalised (the discretised logistic sums to 1 up to the
    tail bins that use the density at their centre, below 1e-5). ``plausible`` alpha > 0 (with
    w > 0): the bins with ``p_target < alpha * max p_target`` get log q = -inf before the
    renormalisation (the most probable bin always stays); alpha = 0 computes exactly the
    untruncated q.
    """
    own = log_p.gather(1, target.view(-1, 1, 1).expand(-1, 1, log_p.shape[2])).squeeze(1)
    if w == 0:
        return torch.log_softmax(own, dim=1)
    mix = torch.logsumexp(log_pi[..., None] + log_p, dim=1)
    logits = (1 + w) * own - w * mix
    if plausible > 0:
        keep = own >= own.max(dim=1, keepdim=True).values + math.log(plausible)
        logits = logits.masked_fill(~keep, float("-inf"))
    return torch.log_softmax(logits, dim=1)


def draw_bins(log_q: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: log_q (B, 256) normalised log-probabilities, u (B,) uniform in [0, 1)
    -> (B,) bin indices in 0..255 (the first bin whose CDF exceeds u; exact up to rounding)."""
    cdf = torch.cumsum(torch.exp(log_q), dim=1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1).to(cdf.dtype), right=True).squeeze(1)
    # u * total rounding up to the total would pick past the end: take the last bin with mass
    # (255 unless a plausibility constraint excluded the top bins, so never an excluded bin)
    last = 255 - torch.isfinite(log_q).flip(1).to(torch.uint8).argmax(1)
    return torch.minimum(idx, last)


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
    logistic scales * T before guidance, as in :func:`pcnn.model.likelihood.sample_from_params`.
    ``plausible`` alpha and ``schedule`` (a :class:`Schedule` or its spec): at image row i the
    weight is ``w * schedule.scale(i, S)`` and the constraint applies where that is > 0.
    """

    def __init__(self, targets: torch.Tensor, num_classes: int, nr_mix: int, u: torch.Tensor, w: float,
                 guide: str = DEFAULT_GUIDE, temperature: float = 1.0, plausible: float = 0.0,
                 schedule="constant"):
        self.w = check_guidance(w, guide)
        self.plausible = check_plausible(plausible)
        self.schedule = Schedule.parse(schedule)
        self.schedule.check_rows(u.shape[-2])
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
        w = self.w * self.schedule.scale(i, self.u.shape[-2])
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
                log_q = guided_log_probs(log_p, self.targets, self.log_weights().to(log_p.dtype), w,
                                         self.plausible)
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
