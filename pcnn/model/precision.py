"""Which precision the network runs in: bf16 autocast where the hardware makes it pay.

PixelCNN++ (Salimans et al. 2017) is trained in float32. Mixed precision is a
departure made for speed only, and only for the *network*: the discretized
logistic mixture likelihood, bits/dim and the classifier's log p(x|c) are
always computed in float32 (a 32x32x3 image's NLL is about 6,400 nats, and
bf16's 8-bit mantissa resolves about 25 nats there; see
:func:`pcnn.train.training_loss`).

``amp="auto"`` resolves as follows (:func:`resolve_amp`):

* CUDA: bf16 only where the GPU computes it natively (compute capability 8.0 and up: A100,
  L4, H100, ...), else fp16 with a grad scaler (T4 sm_75, V100 sm_70, P100 sm_60).
  :func:`cuda_precision` is the one rule; everything that decides or prints a GPU's precision
  asks it. ``torch.cuda.is_bf16_supported()`` alone is not that rule: since torch 2.3 it is
  True on any GPU that can *emulate* bf16, which on a T4 is slow and makes inductor skip the
  graph (pytorch#118122), so it is asked with ``including_emulation=False``.
* CPU: bf16 when the CPU has bf16 instructions (the ``amx_bf16`` or
  ``avx512_bf16`` flags in ``/proc/cpuinfo``) **and** a short timing probe
  (:func:`probe_cpu_bf16`: forward + backward of a model-shaped convolution in
  fp32 and under bf16 autocast) shows at least :data:`MIN_CPU_SPEEDUP`; else
  fp32. Flags alone are not enough: oneDNN may lack kernels for a CPU, and a
  virtual machine may hide or emulate instructions. The probe's result is
  cached per machine (CPU model, flags, torch version, thread count) in
  ``$PCNN_CACHE_DIR`` (default ``~/.cache/pcnn``), so it runs once.
* ``PCNN_CPU_BF16=1`` / ``0`` forces ``auto``'s CPU answer without probing (tests,
  or a user who knows better); ``1`` also makes an explicit ``bf16`` run bf16 on any CPU.
* An explicit ``amp="bf16"`` on an x86 CPU without bf16 instructions runs fp32 and says why
  (:func:`cpu_native_bf16`): emulated bf16 is many times slower than fp32 there, and a
  preset that says bf16 must still run, and a run resume, on whatever CPU a session gets.
  Elsewhere (ARM, macOS, no ``/proc/cpuinfo``) the flags are not read and ``bf16`` is honoured.

fp16 on CPU is refused: CPU fp16 kernels are slow or missing, and fp16 needs
a grad scaler that buys nothing there.

How the network is run for scoring also lives here: :func:`resolve_scoring_compile` and
:func:`compiled_model` (``torch.compile`` at one fixed batch, off unless asked) and
:func:`compile_supported`, which the trainer's fast path (``pcnn.train.accel``) shares.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
import warnings
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

AMP_MODES = ("auto", "off", "bf16", "fp16")
#: ``auto`` picks bf16 on a CPU only if the probe's bf16 step is at least this much faster.
MIN_CPU_SPEEDUP = 1.25
#: CPU flags (Linux /proc/cpuinfo names) that provide native bf16 arithmetic.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class AmpChoice:
    """What a run's ``amp`` setting resolved to on its device."""
    mode: str        # what was asked: auto | off | bf16 | fp16
    precision: str   # what the network runs in: fp32 | bf16 | fp16
    reason: str      # one sentence: why (flags, probe speed-up, or the explicit setting)

    @property
    def dtype(self) -> Optional[torch.dtype]:
        """The autocast dtype, or None for plain fp32."""
        return _DTYPES[self.precision]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "AmpChoice":
        d = dict(d)
        if d.get("precision") not in _DTYPES or d.get("mode") not in AMP_MODES:
            raise ValueError(f"not an amp choice: {d}")
        return cls(mode=d["mode"], precision=d["precision"], reason=str(d.get("reason", "")))


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    for line in _cpuinfo().splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_bf16_flags() -> tuple:
    """The bf16 instruction sets this CPU reports, a subset of :data:`BF16_FLAGS` (sorted)."""
    flags = set()
    for line in _cpuinfo().splitlines():
        if line.lower().startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return tuple(f for f in BF16_FLAGS if f in flags)


def describe_cpu() -> str:
    """One line naming the CPU, its bf16 flags and the thread count, for tables and logs."""
    flags = ", ".join(cpu_bf16_flags()) or "no bf16 flags"
    return f"{cpu_name()} ({os.cpu_count()} cores, {flags}; torch {torch.__version__}, " \
           f"{torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''})"


def probe_cpu_bf16(repeats: int = 5, channels: int = 80, batch: int = 16, size: int = 16) -> dict:
    """Time forward + backward of a model-shaped 2x3 convolution in fp32 and under bf16 autocast.

    Returns ``{"fp32_ms", "bf16_ms", "speedup"}`` (best of ``repeats``
    interleaved runs each; about half a second in all). The shape is one of the
    model's gated-block convolutions (2F -> 2F channels at 16x16).
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size + 1, size + 2, generator=g)
    conv = torch.nn.Conv2d(channels, channels, (2, 3))

    def step(dtype):
        inp = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            out = conv(inp)
        out.float().sum().backward()

    best = {"fp32": float("inf"), "bf16": float("inf")}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        step(dtype)  # warm-up: oneDNN builds its kernels on first use
    for _ in range(repeats):
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            t0 = time.perf_counter()
            step(dtype)
            best[name] = min(best[name], time.perf_counter() - t0)
    conv.zero_grad(set_to_none=True)
    return {"fp32_ms": best["fp32"] * 1e3, "bf16_ms": best["bf16"] * 1e3,
            "speedup": best["fp32"] / best["bf16"]}


def cache_dir() -> Path:
    """``$PCNN_CACHE_DIR``, else ``~/.cache/pcnn``."""
    return Path(os.environ.get("PCNN_CACHE_DIR") or Path.home() / ".cache" / "pcnn")


def _fingerprint() -> str:
    return f"{cpu_name()}|{','.join(cpu_bf16_flags())}|torch {torch.__version__}|{torch.get_num_threads()} threads"


def cpu_bf16_speedup(use_cache: bool = True) -> float:
    """The probe's bf16 speed-up on this machine, from the per-machine cache when present."""
    path, key = cache_dir() / "cpu_bf16_probe.json", _fingerprint()
    cached = {}
    if use_cache:
        try:
            cached = json.loads(path.read_text())
            if isinstance(cached, dict) and isinstance(cached.get(key), dict):
                return float(cached[key]["speedup"])
        except (OSError, ValueError, KeyError, TypeError):
            cached = {}
    result = probe_cpu_bf16()
    if use_cache:
        try:  # a read-only home must not stop training: the probe simply runs again next time
            path.parent.mkdir(parents=True, exist_ok=True)
            cached = cached if isinstance(cached, dict) else {}
            cached[key] = result
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cached, indent=1, sort_keys=True))
            os.replace(tmp, path)
        except OSError:
            pass
    return result["speedup"]


def cpu_native_bf16() -> bool:
    """Whether an explicit ``amp="bf16"`` should run bf16 on this CPU: ``PCNN_CPU_BF16=1`` says
    so, or the CPU reports :data:`BF16_FLAGS`, or it cannot be inspected (not x86, or no
    ``/proc/cpuinfo``: an explicit request is then trusted). An x86 CPU without them makes oneDNN
    emulate bf16 with reference kernels, an order of magnitude slower than fp32 (``probe_cpu_bf16``
    on an AVX2-only CPU measures it). ``PCNN_CPU_BF16=0`` does not change this answer: it only
    forces ``amp="auto"`` to fp32."""
    if os.environ.get("PCNN_CPU_BF16") == "1" or cpu_bf16_flags():
        return True
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
    return not (x86 and _cpuinfo())


def cuda_capability(device=None) -> tuple:
    """``(major, minor)`` compute capability of a CUDA device (``torch.cuda.get_device_capability``)."""
    return tuple(torch.cuda.get_device_capability(device))


def cuda_native_bf16(device=None) -> bool:
    """Whether the GPU computes bf16 natively (not by emulation): sm_80 and up.

    Asks ``torch.cuda.is_bf16_supported(including_emulation=False)`` where torch has the
    argument (2.4 and later) and the compute capability where it does not."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.4: no emulation argument; the capability decides
        return cuda_capability(device) >= (8, 0)


def cuda_precision(device=None) -> tuple:
    """The one rule for a GPU's automatic precision: ``(precision, reason)``, bf16 where the GPU
    has it natively, else fp16 with the gradient scaler (see the module docstring)."""
    major, minor = cuda_capability(device)
    name = torch.cuda.get_device_name(device)
    if cuda_native_bf16(device):
        return "bf16", f"{name} (sm_{major}{minor}) computes bf16 natively"
    return "fp16", (f"{name} (sm_{major}{minor}) has no native bf16 (emulated bf16 is slow and not compiled), "
                    "so fp16 with a gradient scaler")


def resolve_amp(mode: str, device) -> AmpChoice:
    """Resolve a ``TrainConfig.amp`` value on ``device`` (see the module docstring).

    Raises ``ValueError`` for an unknown mode, for fp16 on CPU and for bf16 on a
    GPU without native bf16.
    """
    if mode not in AMP_MODES:
        raise ValueError(f"amp must be one of {list(AMP_MODES)}, got {mode!r}")
    dev = torch.device(device)
    if mode == "off":
        return AmpChoice(mode, "fp32", "amp=off")
    if dev.type == "cuda":
        precision, reason = cuda_precision(dev)
        if mode == "bf16" and precision != "bf16":
            raise ValueError(f"amp=bf16 but {reason.split(' (emulated')[0]}: bf16 would be emulated (slow, and "
                             "torch.compile skips it); use amp=fp16 or auto")
        if mode == "auto":
            return AmpChoice(mode, precision, reason)
        return AmpChoice(mode, mode, f"amp={mode}")
    if dev.type != "cpu":
        if mode == "auto":
            return AmpChoice(mode, "fp32", f"no mixed precision chosen automatically on {dev.type}")
        return AmpChoice(mode, mode, f"amp={mode}")
    if mode == "fp16":
        raise ValueError("amp=fp16 is not supported on CPU (slow or missing kernels, and the grad scaler it "
                         "needs buys nothing there); use amp=bf16, amp=auto or amp=off")
    forced = os.environ.get("PCNN_CPU_BF16")
    if mode == "bf16":
        if cpu_native_bf16():
            return AmpChoice(mode, "bf16", "amp=bf16")
        # Not refused as on a GPU: a run started on a CPU with bf16 must still resume on one
        # without it, and a preset saying bf16 must still run on every CPU a session gets.
        return AmpChoice(mode, "fp32", f"amp=bf16 asked, but {cpu_name()} reports no bf16 instructions "
                                       f"({'/'.join(BF16_FLAGS)}): bf16 would be emulated, many times "
                                       "slower than fp32, so fp32")
    if forced in ("0", "1"):
        return AmpChoice(mode, "bf16" if forced == "1" else "fp32", f"forced by PCNN_CPU_BF16={forced}")
    flags = cpu_bf16_flags()
    if not flags:
        return AmpChoice(mode, "fp32", f"{cpu_name()} reports no bf16 instructions ({'/'.join(BF16_FLAGS)})")
    speedup = cpu_bf16_speedup()
    if speedup >= MIN_CPU_SPEEDUP:
        return AmpChoice(mode, "bf16", f"{cpu_name()} has {'+'.join(flags)} and the probe ran bf16 "
                                       f"{speedup:.2f}x as fast as fp32")
    return AmpChoice(mode, "fp32", f"{cpu_name()} has {'+'.join(flags)} but the probe ran bf16 only "
                                   f"{speedup:.2f}x as fast as fp32 (< {MIN_CPU_SPEEDUP})")


def autocast(device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` for ``dtype`` on ``device``'s type, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def resolve_device(name: Optional[str] = None, what: str = "device") -> torch.device:
    """A device name (``auto``/None, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) -> ``torch.device``;
    ``auto`` is CUDA when available, else the CPU. ``ValueError`` for a name that is not a
    device or a device this machine does not have; ``what`` names the setting in the message
    (the CLI says ``--device``)."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{what} {name!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what} {name}: no CUDA GPU is available here (torch.cuda.is_available() is "
                             "False); use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{what} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{what} {name}: MPS (Apple GPU) is not available here; use cpu or auto")
    return dev


#: ``compile`` values of scoring (:func:`pcnn.model.classify.log_likelihoods`): "off" (eager, the default),
#: "default" (inductor) or "reduce-overhead" (inductor + CUDA graphs; CUDA only).
SCORING_COMPILE_MODES = ("off", "default", "reduce-overhead")


def compile_supported() -> bool:
    """Whether torch.compile can run in this interpreter (dynamo lacks some Python versions and platforms)."""
    try:
        return bool(torch._dynamo.is_dynamo_supported())
    except Exception:  # an unusual build without dynamo
        return False


#: Inductor generates GPU kernels with Triton, which needs compute capability 7.0 or newer.
TRITON_MIN_CAPABILITY = (7, 0)


def cuda_compile_problem(device=None) -> Optional[str]:
    """None when inductor can compile for this GPU, else one sentence saying why it cannot
    (a GPU older than sm_70, such as Kaggle's P100, or no Triton installed)."""
    major, minor = cuda_capability(device)
    if (major, minor) < TRITON_MIN_CAPABILITY:
        return (f"{torch.cuda.get_device_name(device)} (sm_{major}{minor}) is older than sm_70, which Triton "
                "(inductor's GPU code generator) needs")
    try:
        import triton  # noqa: F401  (optional: only CUDA builds of torch bring it)
    except ImportError:
        return "Triton (inductor's GPU code generator) is not installed"
    return None


def resolve_scoring_compile(mode: str, device) -> str:
    """A scoring ``compile`` value on ``device`` -> the mode that runs (see :data:`SCORING_COMPILE_MODES`).

    ``ValueError`` for an unknown mode. CUDA graphs exist only on CUDA, so "reduce-overhead"
    elsewhere runs as "default"; where dynamo cannot run, scoring runs eagerly. Both fallbacks
    say so in a ``RuntimeWarning`` (so does :func:`pcnn.model.classify.class_pair_outputs` when the
    compiler itself fails at the first forward, e.g. without a C++ compiler, and it scores eagerly). Scoring is eager
    unless asked: compiling costs about a
    minute per model, mode and batch size, more than an eager pass over the validation split takes
    on a GPU, so it pays only for long scoring jobs (benchmarks/bench_gpu.py measures both).
    """
    if mode not in SCORING_COMPILE_MODES:
        raise ValueError(f"compile must be one of {list(SCORING_COMPILE_MODES)}, got {mode!r}")
    dev = torch.device(device)
    if mode == "reduce-overhead" and dev.type != "cuda":
        warnings.warn(f"compile=reduce-overhead needs CUDA graphs, which {dev.type} does not have; "
                      "compiling with mode=default instead", RuntimeWarning, stacklevel=3)
        mode = "default"
    if mode != "off" and not compile_supported():
        warnings.warn(f"torch.compile is not supported here (Python {sys.version.split()[0]}, torch "
                      f"{torch.__version__}); scoring eagerly", RuntimeWarning, stacklevel=3)
        mode = "off"
    if mode != "off" and dev.type == "cuda":
        problem = cuda_compile_problem(dev)
        if problem:
            warnings.warn(f"compile={mode}: {problem}; scoring eagerly", RuntimeWarning, stacklevel=3)
            mode = "off"
    return mode


class _CompiledCache(dict):
    """{mode: compiled wrapper} of one model, kept in its ``__dict__``. It belongs to the model
    that made it (``owner``, a weak reference): a copy of the model (``copy.copy`` shares the
    ``__dict__`` entries) finds a cache that is not its own and starts a new one, and
    ``copy.deepcopy`` / pickling give an empty cache (a compiled wrapper cannot be copied)."""

    def __init__(self, owner=None):
        super().__init__()
        self.owner = None if owner is None else weakref.ref(owner)

    def __deepcopy__(self, memo):
        return _CompiledCache()

    def __reduce__(self):
        return _CompiledCache, ()


def compiled_model(model, mode: str):
    """``torch.compile(model, mode=mode)`` with static shapes, made on first use per model and mode.

    The compiled wrapper is kept in the model's ``__dict__`` (not as a submodule, so it is
    neither saved nor moved with the model; copies of the model do not share it) and reused by
    later calls: a second scoring call at the same batch does not compile again. Dynamo's
    guards recompile by themselves for a new batch size, dtype, autocast setting, device or
    train/eval mode (past its recompile limit it runs the model eagerly: the same numbers).
    Callers feed it one batch shape (:func:`pcnn.model.classify.class_pair_outputs` pads the last
    chunk), so nothing recompiles at the end of a split.
    """
    cache = model.__dict__.get("_pcnn_compiled")
    if not isinstance(cache, _CompiledCache) or cache.owner is None or cache.owner() is not model:
        cache = model.__dict__["_pcnn_compiled"] = _CompiledCache(model)
    if mode not in cache:
        cache[mode] = torch.compile(model, mode=mode, dynamic=False)
    return cache[mode]
