"""The student's road on a free GPU (issue 33), simulated on the CPU: the device queries answer as
a T4, P100, A100 or H200 would (conftest.patch_gpu), and CUDA's fast-path choices (fused
optimizer, deferred checks, data on the device, a compiled loss through dynamo's eager backend)
run on the CPU. Each test failed before the change it names."""
import dataclasses
import types
import warnings

import pytest
import torch

import pcnn.train.accel as accel
from pcnn.notebook import live
from pcnn import logs
from pcnn.notebook import runtime as nb
from pcnn.model.precision import AmpChoice, cuda_native_bf16, cuda_precision, resolve_amp
from pcnn.train import TrainConfig, train
from pcnn.train.accel import resolve_fast_path, worth_compiling
from pcnn.train.state import RunState, device_optimizer_state

from test_train import _poisoned_forward, fake_data, load_state, run, tiny_train

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=32):
    images, labels = fake_data(n)
    return (images, labels), (images[:8], labels[:8])


# ------------------------------------------------------------------ 1. precision per GPU

@pytest.mark.parametrize("gpu,precision", [("T4", "fp16"), ("P100", "fp16"), ("A100", "bf16"), ("H200", "bf16")])
def test_auto_precision_is_native_bf16_or_fp16(fake_gpu, gpu, precision):
    name = fake_gpu(gpu)
    assert torch.cuda.is_bf16_supported()            # the old rule's question: True on every one of them
    choice = resolve_amp("auto", "cuda")
    assert choice.precision == precision and name in choice.reason
    assert cuda_precision("cuda")[0] == precision
    report = nb.gpu_report("colab", torch.device("cuda"))  # what notebook 02 prints: the same rule
    assert name in report and ("fp16 with a gradient scaler" in report) == (precision == "fp16")
    assert ("no compiling" in report) == (gpu == "P100")


def test_bf16_asked_on_a_t4_is_refused_and_fp16_runs(fake_gpu):
    fake_gpu("T4")
    with pytest.raises(ValueError, match="emulated.*amp=fp16 or auto"):
        resolve_amp("bf16", "cuda")
    assert resolve_amp("fp16", "cuda").precision == "fp16"
    fake_gpu("A100")
    assert resolve_amp("bf16", "cuda").precision == "bf16"


def test_torch_without_the_emulation_argument_asks_the_capability(fake_gpu, monkeypatch):
    for gpu, native in (("T4", False), ("A100", True)):
        fake_gpu(gpu)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # torch 2.3's signature
        assert cuda_native_bf16() is native


# ------------------------------------------------------------------ 3. compile that can only help

def test_compile_auto_is_off_where_inductor_cannot_run(fake_gpu):
    fake_gpu("P100")
    fast = resolve_fast_path(TrainConfig(), "cuda")
    assert fast.compile == "off" and "sm_60" in fast.note and "older than sm_70" in fast.describe()
    assert fast.fused and fast.check_every == accel.CUDA_CHECK_EVERY   # the other levers stay
    with pytest.warns(RuntimeWarning, match="compile=default: .*older than sm_70.*training eagerly"):
        assert resolve_fast_path(TrainConfig(compile="default"), "cuda").compile == "off"
    fake_gpu("T4")
    assert resolve_fast_path(TrainConfig(), "cuda").compile == "reduce-overhead"


def test_short_runs_are_not_compiled_unless_asked(fake_gpu):
    fake_gpu("T4")
    fast = resolve_fast_path(TrainConfig(), "cuda")
    short = worth_compiling(fast, TrainConfig(), steps_left=650)
    assert short.compile == "off" and "650 steps left" in short.note and "3,000" in short.describe()
    assert worth_compiling(fast, TrainConfig(), steps_left=650, warm=True) == fast   # a warm cache repays sooner
    assert worth_compiling(fast, TrainConfig(), steps_left=accel.COMPILE_MIN_STEPS) == fast
    asked = resolve_fast_path(TrainConfig(compile="reduce-overhead"), "cuda")
    assert worth_compiling(asked, TrainConfig(compile="reduce-overhead"), steps_left=10) == asked


def test_the_trainer_decides_from_the_steps_left(tmp_path, monkeypatch, caplog):
    """compile=auto resolves on the run itself: 8 steps are too few, so no compile is even tried."""
    import pcnn.train.loop as loop
    calls = []
    monkeypatch.setattr(loop, "resolve_fast_path",
                        lambda cfg, dev, world=1: accel.FastPath("reduce-overhead", False, False, False, 1))
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(kw) or fn)
    with caplog.at_level("INFO", logger="pcnn"):
        train(tiny_train(epochs=2), tmp_path, *_data(), progress=False)
    assert calls == []
    assert any("compile=off (auto: 8 steps left" in r.getMessage() for r in caplog.records)


def test_a_second_run_in_the_same_process_gets_its_own_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    import os
    first = accel.use_compile_cache(tmp_path / "a")
    second = accel.use_compile_cache(tmp_path / "b")   # pcnn's own earlier value is not the user's
    assert second == tmp_path / "b" / "compile_cache"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(second.resolve()) != str(first.resolve())
    assert os.environ["TRITON_CACHE_DIR"] == str((second / "triton").resolve())


def test_compile_cache_lives_beside_the_run(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    run_dir = tmp_path / "drive" / "run"
    assert not accel.cache_is_warm(run_dir)
    cache = accel.use_compile_cache(run_dir)
    assert cache == run_dir / "compile_cache" and cache.is_dir()
    import os
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache.resolve())
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    assert cache_dir() == str(cache.resolve())                 # inductor reads it at each use
    assert not accel.cache_is_warm(run_dir)
    (cache / "fxgraph").mkdir()
    (cache / "fxgraph" / "entry").write_bytes(b"x")
    assert accel.cache_is_warm(run_dir)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert accel.use_compile_cache(tmp_path / "other") is None   # the user's own setting wins


class _FailingBackward(torch.autograd.Function):
    """Passes the loss through; its backward fails as a compiled backward that cannot compile."""
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("BackendCompilerFailed: backend='inductor' raised during the backward")


def _compile_returning(wrap):
    def fake_compile(fn, **kw):
        def call(x, y):
            loss, bpd = fn(x, y)
            return wrap(loss), bpd
        return call
    return fake_compile


NO_DROPOUT = {}   # dropout stays on (0.5): the eager re-run starts from the random state the failed try started from


def _same_weights(a, b):
    return all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_failing_compiled_backward_falls_back_to_eager(tmp_path, monkeypatch):
    eager = run(tiny_train(epochs=1, model=NO_DROPOUT), tmp_path / "eager")
    monkeypatch.setattr(torch, "compile", _compile_returning(_FailingBackward.apply))
    with pytest.warns(RuntimeWarning, match=r"torch.compile\(mode=default\) failed \(RuntimeError: "
                                            r"BackendCompilerFailed.*eagerly for the rest of the run"):
        hist = train(tiny_train(epochs=1, compile="default", model=NO_DROPOUT), tmp_path / "c", *_data(),
                     progress=False)
    assert hist[-1]["train_bpd"] == eager[-1]["train_bpd"] and hist[-1]["bad_steps"] == 0
    assert _same_weights(load_state(tmp_path / "eager"), load_state(tmp_path / "c"))


def test_a_nan_that_eager_does_not_give_falls_back_to_eager(tmp_path, monkeypatch):
    eager = run(tiny_train(epochs=1, model=NO_DROPOUT, check_every=3), tmp_path / "eager")
    calls = {"n": 0}

    def nan_twice(loss):
        calls["n"] += 1
        return loss * float("nan") if calls["n"] <= 2 else loss
    monkeypatch.setattr(torch, "compile", _compile_returning(nan_twice))
    with pytest.warns(RuntimeWarning, match="non-finite loss or gradient where the eager loss did not"):
        hist = train(tiny_train(epochs=1, compile="default", model=NO_DROPOUT, check_every=3), tmp_path / "c",
                     *_data(), progress=False)
    assert calls["n"] == 1                                     # compiled once, eager from then on
    assert hist[-1]["train_bpd"] == eager[-1]["train_bpd"] and hist[-1]["bad_steps"] == 0
    assert _same_weights(load_state(tmp_path / "eager"), load_state(tmp_path / "c"))


@pytest.mark.parametrize("deferred", [False, True])
def test_a_failure_in_the_first_compiled_optimizer_step_falls_back(tmp_path, monkeypatch, deferred):
    """The whole first steps run under the fallback, the optimizer step included (the step that
    consumes the compiled backward's gradients and, under CUDA graphs, their memory)."""
    levers = {"check_every": 3} if deferred else {}
    eager = run(tiny_train(epochs=1, model=NO_DROPOUT, **levers), tmp_path / "eager")
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    real_step, calls = torch.optim.Adam.step, {"n": 0}

    def step_failing_once(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("Error: accessing tensor output of CUDAGraphs that has been overwritten")
        return real_step(self, *a, **kw)
    monkeypatch.setattr(torch.optim.Adam, "step", step_failing_once)
    with pytest.warns(RuntimeWarning, match="failed during its first steps.*overwritten.*eagerly for the rest"):
        hist = train(tiny_train(epochs=1, compile="default", model=NO_DROPOUT, **levers), tmp_path / "c",
                     *_data(), progress=False)
    assert hist[-1]["train_bpd"] == eager[-1]["train_bpd"]
    assert _same_weights(load_state(tmp_path / "eager"), load_state(tmp_path / "c"))


def test_an_error_in_an_eager_step_is_raised_not_retried(tmp_path, monkeypatch):
    def broken(self, *a, **kw):
        raise RuntimeError("a real bug")
    monkeypatch.setattr(torch.optim.Adam, "step", broken)
    with pytest.raises(RuntimeError, match="a real bug"):
        train(tiny_train(epochs=1), tmp_path, *_data(), progress=False)


def test_a_nan_eager_gives_too_is_a_bad_step_and_compile_stays(tmp_path, monkeypatch):
    _poisoned_forward(monkeypatch, nan_output_calls={1, 2})    # the compiled try and its eager check
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(1) or fn)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        hist = train(tiny_train(epochs=1, compile="default"), tmp_path, *_data(), progress=False)
    texts = [str(w.message) for w in seen]
    assert hist[-1]["bad_steps"] == 1 and any("step skipped" in t for t in texts)
    assert not any("eagerly for the rest" in t for t in texts)


# ------------------------------------------------------------------ 1. one trainer, one compile per run

def test_train_live_compiles_once_per_run(tmp_path, monkeypatch, capsys):
    """dynamo's eager backend on the CPU: 3 epochs of train_live make exactly the graphs 1 epoch makes
    (one trainer per run; before, every epoch's new model failed dynamo's guards and recompiled)."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None, **kw: real(fn, backend="eager"))
    g = torch.Generator().manual_seed(0)
    data = (torch.randint(0, 256, (8, 3, 8, 8), generator=g, dtype=torch.uint8), torch.arange(8) % 4)
    cfg = dataclasses.replace(nb.tiny_train_config(image_size=8, steps=None, batch_size=4), compile="default")
    graphs = []
    for until in (1, 3):
        torch._dynamo.reset()
        counters.clear()
        live.train_live(cfg, tmp_path / f"run{until}", until=until, train_data=data, val_data=data, progress=False)
        graphs.append(counters["stats"]["unique_graphs"])
    torch._dynamo.reset()
    assert graphs[0] >= 1 and graphs[1] == graphs[0]
    out = capsys.readouterr()
    assert out.out.count("compile: torch.compile(mode=default)") == 2   # once per run, two runs
    assert out.out.count("precision: ") == 2 and "precision: " not in out.err


def test_callbacks_see_each_epoch_can_stop_and_change_nothing(tmp_path):
    seen = []

    def sampler(ev):   # draws random numbers, as sampling does
        seen.append((ev.epoch, ev.exported, ev.weights, ev.model.training))
        torch.rand(100)
        return ev.epoch == 2 and "stop" in str(ev.workdir)
    plain = run(tiny_train(epochs=3), tmp_path / "plain")
    with_cb = train(tiny_train(epochs=3), tmp_path / "cb", *_data(), progress=False, callbacks=[sampler])
    assert seen == [(1, True, "ema", False), (2, True, "ema", False), (3, True, "ema", False)]
    assert [r["train_bpd"] for r in with_cb] == [r["train_bpd"] for r in plain]
    assert _same_weights(load_state(tmp_path / "plain"), load_state(tmp_path / "cb"))
    stopped = train(tiny_train(epochs=3), tmp_path / "stop", *_data(), progress=False, callbacks=sampler)
    assert [r["epoch"] for r in stopped] == [1, 2] and load_state(tmp_path / "stop")["epoch"] == 2
    resumed = train(tiny_train(epochs=3), tmp_path / "stop", *_data(), progress=False, resume=True)
    assert resumed[-1]["train_bpd"] == plain[-1]["train_bpd"]          # a stop request loses nothing
    with pytest.raises(TypeError, match="must be callable"):
        train(tiny_train(epochs=1), tmp_path / "bad", *_data(), progress=False, callbacks=["plot"])


def test_an_interrupt_between_epochs_stops_run_all(tmp_path):
    """A SIGINT during validation or a callback (not inside an epoch) still stops train_live's cell."""
    import os
    import signal

    class InterruptingPlot:
        def __init__(self):
            self.calls = 0

        def update(self, workdir):
            self.calls += 1
            if self.calls == 1:
                os.kill(os.getpid(), signal.SIGINT)   # the trainer's handler records it; the run stops
            return self                                # a truthy return value is not a stop request
    g = torch.Generator().manual_seed(0)
    data = (torch.randint(0, 256, (8, 3, 8, 8), generator=g, dtype=torch.uint8), torch.arange(8) % 4)
    cfg = nb.tiny_train_config(image_size=8, steps=None, batch_size=4)
    with pytest.raises(KeyboardInterrupt, match="stopped after epoch 1 of 3; last.pt is saved"):
        live.train_live(cfg, tmp_path / "run", until=3, train_data=data, val_data=data, progress=False,
                        plot=InterruptingPlot())
    assert nb.completed_epochs(tmp_path / "run") == 1
    rows = live.train_live(cfg, tmp_path / "run", until=3, train_data=data, val_data=data, progress=False,
                           plot=types.SimpleNamespace(update=lambda wd: True))   # True from a plot: ignored
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_callbacks_see_the_raw_model_in_eval_mode_and_training_resumes_in_train_mode(tmp_path):
    modes = []

    def look(ev):
        modes.append((ev.weights, ev.model.training))
    from pcnn.train.callbacks import EpochEnd, run_callbacks
    train(tiny_train(epochs=2, ema=0.0), tmp_path, *_data(), progress=False, callbacks=look)
    assert modes == [("raw", False), ("raw", False)]
    net = torch.nn.Dropout(0.5).train()
    ev = EpochEnd(epoch=1, epochs=1, row={}, history=[], workdir=tmp_path, model=net, weights="raw", exported=False)
    assert run_callbacks([lambda e: e.model.training], ev) is False and net.training   # restored


def test_fp16_overflow_in_a_probe_step_is_not_a_compile_failure():
    """With fp16's scaler the first steps' scaled gradients overflow by design; only the loss decides."""
    from pcnn.train.accel import FastSteps
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), float("inf"))
    step = FastSteps()
    step.params, step.scaler = [p], object()
    assert step._step_ok(torch.tensor(1.0)) is True
    assert step._step_ok(torch.tensor(float("nan"))) is False
    step.scaler = None
    assert step._step_ok(torch.tensor(1.0)) is False


def test_logs_show_once_on_the_chosen_stream(capsys):
    import logging
    logs.show("stdout")
    logs.show("stdout")                                           # a cell run twice: still one handler
    logging.getLogger("pcnn.train.loop").info("precision: fp32 (amp=auto: test)")
    assert capsys.readouterr().out == "precision: fp32 (amp=auto: test)\n"
    logs.show("stderr")
    logging.getLogger("pcnn.x").info("a line")
    out = capsys.readouterr()
    assert out.err == "a line\n" and out.out == ""
    with pytest.raises(ValueError, match="stdout' or 'stderr"):
        logs.show("file")


# ------------------------------------------------------------------ 4. resume anywhere

def test_a_cpu_run_resumes_with_the_gpu_fast_path_and_back(tmp_path):
    """CUDA's fast path (fused optimizer, deferred checks, data on the device) simulated on the CPU:
    before, the restored optimizer kept fused=None and the deferred step crashed with
    'Expected grad_scale and found_inf to be None'."""
    base = tiny_train(epochs=1)
    run(base, tmp_path)                                          # a CPU runtime: fused=None
    assert load_state(tmp_path)["optimizer"]["param_groups"][0]["fused"] is None
    gpu = dataclasses.replace(base, epochs=2, fused_optimizer=True, check_every=50, device_data=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                          # "resuming with changed settings"
        run(gpu, tmp_path, resume=True)
        s = load_state(tmp_path)
        assert s["epoch"] == 2 and s["optimizer"]["param_groups"][0]["fused"] is True and s["step"] == 8
        run(dataclasses.replace(base, epochs=3), tmp_path, resume=True)   # and back to the CPU's path
    s = load_state(tmp_path)
    assert s["epoch"] == 3 and s["step"] == 12 and not s["optimizer"]["param_groups"][0]["fused"]
    assert all(torch.isfinite(t).all() for t in s["model"].values())


def test_device_optimizer_state_takes_the_new_devices_options():
    p = [torch.nn.Parameter(torch.ones(3))]
    cpu = torch.optim.Adam(p, lr=1e-3)
    p[0].grad = torch.ones(3)
    cpu.step()
    fused = torch.optim.Adam(p, lr=torch.tensor(1e-3), fused=True)
    sd = device_optimizer_state(cpu.state_dict(), fused)
    assert sd["param_groups"][0]["fused"] is True and sd["param_groups"][0]["lr"] == 1e-3
    fused.load_state_dict(sd)
    fused.step()                                                 # runs; the saved moments came along
    back = device_optimizer_state(fused.state_dict(), torch.optim.Adam(p, lr=1e-3))
    assert back["param_groups"][0]["fused"] is None and isinstance(back["param_groups"][0]["lr"], float)


def test_a_gpu_fp16_run_resumes_on_a_cpu(tmp_path):
    """A state written by a T4 run (fp16 with a gradient scaler) continues on the CPU: scaler dropped."""
    run(tiny_train(epochs=1), tmp_path)
    s = load_state(tmp_path)
    s["runtime"] = {"threads": 2, "device": "cuda", "precision": "float16"}
    s["amp"] = {"mode": "auto", "precision": "fp16", "reason": "Tesla T4 (sm_75) has no native bf16"}
    s["scaler"] = {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                   "_growth_tracker": 3}
    torch.save(s, tmp_path / "last.pt")
    with pytest.warns(UserWarning, match="trained in fp16 on cuda; continuing on cpu in fp32"):
        train(tiny_train(epochs=2), tmp_path, *_data(), resume=True, progress=False)
    s = load_state(tmp_path)
    assert s["epoch"] == 2 and s["scaler"] is None and s["amp"]["precision"] == "fp32"


class _Run(RunState):
    """The trainer's precision part alone, on a simulated GPU."""

    def __init__(self, device):
        self.cfg = TrainConfig()
        self.dist = types.SimpleNamespace(device=torch.device(device), main=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                      # GradScaler on a device it cannot reach
            self._set_amp(resolve_amp("auto", device))


@pytest.mark.parametrize("saved_device,saved_precision,gpu,expect,warning", [
    ("cpu", "bf16", "T4", "fp16", "trained in bf16 on cpu; continuing on cuda in fp16"),
    ("cuda", "bf16", "T4", "fp16", "which this GPU only emulates"),
    ("cpu", "fp32", "A100", "bf16", "continuing on cuda in bf16"),
    ("cuda", "fp32", "A100", "fp32", "keeping fp32 so the run continues as it started"),
])
def test_precision_on_resume_follows_the_device(fake_gpu, tmp_path, saved_device, saved_precision, gpu, expect,
                                                 warning):
    fake_gpu(gpu)
    r = _Run("cuda")
    state = {"amp": AmpChoice("auto", saved_precision, "saved").to_dict(), "runtime": {"device": saved_device},
             "config": TrainConfig().to_dict()}
    with pytest.warns(UserWarning, match=warning):
        r._resume_amp(state, tmp_path / "last.pt")
    assert r.amp.precision == expect and (r.scaler is not None) == (expect == "fp16")
