"""Per-pixel class evidence: maps that sum to log p(x | c)."""
import pytest
import torch

import pcnn
from pcnn.model.likelihood import nll
from conftest import rand_images, randomize_, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: no OpenMP contention


def test_sums_equal_log_likelihoods_float32(tiny):
    x = rand_images(5)
    ev = pcnn.evidence(tiny, x)
    assert ev.shape == (5, 4, 8, 8) and ev.dtype == torch.float32
    ll = pcnn.log_likelihoods(tiny, x)
    torch.testing.assert_close(ev.flatten(2).sum(-1), ll, rtol=1e-6, atol=1e-4)
    assert (ev <= 0).all()   # log-probabilities of discrete bins


def test_sums_equal_the_likelihood_exactly_in_float64():
    torch.manual_seed(0)
    model = randomize_(pcnn.PixelCNNpp(tiny_config())).double().eval()
    x = rand_images(3, dtype=torch.float64)
    ev = pcnn.evidence(model, x, batch_size=5)        # chunks that straddle classes
    assert ev.dtype == torch.float64
    for c in range(4):
        with torch.no_grad():
            ref = -nll(x, model(x, torch.full((3,), c)), 3)
        torch.testing.assert_close(ev[:, c].flatten(1).sum(-1), ref, rtol=0, atol=1e-10)
    # a float64 model is scored in float64 by log_likelihoods too, so the two agree to float64 round-off
    ll = pcnn.log_likelihoods(model, x)
    assert ll.dtype == torch.float64
    torch.testing.assert_close(ev.flatten(2).sum(-1), ll, rtol=0, atol=1e-9)


def test_pixels_depend_only_on_the_past(tiny):
    """Changing pixel (4, 5) leaves the evidence of every earlier pixel (raster order) untouched."""
    x = rand_images(2)
    y = x.clone()
    y[:, :, 4, 5] = -y[:, :, 4, 5]
    a, b = pcnn.evidence(tiny, x), pcnn.evidence(tiny, y)
    order = torch.arange(64).view(8, 8)
    before = order < 4 * 8 + 5
    assert torch.equal(a[..., before], b[..., before])
    assert not torch.equal(a[..., 4, 5], b[..., 4, 5])


def test_margin_is_the_winning_gap(tiny):
    x = rand_images(4, seed=3)
    ev = pcnn.evidence(tiny, x)
    ll = ev.flatten(2).sum(-1)
    m = pcnn.evidence_margin(ev)
    top2 = ll.topk(2, dim=1)
    assert torch.equal(m.first, top2.indices[:, 0]) and torch.equal(m.second, top2.indices[:, 1])
    torch.testing.assert_close(m.total, top2.values[:, 0] - top2.values[:, 1], rtol=1e-5, atol=1e-3)  # float32 sums ~ -300
    assert (m.total >= 0).all() and m.maps.shape == (4, 8, 8)
    # explicit classes: true class 2 against the best other class
    m2 = pcnn.evidence_margin(ev, first=2)
    assert (m2.first == 2).all() and (m2.second != 2).all()
    torch.testing.assert_close(m2.maps, ev[:, 2] - ev[torch.arange(4), m2.second])
    with pytest.raises(ValueError, match=r"classes must be in \[0, 4\)"):
        pcnn.evidence_margin(ev, first=4)
    with pytest.raises(ValueError, match="C >= 2"):
        pcnn.evidence_margin(ev[:, :1])


def test_plot_helper(tiny):
    import matplotlib
    matplotlib.use("Agg")
    x = rand_images(1, seed=2)
    ev = pcnn.evidence(tiny, x)
    img = torch.round((x[0] + 1) * 127.5).to(torch.uint8)
    fig = pcnn.plot_evidence_margin(img, ev[0], true_label=1)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "true: panda" and "nats" in titles[1]
    plt_fig = pcnn.plot_evidence_margin(img, ev[0], true_label=1, label="mistake")
    assert plt_fig.axes[0].get_title() == "mistake\ntrue: panda"
    with pytest.raises(ValueError, match="one image at a time"):
        pcnn.plot_evidence_margin(img, ev.expand(2, -1, -1, -1))
    import matplotlib.pyplot as plt
    plt.close(fig)
