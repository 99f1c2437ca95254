"""Scoring through torch.compile at one fixed batch (issue 26, item 2): pcnn.precision's
resolve_scoring_compile / compiled_model and log_likelihoods(compile=...).

The compiled tests use dynamo with the ``eager`` backend (the graph capture, guards and
recompiles are dynamo's; the backend only decides how the captured graph runs), which keeps
them to seconds on a CPU; one test runs inductor itself on the tiniest model.
"""
import warnings

import pytest
import torch

import pcnn
from pcnn import precision
from pcnn.classify import log_likelihoods
from tests.conftest import rand_images, randomize_, tiny_config


@pytest.fixture
def dynamo_eager(monkeypatch):
    """torch.compile with the eager backend, recompiles made errors, dynamo's caches reset."""
    import torch._dynamo
    real = torch.compile
    calls = []

    def eager_compile(model, mode=None, dynamic=None):
        calls.append((mode, dynamic))
        return real(model, backend="eager", dynamic=dynamic)
    monkeypatch.setattr(torch, "compile", eager_compile)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    # config.patch, not monkeypatch: dynamo's config is a module whose attributes live in a
    # table, and monkeypatch's undo deletes the attribute for every later test.
    with torch._dynamo.config.patch(error_on_recompile=True):
        yield calls
    torch._dynamo.reset()


def _model(**kw):
    torch.manual_seed(0)
    return randomize_(pcnn.PixelCNNpp(tiny_config(**kw))).eval()


def test_resolve_scoring_compile_modes_and_fallbacks(monkeypatch):
    assert precision.resolve_scoring_compile("off", "cpu") == "off"
    assert precision.resolve_scoring_compile("default", "cpu") == "default"
    with pytest.warns(RuntimeWarning, match="needs CUDA graphs"):
        assert precision.resolve_scoring_compile("reduce-overhead", "cpu") == "default"
    with pytest.raises(ValueError, match="compile must be one of"):
        precision.resolve_scoring_compile("max-autotune", "cpu")
    with pytest.raises(ValueError, match="compile must be one of"):
        log_likelihoods(_model(), rand_images(2), compile="on")
    monkeypatch.setattr(precision, "compile_supported", lambda: False)
    with pytest.warns(RuntimeWarning, match="scoring eagerly"):
        assert precision.resolve_scoring_compile("default", "cpu") == "off"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve_scoring_compile("off", "cpu") == "off"  # off never warns


def test_compile_supported_here():
    assert precision.compile_supported() is True  # this interpreter and torch run dynamo (CI's too)


def test_compiled_model_is_made_once_per_model_and_mode_and_not_saved(dynamo_eager):
    m = _model()
    a = precision.compiled_model(m, "default")
    assert precision.compiled_model(m, "default") is a
    assert dynamo_eager == [("default", False)]  # static shapes: the caller pads
    assert set(m.state_dict()) == set(_model().state_dict())  # not a submodule: nothing new saved
    assert not any(isinstance(c, type(a)) for c in m.modules())
    other = _model()
    assert precision.compiled_model(other, "default") is not a


@pytest.mark.parametrize("flip", [False, True])
def test_compiled_scoring_matches_eager_without_recompiling_on_the_last_chunk(dynamo_eager, flip):
    """7 images x 4 classes (x 2 views) = 28 (56) pairs at batch 8: the last chunk is short (4 or 0
    rows of 8 missing, padded), two calls with different image counts reuse the one graph."""
    m = _model()
    x = rand_images(7, seed=1)
    eager = log_likelihoods(m, x, batch_size=8, flip_average=flip)
    done = []
    comp = log_likelihoods(m, x, batch_size=8, flip_average=flip, compile="default",
                           progress=lambda d, t: done.append((d, t)))
    assert comp.shape == (7, 4) and comp.dtype == torch.float32
    torch.testing.assert_close(comp, eager, rtol=1e-6, atol=1e-3)
    assert (comp.argmax(1) == eager.argmax(1)).all()
    total = 28 * (2 if flip else 1)
    assert done[-1] == (total, total)
    again = log_likelihoods(m, rand_images(3, seed=2), batch_size=8, flip_average=flip, compile="default")
    torch.testing.assert_close(again, log_likelihoods(m, rand_images(3, seed=2), batch_size=8, flip_average=flip),
                               rtol=1e-6, atol=1e-3)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # one shape, one graph
    assert not m.training


def test_compiled_scoring_of_an_unconditional_model(dynamo_eager):
    m = _model(num_classes=1, fusion=())
    x = rand_images(5, seed=3)
    torch.testing.assert_close(log_likelihoods(m, x, batch_size=4, compile="default"),
                               log_likelihoods(m, x, batch_size=4), rtol=1e-6, atol=1e-3)


def test_compiled_scoring_under_bf16_matches_eager_bf16(dynamo_eager):
    m = _model()
    x = rand_images(3, seed=4)
    torch.testing.assert_close(log_likelihoods(m, x, batch_size=5, precision="bf16", compile="default"),
                               log_likelihoods(m, x, batch_size=5, precision="bf16"), rtol=0, atol=0.5)


def test_inductor_scoring_matches_eager():
    """Inductor itself (a C++ compiler on the CPU): the same numbers within float rounding."""
    import torch._dynamo
    torch._dynamo.reset()
    m = _model(image_size=4, nr_filters=4)
    x = rand_images(3, size=4, seed=5)
    with torch._dynamo.config.patch(error_on_recompile=True):
        torch.testing.assert_close(log_likelihoods(m, x, batch_size=8, compile="default"),
                                   log_likelihoods(m, x, batch_size=8), rtol=1e-6, atol=1e-3)
    torch._dynamo.reset()
