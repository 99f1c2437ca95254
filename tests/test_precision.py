"""Precision choice (pcnn.model.precision) and mixed-precision training: amp validation, the CPU
probe and its cache, the choice stored in a run and kept on resume, an fp32 loss under
bf16 autocast, and bitwise exact resume with bf16 on."""
import json
import warnings

import pytest
import torch

import pcnn
from pcnn.model import precision
from pcnn.model.precision import AmpChoice, resolve_amp
from pcnn.train import TrainConfig, train, training_loss

from test_train import assert_same_tensors, fake_data, load_state, run, tiny_train

pytestmark = pytest.mark.usefixtures("one_thread")

CPUINFO = """processor\t: 0
model name\t: Test CPU 9000
flags\t\t: fpu sse avx2 avx512f {extra}
"""


@pytest.fixture
def fake_cpu(monkeypatch, tmp_path):
    """A CPU whose flags and probe speed-up the test sets; the probe cache in tmp_path."""
    monkeypatch.delenv("PCNN_CPU_BF16", raising=False)
    monkeypatch.setenv("PCNN_CACHE_DIR", str(tmp_path / "cache"))
    state = {"flags": "avx512_bf16", "speedup": 2.0, "probes": 0}
    monkeypatch.setattr(precision, "_cpuinfo", lambda: CPUINFO.format(extra=state["flags"]))

    def probe():
        state["probes"] += 1
        return {"fp32_ms": 2.0, "bf16_ms": 2.0 / state["speedup"], "speedup": state["speedup"]}
    monkeypatch.setattr(precision, "probe_cpu_bf16", probe)
    return state


def test_cpu_flags_are_read_from_cpuinfo(fake_cpu):
    fake_cpu["flags"] = "amx_tile amx_bf16 avx512_bf16"
    assert precision.cpu_bf16_flags() == ("amx_bf16", "avx512_bf16")
    assert precision.cpu_name() == "Test CPU 9000"
    fake_cpu["flags"] = ""
    assert precision.cpu_bf16_flags() == ()
    assert "Test CPU 9000" in precision.describe_cpu() and "no bf16 flags" in precision.describe_cpu()


def test_auto_on_cpu_follows_flags_and_probe(fake_cpu):
    c = resolve_amp("auto", "cpu")
    assert (c.precision, c.dtype) == ("bf16", torch.bfloat16) and "avx512_bf16" in c.reason and "2.00x" in c.reason
    fake_cpu["flags"] = ""
    c = resolve_amp("auto", "cpu")
    assert c.precision == "fp32" and c.dtype is None and "no bf16 instructions" in c.reason


def test_probe_below_threshold_keeps_fp32_and_is_cached_per_machine(fake_cpu, tmp_path):
    fake_cpu["speedup"] = 1.1
    c = resolve_amp("auto", "cpu")
    assert c.precision == "fp32" and "1.10x" in c.reason
    assert fake_cpu["probes"] == 1
    fake_cpu["speedup"] = 3.0                     # the cache answers: no second probe
    assert resolve_amp("auto", "cpu").precision == "fp32" and fake_cpu["probes"] == 1
    cache = json.loads((tmp_path / "cache" / "cpu_bf16_probe.json").read_text())
    (key, entry), = cache.items()
    assert "Test CPU 9000" in key and entry["speedup"] == 1.1
    fake_cpu["flags"] = "amx_bf16 avx512_bf16"   # another machine: another key, a new probe
    assert resolve_amp("auto", "cpu").precision == "bf16" and fake_cpu["probes"] == 2


def test_env_forces_the_cpu_answer_without_probing(fake_cpu, monkeypatch):
    monkeypatch.setenv("PCNN_CPU_BF16", "1")
    fake_cpu["flags"] = ""
    assert resolve_amp("auto", "cpu").precision == "bf16"
    monkeypatch.setenv("PCNN_CPU_BF16", "0")
    fake_cpu["flags"] = "avx512_bf16"
    assert resolve_amp("auto", "cpu").precision == "fp32" and fake_cpu["probes"] == 0


def test_explicit_modes_and_refusals(fake_cpu):
    assert resolve_amp("off", "cpu").dtype is None
    assert resolve_amp("bf16", "cpu").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
        resolve_amp("fp16", "cpu")
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_amp("bfloat16", "cpu")
    with pytest.raises(ValueError, match="TrainConfig.amp must be one of"):
        TrainConfig(amp="fp32")
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
        run(tiny_train(amp="fp16", epochs=1), "unused-workdir")


def test_explicit_bf16_runs_fp32_on_a_cpu_without_bf16(fake_cpu, monkeypatch):
    """An AVX2-only CPU (an AMD EPYC of this project's CI) emulates bf16 many times slower than
    fp32: amp=bf16 runs fp32 there and says why; PCNN_CPU_BF16=1 still forces bf16."""
    fake_cpu["flags"] = ""
    c = resolve_amp("bf16", "cpu")
    assert (c.mode, c.precision, c.dtype) == ("bf16", "fp32", None)
    assert "Test CPU 9000 reports no bf16 instructions" in c.reason and "emulated" in c.reason
    assert not precision.cpu_native_bf16()
    monkeypatch.setenv("PCNN_CPU_BF16", "1")
    assert precision.cpu_native_bf16() and resolve_amp("bf16", "cpu").precision == "bf16"
    monkeypatch.setenv("PCNN_CPU_BF16", "0")          # 0 only forces auto's answer
    fake_cpu["flags"] = "amx_bf16"
    assert precision.cpu_native_bf16() and resolve_amp("bf16", "cpu").precision == "bf16"
    assert fake_cpu["probes"] == 0                    # an explicit mode never probes


def test_real_probe_measures_both_precisions():
    r = precision.probe_cpu_bf16(repeats=1, channels=8, batch=2, size=4)
    assert r["fp32_ms"] > 0 and r["bf16_ms"] > 0 and r["speedup"] == pytest.approx(r["fp32_ms"] / r["bf16_ms"])


def test_loss_is_float32_under_bf16_autocast():
    torch.manual_seed(0)
    model = pcnn.PixelCNNpp(tiny_train().model).train()
    images, labels = fake_data(8)
    x = images.float() / 127.5 - 1
    seen = {}
    model.register_forward_hook(lambda m, i, o: seen.update(out=o.dtype))
    for w in (0.0, 0.5):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, bpd = training_loss(model, x, labels, model.config, disc_weight=w)
        assert seen["out"] == torch.bfloat16          # the network did run in bf16
        assert loss.dtype == bpd.dtype == torch.float32
        # Same value as the float32 likelihood of the bf16 network output: no bf16 in the loss.
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            torch.manual_seed(1)
            out = model(x, labels)
        nats = pcnn.model.likelihood.nll(x, out.float(), model.config.nr_logistic_mix, reduction="none")
        assert nats.dtype == torch.float32 and nats.abs().max() > 100


def test_choice_is_logged_stored_and_kept_on_resume(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PCNN_CPU_BF16", "1")
    monkeypatch.setattr(precision, "_cpuinfo", lambda: CPUINFO.format(extra="avx512_bf16"))
    cfg = tiny_train(epochs=2)
    with caplog.at_level("INFO", logger="pcnn"):
        run(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 3}), tmp_path / "w")
    assert "precision: bf16 (amp=auto: forced by PCNN_CPU_BF16=1)" in caplog.text
    assert load_state(tmp_path / "w")["amp"] == {"mode": "auto", "precision": "bf16",
                                                 "reason": "forced by PCNN_CPU_BF16=1"}
    meta = pcnn.model.checkpoint.read_metadata(tmp_path / "w" / "model.safetensors")
    assert meta["amp"]["precision"] == "bf16"
    # This "machine" would now choose fp32: the run keeps bf16 and says so.
    monkeypatch.setenv("PCNN_CPU_BF16", "0")
    images, labels = fake_data(32)
    with pytest.warns(UserWarning, match="keeping bf16"):
        train(cfg, tmp_path / "w", (images, labels), (images[:8], labels[:8]), resume=True, progress=False)
    assert load_state(tmp_path / "w")["amp"]["precision"] == "bf16"
    # Changing amp explicitly does change the precision.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(TrainConfig.from_dict({**cfg.to_dict(), "epochs": 3, "amp": "off"}), tmp_path / "w",
              (images, labels), (images[:8], labels[:8]), resume=True, progress=False)
    assert load_state(tmp_path / "w")["amp"]["precision"] == "fp32"


@pytest.mark.parametrize("amp", ["auto", "bf16"])
def test_bf16_run_resumed_on_a_cpu_without_bf16_continues_in_fp32(tmp_path, monkeypatch, amp):
    """Started where bf16 is native (forced here), resumed on an AVX2-only CPU: keeping bf16
    would emulate it many times slower, so the run continues in fp32 and says so."""
    monkeypatch.setenv("PCNN_CPU_BF16", "1")
    cfg = tiny_train(epochs=2, amp=amp)
    run(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 3}), tmp_path / "w")
    assert load_state(tmp_path / "w")["amp"]["precision"] == "bf16"
    monkeypatch.delenv("PCNN_CPU_BF16")
    monkeypatch.setattr(precision, "_cpuinfo", lambda: CPUINFO.format(extra=""))
    images, labels = fake_data(32)
    with pytest.warns(UserWarning, match="which this CPU only emulates; continuing in fp32"):
        train(cfg, tmp_path / "w", (images, labels), (images[:8], labels[:8]), resume=True, progress=False)
    s = load_state(tmp_path / "w")
    assert s["amp"]["precision"] == "fp32"
    # The run's precision history says where it changed, in the state and in the export.
    assert s["amp_segments"] == [{"step": 0, "precision": "bf16"}, {"step": 3, "precision": "fp32"}]
    meta = pcnn.model.checkpoint.read_metadata(tmp_path / "w" / "model.safetensors")
    assert meta["amp_segments"] == s["amp_segments"]


def test_fp32_fallback_run_keeps_fp32_on_a_bf16_cpu(tmp_path, monkeypatch):
    """amp=bf16 started on a CPU without bf16 (so fp32) and resumed where bf16 is native keeps
    fp32 (one precision per run) and says how to change it: amp is already explicit."""
    monkeypatch.setattr(precision, "_cpuinfo", lambda: CPUINFO.format(extra=""))
    cfg = tiny_train(epochs=2, amp="bf16")
    run(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 3}), tmp_path / "w")
    assert load_state(tmp_path / "w")["amp"]["precision"] == "fp32"
    monkeypatch.setattr(precision, "_cpuinfo", lambda: CPUINFO.format(extra="amx_bf16"))
    images, labels = fake_data(32)
    with pytest.warns(UserWarning, match="keeping fp32 so the run continues as it started \\(change amp from "
                                         "'bf16' to change it"):
        train(cfg, tmp_path / "w", (images, labels), (images[:8], labels[:8]), resume=True, progress=False)
    s = load_state(tmp_path / "w")
    assert s["amp"]["precision"] == "fp32" and s["amp_segments"] == [{"step": 0, "precision": "fp32"}]


def test_legacy_bf16_state_counts_as_bf16(tmp_path, monkeypatch):
    """A state written before choices were stored, with amp=bf16, trained in bf16 (explicit bf16
    always ran bf16 then): resumed on a CPU without bf16 it says it switches to fp32."""
    monkeypatch.setenv("PCNN_CPU_BF16", "1")
    cfg = tiny_train(epochs=2, amp="bf16")
    run(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 3}), tmp_path / "w")
    s = load_state(tmp_path / "w")
    del s["amp"], s["amp_segments"]
    torch.save(s, tmp_path / "w" / "last.pt")
    monkeypatch.delenv("PCNN_CPU_BF16")
    monkeypatch.setattr(precision, "_cpuinfo", lambda: CPUINFO.format(extra=""))
    images, labels = fake_data(32)
    with pytest.warns(UserWarning, match="amp=bf16 always ran bf16 on CPU\\), which this CPU only emulates"):
        train(cfg, tmp_path / "w", (images, labels), (images[:8], labels[:8]), resume=True, progress=False)
    assert load_state(tmp_path / "w")["amp_segments"] == [{"step": 0, "precision": "bf16"},
                                                          {"step": 3, "precision": "fp32"}]


def test_explicit_bf16_is_trusted_where_flags_cannot_be_read(fake_cpu, monkeypatch):
    """ARM (flag names differ) or no /proc/cpuinfo (macOS): the x86 flags say nothing, so an
    explicit bf16 runs bf16 as asked; auto stays fp32 there (no flags to justify a probe)."""
    fake_cpu["flags"] = ""
    monkeypatch.setattr(precision.platform, "machine", lambda: "aarch64")
    assert precision.cpu_native_bf16() and resolve_amp("bf16", "cpu").precision == "bf16"
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(precision, "_cpuinfo", lambda: "")
    assert precision.cpu_native_bf16() and resolve_amp("bf16", "cpu").precision == "bf16"
    assert resolve_amp("auto", "cpu").precision == "fp32"


def test_state_without_amp_resumes_in_fp32(tmp_path, monkeypatch):
    """A last.pt from before precision choices were stored: auto meant fp32 on CPU then."""
    cfg = tiny_train(epochs=2)
    run(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 3}), tmp_path / "w")
    s = load_state(tmp_path / "w")
    del s["amp"]
    torch.save(s, tmp_path / "w" / "last.pt")
    monkeypatch.setenv("PCNN_CPU_BF16", "1")
    with pytest.warns(UserWarning, match="keeping fp32"):
        images, labels = fake_data(32)
        train(cfg, tmp_path / "w", (images, labels), (images[:8], labels[:8]), resume=True, progress=False)
    assert load_state(tmp_path / "w")["amp"]["precision"] == "fp32"


def test_exact_resume_is_bitwise_with_bf16(tmp_path, monkeypatch):
    monkeypatch.setenv("PCNN_CPU_BF16", "1")   # bf16 arithmetic on every CPU (emulated where not native)
    cfg = tiny_train(epochs=2, amp="bf16")
    run(cfg, tmp_path / "straight")
    run(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 3}), tmp_path / "resumed")
    run(cfg, tmp_path / "resumed", resume=True)
    a, b = load_state(tmp_path / "straight"), load_state(tmp_path / "resumed")
    assert a["amp"]["precision"] == b["amp"]["precision"] == "bf16"
    assert_same_tensors(a["model"], b["model"], "model")
    assert_same_tensors(a["ema"], b["ema"], "EMA")
    # bf16 really changed the arithmetic: an fp32 run ends elsewhere.
    run(tiny_train(epochs=2, amp="off"), tmp_path / "fp32")
    c = load_state(tmp_path / "fp32")
    assert any(not torch.equal(a["model"][k], c["model"][k]) for k in a["model"])


def test_bf16_scoring_is_opt_in(tiny):
    from conftest import rand_images
    x = rand_images(4)
    ll32 = pcnn.log_likelihoods(tiny, x)
    assert torch.equal(ll32, pcnn.log_likelihoods(tiny, x, precision="fp32"))
    ll16 = pcnn.log_likelihoods(tiny, x, precision="bf16")
    assert ll16.dtype == torch.float32 and not torch.equal(ll16, ll32)
    assert torch.allclose(ll16, ll32, rtol=0.05)
    with pytest.raises(ValueError, match="precision"):
        pcnn.log_likelihoods(tiny, x, precision="fp16")


def test_amp_choice_round_trip():
    c = AmpChoice("auto", "bf16", "why")
    assert AmpChoice.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError):
        AmpChoice.from_dict({"mode": "auto", "precision": "int8"})


def test_cli_classify_precision_flag(fake_data, tmp_path, capsys):
    from conftest import randomize_, tiny_config
    from pcnn.cli.main import main
    from pcnn.data.dataset import load_split
    from pcnn.model.likelihood import to_float
    ckpt = pcnn.save(tmp_path / "tiny.safetensors", randomize_(pcnn.PixelCNNpp(tiny_config(image_size=32))))
    for prec in ("fp32", "bf16"):
        out = tmp_path / f"{prec}.csv"
        assert main(["classify", "--checkpoint", str(ckpt), "--data-dir", str(fake_data), "--out", str(out),
                     "--quiet", "--device", "cpu", "--precision", prec]) == 0
        assert json.loads(capsys.readouterr().out)["precision"] == prec
    x = to_float(load_split("validation", fake_data).images)
    want = pcnn.log_likelihoods(pcnn.load(ckpt), x, precision="bf16")
    got = [float(r.split(",")[2]) for r in (tmp_path / "bf16.csv").read_text().splitlines()[1:]]
    assert got == pytest.approx(want[:, 0].tolist(), abs=1e-5)
    with pytest.raises(SystemExit):
        main(["classify", "--checkpoint", str(ckpt), "--precision", "fp16"])
