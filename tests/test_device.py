"""Device-marked tests: the model, scoring, sampling and the trainer on ``PCNN_TEST_DEVICE``.

CI runs them on the CPU (the default) so they cannot rot; ``scripts/gpu_run.py``
runs them with ``PCNN_TEST_DEVICE=cuda`` on a lent GPU (``pytest -m device``).
Each compares the device's numbers with float32 on the CPU.
"""
import os

import pytest
import torch

import pcnn
from pcnn.model.precision import resolve_amp
from pcnn.train import TrainConfig, train, training_loss

from conftest import rand_images, randomize_, tiny_config

DEVICE = torch.device(os.environ.get("PCNN_TEST_DEVICE", "cpu"))
pytestmark = [pytest.mark.device, pytest.mark.usefixtures("one_thread")]

if DEVICE.type == "cuda" and not torch.cuda.is_available():
    pytest.skip("PCNN_TEST_DEVICE=cuda but no GPU is visible", allow_module_level=True)


def _models(**kw):
    torch.manual_seed(0)
    cpu = randomize_(pcnn.PixelCNNpp(tiny_config(fusion="blocks_film+input", **kw))).eval()
    dev = pcnn.PixelCNNpp(cpu.config).to(DEVICE).eval()
    dev.load_state_dict(cpu.state_dict())
    return cpu, dev


def test_forward_matches_cpu_float32():
    cpu, dev = _models()
    x, y = rand_images(4), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        ref = cpu(x, y)
        out = dev(x.to(DEVICE), y.to(DEVICE)).cpu()
    assert out.dtype == torch.float32
    # TF32 may be on for CUDA convolutions (PyTorch's default for cuDNN): ~1e-3 relative.
    tol = 1e-5 if DEVICE.type == "cpu" else 2e-2
    assert torch.allclose(out, ref, atol=tol, rtol=tol), (out - ref).abs().max()


def test_log_likelihoods_match_cpu():
    cpu, dev = _models()
    x = rand_images(3)
    ref = pcnn.log_likelihoods(cpu, x)
    got = pcnn.log_likelihoods(dev, x)       # images are moved to the model's device
    assert got.device.type == "cpu" and got.shape == (3, 4)
    assert torch.allclose(got, ref, rtol=1e-4 if DEVICE.type == "cpu" else 2e-3), (got - ref).abs().max()


@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_training_step_under_each_precision(amp, monkeypatch):
    if DEVICE.type == "cpu":   # bf16 arithmetic on every CPU (emulated where it has no bf16 instructions)
        monkeypatch.setenv("PCNN_CPU_BF16", "1")
    if amp == "fp16" and DEVICE.type == "cpu":
        with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
            resolve_amp(amp, DEVICE)
        return
    choice = resolve_amp(amp, DEVICE)
    assert choice.precision == {"off": "fp32"}.get(amp, amp)
    _, dev = _models(dropout=0.1)
    dev.train()
    x, y = rand_images(4).to(DEVICE), torch.tensor([0, 1, 2, 3], device=DEVICE)
    with torch.autocast(DEVICE.type, dtype=choice.dtype or torch.float32, enabled=choice.dtype is not None):
        loss, bpd = training_loss(dev, x, y, dev.config, disc_weight=0.1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in dev.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_compiled_scoring_matches_eager_on_device(monkeypatch):
    """log_likelihoods(compile=...) on the device: CUDA graphs (reduce-overhead) on CUDA, whose
    output buffer is reused at every replay, so three chunks with a padded last one check that
    each chunk's numbers are its own. On the CPU dynamo runs with its eager backend (inductor on
    the CPU is tests/test_scoring_compile.py's; compiling this model there takes 40 s)."""
    import torch._dynamo
    if DEVICE.type == "cpu":
        real = torch.compile
        monkeypatch.setattr(torch, "compile", lambda m, mode=None, dynamic=None: real(m, backend="eager",
                                                                                      dynamic=dynamic))
    _, dev = _models()
    x = rand_images(5, seed=3).to(DEVICE)   # 20 pairs at batch 8: chunks of 8, 8, 4 (+4 padding)
    mode = "reduce-overhead" if DEVICE.type == "cuda" else "default"
    torch._dynamo.reset()
    try:
        got = pcnn.log_likelihoods(dev, x, batch_size=8, compile=mode)
        again = pcnn.log_likelihoods(dev, x.flip(0), batch_size=8, compile=mode)
    finally:
        torch._dynamo.reset()
    want = pcnn.log_likelihoods(dev, x, batch_size=8)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(again, want.flip(0), rtol=1e-4, atol=1e-2)


def test_sampling_on_device():
    _, dev = _models()
    with torch.enable_grad():  # the sampler must not build a graph even when grad mode is on
        imgs = pcnn.sample(dev, [0, 3], generator=torch.Generator().manual_seed(0))
    assert imgs.dtype == torch.uint8 and imgs.shape == (2, 3, 8, 8)


def test_trainer_runs_on_device(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.arange(16) % 4
    cfg = TrainConfig(model=tiny_config(dropout=0.1), epochs=1, batch_size=8, ema=0.9, amp="auto",
                      eval_batch_size=32)
    hist = train(cfg, tmp_path, (images, labels), (images[:8], labels[:8]), progress=False)
    s = torch.load(tmp_path / "last.pt", weights_only=True)
    assert s["amp"]["precision"] == resolve_amp("auto", DEVICE).precision
    assert hist[-1]["val_bpd"] is not None and 0 < hist[-1]["val_bpd"] < 12  # 2 steps from 8-bit noise
    assert pcnn.load(tmp_path / "model.safetensors").config == cfg.model
