"""The discretised logistic mixture: normalisation, agreement with an independent
float64 reference written from the formula, finiteness at extremes, layout."""
import math

import numpy as np
import pytest
import torch

from pcnn.model.likelihood import (MIDPOINT_THRESHOLD, bits_per_dim, mixture_params, nll, pixel_log_probs, quantize,
                                   sample_from_params, subpixel_log_probs)

K = 3


def random_output(b, h, w, seed, log_scale_range=(-3.0, 0.0), dtype=torch.float64, K=K):
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(b, 10 * K, h, w, generator=g, dtype=dtype) * 2
    rest = out[:, K:].view(b, 3, 3 * K, h, w)
    lo, hi = log_scale_range
    rest[:, :, K:2 * K] = lo + (hi - lo) * torch.rand(b, 3, K, h, w, generator=g, dtype=dtype)
    rest[:, :, :K] = torch.rand(b, 3, K, h, w, generator=g, dtype=dtype) * 2 - 1
    return out


# ---- independent reference: plain probabilities, no log-space tricks --------------------------
def sigmoid(t):
    with np.errstate(over='ignore'):
        return 1.0 / (1.0 + np.exp(-t))


def reference_bin_probs(x, out):
    """Per component, channel: exact bin probability (B,3,K,H,W) and pixel log-prob (B,H,W).

    Written straight from the formula in the original layout: logits [0,K), then per
    channel c the block [K + 3Kc, K + 3K(c+1)) = means | log-scales | raw coeffs.
    """
    K = out.shape[1] // 10
    out, x = out.numpy().astype(np.float64), x.numpy().astype(np.float64)
    logits = out[:, :K]
    blk = lambda c, j: out[:, K + 3 * K * c + K * j: K + 3 * K * c + K * (j + 1)]  # noqa: E731
    r, g, b = (x[:, c:c + 1] for c in range(3))
    mean = [blk(0, 0), blk(1, 0) + np.tanh(blk(0, 2)) * r,
            blk(2, 0) + np.tanh(blk(1, 2)) * r + np.tanh(blk(2, 2)) * g]
    probs = []
    for c in range(3):
        s = np.exp(np.maximum(blk(c, 1), -7.0))
        xc = x[:, c:c + 1]
        up = sigmoid((xc + 1 / 255 - mean[c]) / s)
        lo = sigmoid((xc - 1 / 255 - mean[c]) / s)
        p = np.where(xc < -0.999, up, np.where(xc > 0.999, 1 - lo, up - lo))
        probs.append(p)
    probs = np.stack(probs, axis=1)  # (B,3,K,H,W)
    w = np.exp(logits - logits.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    with np.errstate(divide='ignore'):
        return probs, np.log((w * probs.prod(axis=1)).sum(axis=1))


def grid_images(b, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g).double() / 127.5 - 1


def test_agrees_with_reference_on_random_parameters():
    out = random_output(4, 8, 8, seed=0)
    x = grid_images(4, 8, 8, seed=1)
    x[:, :, 0, :2] = -1.0   # make sure both edge bins are exercised
    x[:, :, 1, :2] = 1.0
    probs, ref_pixel = reference_bin_probs(x, out)
    p = mixture_params(out, K)
    ours = subpixel_log_probs(x, p).numpy()
    exact = probs > MIDPOINT_THRESHOLD
    assert exact.mean() > 0.5
    np.testing.assert_allclose(ours[exact], np.log(probs[exact]), rtol=1e-6, atol=0)
    ok = exact.all(axis=(1, 2))
    assert ok.sum() > 10
    np.testing.assert_allclose(pixel_log_probs(x, p).numpy()[ok], ref_pixel[ok], rtol=1e-6)


def test_midpoint_approximation_is_close_where_used():
    out = random_output(4, 8, 8, seed=2, log_scale_range=(-5, -3))
    x = grid_images(4, 8, 8, seed=3)
    probs, _ = reference_bin_probs(x, out)
    ours = subpixel_log_probs(x, mixture_params(out, K)).numpy()
    approx = (probs < MIDPOINT_THRESHOLD) & (probs > 1e-300)
    assert approx.sum() > 100
    # Measured (seed 2): max mass error 1.3e-7, mean log error 0.02 nats. The relative error can
    # reach a few x in the far tail when the scale is below the bin width, but the mass it
    # moves is bounded by the threshold itself.
    assert np.abs(np.exp(ours[approx]) - probs[approx]).max() < MIDPOINT_THRESHOLD
    assert np.abs(ours[approx] - np.log(probs[approx])).mean() < 0.1


def _joint_sum(out_pixel, chunk=32):
    """Sum of P(r, g, b) over all 256^3 values for one pixel's parameters (10K,).

    The parameters stay (1, 10K, 1, 1) and broadcast against the (n, 3, 256, 256)
    grid of values (R in the batch, G down the rows, B across the columns).
    """
    v = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    p = mixture_params(out_pixel[None, :, None, None], out_pixel.shape[0] // 10)
    total = 0.0
    for r0 in range(0, 256, chunk):
        n = min(chunk, 256 - r0)
        x = torch.empty(n, 3, 256, 256, dtype=torch.float64)
        x[:, 0] = v[r0:r0 + n, None, None]
        x[:, 1] = v[None, :, None]
        x[:, 2] = v[None, None, :]
        total += pixel_log_probs(x, p).exp().sum().item()
    # Smallest exact bin probability of any channel, component and conditioning value.
    x = torch.stack(torch.meshgrid(v, v, v[:1], indexing="ij"), 0)  # (3, 256, 256, 1): B irrelevant
    xb = torch.stack([x[0, :, :, 0], x[1, :, :, 0], x[1, :, :, 0]], 0)[None]  # G and B swept alike
    probs, _ = reference_bin_probs(xb, out_pixel[None, :, None, None].expand(1, -1, 256, 256).contiguous())
    return total, probs.min()


def test_normalised_with_channel_coupling():
    # Two components keep the 256^3 sweep affordable; the mixture sum is still exercised.
    k = 2
    out = random_output(1, 1, 1, seed=4, log_scale_range=(math.log(0.8), math.log(1.5)), K=k)[0, :, 0, 0]
    out[k:].view(3, 3 * k)[:, 2 * k:] = torch.tensor([1.5, -1.0, 0.7], dtype=torch.float64)[:, None]
    total, min_delta = _joint_sum(out)
    assert min_delta > MIDPOINT_THRESHOLD  # no bin uses the approximation here...
    assert abs(total - 1.0) < 1e-6         # ...so the joint sums to one exactly


def test_normalisation_error_of_midpoint_is_bounded():
    out = random_output(1, 1, 1, seed=5, log_scale_range=(-4.5, -3.5), K=2)[0, :, 0, 0]
    total, min_delta = _joint_sum(out)
    assert min_delta < MIDPOINT_THRESHOLD
    # Measured: |sum - 1| ~ 1e-6 here; the approximation only touches bins of mass < 1e-5.
    assert abs(total - 1.0) < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_values_and_gradients_at_extremes(dtype):
    b, h, w = 2, 4, 4
    big = 3e38 if dtype == torch.float32 else 1e300
    vals = torch.tensor([big, -big, 1e4, -1e4, 30.0, -30.0, 0.0, 1e-30], dtype=dtype)
    g = torch.Generator().manual_seed(0)
    out = vals[torch.randint(0, len(vals), (b, 10 * K, h, w), generator=g)].requires_grad_(True)
    x = grid_images(b, h, w, seed=0).to(dtype)
    x[:, :, 0] = -1.0
    x[:, :, 1] = 1.0
    loss = nll(x, out, K, reduction="sum")
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(out.grad).all()


def test_extreme_parameters_agree_where_bins_are_exact():
    g = torch.Generator().manual_seed(7)
    out = random_output(3, 6, 6, seed=7)
    rest = out[:, K:].view(3, 3, 3 * K, 6, 6)
    choice = torch.randint(0, 4, rest[:, :, K:2 * K].shape, generator=g)
    rest[:, :, K:2 * K] = torch.tensor([-50.0, -7.5, 3.0, 60.0], dtype=torch.float64)[choice]  # tiny/huge scales
    rest[:, :, 2 * K:] *= 40                                  # saturated coefficients
    out[:, :K] *= 1e3                                         # saturated logits
    x = grid_images(3, 6, 6, seed=8)
    probs, _ = reference_bin_probs(x, out)
    ours = subpixel_log_probs(x, mixture_params(out, K)).numpy()
    assert np.isfinite(ours).all()
    exact = probs > MIDPOINT_THRESHOLD
    assert exact.sum() > 50
    np.testing.assert_allclose(ours[exact], np.log(probs[exact]), rtol=1e-6)


def test_layout_matches_original_channel_order():
    out = torch.arange(10 * K, dtype=torch.float64).view(1, 10 * K, 1, 1)
    p = mixture_params(out, K)
    assert p.logits.flatten().tolist() == [0, 1, 2]
    assert p.means[0, :, :, 0, 0].tolist() == [[3, 4, 5], [12, 13, 14], [21, 22, 23]]
    assert p.log_scales[0, 1, :, 0, 0].tolist() == [15, 16, 17]
    assert torch.allclose(p.coeffs[0, 2, :, 0, 0], torch.tanh(torch.tensor([24.0, 25, 26], dtype=torch.float64)))


def test_reductions_and_bits_per_dim():
    out = random_output(3, 4, 4, seed=9)
    x = grid_images(3, 4, 4, seed=9)
    per = nll(x, out, K)
    assert per.shape == (3,)
    assert torch.allclose(nll(x, out, K, "sum"), per.sum())
    assert torch.allclose(nll(x, out, K, "mean"), per.mean())
    assert torch.allclose(bits_per_dim(per, 48), per / (48 * math.log(2)))
    with pytest.raises(ValueError, match="reduction"):
        nll(x, out, K, "avg")
    with pytest.raises(ValueError, match="channels"):
        nll(x, out[:, :-1], K)


def test_uniform_model_scores_eight_bits_per_dim():
    # A single component with a huge scale is ~uniform over the interior bins.
    out = torch.zeros(1, 10, 2, 2, dtype=torch.float64)
    out[:, 1 + 3:1 + 3 + 3] = 0.0
    x = grid_images(1, 2, 2, seed=0).clamp(-0.99, 0.99)
    bpd = bits_per_dim(nll(x, out, 1), 12).item()
    assert 7.0 < bpd < 10.0


def test_sampling_is_on_grid_and_follows_components():
    g = torch.Generator().manual_seed(0)
    out = random_output(64, 2, 2, seed=10)
    p = mixture_params(out, K)
    xs = sample_from_params(p, torch.rand(64, K, 2, 2, generator=g, dtype=torch.float64),
                            torch.rand(64, 3, 2, 2, generator=g, dtype=torch.float64))
    assert torch.equal(xs, quantize(xs)) and xs.abs().max() <= 1
    # With tiny scales and one dominant component the draw is that component's mean, coupled.
    out = torch.zeros(5, 10 * K, 1, 1, dtype=torch.float64)
    out[:, 0] = 100.0
    rest = out[:, K:].view(5, 3, 3 * K, 1, 1)
    rest[:, :, K:2 * K] = -7.0
    rest[:, 0, 0] = 0.2
    rest[:, 1, 0] = -0.1
    rest[:, 2, 0] = 0.0
    rest[:, 0, 2 * K] = 20.0   # tanh -> 1: G += R
    xs = sample_from_params(mixture_params(out, K), torch.full((5, K, 1, 1), 0.5, dtype=torch.float64),
                            torch.full((5, 3, 1, 1), 0.5, dtype=torch.float64))
    r = quantize(torch.tensor(0.2, dtype=torch.float64))
    assert torch.allclose(xs[:, 0], r.expand(5, 1, 1))
    assert torch.allclose(xs[:, 1], quantize(-0.1 + r).expand(5, 1, 1))


def test_class_nll_is_bayes_posterior_under_uniform_prior():
    from pcnn.model.likelihood import class_nll
    g = torch.Generator().manual_seed(0)
    ll = torch.randn(6, 4, generator=g, dtype=torch.float64) * 30 - 8000   # nats, realistic size
    y = torch.tensor([0, 1, 2, 3, 2, 1])
    got = class_nll(ll, y)
    for i in range(6):
        # p(y|x) = p(x|y) p(y) / sum_c p(x|c) p(c), p(c) = 1/4, in exact-ish arithmetic
        shifted = [math.exp(float(ll[i, c] - ll[i].max())) for c in range(4)]
        ref = -math.log(shifted[int(y[i])] / sum(shifted))
        assert got[i].item() == pytest.approx(ref, rel=1e-12, abs=1e-12)
    assert torch.all(got >= 0)
    # a constant shift of all classes (e.g. a global likelihood change) changes nothing
    assert torch.allclose(class_nll(ll + 123.0, y), got, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="log-likelihoods"):
        class_nll(ll[:, 0], y)
    with pytest.raises(ValueError, match="labels"):
        class_nll(ll, y[:3])
