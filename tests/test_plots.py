"""pcnn.plots: the notebooks' figures, checked by what they draw and compute."""
import json

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pcnn import plots  # noqa: E402
from pcnn.data import AugmentConfig  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _images(n, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_pixel_histograms_labels_and_counts():
    imgs, labels = _images(12), torch.tensor([0, 1, 2, 3] * 3)
    fig = plots.pixel_histograms(imgs, labels, ["a", "b", "c", "d"], per_class=2)
    axes = fig.get_axes()
    assert len(axes) == 8
    hist_axes = [ax for ax in axes if ax.get_xlabel() == "pixel value (0-255)"]
    assert len(hist_axes) == 4
    assert [ax.get_title() for ax in hist_axes] == [f"{n} (2 images)" for n in "abcd"]
    assert hist_axes[0].get_ylabel() == "density"
    assert len({ax.get_ylim() for ax in hist_axes}) == 1          # one shared density scale
    assert len(hist_axes[0].patches) == 3 * 64                   # R, G, B histograms of 64 bins
    means = [ax for ax in axes if ax.get_title().startswith("mean ")]
    want = imgs[labels == 1][:2].float().mean(0).round().byte().permute(1, 2, 0).numpy()
    assert (means[1].images[0].get_array() == want).all()


def test_augmentation_rows_match_augment():
    from pcnn.data import augment
    base = _images(3)
    variants = {"original": AugmentConfig(hflip=False), "rotate": AugmentConfig(hflip=False, rotate_deg=15)}
    fig, rows = plots.augmentation_rows(base, variants, seed=4)
    assert torch.equal(rows[0], base)
    assert torch.equal(rows[1], augment(base, variants["rotate"], torch.Generator().manual_seed(4)))
    assert [fig.axes[r * 3].get_ylabel() for r in range(2)] == ["original", "rotate"]


def _rows(n, start_bpd=5.0):
    return [{"epoch": e, "train_bpd": start_bpd - 0.1 * e, "val_bpd": start_bpd - 0.05 * e, "val_acc": 0.25 + 0.1 * e}
            for e in range(1, n + 1)]


def test_chain_offsets_counts_complete_epochs(tmp_path):
    d = tmp_path / "stage1"
    d.mkdir()
    rows = _rows(3) + [{"epoch": 4, "train_bpd": 4.0, "partial": True}]
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert plots.chain_offsets({"s1": d, "s2": _rows(2), "s3": _rows(1)}) == {"s1": 0, "s2": 3, "s3": 5}


def test_training_curves_use_cumulative_epochs():
    runs = {"s1": _rows(3), "s2": _rows(2, 4.0)}
    fig = plots.plot_training_curves(runs, plots.chain_offsets(runs))
    ax_bpd, ax_acc = fig.axes[:2]
    xs = sorted({x for line in ax_bpd.get_lines() for x in line.get_xdata() if line.get_linestyle() != ":"})
    assert xs == [1, 2, 3, 4, 5]                                  # stage 2 continues at epoch 4
    assert ax_bpd.get_xlabel().startswith("epoch (cumulative")
    assert plots.plot_training_curves(runs).axes[0].get_xlabel() == "epoch"   # no offsets: plain epochs
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts == ["s1", "s2", "train", "validation"]   # one entry per run, not per line
    assert ax_bpd.get_legend() is None and ax_acc.get_legend() is None   # nothing over the curves
    assert any(line.get_linestyle() == ":" and line.get_xdata()[0] == 3.5 for line in ax_bpd.get_lines())


def test_zoomed_limits():
    assert plots.zoomed_limits([3.9, 4.0, 4.1]) == pytest.approx((3.85, 4.15))
    lo, hi = plots.zoomed_limits([2.0, 2.0])
    assert lo < 2.0 < hi


def test_plot_results_zooms_bpd_and_marks_best():
    results = [{"name": "a", "final": {"accuracy": 0.5, "val_bpd": 4.02, "fid_192": None}},
               {"name": "b", "final": {"accuracy": 0.7, "val_bpd": 4.00}}]
    fig = plots.plot_results(results)
    ax_acc, _, ax_bpd, ax_fid = fig.axes[:4]
    assert ax_acc.get_xlim()[0] == 0                               # accuracy starts at 0
    assert ax_bpd.get_xlim()[0] > 3.9                              # bits/dim zoomed onto the values
    assert [t.get_text() for t in ax_acc.get_yticklabels()] == ["a", "b"]
    bars = ax_bpd.patches
    assert [round(b.get_x() + b.get_width(), 3) for b in bars] == [4.02, 4.0]
    assert bars[1].get_linewidth() == 1.5 and tuple(bars[1].get_edgecolor()[:3]) == (0, 0, 0)   # b is best
    assert any(t.get_text() == "not measured" for t in ax_fid.texts)
    assert [t.get_text() for t in ax_bpd.texts] == [" 4.020", " 4.000"]
    results[0]["final"]["accuracy"] = None                          # one run without a value: said so
    ax_acc = plots.plot_results(results).axes[0]
    assert [t.get_text() for t in ax_acc.texts] == [" 0.700", " not measured"]


def test_likelihood_margins_and_mistakes():
    ll = torch.tensor([[-10.0, -12.0, -30.0], [-50.0, -20.0, -21.0], [-5.5, -9.0, -4.0], [-1.0, -100.0, -3.0]])
    labels = torch.tensor([0, 2, 0, 1])
    m = plots.likelihood_margins(ll, num_dims=3)
    assert m["pred"].tolist() == [0, 1, 2, 0] and m["second"].tolist() == [1, 2, 0, 2]
    assert m["nats"].tolist() == pytest.approx([2.0, 1.0, 1.5, 2.0])
    assert m["bpd"][0].item() == pytest.approx(2.0 / (3 * 0.6931471805599453))
    idx, margin = plots.confident_mistakes(ll, labels, n=5)
    assert idx.tolist() == [3, 2, 1] and margin.tolist() == pytest.approx([99.0, 1.5, 1.0])
    assert plots.confident_mistakes(ll, labels, n=1)[0].tolist() == [3]
    titles = plots.mistake_titles(ll, labels, [3], num_dims=3, class_names=["x", "y", "z"])
    assert titles == ["true y -> x\nby 99.0 nats = 47.6089 bpd"]
