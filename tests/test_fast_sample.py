"""The cached incremental sampler (pcnn.sampling.cached) against the full forward and the naive sampler."""
import dataclasses
import inspect

import pytest
import torch

import pcnn
from pcnn.model.config import FUSION_MODES
from conftest import randomize_, tiny_config

MODES = ["none", *FUSION_MODES, "+".join(FUSION_MODES)]


def _model(fusion, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    return randomize_(pcnn.PixelCNNpp(tiny_config(fusion=fusion, **kw))).to(dtype).eval()


def _labels(model, b):
    return torch.arange(b) % model.config.num_classes


def sample_with_outputs(model, labels, generator):
    return pcnn.sample(model, labels, generator=generator, method="cached", return_float=True, return_outputs=True)


# Every ModelConfig field with the values the cached sampler must mirror, each tried on top of
# a model built with every option (all fusion modes, two blocks per stage, K = 3). A new field
# fails test_every_config_field_is_covered until its values are listed here.
EVERY_OPTION = dict(fusion="+".join(FUSION_MODES), nr_resnet=2, nr_logistic_mix=3, dropout=0.5)
FIELD_VALUES = {
    "nr_resnet": [1, 3],
    "nr_filters": [4, 12],
    "nr_logistic_mix": [1, 5],
    "num_classes": [1, 7],
    "dropout": [0.0, 0.9],
    "fusion": MODES,
    "image_size": [4, 12],
}


def test_every_config_field_is_covered():
    assert set(FIELD_VALUES) == {f.name for f in dataclasses.fields(pcnn.ModelConfig)}


@pytest.mark.parametrize("field,value", [(f, v) for f, vs in FIELD_VALUES.items() for v in vs],
                         ids=lambda v: str(v))
def test_cached_sampler_mirrors_every_config_field(field, value):
    """The sampler reads the model's layers by name (pcnn.sampling.cached); whatever a config field
    adds or changes must show up in its per-pixel outputs exactly as in one full forward."""
    kw = {"image_size": 8, **EVERY_OPTION, field: value}
    model = _model(kw.pop("fusion"), torch.float64, **kw)
    y = _labels(model, 3)
    x, outs = sample_with_outputs(model, y, torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(x, y if model.config.conditional else None)
    assert (full - outs).abs().max() < 1e-10


def test_return_outputs_needs_cached():
    model = _model("blocks", image_size=4)
    with pytest.raises(ValueError, match="cached"):
        pcnn.sample(model, [0], method="naive", return_outputs=True)
    x = pcnn.sample(model, [0], generator=torch.Generator().manual_seed(0))
    x2, outs = pcnn.sample(model, [0], generator=torch.Generator().manual_seed(0), return_outputs=True)
    assert torch.equal(x, x2) and outs.shape == (1, 10 * model.config.nr_logistic_mix, 4, 4)


@pytest.mark.parametrize("fusion", MODES)
def test_teacher_forced_outputs_match_full_forward(fusion):
    """By causality one full forward on the final image sees, at every pixel, what the sampler saw."""
    model = _model(fusion, image_size=12, nr_resnet=2)
    y = _labels(model, 3)
    x, outs = sample_with_outputs(model, y, torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(x, y if model.config.conditional else None)
    assert outs.shape == full.shape == (3, 30, 12, 12)
    assert (full - outs).abs().max() < 1e-4


@pytest.mark.parametrize("fusion", MODES)
def test_float64_exact(fusion):
    model = _model(fusion, torch.float64, image_size=8)
    y = _labels(model, 2)
    x, outs = sample_with_outputs(model, y, torch.Generator().manual_seed(1))
    assert x.dtype == torch.float64
    with torch.no_grad():
        full = model(x, y if model.config.conditional else None)
    assert (full - outs).abs().max() < 1e-10


@pytest.mark.parametrize("fusion", MODES)
def test_same_images_as_naive(fusion):
    model = _model(fusion, image_size=8)
    y = _labels(model, 5)
    a = pcnn.sample(model, y, generator=torch.Generator().manual_seed(3), method="cached")
    b = pcnn.sample(model, y, generator=torch.Generator().manual_seed(3), method="naive")
    # float reassociation could in principle flip a rare pixel; measured: 0 of 17,280
    # sub-pixels over all modes at size 12, and 0 here
    mismatch = (a != b).float().mean().item()
    assert mismatch < 0.01, mismatch


def test_default_is_cached_and_batch_one():
    model = _model("blocks", image_size=8)
    assert inspect.signature(pcnn.sample).parameters["method"].default == "cached"
    a = pcnn.sample(model, [2], generator=torch.Generator().manual_seed(0))
    b = pcnn.sample(model, [2], generator=torch.Generator().manual_seed(0), method="cached")
    assert a.shape == (1, 3, 8, 8) and a.dtype == torch.uint8 and torch.equal(a, b)


def test_unconditional_and_reproducible():
    model = _model("none", image_size=8)
    a = pcnn.sample(model, [0, 0], generator=torch.Generator().manual_seed(4))
    b = pcnn.sample(model, [0, 0], generator=torch.Generator().manual_seed(4))
    c = pcnn.sample(model, [0, 0], generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_progress_once_per_row():
    model = _model("blocks", image_size=8)
    calls = []
    pcnn.sample(model, [0, 1, 2, 3, 0], progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i + 1, 8) for i in range(8)]


def test_no_autograd_mode_restored_and_no_dropout_effect():
    model = _model("blocks", image_size=8, dropout=0.5)
    model.train()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    out = pcnn.sample(model, [1, 2], generator=g(), return_float=True)
    assert not out.requires_grad and model.training
    model.eval()
    assert torch.equal(pcnn.sample(model, [1, 2], generator=g(), return_float=True), out)


def test_nr_resnet_three_size_four():
    model = _model("blocks+middle", image_size=4, nr_resnet=3)
    y = _labels(model, 2)
    x, outs = sample_with_outputs(model, y, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(x, y) - outs).abs().max() < 1e-4
