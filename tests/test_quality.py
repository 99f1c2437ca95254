"""pcnn.eval.quality: the speckle and clipped-colour rates on synthetic images with known rates, and
precision / recall / density / coverage on feature sets whose answers are known."""
import numpy as np
import pytest
import torch

from pcnn.eval.quality import clipped_rate, pixel_metrics, prdc, speckle_mask, speckle_rate


def _flat(n=2, size=10, value=120):
    return torch.full((n, 3, size, size), value, dtype=torch.uint8)


def test_speckle_counts_isolated_outliers_among_interior_pixels():
    x = _flat()                                  # 2 images, 8 x 8 = 64 interior pixels each: 128 in all
    x[0, 1, 3, 3] = 250                          # green spike: 130 above its neighbours' median
    x[0, :, 6, 2] = 0                            # dark pixel, 120 below, every channel
    x[1, 2, 5, 5] = 120 + 97                     # just over 96 levels
    x[1, 0, 7, 7] = 120 + 96                     # exactly 96: not speckle
    x[1, 0, 0, 4] = 255                          # on the border: not counted (no 8 neighbours)
    assert speckle_rate(x) == pytest.approx(3 / 128)
    m = speckle_mask(x)
    assert m.shape == (2, 8, 8) and m[0, 2, 2] and m[0, 5, 1] and m[1, 4, 4] and not m[1, 6, 6]
    assert speckle_rate(_flat()) == 0.0


def test_speckle_ignores_edges_and_smooth_gradients():
    """A sharp straight edge (half the image black, half white) is not speckle: the median of
    every pixel's neighbours is on its own side; nor is a steep smooth ramp."""
    x = _flat(1, 12, 0)
    x[..., 6:] = 255
    assert speckle_rate(x) == 0.0
    ramp = (torch.arange(12) * 20).clamp(max=255).to(torch.uint8)
    assert speckle_rate(ramp.expand(1, 3, 12, 12).contiguous()) == 0.0
    # a 2x2 blob: each of its pixels has 3 blob neighbours of 8, so the median stays background
    x = _flat(1, 12, 100)
    x[0, :, 4:6, 4:6] = 255
    assert speckle_rate(x) == pytest.approx(4 / 100)


def test_clipped_colour_rate():
    x = _flat(1, 10, 128)                        # 100 pixels
    x[0, :, 0, 0] = torch.tensor([255, 0, 255], dtype=torch.uint8)    # magenta: clipped
    x[0, :, 1, 1] = torch.tensor([0, 250, 250], dtype=torch.uint8)    # cyan: clipped
    x[0, :, 2, 2] = torch.tensor([246, 9, 100], dtype=torch.uint8)    # just past both limits: clipped
    x[0, :, 3, 3] = torch.tensor([245, 0, 0], dtype=torch.uint8)      # 245 is not above 245
    x[0, :, 4, 4] = torch.tensor([255, 10, 10], dtype=torch.uint8)    # 10 is not below 10
    x[0, :, 5, 5] = 255                                               # white: no low channel
    assert clipped_rate(x) == pytest.approx(3 / 100)
    assert pixel_metrics(x) == {"speckle": speckle_rate(x), "clipped": clipped_rate(x)}


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 8, 8), torch.zeros(3, 8, 8, dtype=torch.uint8),
                                 torch.zeros(0, 3, 8, 8, dtype=torch.uint8), np.zeros((1, 3, 8, 8), np.uint8)])
def test_pixel_metrics_refuse_what_is_not_uint8_images(bad):
    with pytest.raises(ValueError):
        speckle_rate(bad)
    with pytest.raises(ValueError):
        clipped_rate(bad)


def test_prdc_identical_sets_and_far_apart_sets():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 16))
    same = prdc(real, real.copy())
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0 and same["k"] == 5
    assert same["density"] >= 1.0   # every fake sits in its own real's ball and in others'
    far = prdc(real, real + 1000.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0, "k": 5}


def test_prdc_separates_fidelity_from_diversity():
    """Fakes that are near copies of two of the reals: precision 1, recall and coverage near 0
    (mode collapse); fakes spread 2.5 times as wide as the reals: recall stays, precision drops."""
    rng = np.random.default_rng(1)
    real = rng.normal(size=(200, 8))
    collapsed = np.repeat(real[:2], 100, axis=0) + rng.normal(scale=1e-3, size=(200, 8))
    c = prdc(real, collapsed)
    assert c["precision"] == 1.0 and c["recall"] == pytest.approx(2 / 200) and c["coverage"] < 0.2
    wide = prdc(real, 2.5 * rng.normal(size=(200, 8)))
    assert wide["precision"] < 0.6 and wide["recall"] > 0.9
    # by hand on a line: reals 0, 1, 2, 3 (k = 1: radius 1 each), fakes 0.5 and 10
    h = prdc(np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[0.5], [10.0], [10.2]]), k=1)
    assert h["precision"] == pytest.approx(1 / 3) and h["coverage"] == pytest.approx(2 / 4)
    assert h["density"] == pytest.approx(2 / 3)   # 0.5 is inside the balls of 0 and 1
    assert h["recall"] == 1.0   # fake radii (k = 1): 0.5 -> 9.5, reaching every real; 10 and 10.2 -> 0.2


def test_prdc_bad_inputs():
    a = np.zeros((10, 4))
    with pytest.raises(ValueError, match="k = 5"):
        prdc(a[:5], a)
    with pytest.raises(ValueError, match="one D"):
        prdc(a, np.zeros((10, 3)))
    with pytest.raises(ValueError, match="positive integer"):
        prdc(a, a, k=0)
