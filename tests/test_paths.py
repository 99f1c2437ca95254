"""pcnn.paths (one home for the checkout, data folder, shipped checkpoint and presets) and the
small shared helpers the CLI and notebooks use: write_predictions, resolve_device, read_image."""
import csv
import glob
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch
from PIL import Image

import pcnn
from pcnn import paths
from pcnn.eval.classification import write_predictions
from pcnn.data.dataset import read_image, resize_uint8
from pcnn.model.precision import resolve_device
from pcnn.train import TrainConfig

from conftest import ROOT


def test_repo_root_and_shipped_checkpoint():
    assert paths.repo_root() == ROOT
    ck = paths.default_checkpoint()
    assert ck == ROOT / "checkpoints" / paths.SHIPPED_CHECKPOINT and ck.is_file()
    pcnn.read_metadata(ck)  # a real export


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.DATA_ENV_VAR, raising=False)
    assert paths.resolve_data_dir() == ROOT / "data"
    monkeypatch.setenv(paths.DATA_ENV_VAR, str(tmp_path / "env"))
    assert paths.resolve_data_dir() == tmp_path / "env"
    assert paths.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert paths.resolve_data_dir("") == tmp_path / "env"
    monkeypatch.delenv(paths.DATA_ENV_VAR)
    monkeypatch.setattr(paths, "repo_root", lambda: None)  # an installed wheel
    assert str(paths.resolve_data_dir()) == "data"
    monkeypatch.setattr(paths, "repo_root", lambda: None)
    assert paths.default_checkpoint() is None


def test_presets():
    names = paths.preset_names()
    assert "smoke" in names and "starter" in names and len(names) == len(list((ROOT / "configs").glob("*.json")))
    assert paths.preset_path("smoke") == ROOT / "configs" / "smoke.json" == paths.preset_path("smoke.json")
    cfg = TrainConfig.from_dict(paths.load_preset("smoke"))
    assert cfg.model.nr_filters == 8 and cfg.max_steps == 5
    with pytest.raises(FileNotFoundError, match="smoke"):
        paths.preset_path("no_such_preset")


def test_wheel_ships_the_presets(tmp_path):
    """A pip install has configs/ as package data (pcnn/configs/*.json) and the train package."""
    src = tmp_path / "src"  # a copy: setuptools writes build/ into the tree it builds
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name) if src.exists() else (src.mkdir(), shutil.copy(ROOT / name, src / name))
    for name in ("pcnn", "configs"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), str(src)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    names = zipfile.ZipFile(glob.glob(str(tmp_path / "*.whl"))[0]).namelist()
    for p in (ROOT / "configs").glob("*.json"):
        assert f"pcnn/configs/{p.name}" in names
    assert "pcnn/train/loop.py" in names and "pcnn/paths.py" in names


def test_write_predictions(tmp_path):
    ll = torch.tensor([[-1.0, -2.0], [-3.5, -0.25]])
    p = write_predictions(tmp_path / "sub" / "p.csv", ["a.jpg", "b.jpg"], ll.argmax(1), ll)
    rows = list(csv.reader(p.open()))
    assert rows == [["id", "label", "loglik_0", "loglik_1"], ["a.jpg", "0", "-1.000000", "-2.000000"],
                    ["b.jpg", "1", "-3.500000", "-0.250000"]]
    p = write_predictions(tmp_path / "c.csv", ["test/1.jpg", "test/2.jpg"], [3, 0], course_format=True)
    assert p.read_text().splitlines() == ["test/1.jpg,3", "test/2.jpg,0"]
    with pytest.raises(ValueError, match="differ"):
        write_predictions(tmp_path / "x.csv", ["a"], [0, 1])
    with pytest.raises(ValueError, match="course format"):
        write_predictions(tmp_path / "x.csv", ["a"], [0], ll[:1], course_format=True)


def test_resolve_device():
    assert resolve_device(None).type in ("cpu", "cuda") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


def test_read_image(tmp_path):
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8)
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / "a.png")
    x = read_image(tmp_path / "a.png", 32)
    assert x.shape == (1, 3, 32, 32) and torch.equal(x, resize_uint8(img[None], 32))
    Image.fromarray(img[0].numpy()).save(tmp_path / "g.png")  # grayscale -> three equal channels
    y = read_image(tmp_path / "g.png", 64)
    assert torch.equal(y[0, 0], y[0, 2])
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        read_image(tmp_path / "bad.jpg", 32)
    with pytest.raises(ValueError, match="cannot read image"):
        read_image(tmp_path / "missing.png", 32)


def test_the_shipped_card_is_the_shipped_checkpoints():
    """results/shipped/<SHIPPED_CARD>/card.json measures checkpoints/<SHIPPED_CHECKPOINT> (a ship
    decision changes both, and notebook 06 reads the floors from this card)."""
    import json
    card = paths.shipped_card_dir()
    assert card is not None and card.name == paths.SHIPPED_CARD
    assert json.loads((card / "card.json").read_text())["checkpoint"] == paths.SHIPPED_CHECKPOINT
