"""The trainer's fast path: what keeps a GPU busy, in one place.

On a GPU the eager training step is bound by the host, not the chip (issue 26: about 2,240
kernel launches and one host sync per step). Five levers, each a :class:`TrainConfig` field
whose ``"auto"`` is resolved here per device by :func:`resolve_fast_path`:

* ``compile``: :func:`torch.compile` of the whole training loss (network + likelihood), so
  inductor fuses the elementwise work (concat-ELU, gates, dropout, weight norm and its
  casts) into few kernels; ``"reduce-overhead"`` also replays the step as CUDA graphs.
  ``auto``: reduce-overhead on CUDA, off on CPU (where it gave 2-4 %, benchmarks/README.md),
  and off where it can only cost: a GPU inductor cannot compile for (below sm_70, e.g. a P100:
  :func:`pcnn.model.precision.cuda_compile_problem`) and a run too short to repay the compilation
  (:func:`worth_compiling`). The loss is compiled once per run (one :class:`LossFunction` per
  trainer); the first :data:`COMPILE_PROBE_STEPS` steps run under a fallback
  (:meth:`FastSteps._loss_and_grads`) and the compiler's cache lives beside the run
  (:func:`compile_cache_dir`), so a new runtime reuses it.
  Weight norm is already computed once per convolution per step (each convolution runs
  once per forward); compiling fuses it with its cast instead of caching anything, so the
  maths stays that of the eager model.
* ``channels_last``: NHWC tensors, which cuDNN's convolutions use natively (saves the
  NCHW<->NHWC transposes). ``auto``: on on CUDA, off on CPU.
* ``fused_optimizer``: ``fused=True`` Adam/AdamW, one kernel for all parameters, and the one
  whose ``found_inf`` argument skips a bad step on the device. ``auto``: on on CUDA.
* ``device_data``: the uint8 training split lives on the device; each batch is gathered and
  flipped there (:class:`DeviceData`), drawing the same random numbers from the same
  generator as :func:`pcnn.data.dataset.augment`, so the batches are identical.
* ``check_every``: the host reads the finite flags of the loss and gradient back every
  ``check_every`` steps (:class:`DeferredChecks`) instead of after every step. A bad step is
  still skipped at once, on the device (the fused optimizer's ``found_inf``; the LR and EMA
  schedules advance on a device-side step counter), and counted; the counts, the warning and
  ``max_bad_steps`` are acted on at the next read. Every save, evaluation and export reads
  first and checks the weights, so no non-finite weight is ever saved or exported. ``auto``:
  50 on CUDA, 1 (today's per-step sync) on CPU and under DDP.

On a CPU every ``auto`` keeps the behaviour the CPU trainer had before, bit for bit.

It runs past 500 lines because every piece above is one ``auto`` decision with its fallback,
and :class:`FastSteps` (the step the Trainer calls) uses them all; kept together, what a
GPU run does differently from the CPU trainer reads in one file.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

from pcnn.data.augment import augment
from pcnn.model.likelihood import to_float
from pcnn.model.precision import compile_supported, cuda_compile_problem
from .config import TrainConfig, lr_at
from .objective import grad_norm, training_loss
from .state import TrainingStopped

log = logging.getLogger(__name__)

#: ``check_every`` chosen by ``auto`` on CUDA: one host read per 50 steps (a few seconds of training).
CUDA_CHECK_EVERY = 50
#: ``compile=auto`` compiles only a run with at least this many optimizer steps left. A guess
#: until a GPU measures it, from two measurements: a cold compile of the loss (forward and
#: backward) took 82 s on this project's 2-core CPU host (benchmarks/README.md; a Colab host
#: has 2 vCPUs too), and the eager step of the 1/40/5 model at batch 64 took 49 ms on an H200
#: (pcnn/notebook/gpu_speeds.json). If compiling halves the step, a step saves about 25 ms
#: and 82 s / 25 ms = about 3,300 steps repay the compile.
COMPILE_MIN_STEPS = 3000
#: The same with a warm compile cache beside the run (a second runtime): 8 s measured warm,
#: so about 300 steps.
COMPILE_MIN_STEPS_WARM = 300
#: The first this many compiled steps run under the fallback: CUDA graph trees record the
#: graph at the second or third call, so a failure can come after the first step.
COMPILE_PROBE_STEPS = 3


@dataclasses.dataclass(frozen=True)
class FastPath:
    """What a run's fast-path settings resolved to on its device (see the module docstring)."""
    compile: str          # off | default | reduce-overhead
    channels_last: bool   # NHWC model and batches
    fused: bool           # fused=True optimizer
    device_data: bool     # training split on the device, batches gathered and flipped there
    check_every: int      # host reads of the finite flags every this many steps (1 = every step)
    note: str = ""        # why compile=auto resolved to off (empty when it did not or was not auto)

    @property
    def deferred(self) -> bool:
        """Whether finite checks are read back only every ``check_every`` steps."""
        return self.check_every > 1

    def describe(self) -> str:
        note = f" ({self.note})" if self.note else ""
        return (f"compile={self.compile}{note}, channels_last={self.channels_last}, fused_optimizer={self.fused}, "
                f"device_data={self.device_data}, check_every={self.check_every}")


def _fallback(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def resolve_fast_path(cfg: TrainConfig, device, world: int = 1) -> FastPath:
    """Resolve the ``auto`` settings of ``cfg`` on ``device`` (with ``world`` DDP processes).

    Explicit settings are kept where the device supports them; where it does not (CUDA graphs
    off CUDA, compile where dynamo cannot run, a fused optimizer the device lacks) a
    ``RuntimeWarning`` says what runs instead. ``ValueError`` when ``check_every`` > 1 cannot be
    honoured (under DDP: every rank must take the same decisions at every step).
    """
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    mode, note = cfg.compile, ""
    problem = cuda_compile_problem(dev) if cuda and mode != "off" else None
    if mode == "auto":
        # DDP + CUDA graphs is not measured here; keep such runs eager.
        mode = "reduce-overhead" if cuda and world == 1 else "off"
        if mode != "off" and problem:
            mode, note, problem = "off", f"auto: {problem}", None
    if problem and mode != "off":
        _fallback(f"compile={mode}: {problem}; training eagerly")
        mode = "off"
    if mode == "reduce-overhead" and not cuda:
        _fallback(f"compile=reduce-overhead needs CUDA graphs, which {dev.type} does not have; "
                  "compiling with mode=default instead")
        mode = "default"
    if mode != "off" and not compile_supported():
        _fallback(f"torch.compile is not supported here (Python {sys.version.split()[0]}, torch "
                  f"{torch.__version__}); training eagerly")
        mode = "off"
    channels_last = cuda if cfg.channels_last == "auto" else cfg.channels_last
    device_data = cuda if cfg.device_data == "auto" else cfg.device_data
    check_every = cfg.check_every or (CUDA_CHECK_EVERY if cuda and world == 1 else 1)
    if check_every > 1 and world > 1:
        raise ValueError(f"TrainConfig.check_every={check_every} is not supported under DDP ({world} "
                         "processes): every rank must decide about every step together; use check_every=1 or 0")
    fused = (cuda or check_every > 1) if cfg.fused_optimizer == "auto" else cfg.fused_optimizer
    if fused and dev.type not in _get_fused_kernels_supported_devices():
        _fallback(f"fused_optimizer: no fused Adam kernel on {dev.type}; using the default one")
        fused = False
    if check_every > 1 and not fused:
        _fallback(f"check_every={check_every} needs the fused optimizer, which {dev.type} lacks; "
                  "checking every step")
        check_every = 1
    return FastPath(mode, bool(channels_last), bool(fused), bool(device_data), int(check_every), note)


def compile_cache_dir(workdir) -> Path:
    """The folder beside the run where inductor keeps its compiled kernels (``compile_cache/``
    in ``workdir``), so that a new runtime with the run on Drive or in Kaggle's working folder
    compiles from a warm cache."""
    return Path(workdir) / "compile_cache"


#: The cache variables' values pcnn itself set (a later run in the same process replaces them;
#: a value the user set is never replaced).
_CACHE_ENV_SET: dict = {}


def use_compile_cache(workdir) -> Optional[Path]:
    """Point inductor's (and Triton's) cache at :func:`compile_cache_dir` unless the user set
    ``TORCHINDUCTOR_CACHE_DIR``; returns the folder in use, None when the user's is kept.
    Inductor reads the variable at each use, so setting it before the first compile is enough;
    a second run in the same process (a notebook kernel) moves it to its own folder."""
    user = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if user and user != _CACHE_ENV_SET.get("TORCHINDUCTOR_CACHE_DIR"):
        return None
    cache = compile_cache_dir(workdir)
    cache.mkdir(parents=True, exist_ok=True)
    for var, path in (("TORCHINDUCTOR_CACHE_DIR", cache), ("TRITON_CACHE_DIR", cache / "triton")):
        now = os.environ.get(var)
        if now is None or now == _CACHE_ENV_SET.get(var):
            os.environ[var] = _CACHE_ENV_SET[var] = str(path.resolve())
    return cache


def cache_is_warm(workdir) -> bool:
    """Whether :func:`compile_cache_dir` already holds files (an earlier runtime's compiled
    graphs: the folder belongs to this run, and ``clear_run`` removes it with the run)."""
    cache = compile_cache_dir(workdir)
    return cache.is_dir() and any(p.is_file() for p in cache.rglob("*"))


def worth_compiling(fast: FastPath, cfg: TrainConfig, steps_left: int, warm: bool = False) -> FastPath:
    """``fast`` with compile turned off when ``compile=auto`` chose to compile but the run has
    fewer than :data:`COMPILE_MIN_STEPS` steps left (:data:`COMPILE_MIN_STEPS_WARM` with a warm
    cache): such a run spends more time compiling than compiling saves. An explicit compile
    setting is kept."""
    if cfg.compile != "auto" or fast.compile == "off":
        return fast
    need = COMPILE_MIN_STEPS_WARM if warm else COMPILE_MIN_STEPS
    if steps_left >= need:
        return fast
    cache = "a warm" if warm else "a cold"
    return dataclasses.replace(fast, compile="off", note=(
        f"auto: {steps_left:,} steps left, fewer than the {need:,} estimated to repay {cache} compile; "
        "set compile=reduce-overhead to compile anyway (sm_70 and newer)"))


def make_optimizer(cfg: TrainConfig, params, fast: FastPath, device) -> torch.optim.Optimizer:
    """Adam or AdamW as ``cfg`` says; fused when ``fast.fused``. With deferred checks the learning
    rate is a device tensor (rewritten on the device from the device's step counter)."""
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    lr = cfg.lr
    if fast.deferred:
        lr = torch.tensor(cfg.lr, dtype=torch.float32, device=device)
    kw = {"fused": True} if fast.fused else {}
    return opt_cls(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **kw)


class LossFunction:
    """``training_loss(net, x, y, mc, disc_weight)``, eager or compiled by ``mode``; one per run.

    The first compiled call is timed and logged once (compilation happens there). The trainer
    runs the first :data:`COMPILE_PROBE_STEPS` compiled steps under a fallback
    (:meth:`FastSteps._loss_and_grads`): a failure anywhere in forward or backward (the
    backward compiles during the first backward; CUDA graphs are recorded at a later call),
    or a non-finite loss or gradient that the eager loss does not give on the same batch,
    makes :meth:`fall_back` switch to the eager loss for the rest of the run with one
    warning. Shapes never change during a run (the trainer drops the last partial batch, and
    evaluation runs the uncompiled model), so it compiles once.
    """

    def __init__(self, net, mc, disc_weight: float, mode: str = "off", announce: bool = True, probe: bool = True):
        self.mode, self.announce = mode, announce
        self.compile_seconds: Optional[float] = None

        def loss(x, y):
            return training_loss(net, x, y, mc, disc_weight)
        self.eager = loss
        self.fn = loss if mode == "off" else torch.compile(loss, mode=mode)
        self._first = mode != "off"
        # Under DDP every rank must take the same decisions; a per-rank fallback would desync
        # the collectives, so there a compile error is raised (probe=False).
        self.probe_left = COMPILE_PROBE_STEPS if mode != "off" and probe else 0
        self.fallback_reason: Optional[str] = None

    @property
    def probing(self) -> bool:
        """Whether the current step still runs under the compile fallback."""
        return self.mode != "off" and self.probe_left > 0

    def fall_back(self, why: str) -> None:
        """Use the eager loss for the rest of the run; one ``RuntimeWarning`` says why. The
        compiled function is dropped (and with CUDA graphs their memory pool, which a 16 GB T4
        needs back)."""
        self.fallback_reason = f"torch.compile(mode={self.mode}) {why}"
        _fallback(f"{self.fallback_reason}; training eagerly for the rest of the run")
        if self.mode == "reduce-overhead":
            try:
                torch._dynamo.reset()  # frees the CUDA graph trees' memory pool with the compiled graphs
            except Exception:  # nothing to free if dynamo never ran
                pass
        self.fn, self.mode, self.probe_left = self.eager, "off", 0

    def __call__(self, x, y):
        if self.mode == "reduce-overhead":  # a new iteration: CUDA graph trees may reuse the last one's memory
            torch.compiler.cudagraph_mark_step_begin()
        if not self._first:
            return self.fn(x, y)
        self._first = False
        t0 = time.perf_counter()
        out = self.fn(x, y)
        self.compile_seconds = time.perf_counter() - t0
        if self.announce:
            log.info(f"compile: torch.compile(mode={self.mode}) of the training loss took {self.compile_seconds:.1f} s "
                     "(first forward; the backward compiles during the first backward)")
        return out


def _device_rng(device) -> tuple:
    """The global CPU RNG state, and the device's when it is a GPU (dropout draws there)."""
    dev = torch.device(device)
    return torch.get_rng_state(), (torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None)


def _set_device_rng(device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], torch.device(device))


def first_line(e: BaseException) -> str:
    """``"TypeName: first line of the message"`` (300 characters at most), for a one-line warning."""
    return f"{type(e).__name__}: " + (str(e).strip().splitlines() or [""])[0][:300]


def to_device_async(t: torch.Tensor, device) -> torch.Tensor:
    """``t`` on ``device`` without a host sync (pinned memory, non-blocking copy) when that is a GPU."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return t
    if dev.type == "cuda":
        t = t.pin_memory()
    return t.to(dev, non_blocking=True)


class DeviceData:
    """The uint8 training split on the device; a batch is gathered (and flipped) there.

    The permutation stays on the host (it is part of ``last.pt``) and each batch's indices and
    flip draws travel as a few hundred bytes. Flips draw ``torch.rand(B, generator=gen)`` exactly
    as :func:`pcnn.data.dataset.augment` does, so the batches equal those of the host path bit for bit;
    other augmentations run :func:`pcnn.data.dataset.augment` on the device batch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, device):
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)

    def batch(self, idx: torch.Tensor, aug, gen: torch.Generator, lo: int, b: int, channels_last: bool) -> tuple:
        """This rank's slice ``[lo, lo + b)`` of the global batch ``idx`` (host int64): (x float, y)."""
        idx = to_device_async(idx, self.device)
        flip_only = aug.hflip and dataclasses.replace(aug, hflip=False).is_identity
        if flip_only:
            flip = to_device_async(torch.rand(len(idx), generator=gen) < 0.5, self.device)[lo:lo + b]
            imgs = self.images[idx[lo:lo + b]]
            imgs = torch.where(flip.view(-1, 1, 1, 1), imgs.flip(-1), imgs)
        elif aug.is_identity:
            imgs = self.images[idx[lo:lo + b]]
        else:
            imgs = augment(self.images[idx], aug, gen)[lo:lo + b]
        x = to_float(imgs)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[idx[lo:lo + b]]


class DeferredChecks:
    """Device-side counters of the deferred finite checks (``check_every`` > 1).

    ``step`` (successful updates) and ``bad_in_row`` persist; the rest are sums since the last
    :meth:`read`: bits/dim of the counted steps, good and bad (non-finite, counted) steps, and
    the longest run of bad steps. Everything is float64 on the device (exact for counts).
    """

    NAMES = ("step", "bad_in_row", "bpd_sum", "good", "bad", "max_in_row")

    def __init__(self, step: int, bad_in_row: int, device):
        self.t = torch.zeros(len(self.NAMES), dtype=torch.float64, device=device)
        self.t[0], self.t[1], self.t[5] = step, bad_in_row, bad_in_row
        self.pending = 0  # steps recorded since the last read

    def record(self, skipped: torch.Tensor, counted_bad: torch.Tensor, bpd: torch.Tensor) -> None:
        """One step: ``skipped`` (no update), ``counted_bad`` (non-finite, counted) as device bools."""
        s, c = skipped.to(torch.float64), counted_bad.to(torch.float64)
        t = self.t
        t[0] += 1 - s
        t[1] = (t[1] + 1) * c
        t[2] += torch.where(counted_bad, 0.0, bpd.detach().to(torch.float64))
        t[3] += 1 - c
        t[4] += c
        t[5] = torch.maximum(t[5], t[1])
        self.pending += 1

    def read(self) -> dict:
        """Read everything back (the one host sync), then start a new window."""
        vals = dict(zip(self.NAMES, self.t.tolist()))
        self.t[2:5].zero_()
        self.t[5] = self.t[1]
        n, self.pending = self.pending, 0
        return {**vals, "steps": n}


class FastSteps:
    """The trainer's fast-path methods (mixed into :class:`pcnn.train.loop.Trainer`, which owns
    ``cfg``, ``fast``, ``optimizer``, ``scaler``, ``params``, the EMA tensors and the counters)."""

    checks: Optional[DeferredChecks] = None

    def _save(self) -> None:
        self._read_checks()  # last.pt holds the true counters, and the weights are checked after the read
        super()._save()

    def _set_lr(self) -> None:
        """The learning rate of the next step from ``self.step`` (a device tensor with deferred checks)."""
        lr = lr_at(self.cfg, self.step)
        for g in self.optimizer.param_groups:
            if self.fast.deferred:
                if not torch.is_tensor(g["lr"]) or g["lr"].device != self.dist.device:
                    g["lr"] = torch.tensor(0.0, dtype=torch.float32, device=self.dist.device)
                g["lr"].fill_(lr)
            else:
                g["lr"] = lr

    def _probe_step(self, step, x: torch.Tensor, y: torch.Tensor):
        """``step(x, y)`` (a whole optimizer step) while the loss is compiled and still probed: an
        exception anywhere in it that :meth:`_loss_and_grads` did not already handle (the
        optimizer step on the gradients the compiled backward wrote, CUDA graph bookkeeping)
        switches the run to eager and takes the step again. An exception once the loss is eager
        is a real error and is raised. The retry starts from the random state the try started from."""
        rng = _device_rng(self.dist.device)
        try:
            return step(x, y)
        except Exception as e:
            if self.loss_fn.mode == "off":
                raise
            why = f"failed during its first steps ({first_line(e)})"
        # outside the except block, so the failed try's tensors are released before the retry
        self.loss_fn.fall_back(why)
        _set_device_rng(self.dist.device, rng)
        if self.scaler is not None:  # the failed try may have unscaled already; start the step afresh
            self.scaler._per_optimizer_states.pop(id(self.optimizer), None)  # private: no public reset
        for name in ("grad_scale", "found_inf"):
            if hasattr(self.optimizer, name):
                delattr(self.optimizer, name)
        return step(x, y)

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor, fn=None):
        """Forward under the run's autocast and backward (scaled when fp16) into fresh gradients;
        returns ``(loss, bpd)``. ``fn``: the loss to run (default the run's, maybe compiled)."""
        dev = self.dist.device
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            loss, bpd = (fn or self.loss_fn)(x, y)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return loss, bpd

    def _step_ok(self, loss: torch.Tensor) -> bool:
        """Whether a step's loss, and without a grad scaler its gradient, is finite (a host sync).
        With fp16's scaler the scaled gradient overflowing is the scaler's normal business in
        the first steps (it lowers its scale), not a sign of a broken compile."""
        ok = torch.isfinite(loss.detach())
        if self.scaler is None:
            ok = ok & torch.isfinite(grad_norm(self.params))
        return bool(ok)

    def _loss_and_grads(self, x: torch.Tensor, y: torch.Tensor):
        """:meth:`_forward_backward`, with the first compiled steps under the compile fallback.

        While :attr:`LossFunction.probing`: an exception in the compiled forward or backward
        (compilation, CUDA graph capture) reruns the step eagerly and keeps the run eager; a
        non-finite loss (or, without fp16's scaler, gradient) is checked against the eager loss on
        the same batch (one extra eager step), and if eager is finite the run keeps the eager
        result and stays eager (pytorch#169082 reports silent NaNs under reduce-overhead). The
        eager re-run starts from the random state the compiled try started from, so it draws the
        dropout masks an eager run would have drawn. The optimizer runs after this
        (:meth:`_probe_step` covers it)."""
        lf = self.loss_fn
        if not lf.probing:
            return self._forward_backward(x, y)
        rng = _device_rng(self.dist.device)
        failure = None
        try:
            loss, bpd = self._forward_backward(x, y)
        except Exception as e:  # the eager loss computes the same thing
            failure = f"failed ({first_line(e)})"
        if failure is None:   # outside the except block: the failed graph's tensors are released first
            lf.probe_left -= 1
            if self._step_ok(loss):
                return loss, bpd
            del loss, bpd
        _set_device_rng(self.dist.device, rng)
        e_loss, e_bpd = self._forward_backward(x, y, lf.eager)
        if failure is not None:
            lf.fall_back(failure)
        elif self._step_ok(e_loss):
            lf.fall_back("gave a non-finite loss or gradient where the eager loss did not on the same batch")
        return e_loss, e_bpd  # both non-finite: the step is skipped as any bad step is

    def _deferred_step(self, x: torch.Tensor, y: torch.Tensor):
        """One optimizer step with no host sync: a non-finite loss or gradient skips the update on
        the device; the counters are read back by :meth:`_read_checks`."""
        cfg, dev = self.cfg, self.dist.device
        if self.checks is None:
            self.checks = DeferredChecks(self.step, self.bad_in_row, dev)
        loss, bpd = self._loss_and_grads(x, y)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # records the overflow flag update() needs
        gnorm = (torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip) if cfg.grad_clip > 0
                 else grad_norm(self.params))
        loss_bad = ~torch.isfinite(loss.detach())
        grad_bad = ~torch.isfinite(gnorm.to(dev))
        skipped = loss_bad | grad_bad
        # fp16: a gradient overflow is the scaler's normal business (scale lowered, not counted).
        counted = loss_bad if self.scaler is not None else skipped
        self.optimizer.grad_scale, self.optimizer.found_inf = None, skipped.to(torch.float32)
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.grad_scale, self.optimizer.found_inf
        if self.scaler is not None:
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        k = self.checks.t[0]  # successful updates before this one
        if self.ema_model is not None:
            decay = torch.clamp((1 + k) / (10 + k), max=cfg.ema) if cfg.ema_warmup else torch.full_like(k, cfg.ema)
            w = ((1 - decay) * (~skipped)).to(torch.float32)
            diffs = torch._foreach_sub(self._raw_tensors, self._ema_tensors)
            torch._foreach_mul_(diffs, w)
            torch._foreach_add_(self._ema_tensors, diffs)
        self.checks.record(skipped, counted, bpd)
        k = self.checks.t[0]
        lr = cfg.lr * torch.pow(torch.full_like(k, cfg.lr_decay), k)
        if cfg.warmup_steps > 0:
            lr = lr * torch.clamp((k + 1) / cfg.warmup_steps, max=1.0)
        for g in self.optimizer.param_groups:
            g["lr"].copy_(lr)
        return None, False, self._checkpoint_due()

    def _read_checks(self) -> Optional[float]:
        """Bring the host's counters up to date from the device (a no-op without deferred checks
        or when nothing is pending); warn about and act on bad steps as the per-step path does.
        Returns the mean bits/dim of the window's counted steps (None when there were none)."""
        if self.checks is None or self.checks.pending == 0:
            return None
        v = self.checks.read()
        self.step = int(v["step"])
        self.bad_in_row = int(v["bad_in_row"])
        good, bad = int(v["good"]), int(v["bad"])
        a = self.epoch_sums
        a["bpd_sum"] += v["bpd_sum"]
        a["good"] += good
        a["bad"] += bad
        self.bad_total += bad
        if bad:
            first = self.iteration - v["steps"] + 1
            if self.dist.main:
                warnings.warn(f"{bad} non-finite loss or gradient step(s) among batches {first}-{self.iteration} "
                              f"(epoch {self.epoch + 1}): skipped on the device ({self.bad_in_row} in a row now)")
            self._check_finite("the run cannot recover")
            if v["max_in_row"] >= self.cfg.max_bad_steps:
                raise TrainingStopped(
                    f"training stopped: {int(v['max_in_row'])} non-finite steps in a row (NaN/inf loss or "
                    f"gradient) by batch {self.iteration}, epoch {self.epoch + 1}; max_bad_steps="
                    f"{self.cfg.max_bad_steps} (read every check_every={self.fast.check_every} steps). Lower lr, "
                    f"set grad_clip, or check the data; {self._last_good_note()}")
        bpd = v["bpd_sum"] / good if good else None
        if bpd is not None:
            self.loggers.step(self.step, bpd, lr_at(self.cfg, self.step))
        return bpd
