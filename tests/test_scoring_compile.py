"""Scoring through torch.compile at one fixed batch (issue 26, item 2): pcnn.model.precision's
resolve_scoring_compile / compiled_model and log_likelihoods(compile=...).

The compiled tests use dynamo with the ``eager`` backend (the graph capture, guards and
recompiles are dynamo's; the backend only decides how the captured graph runs), which keeps
them to seconds on a CPU; one test runs inductor itself on the tiniest model.
"""
import warnings

import pytest
import torch

import pcnn
from pcnn.model import precision
from pcnn.model.classify import log_likelihoods
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


def test_a_scored_model_still_copies_and_its_copies_compile_their_own(dynamo_eager):
    """After compiled scoring, deepcopy and copy.copy still work (the cache pickles as empty), and
    a copy never runs the original's compiled wrapper (which would score the original's weights)."""
    import copy
    m = _model()
    x = rand_images(3, seed=6)
    log_likelihoods(m, x, batch_size=4, compile="default")
    deep = copy.deepcopy(m)
    with torch.no_grad():
        for p_ in deep.parameters():
            p_.mul_(0.5)
    want = log_likelihoods(deep, x, batch_size=4)
    torch.testing.assert_close(log_likelihoods(deep, x, batch_size=4, compile="default"), want, rtol=1e-6, atol=1e-3)
    shallow = copy.copy(m)
    assert precision.compiled_model(shallow, "default") is not precision.compiled_model(m, "default")
    import pickle
    cache = m.__dict__["_pcnn_compiled"]
    assert len(cache) == 1 and len(pickle.loads(pickle.dumps(cache))) == 0  # pickles as empty


def test_a_compiler_that_fails_falls_back_to_eager_with_a_warning(monkeypatch):
    """No C++ compiler / Triton: the first compiled forward raises; the call warns and scores eagerly."""
    class Broken:
        def __init__(self, model, mode=None, dynamic=None):
            pass

        def __call__(self, *a, **kw):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
    monkeypatch.setattr(torch, "compile", Broken)
    m = _model()
    x = rand_images(5, seed=7)
    with pytest.warns(RuntimeWarning, match="failed at the first forward .*scoring eagerly"):
        got = log_likelihoods(m, x, batch_size=8, compile="default")
    torch.testing.assert_close(got, log_likelihoods(m, x, batch_size=8))


def test_a_short_job_is_not_padded_to_a_big_batch(dynamo_eager, monkeypatch):
    """3 images x 4 classes = 12 pairs at batch_size 256: one forward of 12 rows, not 256."""
    m = _model()
    rows = []
    real_forward = type(m).forward

    def counting(self, x, *a, **kw):
        rows.append(x.shape[0])
        return real_forward(self, x, *a, **kw)
    monkeypatch.setattr(type(m), "forward", counting)
    log_likelihoods(m, rand_images(3, seed=8), batch_size=256, compile="default")
    assert rows and set(rows) == {12}


@pytest.mark.parametrize("flip", [False, True])
def test_compiled_scoring_matches_eager_without_recompiling_on_the_last_chunk(dynamo_eager, flip):
    """7 images x 4 classes (x 2 views) = 28 (56) pairs at batch 8: the last chunk is short (4 or 0
    rows of 8 missing, padded), two calls with different image counts reuse the one graph."""
    m = _model().train()   # scoring puts it in eval mode for the call and restores train mode
    x = rand_images(7, seed=1)
    eager = log_likelihoods(m, x, batch_size=8, flip_average=flip)
    assert m.training
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
    assert m.training


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


def test_inductor_scoring_matches_eager(one_thread):
    """Inductor itself (a C++ compiler on the CPU) on a 4x4 model: the same numbers within float
    rounding. About 5 s with inductor's cache warm (tests/test_accel.py compiles before it)."""
    import torch._dynamo
    torch._dynamo.reset()
    m = _model(image_size=4, nr_filters=4)
    x = rand_images(3, size=4, seed=5)
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            torch.testing.assert_close(log_likelihoods(m, x, batch_size=8, compile="default"),
                                       log_likelihoods(m, x, batch_size=8), rtol=1e-6, atol=1e-3)
    finally:
        torch._dynamo.reset()
