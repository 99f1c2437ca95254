"""Exact causality in float64 for every fusion mode: the mixture parameters at
pixel (i, j) ignore every input at or after (i, j) in raster order and depend
on earlier ones: always on the pixel to the left and the pixel above (the
receptive field of a shallow net does not reach every far top-right pixel:
that is the architecture, not a leak)."""
import pytest
import torch

import pcnn
from pcnn.model.config import FUSION_MODES
from conftest import randomize_, rand_images, tiny_config

MODES = ["none", *FUSION_MODES, "+".join(FUSION_MODES)]


@pytest.mark.parametrize("fusion", MODES)
def test_gradient_causality(fusion):
    torch.manual_seed(0)
    model = randomize_(pcnn.PixelCNNpp(tiny_config(fusion=fusion, nr_resnet=1))).double().eval()
    s = model.config.image_size
    x = rand_images(2, s, dtype=torch.float64).requires_grad_(True)
    y = torch.tensor([1, 3]) if model.config.conditional else None
    out = model(x, y)
    for i in range(s):
        for j in range(s):
            (g,) = torch.autograd.grad(out[:, :, i, j].sum(), x, retain_graph=True)
            dep = g.abs().sum(dim=(0, 1)).flatten()  # (S*S,) raster order
            pos = i * s + j
            assert torch.all(dep[pos:] == 0), f"({i},{j}) sees a pixel at or after itself"
            if j > 0:
                assert dep[pos - 1] > 0, f"({i},{j}) ignores its left neighbour"
            if i > 0:
                assert dep[pos - s] > 0 and dep[pos - s + min(1, s - 1 - j)] > 0, f"({i},{j}) ignores the row above"


@pytest.mark.parametrize("fusion", ["none", "+".join(FUSION_MODES)])
def test_perturbing_future_pixels_changes_nothing(fusion):
    torch.manual_seed(1)
    model = randomize_(pcnn.PixelCNNpp(tiny_config(fusion=fusion, nr_resnet=2))).double().eval()
    s = model.config.image_size
    y = torch.tensor([0, 2]) if model.config.conditional else None
    x = rand_images(2, s, seed=3, dtype=torch.float64)
    base = model(x, y)
    for i, j in [(0, 0), (3, 5), (7, 7), (4, 0)]:
        x2 = x.clone().flatten(2)
        x2[:, :, i * s + j:] = rand_images(2, s, seed=9, dtype=torch.float64).flatten(2)[:, :, i * s + j:]
        out = model(x2.view_as(x), y)
        assert torch.equal(out[:, :, i, j], base[:, :, i, j])


def test_class_changes_output_when_conditional():
    model = randomize_(pcnn.PixelCNNpp(tiny_config(fusion="blocks"))).eval()
    x = rand_images(1)
    assert not torch.allclose(model(x, torch.tensor([0])), model(x, torch.tensor([1])))
