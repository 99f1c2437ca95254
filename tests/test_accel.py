"""The trainer's fast path (pcnn.train.accel): its settings, the per-device auto choice, the
fallbacks, batches gathered on the device, deferred finite checks (bad steps skipped on the
device and counted, nothing non-finite saved or exported) and torch.compile with inductor on
the CPU (same loss as eager, no recompile on the last batch or after evaluation)."""
import contextlib
import warnings

import pytest
import torch

import pcnn
import pcnn.train.accel as accel
from pcnn.data.augment import AugmentConfig, augment
from pcnn.model.likelihood import to_float
from pcnn.train import TrainConfig, TrainingStopped, train
from pcnn.train.accel import DeferredChecks, DeviceData, FastPath, LossFunction, resolve_fast_path

from test_train import _poisoned_forward, fake_data, load_state, run, tiny_train

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ settings

@pytest.mark.parametrize("field,bad", [("compile", "fast"), ("compile", 1), ("compile", None),
                                       ("channels_last", "yes"), ("channels_last", 1),
                                       ("fused_optimizer", "on"), ("device_data", 0),
                                       ("check_every", -1), ("check_every", 1.5), ("check_every", True)])
def test_bad_fast_path_settings_name_the_field(field, bad):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig.from_dict({field: bad})


def test_fast_path_settings_parse_and_round_trip():
    assert TrainConfig(compile=True).compile == "default" and TrainConfig(compile=False).compile == "off"
    cfg = TrainConfig.from_dict({"compile": "reduce-overhead", "channels_last": True, "fused_optimizer": "auto",
                                 "device_data": False, "check_every": 7})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    d = TrainConfig().to_dict()
    assert (d["compile"], d["channels_last"], d["fused_optimizer"], d["device_data"], d["check_every"]) == \
        ("auto", "auto", "auto", "auto", 0)
    with pytest.raises(ValueError, match="check_every=5.*fused_optimizer"):
        TrainConfig(check_every=5, fused_optimizer=False)


def test_auto_choice_per_device(fake_gpu):
    fake_gpu("H200")
    cfg = TrainConfig()
    assert resolve_fast_path(cfg, "cpu") == FastPath("off", False, False, False, 1)  # today's CPU trainer
    assert resolve_fast_path(cfg, "cuda") == FastPath("reduce-overhead", True, True, True, accel.CUDA_CHECK_EVERY)
    assert resolve_fast_path(cfg, "cuda", world=2) == FastPath("off", True, True, True, 1)  # DDP: eager, per-step
    # deferred checks on the CPU bring the fused optimizer they need
    assert resolve_fast_path(TrainConfig(check_every=4), "cpu") == FastPath("off", False, True, False, 4)
    assert resolve_fast_path(TrainConfig(compile="default", channels_last=True, device_data=True), "cpu") == \
        FastPath("default", True, False, True, 1)
    with pytest.raises(ValueError, match="check_every=4 is not supported under DDP"):
        resolve_fast_path(TrainConfig(check_every=4), "cuda", world=2)
    assert FastPath("off", False, True, False, 4).deferred and not FastPath("off", False, True, False, 1).deferred
    assert "check_every=4" in FastPath("off", False, True, False, 4).describe()


def test_fallbacks_warn_and_say_what_runs(monkeypatch, fake_gpu):
    fake_gpu("T4")
    with pytest.warns(RuntimeWarning, match="reduce-overhead needs CUDA graphs.*mode=default"):
        assert resolve_fast_path(TrainConfig(compile="reduce-overhead"), "cpu").compile == "default"
    monkeypatch.setattr(accel, "compile_supported", lambda: False)
    with pytest.warns(RuntimeWarning, match="torch.compile is not supported here"):
        assert resolve_fast_path(TrainConfig(compile="default"), "cpu").compile == "off"
    with pytest.warns(RuntimeWarning, match="not supported here"):  # auto on CUDA falls back too
        assert resolve_fast_path(TrainConfig(), "cuda").compile == "off"
    monkeypatch.setattr(accel, "_get_fused_kernels_supported_devices", lambda: ["cuda"])
    with pytest.warns(RuntimeWarning, match="no fused Adam kernel on cpu"):
        assert resolve_fast_path(TrainConfig(fused_optimizer=True), "cpu").fused is False
    with pytest.warns(RuntimeWarning, match="checking every step"), \
            pytest.warns(RuntimeWarning, match="no fused Adam kernel"):
        assert resolve_fast_path(TrainConfig(check_every=4), "cpu").check_every == 1


def test_compile_failure_falls_back_to_eager_with_the_same_result(tmp_path, monkeypatch):
    def broken_compile(fn, **kw):
        def call(*a):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")
        return call
    eager = run(tiny_train(epochs=1), tmp_path / "eager")
    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(RuntimeWarning, match=r"torch.compile\(mode=default\) failed.*InvalidCxxCompiler.*eagerly"):
        hist = train(tiny_train(epochs=1, compile="default"), tmp_path / "c", *_data(), progress=False)
    assert hist[-1]["train_bpd"] == eager[-1]["train_bpd"]
    a, b = load_state(tmp_path / "eager")["model"], load_state(tmp_path / "c")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_make_optimizer_and_helpers():
    params = [torch.nn.Parameter(torch.ones(3))]
    plain = accel.make_optimizer(TrainConfig(optimizer="adam"), params, FastPath("off", False, False, False, 1), "cpu")
    assert type(plain) is torch.optim.Adam and not plain.defaults["fused"] and plain.param_groups[0]["lr"] == 1e-3
    fused = accel.make_optimizer(TrainConfig(optimizer="adamw", lr=2e-4), params,
                                 FastPath("off", False, True, False, 5), "cpu")
    assert type(fused) is torch.optim.AdamW and fused.defaults["fused"]
    lr = fused.param_groups[0]["lr"]
    assert torch.is_tensor(lr) and lr.item() == pytest.approx(2e-4)  # rewritten on the device each step
    t = torch.arange(4)
    assert accel.to_device_async(t, "cpu") is t
    assert accel.compile_supported() is True  # this interpreter and torch run dynamo (CI's too)


def test_loss_function_eager_is_training_loss(tiny):
    from pcnn.train import training_loss
    from conftest import rand_images
    x, y = rand_images(3), torch.tensor([0, 1, 2])
    fn = LossFunction(tiny, tiny.config, 0.5, "off")
    assert fn.mode == "off" and fn.compile_seconds is None
    assert torch.equal(fn(x, y)[0], training_loss(tiny, x, y, tiny.config, 0.5)[0])


def _data(n=32):
    images, labels = fake_data(n)
    return (images, labels), (images[:8], labels[:8])


# ------------------------------------------------------------------ data on the device

@pytest.mark.parametrize("aug", [AugmentConfig(), AugmentConfig(hflip=False), AugmentConfig(translate=1)],
                         ids=["flip", "none", "flip+translate"])
def test_device_batches_equal_the_host_path(aug):
    images, labels = fake_data(24)
    dd = DeviceData(images, labels, "cpu")
    idx = torch.randperm(24, generator=torch.Generator().manual_seed(1))[:8]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for lo, b in ((0, 8), (4, 4)):
        x, y = dd.batch(idx, aug, g1, lo, b, channels_last=False)
        ref = to_float(augment(images[idx], aug, g2)[lo:lo + b])
        assert torch.equal(x, ref) and torch.equal(y, labels[idx][lo:lo + b])
    assert torch.equal(g1.get_state(), g2.get_state())  # the same draws, so the run continues identically
    x, _ = dd.batch(idx, aug, g1, 0, 8, channels_last=True)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_device_data_training_is_bitwise_the_host_path(tmp_path):
    run(tiny_train(epochs=1), tmp_path / "host")
    run(tiny_train(epochs=1, device_data=True, channels_last=False), tmp_path / "dev")
    a, b = load_state(tmp_path / "host"), load_state(tmp_path / "dev")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


# ------------------------------------------------------------------ deferred finite checks

def test_deferred_checks_counters():
    c = DeferredChecks(step=10, bad_in_row=1, device="cpu")
    t, f = torch.tensor(True), torch.tensor(False)
    for skipped, bpd in ((t, float("nan")), (f, 3.0), (t, float("inf")), (t, float("nan")), (f, 5.0)):
        c.record(skipped, skipped, torch.tensor(bpd))
    v = c.read()
    assert v == {"step": 12.0, "bad_in_row": 0.0, "bpd_sum": 8.0, "good": 2.0, "bad": 3.0, "max_in_row": 2.0,
                 "steps": 5}
    c.record(t, t, torch.tensor(float("nan")))
    assert c.read()["max_in_row"] == 1.0 and c.read()["steps"] == 0


def test_deferred_checks_follow_the_per_step_run(tmp_path):
    """Same seed and data: deferring the reads changes no decision, only when the host learns of it."""
    per_step = run(tiny_train(epochs=2, fused_optimizer=True), tmp_path / "a")
    deferred = run(tiny_train(epochs=2, check_every=3), tmp_path / "b")
    a, b = load_state(tmp_path / "a"), load_state(tmp_path / "b")
    assert a["step"] == b["step"] == 8 and b["bad_total"] == 0
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-5), k
        assert torch.allclose(a["ema"][k], b["ema"][k], atol=1e-5), k
    assert [r["train_bpd"] for r in deferred] == pytest.approx([r["train_bpd"] for r in per_step], rel=1e-6)
    cfg = tiny_train()
    assert float(b["optimizer"]["param_groups"][0]["lr"]) == pytest.approx(cfg.lr * cfg.lr_decay ** 8, rel=1e-6)


def test_deferred_checks_resume_exactly(tmp_path):
    """A run with deferred checks stopped mid-epoch and resumed equals the straight run."""
    cfg = tiny_train(epochs=2, check_every=3, device_data=True)
    straight = run(cfg, tmp_path / "straight")
    run(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 5}), tmp_path / "resumed")
    assert load_state(tmp_path / "resumed")["step"] == 5
    resumed = run(cfg, tmp_path / "resumed", resume=True)
    a, b = load_state(tmp_path / "straight"), load_state(tmp_path / "resumed")
    for part in ("model", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert straight[-1]["train_bpd"] == resumed[-1]["train_bpd"]


def test_deferred_checks_skip_and_count_bad_steps(tmp_path, monkeypatch):
    _poisoned_forward(monkeypatch, nan_output_calls={2, 3}, nan_grad_calls={6})
    cfg = tiny_train(epochs=2, max_bad_steps=3, check_every=3)
    with pytest.warns(UserWarning, match="non-finite loss or gradient step.*skipped on the device"):
        hist = train(cfg, tmp_path, *_data(), progress=False)
    s = load_state(tmp_path)
    assert s["iteration"] == 8 and s["step"] == 5 and s["bad_total"] == 3
    assert [r["bad_steps"] for r in hist] == [2, 1]
    assert float(s["optimizer"]["param_groups"][0]["lr"]) == pytest.approx(cfg.lr * cfg.lr_decay ** 5, rel=1e-6)
    for part in ("model", "ema"):
        assert all(torch.isfinite(t).all() for t in s[part].values())
    assert all(torch.isfinite(t).all() for t in pcnn.load(tmp_path / "model.safetensors").state_dict().values())


def test_deferred_step_with_a_grad_scaler_skips_an_overflow_without_counting_it(tmp_path, monkeypatch):
    """fp16's path (GPU only) with a CPU GradScaler: an overflow lowers the scale and skips the
    update on the device, and is not a bad step, as in the per-step path."""
    from pcnn.train.distributed import DistContext
    from pcnn.train.loop import Trainer
    (images, labels), val = _data()
    tr = Trainer(tiny_train(check_every=4), tmp_path, DistContext(), (images, labels), val, False, False)
    tr.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    _poisoned_forward(monkeypatch, nan_output_calls=(), nan_grad_calls={2})
    before = [p.detach().clone() for p in tr.params]
    x, y = to_float(images[:8]), labels[:8]
    tr._train_step(x, y)
    after_one = [p.detach().clone() for p in tr.params]
    tr._train_step(x, y)  # overflow: skipped
    assert all(torch.equal(a, b) for a, b in zip(after_one, (p.detach() for p in tr.params)))
    tr._train_step(x, y)
    tr._read_checks()
    assert (tr.step, tr.bad_total, tr.epoch_sums["good"]) == (2, 0, 3)
    assert tr.scaler.get_scale() == 2.0 ** 7
    assert not all(torch.equal(a, b) for a, b in zip(before, after_one))


def test_deferred_checks_stop_a_run_that_cannot_recover(tmp_path, monkeypatch):
    _poisoned_forward(monkeypatch, nan_output_calls="all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrainingStopped, match=r"4 non-finite steps in a row.*check_every=4"):
            train(tiny_train(epochs=2, max_bad_steps=3, check_every=4), tmp_path, *_data(), progress=False)
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "last.pt").exists()


def test_deferred_checks_never_export_nonfinite_weights(tmp_path, monkeypatch):
    orig, n = accel.FastSteps._deferred_step, {"calls": 0}

    def step(self, x, y):  # weights go non-finite without a non-finite loss or gradient
        out = orig(self, x, y)
        n["calls"] += 1
        if n["calls"] == 4:  # the last step of epoch 1: its own loss was finite
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("inf"))
        return out
    monkeypatch.setattr(accel.FastSteps, "_deferred_step", step)
    with pytest.raises(TrainingStopped, match="non-finite.*not evaluated or exported"):
        train(tiny_train(epochs=2, check_every=3), tmp_path, *_data(), progress=False)
    for name in ("model.safetensors", "best.safetensors", "last.pt"):
        assert not (tmp_path / name).exists(), name


# ------------------------------------------------------------------ torch.compile (inductor on the CPU)

def test_compiled_fast_path_matches_eager_and_never_recompiles(tmp_path, request, caplog):
    """Every lever at once on the tiniest model, as CUDA's auto runs it minus the CUDA graphs:
    inductor, channels-last, fused optimizer, device-held data, deferred checks. 36 images at
    batch 8 leave a partial last batch (dropped), and each epoch evaluates in between."""
    import torch._dynamo
    import torch._inductor.config
    # config.patch, not monkeypatch: these configs keep their values in a table, and monkeypatch's
    # undo would delete the attributes for every later test in the process.
    stack = contextlib.ExitStack()
    stack.enter_context(torch._dynamo.config.patch(error_on_recompile=True))
    stack.enter_context(torch._inductor.config.patch(fallback_random=True))  # eager's dropout masks
    request.addfinalizer(stack.close)
    torch._dynamo.reset()
    images, labels = fake_data(36)
    data = ((images, labels), (images[:8], labels[:8]))
    levers = dict(channels_last=True, device_data=True, check_every=2)
    with caplog.at_level("INFO", logger="pcnn"):
        fast = train(tiny_train(epochs=2, compile="default", **levers), tmp_path / "fast", *data, progress=False)
    err = caplog.text
    assert "compile: torch.compile(mode=default)" in err and "fast path: compile=default" in err
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    eager = train(tiny_train(epochs=2, **levers), tmp_path / "eager", *data, progress=False)
    plain = train(tiny_train(epochs=2), tmp_path / "plain", *data, progress=False)
    for key in ("train_bpd", "val_bpd", "val_bpd_raw"):
        assert [r[key] for r in fast] == pytest.approx([r[key] for r in eager], rel=1e-4), key
        assert [r[key] for r in fast] == pytest.approx([r[key] for r in plain], rel=1e-4), key
    assert load_state(tmp_path / "fast")["step"] == 8
    torch._dynamo.reset()
