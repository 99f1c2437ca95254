import io
import os
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import pcnn

# The research drivers (studies/) are not installed with pcnn: tests import them from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
# amp="auto" would pick bf16 or fp32 from a per-machine timing probe (pcnn.model.precision);
# tests that compare runs must not depend on it, so they see fp32 unless a test asks
# (tests/test_precision.py covers the probe path). Subprocesses inherit it.
os.environ.setdefault("PCNN_CPU_BF16", "0")
# Under pytest-xdist (scripts/test.sh runs one worker per core) each worker and its subprocesses
# get one intra-op thread: two workers of two OpenMP threads each on two cores spin against each
# other (the guidance trade-off fixtures took 430 s so, 25 s alone).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
SHARED_DATA = ROOT.parent / "shared" / "cpen455"
#: The course's public starter code beside the checkout (imported at run time, never copied).
STARTER = ROOT.parent / "shared" / "cpen455-starter"


def data_dir() -> Path:
    """The CPEN455 data: PCNN_DATA_DIR, else ../shared/cpen455 beside the checkout."""
    env = os.environ.get("PCNN_DATA_DIR")
    return Path(env) if env else SHARED_DATA


def tiny_config(**kw):
    base = dict(nr_resnet=1, nr_filters=8, nr_logistic_mix=3, num_classes=4, dropout=0.0,
                fusion=("blocks",), image_size=8)
    base.update(kw)
    return pcnn.ModelConfig(**base)


def randomize_(model, scale=0.3, seed=0):
    """Give every parameter (zero-initialised class embeddings too) random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return model


def rand_images(b, size=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (b, 3, size, size), generator=g).to(dtype) / 127.5 - 1)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return randomize_(pcnn.PixelCNNpp(tiny_config())).eval()


@pytest.fixture
def fake_data(tmp_path):
    """A CPEN455-layout folder: 6 labelled validation images and 3 test images (64x64 JPEG)."""
    root = tmp_path / "data"
    g = torch.Generator().manual_seed(0)
    for split, labels in (("validation", [0, 1, 2, 3, 0, 1]), ("test", [-1, -1, -1])):
        (root / split).mkdir(parents=True)
        rows = []
        for i, lab in enumerate(labels):
            img = torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8)
            buf = io.BytesIO()
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="JPEG")
            (root / split / f"{i:07d}.jpg").write_bytes(buf.getvalue())
            rows.append(f"{split}/{i:07d}.jpg,{lab}")
        (root / f"{split}.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode())
    return root


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP contention on a busy 2-core box (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: What torch's device queries answer on the GPUs students and we get (name, compute capability,
#: memory in GiB). bf16 is native from sm_80; torch >= 2.3 says is_bf16_supported() is True on
#: all of them unless asked with including_emulation=False.
GPUS = {
    "T4": ("Tesla T4", (7, 5), 15),
    "P100": ("Tesla P100-PCIE-16GB", (6, 0), 16),
    "A100": ("NVIDIA A100-SXM4-40GB", (8, 0), 40),
    "H200": ("NVIDIA H200", (9, 0), 140),
}


def patch_gpu(monkeypatch, which: str):
    """Make torch.cuda's device queries answer as ``which`` (a key of GPUS) would, on this CPU
    machine: only the queries, no kernels (nothing may run on the fake device)."""
    import types
    name, cap, gib = GPUS[which]
    native = cap >= (8, 0)

    def is_bf16_supported(including_emulation: bool = True):
        return True if including_emulation else native
    props = types.SimpleNamespace(name=name, major=cap[0], minor=cap[1], total_memory=gib * 2 ** 30,
                                  multi_processor_count=40)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    import sys
    if "triton" not in sys.modules:  # a CPU-only torch has no Triton; a CUDA machine's would have it
        try:
            import triton  # noqa: F401
        except ImportError:
            monkeypatch.setitem(sys.modules, "triton", types.ModuleType("triton"))
    return name


@pytest.fixture
def fake_gpu(monkeypatch):
    """``fake_gpu("T4")``: torch's device queries answer as that GPU's would (see :func:`patch_gpu`)."""
    return lambda which: patch_gpu(monkeypatch, which)


@pytest.fixture(autouse=True)
def _library_logging_as_imported():
    """Every test starts and ends with the ``pcnn`` logger as a fresh import leaves it (no console
    handler, level unset): a face's ``logs.show`` in one test must not decide where another
    test's lines go. Tests read log lines with ``caplog``, or call the face that shows them."""
    import logging
    yield
    logger = logging.getLogger("pcnn")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.setLevel(logging.NOTSET)
