"""Class guidance (pcnn.sampling.guidance): exact 256-bin sub-pixel tables, the draw, w = 0 as the model's
own distribution, the posterior rising with w on a tiny trained model, and bad values."""
import math

import pytest
import torch

import pcnn
from pcnn.sampling.cached import cached_sample
from pcnn.sampling.guidance import (GUIDES, TEMPER, GuidedDraw, bin_values, channel_probs, check_guidance, draw_bins,
                                    guided_log_probs)
from pcnn.model.likelihood import (LOG_WEIGHT_MIN, logistic_bin_log_prob, mixture_params, sample_from_params, subpixel_log_probs, to_float)
from pcnn.sampling.sample import complete, sample
from conftest import rand_images, randomize_, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _f64_model(seed=0, **kw):
    return randomize_(pcnn.PixelCNNpp(tiny_config(**kw)), seed=seed).double().eval()


def test_channel_tables_sum_to_one_and_equal_the_likelihoods_sub_pixel_probabilities():
    """Float64: each channel's 256 bin probabilities (R, then G | R, then B | R, G, the components
    re-weighted by the drawn values) sum to 1 and equal exp of the likelihood code's
    per-sub-pixel log-probabilities at every value (to 2e-5, the likelihood's centre-density
    approximation of bins below 1e-5; exactly elsewhere), and at the drawn values they chain to
    pixel_log_probs."""
    torch.manual_seed(0)
    n, k = 64, 5
    out = torch.randn(n, 10 * k, 1, 1, dtype=torch.float64) * 2
    x = (torch.randint(0, 256, (n, 3, 1, 1)).double() / 127.5 - 1)
    p = mixture_params(out, k)
    sub = subpixel_log_probs(x, p)[..., 0, 0]                                   # (N, 3, K)
    log_w = torch.log_softmax(p.logits[..., 0, 0], 1).clamp(min=LOG_WEIGHT_MIN)
    v = torch.round((x[:, :, 0, 0] + 1) * 127.5).long()
    r, g = x[:, 0, 0, 0, None], x[:, 1, 0, 0, None]
    means = [p.means[:, 0, :, 0, 0],
             p.means[:, 1, :, 0, 0] + p.coeffs[:, 0, :, 0, 0] * r,
             p.means[:, 2, :, 0, 0] + p.coeffs[:, 1, :, 0, 0] * r + p.coeffs[:, 2, :, 0, 0] * g]
    grid = bin_values(x)
    total = torch.zeros(n, dtype=torch.float64)
    for ch in range(3):
        ls = p.log_scales[:, ch, :, 0, 0]
        table = channel_probs(log_w, means[ch], ls)
        assert table.shape == (n, 256) and (table >= 0).all()
        assert torch.allclose(table.sum(1), torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-12)
        comp = logistic_bin_log_prob(grid, means[ch][..., None], ls[..., None])          # (N, K, 256)
        ref = (torch.logsumexp(log_w[..., None] + comp, 1) - torch.logsumexp(log_w, 1, keepdim=True)).exp()
        assert torch.allclose(table, ref, rtol=0, atol=2e-5)
        big = ref > 1e-3
        assert torch.allclose(table[big], ref[big], rtol=1e-3, atol=0)
        drawn = torch.logsumexp(log_w + sub[:, ch], 1) - torch.logsumexp(log_w, 1)
        assert torch.allclose(ref.gather(1, v[:, ch, None])[:, 0].log(), drawn, rtol=0, atol=1e-12)
        total += drawn
        log_w = log_w + sub[:, ch]
    assert torch.allclose(total, pcnn.model.likelihood.pixel_log_probs(x, p)[:, 0, 0], rtol=0, atol=1e-10)


def test_teacher_forced_draw_accumulates_log_p_x_given_every_class():
    """Feeding a whole image as kept rows through the guided hook sums, per class, exactly
    log p(x | c) as pcnn.log_likelihoods computes it (float64 model, both samplers)."""
    model = _f64_model()
    x = rand_images(3, dtype=torch.float64)
    ref = pcnn.log_likelihoods(model, x)
    assert ref.dtype == torch.float64   # a float64 model is scored in float64
    for method in ("cached", "naive"):
        hook = GuidedDraw(torch.tensor([0, 1, 2]), 4, 3, torch.rand(3, 3, 8, 8, dtype=torch.float64), 1.0)
        known = x.repeat(4, 1, 1, 1)
        labels = torch.arange(4).repeat_interleave(3)
        if method == "cached":
            with torch.no_grad():
                out = cached_sample(model, labels, torch.rand(12, 3, 8, 8), torch.rand(12, 3, 8, 8), known=known,
                                    keep_rows=8, draw=hook)
        else:
            from pcnn.sampling.sample import _naive
            with torch.no_grad():
                out = _naive(model, labels, torch.rand(12, 3, 8, 8), torch.rand(12, 3, 8, 8), None, known=known,
                             keep_rows=8, draw=hook)
        assert torch.equal(out, known)
        assert torch.allclose(hook.log_lik, ref, rtol=0, atol=1e-8), method


def test_guided_log_probs_formula_and_w0():
    g = torch.Generator().manual_seed(1)
    lp = torch.log_softmax(torch.randn(5, 4, 256, generator=g, dtype=torch.float64), dim=2)
    t = torch.tensor([0, 1, 2, 3, 1])
    log_pi = torch.log_softmax(torch.randn(5, 4, generator=g, dtype=torch.float64), 1)
    q0 = guided_log_probs(lp, t, log_pi, 0.0)
    assert torch.allclose(q0, lp[torch.arange(5), t], atol=1e-12)
    w = 1.5
    q = guided_log_probs(lp, t, log_pi, w)
    own = lp[torch.arange(5), t]
    post = own + log_pi[torch.arange(5), t, None] - torch.logsumexp(log_pi[..., None] + lp, 1)  # log p(c | x_<=i)
    ref = torch.log_softmax(own + w * post, 1)
    assert torch.allclose(q, ref, atol=1e-10)
    assert torch.allclose(q.exp().sum(1), torch.ones(5, dtype=torch.float64), atol=1e-12)


def test_draw_bins_is_the_inverse_cdf():
    log_q = torch.log(torch.tensor([[0.25, 0.5, 0.25] + [0.0] * 253]).double().clamp(min=1e-300))
    u = torch.tensor([0.0, 0.2499, 0.2501, 0.7499, 0.7501, 0.99999])
    got = draw_bins(log_q.expand(6, -1), u)
    assert got.tolist() == [0, 0, 1, 1, 2, 2]
    assert bin_values(torch.zeros(1))[[0, 255]].tolist() == [-1.0, 1.0]


def _first_pixel_cells(model, y, n, draw):
    """Counts of the (R, G) cells (top 2 bits each: 16 cells) of the first pixel over n draws,
    and their exact probabilities from the channel tables."""
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 8, 8, dtype=torch.float64), torch.tensor([y]))[:, :, 0, 0]
    px = draw(out, n)
    cells = (torch.round((px[:, 0] + 1) * 127.5).long() // 64) * 4 + torch.round((px[:, 1] + 1) * 127.5).long() // 64
    counts = torch.bincount(cells, minlength=16).double()
    p = mixture_params(out.view(1, -1, 1, 1), 3)
    log_w = torch.log_softmax(p.logits[0, :, 0, 0], 0).clamp(min=LOG_WEIGHT_MIN)[None]
    # exact from the likelihood code: p(R = r) and p(G = g | R = r) for all 256 x 256 values
    vals = bin_values(log_w)
    comp_r = logistic_bin_log_prob(vals[:, None], p.means[0, 0, :, 0, 0], p.log_scales[0, 0, :, 0, 0])   # (R, K)
    w_g = log_w + comp_r                                                  # (R, K)
    mean_g = p.means[0, 1, :, 0, 0] + p.coeffs[0, 0, :, 0, 0] * vals[:, None]                          # (R, K)
    comp_g = logistic_bin_log_prob(vals[None, :, None], mean_g[:, None], p.log_scales[0, 1, :, 0, 0])  # (R, G, K)
    joint = torch.logsumexp(w_g[:, None] + comp_g, 2).exp()              # (R, G)
    exact = joint.view(4, 64, 4, 64).sum((1, 3)).flatten()
    return counts, exact


@pytest.mark.parametrize("kind", ["guided_w0", "mixture"])
def test_w0_draws_from_the_models_own_distribution(kind):
    """Chi-square of 8,000 first-pixel draws over 16 (R, G) cells against the exact
    probabilities: the guided draw at w = 0 and today's mixture draw both pass."""
    model = _f64_model(seed=3)
    n = 8000
    g = torch.Generator().manual_seed(7)

    def guided(out, n):
        hook = GuidedDraw(torch.full((n,), 2), 4, 3, torch.rand(n, 3, 1, 1, generator=g, dtype=torch.float64), 0.0)
        # the hook wants every class's output: the same network run under each class
        with torch.no_grad():
            outs = torch.cat([model(torch.zeros(1, 3, 8, 8, dtype=torch.float64), torch.tensor([c]))[:, :, 0, 0]
                              for c in range(4)])
        return hook(outs.repeat_interleave(n, 0), 0, 0)[:n]

    def mixture(out, n):
        p = mixture_params(out.expand(n, -1).reshape(n, -1, 1, 1), 3)
        return sample_from_params(p, torch.rand(n, 3, 1, 1, generator=g), torch.rand(n, 3, 1, 1, generator=g)
                                  .double())[:, :, 0, 0]

    counts, exact = _first_pixel_cells(model, 2, n, guided if kind == "guided_w0" else mixture)
    keep = exact * n >= 5
    assert keep.sum() >= 4
    expected = exact[keep] / exact[keep].sum() * counts[keep].sum()
    chi2 = float(((counts[keep] - expected) ** 2 / expected).sum())
    dof = int(keep.sum()) - 1
    # the 0.999 quantile of chi-square is below dof + 4.5 sqrt(2 dof) + 6 for these dof
    assert chi2 < dof + 4.5 * math.sqrt(2 * dof) + 6, (chi2, dof, counts.tolist(), (exact * n).tolist())


def _tiny_trained_model():
    """A 4-class model trained for a few seconds on images whose class sets the colour."""
    torch.manual_seed(0)
    cfg = tiny_config(nr_filters=16, fusion=("blocks_film",), nr_logistic_mix=3)
    model = pcnn.PixelCNNpp(cfg)
    # close colours under much noise: the classes overlap, so the posterior of a sample is not 1
    colours = torch.tensor([[140, 120, 120], [120, 140, 120], [120, 120, 140], [132, 132, 116]]).float()
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(120):
        y = torch.randint(0, 4, (32,), generator=g)
        imgs = (colours[y][:, :, None, None] + 60 * torch.randn(32, 3, 8, 8, generator=g)).clamp(0, 255).round()
        x = imgs / 127.5 - 1
        loss = pcnn.model.likelihood.nll(x, model(x, y), 3, reduction="mean")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_larger_w_raises_the_models_posterior_of_the_target_class():
    model = _tiny_trained_model()
    labels = [0, 1, 2, 3] * 6
    y = torch.tensor(labels)
    means = {}
    for guide in GUIDES:
        for w in (0.0, 1.0, 4.0):
            imgs = sample(model, labels, torch.Generator().manual_seed(0), guidance=w, guide=guide, exact_bins=True)
            ll = pcnn.log_likelihoods(model, to_float(imgs))
            means[guide, w] = float(torch.log_softmax(ll, 1)[torch.arange(len(y)), y].mean())
        assert means[guide, 0.0] < means[guide, 1.0] < means[guide, 4.0], (guide, means)
    # w = 0 is the same draw whichever class weights are chosen
    assert means["posterior", 0.0] == means["flat", 0.0] == means["tempered", 0.0]


def test_guided_cached_and_naive_samplers_agree(tiny):
    for w, guide in ((0.0, "posterior"), (2.0, "posterior"), (1.0, "flat"), (3.0, "tempered")):
        a = sample(tiny, [0, 3, 1], torch.Generator().manual_seed(4), guidance=w, guide=guide, exact_bins=True)
        b = sample(tiny, [0, 3, 1], torch.Generator().manual_seed(4), guidance=w, guide=guide, exact_bins=True,
                   method="naive")
        assert torch.equal(a, b), (w, guide)


def test_guidance_zero_without_exact_bins_is_todays_sampler(tiny):
    a = sample(tiny, [2, 1], torch.Generator().manual_seed(5))
    b = sample(tiny, [2, 1], torch.Generator().manual_seed(5), guidance=0)
    assert torch.equal(a, b)
    c = sample(tiny, [2, 1], torch.Generator().manual_seed(5), guidance=0, exact_bins=True)
    assert c.shape == a.shape and c.dtype == torch.uint8


def test_guided_completion_keeps_rows_and_previews(tiny):
    imgs = pcnn.model.likelihood.to_uint8(rand_images(2, seed=3))
    seen = []
    out = complete(tiny, imgs, [1, 2], keep_rows=3, generator=torch.Generator().manual_seed(0), guidance=2.0,
                   preview=lambda rows, x: seen.append((rows, tuple(x.shape))))
    assert torch.equal(out[:, :, :3], imgs[:, :, :3])
    assert seen[-1] == (8, (2, 3, 8, 8)) and len(seen) == 8
    # completing the same rows as two classes under guidance gives different images
    other = complete(tiny, imgs, [3, 3], keep_rows=3, generator=torch.Generator().manual_seed(0), guidance=2.0)
    assert not torch.equal(out, other)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), "2", True, None, 1e6])
def test_bad_guidance_is_refused(tiny, bad):
    with pytest.raises(ValueError, match="guidance"):
        sample(tiny, [0], guidance=bad)


def test_bad_guide_and_unconditional_model_are_refused(tiny):
    with pytest.raises(ValueError, match="unknown guide"):
        sample(tiny, [0], guidance=1.0, guide="posterier")
    unc = pcnn.PixelCNNpp(tiny_config(fusion=()))
    with pytest.raises(ValueError, match="class-conditional"):
        sample(unc, [0], guidance=1.0)
    with pytest.raises(ValueError, match="return_outputs"):
        sample(tiny, [0], guidance=1.0, return_outputs=True)
    assert check_guidance(2) == 2.0 and isinstance(check_guidance(2), float)
    assert 0 < TEMPER < 1


def test_guided_sampling_keeps_no_autograd_and_restores_train_mode(tiny):
    tiny.train()
    x = sample(tiny, [1], torch.Generator().manual_seed(0), guidance=1.0)
    assert tiny.training and not x.requires_grad


def test_guidance_rows_share_noise_and_the_grid_labels_rows(tiny):
    from pcnn.viz.samples import guidance_grid
    from pcnn.sampling.sample import guidance_rows
    rows = guidance_rows(tiny, 2, weights=(0.0, 2.0), per_row=3, seed=1)
    assert rows.shape == (2, 3, 3, 8, 8) and rows.dtype == torch.uint8
    assert torch.equal(rows[0], sample(tiny, [2] * 3, torch.Generator().manual_seed(1), exact_bins=True))
    assert torch.equal(rows[1], sample(tiny, [2] * 3, torch.Generator().manual_seed(1), guidance=2.0))
    grid = guidance_grid(tiny, 2, weights=(0.0, 2.0), per_row=3, seed=1, scale=2)
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3 and grid.shape[1] > 2 * 16
    with pytest.raises(ValueError):
        guidance_rows(tiny, 7)


# ----------------------------------------------------------------------------- issue #34


def _old_guided_log_probs(log_p, target, log_pi, w):
    """The guided distribution as it was before the plausibility constraint (reference)."""
    own = log_p.gather(1, target.view(-1, 1, 1).expand(-1, 1, log_p.shape[2])).squeeze(1)
    if w == 0:
        return torch.log_softmax(own, dim=1)
    mix = torch.logsumexp(log_pi[..., None] + log_p, dim=1)
    return torch.log_softmax((1 + w) * own - w * mix, dim=1)


def _old_draw_bins(log_q, u):
    cdf = torch.cumsum(torch.exp(log_q), dim=1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1).to(cdf.dtype), right=True).squeeze(1)
    return idx.clamp(max=255)


def test_alpha_zero_constant_schedule_is_bit_for_bit_the_draw_before_issue_34(tiny, monkeypatch):
    """plausible = 0 with the constant schedule gives exactly the images of the guided draw as it
    was (its two functions put back in place), in both samplers, and plausible > 0 changes them."""
    import pcnn.sampling.guidance as G
    kw = dict(guidance=2.0, exact_bins=True)
    new = {m: sample(tiny, [0, 3, 1], torch.Generator().manual_seed(4), method=m, plausible=0.0,
                     schedule="constant", **kw) for m in ("cached", "naive")}
    cut = sample(tiny, [0, 3, 1], torch.Generator().manual_seed(4), plausible=0.3, **kw)
    monkeypatch.setattr(G, "guided_log_probs", lambda lp, t, pi, w, plausible=0.0: _old_guided_log_probs(lp, t, pi, w))
    monkeypatch.setattr(G, "draw_bins", _old_draw_bins)
    for m in ("cached", "naive"):
        old = sample(tiny, [0, 3, 1], torch.Generator().manual_seed(4), method=m, **kw)
        assert torch.equal(new[m], old), m
    assert not torch.equal(cut, new["cached"])
    # and the functions themselves, on random tables
    g = torch.Generator().manual_seed(2)
    lp = torch.log_softmax(torch.randn(6, 4, 256, generator=g, dtype=torch.float64) * 3, dim=2)
    t, pi = torch.tensor([0, 1, 2, 3, 0, 1]), torch.full((6, 4), -math.log(4), dtype=torch.float64)
    for w in (0.0, 0.5, 4.0):
        assert torch.equal(guided_log_probs(lp, t, pi, w, 0.0), _old_guided_log_probs(lp, t, pi, w))
    q = guided_log_probs(lp, t, pi, 4.0)
    u = torch.rand(6, generator=g, dtype=torch.float64)
    assert torch.equal(draw_bins(q, u), _old_draw_bins(q, u))


def test_plausibility_constraint_excludes_bins_below_alpha_times_the_max_then_renormalises():
    g = torch.Generator().manual_seed(3)
    lp = torch.log_softmax(torch.randn(5, 4, 256, generator=g, dtype=torch.float64) * 2, dim=2)
    t = torch.tensor([0, 1, 2, 3, 2])
    pi = torch.log_softmax(torch.randn(5, 4, generator=g, dtype=torch.float64), 1)
    own = lp[torch.arange(5), t].exp()
    for alpha in (0.03, 0.1, 0.3, 1.0):
        q = guided_log_probs(lp, t, pi, 2.0, alpha).exp()
        keep = own >= alpha * own.max(1, keepdim=True).values
        assert (q[~keep] == 0).all() and (q[keep] > 0).all()
        ref = _old_guided_log_probs(lp, t, pi, 2.0).exp() * keep          # the tilt, cut, renormalised
        assert torch.allclose(q, ref / ref.sum(1, keepdim=True), rtol=1e-10, atol=1e-15)
        # the inverse CDF never lands on an excluded bin, even at u -> 1
        u = torch.cat([torch.rand(200, generator=g, dtype=torch.float64), torch.tensor([0.0, 1 - 1e-17])])
        qq = guided_log_probs(lp[:1].expand(202, -1, -1), t[:1].expand(202), pi[:1].expand(202, -1), 2.0, alpha)
        assert keep[0, draw_bins(qq, u)].all()
    assert (guided_log_probs(lp, t, pi, 2.0, 1.0).exp().max(1).values == 1).all()   # alpha 1: the mode only


def test_schedules_scale_w_over_the_rows():
    from pcnn.sampling.guidance import Schedule
    assert [Schedule.parse("constant").scale(i, 5) for i in range(5)] == [1.0] * 5
    assert [Schedule.parse("ramp").scale(i, 5) for i in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    iv = Schedule.parse("interval:1:3")
    assert (iv.kind, iv.start, iv.stop, str(iv)) == ("interval", 1, 3, "interval:1:3")
    assert [iv.scale(i, 5) for i in range(5)] == [0.0, 1.0, 1.0, 0.0, 0.0]
    assert Schedule.parse(iv) is iv and str(Schedule.parse(" ramp ")) == "ramp"
    for bad in ("linear", "interval:3:3", "interval:4:2", "interval:1", "interval:a:b", "ramp:1:2", 3, None):
        with pytest.raises(ValueError, match="schedule|interval"):
            Schedule.parse(bad)
    with pytest.raises(ValueError, match="STOP must be at most 8"):
        Schedule.parse("interval:0:9").check_rows(8)


def test_a_schedule_guides_only_where_its_weight_is_positive(tiny):
    """interval:2:5 equals the unguided exact draw on rows 0-1 (w = 0 there) and then departs;
    ramp equals it on row 0 only; both samplers agree under every schedule and alpha."""
    labels = [0, 3, 1, 2]
    base = sample(tiny, labels, torch.Generator().manual_seed(6), exact_bins=True)
    for sch, same_rows in (("interval:2:5", 2), ("ramp", 1)):
        for alpha in (0.0, 0.1):
            a = sample(tiny, labels, torch.Generator().manual_seed(6), guidance=6.0, plausible=alpha, schedule=sch)
            b = sample(tiny, labels, torch.Generator().manual_seed(6), guidance=6.0, plausible=alpha, schedule=sch,
                       method="naive")
            assert torch.equal(a, b), (sch, alpha)
            assert torch.equal(a[:, :, :same_rows], base[:, :, :same_rows]), (sch, alpha)
            assert not torch.equal(a[:, :, same_rows:], base[:, :, same_rows:]), (sch, alpha)
    # interval:0:8 covers every row of the 8-row image: the constant schedule
    assert torch.equal(sample(tiny, labels, torch.Generator().manual_seed(6), guidance=2.0, schedule="interval:0:8"),
                       sample(tiny, labels, torch.Generator().manual_seed(6), guidance=2.0))


def test_plausibility_removes_the_tails_on_a_trained_model():
    """On the tiny trained model, flat w = 8: the constraint keeps every drawn sub-pixel within
    the bins the target class finds plausible, so fewer far-off values than without it."""
    model = _tiny_trained_model()
    labels = [0, 1, 2, 3] * 4
    x0 = sample(model, labels, torch.Generator().manual_seed(1), guidance=8.0).float()
    x1 = sample(model, labels, torch.Generator().manual_seed(1), guidance=8.0, plausible=0.3).float()
    spread = lambda x: float((x - x.mean((2, 3), keepdim=True)).abs().mean())   # noqa: E731
    assert spread(x1) < spread(x0)


def test_guided_completion_takes_alpha_and_schedule(tiny):
    imgs = pcnn.model.likelihood.to_uint8(rand_images(2, seed=3))
    out = complete(tiny, imgs, [1, 2], keep_rows=3, generator=torch.Generator().manual_seed(0), guidance=3.0,
                   plausible=0.2, schedule="ramp")
    assert torch.equal(out[:, :, :3], imgs[:, :, :3])
    plain = complete(tiny, imgs, [1, 2], keep_rows=3, generator=torch.Generator().manual_seed(0), guidance=3.0)
    assert not torch.equal(out, plain)
    every = pcnn.complete_as_every_class(tiny, imgs[:1], 3, seed=0, guidance=3.0, plausible=0.2, schedule="ramp")
    one = complete(tiny, imgs[:1], [1], keep_rows=3, generator=torch.Generator().manual_seed(0), guidance=3.0,
                   plausible=0.2, schedule="ramp")
    assert torch.equal(every[0, 1], one[0])


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.1", True, None])
def test_bad_plausible_is_refused(tiny, bad):
    with pytest.raises(ValueError, match="plausible"):
        sample(tiny, [0], guidance=1.0, plausible=bad)


def test_bad_schedule_is_refused(tiny):
    with pytest.raises(ValueError, match="schedule"):
        sample(tiny, [0], guidance=1.0, schedule="cosine")
    with pytest.raises(ValueError, match="STOP must be at most 8"):
        sample(tiny, [0], guidance=1.0, schedule="interval:4:12")


def test_recommended_guidance_comes_from_the_checkpoint_metadata(tiny, tmp_path):
    from pcnn.sampling.guidance import METADATA_KEY, GuidanceSetting, recommended_guidance, resolve_guidance
    rec = GuidanceSetting(3.0, "flat", 0.2, "interval:1:6", source="results/x.json")
    assert GuidanceSetting.from_dict(rec.to_dict()) == rec and rec.describe() == "flat w=3, alpha 0.2, interval:1:6"
    path = pcnn.save(tmp_path / "m.safetensors", tiny, {"epoch": 1, METADATA_KEY: rec.to_dict()})
    model = pcnn.load(path)
    assert recommended_guidance(model) == rec
    assert resolve_guidance(model, "recommended")[:3] == (3.0, "flat", 0.2)
    a = sample(model, [0, 2], torch.Generator().manual_seed(1), guidance="recommended")
    b = sample(model, [0, 2], torch.Generator().manual_seed(1), **rec.kwargs())
    assert torch.equal(a, b)
    assert torch.equal(sample(model, [0, 2], torch.Generator().manual_seed(1)),           # the default stays w = 0
                       sample(model, [0, 2], torch.Generator().manual_seed(1), guidance=0.0))
    bare = pcnn.load(pcnn.save(tmp_path / "b.safetensors", tiny))
    with pytest.raises(ValueError, match="no recommended guidance"):
        sample(bare, [0], guidance="recommended")
    with pytest.raises(ValueError, match="recommended"):
        sample(model, [0], guidance="best")
    for bad in ({"w": -1.0}, {"w": 1.0, "plausible": 2.0}, {"w": 1.0, "schedule": "x"}, {"w": 1.0, "colour": 1}):
        with pytest.raises(ValueError):
            GuidanceSetting.from_dict(bad)


def test_setting_rows_share_noise_and_the_grid_labels_every_row(tiny):
    from pcnn.sampling.guidance import GuidanceSetting
    from pcnn.viz.samples import setting_grid
    from pcnn.sampling.sample import setting_rows
    settings = [GuidanceSetting(0.0), GuidanceSetting(3.0, "flat", 0.0), GuidanceSetting(3.0, "flat", 0.2, "ramp")]
    rows = setting_rows(tiny, 1, settings, per_row=2, seed=5)
    assert rows.shape == (3, 2, 3, 8, 8) and rows.dtype == torch.uint8
    for r, st in zip(rows, settings):
        assert torch.equal(r, sample(tiny, [1, 1], torch.Generator().manual_seed(5), exact_bins=True, **st.kwargs()))
    assert torch.equal(setting_rows(tiny, 1, [{"guidance": 3.0}], per_row=2, seed=5)[0], rows[1])
    grid = setting_grid(tiny, settings, ["w=0", "flat w=3", "new"], classes=[0, 2], per_row=2, seed=5, scale=2)
    assert grid.dtype == torch.uint8 and grid.shape[1] > 6 * 16    # 2 classes x 3 settings, 16-pixel tiles
    with pytest.raises(ValueError, match="labels"):
        setting_grid(tiny, settings, ["one"])
