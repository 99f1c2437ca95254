"""Readable grids (labelled rows, nearest-upscaled tiles) and the CLI that draws them."""
import json

import pytest
import torch
from PIL import Image

import pcnn
from pcnn.cli.main import main
from pcnn.viz.grids import labeled_grid, masked
from pcnn.sampling.sample import same_noise_samples
from conftest import randomize_, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: no OpenMP contention


def _tiles(n, seed=0, size=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_tiles_are_nearest_upscaled_and_labels_drawn():
    t = _tiles(3)
    g = labeled_grid([[t[0], t[1]], [t[2], None]], row_labels=["panda", "pizza"], scale=3, pad=2)
    assert g.dtype == torch.uint8 and g.shape[0] == 3
    up = t[0].repeat_interleave(3, 1).repeat_interleave(3, 2)
    # find the first tile: it is the exact 3x upscale somewhere at the top-left of the tile area
    h, w = g.shape[1:]
    found = any(torch.equal(g[:, y:y + 24, x:x + 24], up) for y in range(0, 6) for x in range(0, w - 24))
    assert found
    left = w - 2 * (24 + 2) - 2
    assert left > 20 and (g[:, :, :left] < 128).any()     # the label text sits left of the tiles
    assert (g[:, -26:, -26:] == 255).all()                 # the empty cell stays white


def test_grid_errors():
    with pytest.raises(ValueError, match="at least one tile"):
        labeled_grid([[None]])
    with pytest.raises(ValueError, match="uint8"):
        labeled_grid([[_tiles(1)[0].float()]])
    with pytest.raises(ValueError, match="2 row labels for 1 rows"):
        labeled_grid([[_tiles(1)[0]]], row_labels=["a", "b"])


def test_class_grid_with_real_rows():
    imgs, labels = _tiles(6), torch.tensor([0, 0, 2, 2, 3, 3])
    plain = pcnn.class_grid(imgs, labels, scale=2)
    both = pcnn.class_grid(imgs, labels, real_images=_tiles(6, 1), real_labels=labels, scale=2)
    assert plain.shape[1] == 3 * (16 + 2) + 2 and both.shape[1] == 6 * (16 + 2) + 2


def test_class_grid_labels_generated_rows_beside_real(monkeypatch):
    import pcnn.viz.grids as grids
    seen = []
    monkeypatch.setattr(grids, "labeled_grid", lambda rows, labels, **kw: seen.append(labels))
    imgs, labels = _tiles(2), torch.tensor([0, 1])
    grids.class_grid(imgs, labels, ["a", "b"])
    grids.class_grid(imgs, labels, ["a", "b"], real_images=_tiles(2, 1), real_labels=labels)
    assert seen == [["a", "b"], ["a (generated)", "a (real)", "b (generated)", "b (real)"]]


def test_sample_grid_names_rows_by_class_or_unconditional(monkeypatch):
    """write_sample_set's grid: a conditional model's rows carry its class names; an unconditional
    model's rows all say "unconditional" (its labels only number the files)."""
    import pcnn.viz.grids as grids
    import pcnn.sampling.sets as sets
    from pcnn.model.config import ModelConfig
    seen = []
    monkeypatch.setattr(grids, "labeled_grid", lambda rows, labels, **kw: seen.append(labels))
    imgs, labels = _tiles(4), torch.tensor([0, 1, 2, 3])
    sets.sample_grid(imgs, labels, ModelConfig(image_size=8, fusion=()))
    sets.sample_grid(imgs, labels, ModelConfig(image_size=8))
    sets.sample_grid(imgs[:2], labels[:2], ModelConfig(image_size=8, fusion=()), real=(_tiles(2, 1), labels[:2]))
    assert seen == [["unconditional"] * 4, ["hamburger", "panda", "koala", "pizza"],
                    ["unconditional (generated)", "unconditional (real)"] * 2]


def test_same_noise_every_class(tiny):
    imgs, labels = same_noise_samples(tiny, per_class=2, seed=3)
    for c in range(4):
        assert torch.equal(imgs[labels == c], pcnn.sample(tiny, [c, c], generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(imgs[labels == 0], imgs[labels == 1])
    g = pcnn.same_noise_grid(tiny, per_class=1, seed=3, scale=2)
    assert g.shape[1] > 4 * (16 + 2)      # four rows plus the column labels


def test_completion_grid_layout():
    orig = _tiles(2)
    done = _tiles(8, 1).view(2, 4, 3, 8, 8)
    g = pcnn.completion_grid(orig, done, 3, scale=2)
    assert g.shape[0] == 3 and g.shape[2] >= 6 * 16
    assert (masked(orig, 3)[:, :, 3:] == 128).all() and torch.equal(masked(orig, 3)[:, :, :3], orig[:, :, :3])
    with pytest.raises(ValueError, match=r"\(N, C, 3, S, S\)"):
        pcnn.completion_grid(orig, done[0], 3)


@pytest.fixture
def ckpt(tmp_path):
    model = randomize_(pcnn.PixelCNNpp(tiny_config(image_size=32, nr_filters=4)))
    return pcnn.save(tmp_path / "tiny.safetensors", model)


def test_cli_sample_grid_is_labelled_and_temperature(ckpt, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(ckpt), "--per-class", "1", "--out", str(tmp_path / "s"),
                 "--quiet", "--temperature", "0.7"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["temperature"] == 0.7 and res["images"] == 4
    grid = Image.open(tmp_path / "s_grid.png")
    assert grid.height == 4 * (96 + 2) + 2 and grid.width > 96 + 40   # 4 class rows of one 3x tile, plus labels
    assert main(["sample", "--checkpoint", str(ckpt), "--per-class", "1", "--out", str(tmp_path / "t"),
                 "--quiet", "--temperature", "0"]) == 2
    assert "temperature must be finite and > 0" in capsys.readouterr().err


def test_cli_complete_from_a_file_and_errors(ckpt, tmp_path, capsys):
    src = tmp_path / "img.png"
    Image.fromarray(_tiles(1, size=64)[0].permute(1, 2, 0).numpy()).save(src)
    out = tmp_path / "c.png"
    assert main(["complete", "--checkpoint", str(ckpt), "--image", str(src), "--keep-rows", "20",
                 "--class", "panda", "--class", "3", "--out", str(out), "--scale", "2", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["classes"] == ["panda", "pizza"] and Image.open(out).width >= 4 * 64
    assert main(["complete", "--checkpoint", str(ckpt), "--image", str(src), "--keep-rows", "33",
                 "--out", str(out)]) == 2
    assert "keep_rows must be an integer in [0, 32]" in capsys.readouterr().err
    assert main(["complete", "--checkpoint", str(ckpt), "--out", str(out)]) == 2
    assert "exactly one of --image" in capsys.readouterr().err
