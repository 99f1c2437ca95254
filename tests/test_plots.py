"""pcnn.viz.images: the notebooks' figures, checked by what they draw and compute."""
import json

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pcnn.data.augment import changed_count  # noqa: E402
from pcnn.eval.classification import confidence_summary, confident_mistakes, likelihood_margins, margin_by_row, mistake_titles  # noqa: E402
from pcnn.viz.generation import plot_beside_floor  # noqa: E402
from pcnn.viz.images import augmentation_rows, pixel_histograms  # noqa: E402
from pcnn.viz.results import accuracy_stderr, plot_results, zoomed_limits  # noqa: E402
from pcnn.viz.training import LiveLossPlot, chain_offsets, focus_limits, plot_run, plot_training_curves, run_summary  # noqa: E402
from studies.experiments import fusion_conclusion  # noqa: E402
from pcnn.data.augment import AugmentConfig  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _images(n, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_pixel_histograms_labels_and_counts():
    imgs, labels = _images(12), torch.tensor([0, 1, 2, 3] * 3)
    fig = pixel_histograms(imgs, labels, ["a", "b", "c", "d"], per_class=2)
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
    from pcnn.data.augment import augment
    base = _images(3)
    variants = {"original": AugmentConfig(hflip=False), "rotate": AugmentConfig(hflip=False, rotate_deg=15)}
    fig, rows = augmentation_rows(base, variants, seed=4)
    assert torch.equal(rows[0], base)
    assert torch.equal(rows[1], augment(base, variants["rotate"], torch.Generator().manual_seed(4)))
    assert [fig.axes[r * 3].get_ylabel() for r in range(2)] == ["original\n0 of 3 changed", "rotate\n3 of 3 changed"]
    flips = {"hflip (p = 0.5)": AugmentConfig()}
    fig, rows = augmentation_rows(_images(8), flips, seed=1)
    k = changed_count(_images(8), rows[0])
    assert 0 < k < 8 and fig.axes[0].get_ylabel() == f"hflip (p = 0.5)\n{k} of 8 changed"   # only some flipped
    assert torch.equal(rows[0][(rows[0] != _images(8)).flatten(1).any(1)],
                       _images(8).flip(-1)[(rows[0] != _images(8)).flatten(1).any(1)])


def _rows(n, start_bpd=5.0):
    return [{"epoch": e, "train_bpd": start_bpd - 0.1 * e, "val_bpd": start_bpd - 0.05 * e, "val_acc": 0.25 + 0.1 * e}
            for e in range(1, n + 1)]


def test_chain_offsets_counts_complete_epochs(tmp_path):
    d = tmp_path / "stage1"
    d.mkdir()
    rows = _rows(3) + [{"epoch": 4, "train_bpd": 4.0, "partial": True}]
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert chain_offsets({"s1": d, "s2": _rows(2), "s3": _rows(1)}) == {"s1": 0, "s2": 3, "s3": 5}


def test_training_curves_use_cumulative_epochs():
    runs = {"s1": _rows(3), "s2": _rows(2, 4.0)}
    fig = plot_training_curves(runs, chain_offsets(runs))
    ax_bpd, ax_acc = fig.axes[:2]
    xs = sorted({x for line in ax_bpd.get_lines() for x in line.get_xdata() if line.get_linestyle() != ":"})
    assert xs == [1, 2, 3, 4, 5]                                  # stage 2 continues at epoch 4
    assert ax_bpd.get_xlabel().startswith("epoch (cumulative")
    assert plot_training_curves(runs).axes[0].get_xlabel() == "epoch"   # no offsets: plain epochs
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts == ["s1", "s2", "train", "validation"]   # one entry per run, not per line
    assert ax_bpd.get_legend() is None and ax_acc.get_legend() is None   # nothing over the curves
    assert any(line.get_linestyle() == ":" and line.get_xdata()[0] == 3.5 for line in ax_bpd.get_lines())


def test_zoomed_limits():
    assert zoomed_limits([3.9, 4.0, 4.1]) == pytest.approx((3.85, 4.15))
    lo, hi = zoomed_limits([2.0, 2.0])
    assert lo < 2.0 < hi


def test_plot_results_zooms_bpd_and_marks_best():
    results = [{"name": "a", "final": {"accuracy": 0.5, "val_bpd": 4.02, "fid_192": None}},
               {"name": "b", "final": {"accuracy": 0.7, "val_bpd": 4.00}}]
    fig = plot_results(results)
    ax_acc, _, ax_bpd, ax_fid = fig.axes[:4]
    assert ax_acc.get_xlim()[0] == 0                               # accuracy starts at 0
    assert ax_bpd.get_xlim()[0] > 3.9                              # bits/dim zoomed onto the values
    assert [t.get_text() for t in ax_acc.get_yticklabels()] == ["a", "b"]
    bars = ax_bpd.patches
    assert [round(b.get_x() + b.get_width(), 3) for b in bars] == [4.02, 4.0]
    assert bars[1].get_linewidth() == 1.5 and tuple(bars[1].get_edgecolor()[:3]) == (0, 0, 0)   # b is best
    assert all(b.get_edgecolor()[3] == 0 for b in ax_acc.patches)   # no accuracy bar is called best
    assert any(line.get_xdata()[0] == 0.25 for line in ax_acc.get_lines())   # chance line
    assert any(t.get_text() == "not measured" for t in ax_fid.texts)
    assert [t.get_text() for t in ax_bpd.texts] == [" 4.020", " 4.000"]
    results[0]["final"]["accuracy"] = None                          # one run without a value: said so
    ax_acc = plot_results(results).axes[0]
    assert [t.get_text() for t in ax_acc.texts] == [" 0.700", " not measured"]


def test_plot_results_raw_beside_ema_with_error_bars():
    results = [{"name": "a", "final": {"accuracy": 0.6, "accuracy_raw": 0.6, "accuracy_ema": 0.7, "val_bpd": 5.0}},
               {"name": "b", "final": {"accuracy": 0.65, "accuracy_raw": 0.65, "accuracy_ema": 0.62, "val_bpd": 5.1}}]
    fig = plot_results(results, n_eval=519)
    ax_acc = fig.axes[0]
    widths = sorted(round(b.get_width(), 3) for b in ax_acc.patches)
    assert widths == [0.6, 0.62, 0.65, 0.7]                         # raw and EMA bars of both runs
    caps = [c for c in ax_acc.containers if getattr(c, "has_xerr", False) or hasattr(c, "lines")]
    assert ax_acc.collections or caps                               # error bars drawn
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "EMA weights" in labels and "+-1 standard error (519 images)" in labels


def test_accuracy_stderr_and_fusion_conclusion():
    assert accuracy_stderr(0.5, 100) == pytest.approx(0.05)
    se = accuracy_stderr(0.7, 519)
    results = [{"name": "a", "final": {"accuracy_raw": 0.70, "accuracy_ema": 0.60, "val_bpd": 5.1}},
               {"name": "b", "final": {"accuracy_raw": 0.70 - 1.5 * se, "accuracy_ema": 0.65, "val_bpd": 5.0}},
               {"name": "c", "final": {"accuracy_raw": 0.50, "accuracy_ema": 0.50, "val_bpd": 5.3}},
               {"name": "none", "final": {"accuracy_raw": None, "accuracy_ema": None, "val_bpd": 5.2}}]
    lines = fusion_conclusion(results, 519)
    assert lines[0].startswith("Best EMA accuracy: b 65.0% (+-")
    assert lines[1].startswith("Best raw accuracy: a 70.0% (+-2.0%); within 2 standard errors of it: b.")
    assert lines[2] == "The EMA and raw weights rank the runs differently: at this budget the ranking is not settled."
    assert lines[3] == "Lowest validation bits/dim: b 5.000 (of 4 runs, from 5.000 to 5.300)."


def test_run_summary_and_focus_limits():
    rows = _rows(3) + [{"epoch": 4, "train_bpd": 4.0, "partial": True}]
    assert run_summary(rows) == {"epochs": 3, "rows": 4, "partial_rows": 1, "last_val_bpd": 4.85}
    assert run_summary([])["epochs"] == 0
    lo, hi = focus_limits([8.0] + [3.0 + 0.01 * k for k in range(19)], keep=0.9)
    assert hi < 8.0 and lo < 3.0 and hi > 3.17                      # the first, high epoch is left above
    runs = {"s": [{"epoch": 1, "train_bpd": 8.0, "val_bpd": 7.5}] +
            [{"epoch": e, "train_bpd": 3.5 - 0.01 * e, "val_bpd": 3.4 - 0.01 * e} for e in range(2, 21)]}
    ax = plot_training_curves(runs).axes[0]
    assert ax.get_ylim()[1] < 4 and any(t.get_text().startswith("2 point(s) above, up to 8.00") for t in ax.texts)
    ax = plot_training_curves(runs, focus=None).axes[0]
    assert ax.get_ylim()[1] > 8


def test_plot_run_readable_after_one_epoch():
    one = [{"epoch": 1, "train_bpd": 7.0, "val_bpd": 6.5, "val_acc": 0.5973, "val_bpd_raw": 6.4, "val_acc_raw": 0.5761}]
    fig = plot_run(one, "run")
    ax_bpd, ax_acc = fig.axes[:2]
    assert list(ax_bpd.get_xticks()) == [1.0] and ax_bpd.get_xlim() == (0.5, 1.5)   # whole epochs, not 0.96-1.04
    labels = [t.get_text() for t in ax_bpd.get_legend().get_texts()]
    assert labels == ["train (dropout, flips)", "validation (EMA weights)", "validation (raw weights)"]
    assert all(line.get_marker() not in (None, "None", "") for line in ax_bpd.get_lines())   # one point still shows
    acc = [t.get_text() for t in ax_acc.get_legend().get_texts()]
    assert acc == ["validation (EMA weights)", "validation (raw weights)", "chance (4 classes)"]
    same = [dict(one[0], val_bpd_raw=6.5, val_acc_raw=0.5973)]      # raw equal to EMA: drawn once
    assert len(plot_run(same).axes[0].get_lines()) == 2
    no_ema = [t.get_text() for t in plot_run(one, ema=False).axes[0].get_legend().get_texts()]
    assert no_ema == ["train (dropout, flips)", "validation"]
    many = [dict(one[0], epoch=e) for e in range(1, 31)] + [dict(one[0], epoch=31, partial=True)]
    ax = plot_run(many).axes[0]
    assert ax.get_xlim() == (0.5, 30.5) and all(float(t).is_integer() for t in ax.get_xticks())


def test_live_loss_plot_redraws_from_the_workdir(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(2)))
    live = LiveLossPlot("t")
    fig = live.update(tmp_path)
    assert fig is live.fig and [list(line.get_xdata()) for line in fig.axes[0].get_lines()][0] == [1, 2]


def test_confidence_summary_and_margin_by_row():
    ll = torch.tensor([[0.0, -50.0], [-50.0, 0.0], [0.0, -0.1], [-40.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    got = confidence_summary(ll, labels, threshold=0.995)
    assert got["accuracy"] == 0.5 and got["share_confident"] == 0.75
    assert got["accuracy_confident"] == pytest.approx(2 / 3)
    assert got["mean_confidence"] == pytest.approx((3 * 1.0 + torch.sigmoid(torch.tensor(0.1)).item()) / 4, abs=1e-6)
    m = torch.zeros(4, 3)
    m[3] = 10.0          # the bottom row carries 30 nats
    m[0, 0] = -5.0
    rows = margin_by_row(m)
    assert rows["rows"].tolist() == [-5.0, 0.0, 0.0, 30.0] and rows["total"] == 25.0
    assert rows["top_row"] == 3 and rows["top_nats"] == 30.0 and rows["top_share"] == pytest.approx(1.2)


def test_plot_beside_floor():
    rows = [{"metric": "FID-2048 (500 images)", "lower_better": True, "values": {"samples": 227.1, "real": 108.3}},
            {"metric": "probe accuracy", "lower_better": False, "values": {"samples": 0.59, "real": 0.948}}]
    fig = plot_beside_floor(rows)
    a, b = fig.axes
    assert [round(p.get_width(), 3) for p in a.patches] == [227.1, 108.3]
    assert a.get_title() == "FID-2048 (500 images)\n(lower is better)" and "higher" in b.get_title()
    assert [t.get_text() for t in b.texts] == [" 0.59", " 0.948"]


def test_likelihood_margins_and_mistakes():
    ll = torch.tensor([[-10.0, -12.0, -30.0], [-50.0, -20.0, -21.0], [-5.5, -9.0, -4.0], [-1.0, -100.0, -3.0]])
    labels = torch.tensor([0, 2, 0, 1])
    m = likelihood_margins(ll, num_dims=3)
    assert m["pred"].tolist() == [0, 1, 2, 0] and m["second"].tolist() == [1, 2, 0, 2]
    assert m["nats"].tolist() == pytest.approx([2.0, 1.0, 1.5, 2.0])
    assert m["bpd"][0].item() == pytest.approx(2.0 / (3 * 0.6931471805599453))
    idx, margin = confident_mistakes(ll, labels, n=5)
    assert idx.tolist() == [3, 2, 1] and margin.tolist() == pytest.approx([99.0, 1.5, 1.0])
    assert confident_mistakes(ll, labels, n=1)[0].tolist() == [3]
    titles = mistake_titles(ll, labels, [3], num_dims=3, class_names=["x", "y", "z"])
    assert titles == ["true y -> x\nby 99.0 nats = 47.6089 bpd"]
