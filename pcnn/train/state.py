"""The run state in ``last.pt``: everything an exact resume needs (weights, EMA, optimizer,
grad scaler, counters, the epoch's permutation and position, every RNG state), written
atomically and read back with ``torch.load(weights_only=True)``; the precision a run
started in is kept on resume on the same kind of device; non-finite weights are never saved.

A run resumes on another device too (started on a CPU runtime, continued on a GPU, or back):
the optimizer's device options (``fused``, ``foreach``, ``capturable``) are those of the device
it resumes on, not those saved (:func:`device_optimizer_state`), the precision is the new
device's choice, and the fp16 gradient scaler is created or dropped with it. Such a resume is
not an exact continuation, and says so."""
from __future__ import annotations

import random
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from pcnn.model.checkpoint import CheckpointError, atomic_write, nonfinite_tensors, read_tensor_file
from pcnn.model.precision import AmpChoice, cpu_native_bf16, resolve_amp
from .config import TrainConfig

TRAIN_STATE_FORMAT = "pcnn-train-v1"


class TrainingStopped(RuntimeError):
    """The trainer stopped a run that cannot go on (non-finite weights, too many non-finite
    steps); the message names the last good checkpoint, or says that there is none."""


def where(iteration: int, epoch: int, pos: int) -> str:
    """``"batch 12, epoch 3"`` / ``"batch 12, end of epoch 2"`` for a (iteration, epoch, pos) position."""
    return f"batch {iteration}, " + (f"end of epoch {epoch}" if pos == 0 and epoch > 0 else f"epoch {epoch + 1}")


def rng_state() -> dict:
    """All global RNG states as tensors / numbers / strings (for weights_only loading)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
    }


def set_rng_state(s: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def legacy_amp(mode: str, device: torch.device) -> AmpChoice:
    """What a run state written before precision choices were stored ran in
    (``auto`` meant fp32 on every CPU then), so such a run resumes unchanged."""
    if mode == "auto" and device.type != "cuda":
        return AmpChoice(mode, "fp32", "run started when amp=auto meant fp32 on CPU")
    if mode == "bf16" and device.type == "cpu":
        return AmpChoice(mode, "bf16", "run started when amp=bf16 always ran bf16 on CPU")
    return resolve_amp(mode, device)


#: Optimizer options that belong to the device a run runs on, not to its state.
DEVICE_OPTIONS = ("fused", "foreach", "capturable")


def device_optimizer_state(saved: dict, optimizer: torch.optim.Optimizer) -> dict:
    """``saved`` (an optimizer ``state_dict``) with each group's device options and learning-rate
    type taken from ``optimizer``, the one built for this device, before loading.

    ``Optimizer.load_state_dict`` restores the saved groups' ``fused`` flag and places the
    ``step`` counters by it; a state written on a CPU (``fused=None``, steps on the host)
    loaded into a fused CUDA optimizer would make its deferred step fail (``found_inf`` given
    to an unfused Adam). A tensor learning rate (deferred checks on a GPU) becomes a number;
    the trainer sets each step's rate afterwards either way."""
    groups = []
    for old, cur in zip(saved["param_groups"], optimizer.param_groups):
        g = dict(old)
        for k in DEVICE_OPTIONS:
            if k in cur or k in g:
                g[k] = cur.get(k)
        if torch.is_tensor(g.get("lr")):
            g["lr"] = float(g["lr"])
        groups.append(g)
    return {**saved, "param_groups": groups}


class RunState:
    """Save / restore / precision part of the trainer (:class:`pcnn.train.loop.Trainer`), which
    owns the attributes these methods read: ``cfg``, ``workdir``, ``dist``, ``model``,
    ``ema_model``, ``optimizer``, ``scaler``, the counters and ``history``."""

    def _state(self) -> dict:
        rng = self.dist.gather_objects(rng_state())  # collective: every rank calls _save
        return {
            "format": TRAIN_STATE_FORMAT,
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema_model.state_dict() if self.ema_model is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step, "iteration": self.iteration, "epoch": self.epoch, "pos": self.pos,
            "perm": self.perm, "data_generator": self.gen.get_state(),
            "bad_in_row": self.bad_in_row, "bad_total": self.bad_total, "epoch_acc": dict(self.epoch_sums),
            "history": self.history, "best_objective": self.best_objective,
            "world_size": self.dist.world, "rng": rng,
            "runtime": self._runtime(),
            "amp": self.amp.to_dict(),
            "amp_segments": self.amp_segments,
        }

    def _runtime(self) -> dict:
        """What a bitwise continuation needs unchanged besides the state: threads, device, precision."""
        precision = str(self.amp_dtype or torch.float32).removeprefix("torch.")
        return {"threads": torch.get_num_threads(), "device": self.dist.device.type, "precision": precision}

    def _last_good_note(self) -> str:
        last = self.workdir / "last.pt"
        if self.last_good is None:
            return f"no checkpoint was written by this run (no {last}), so there is nothing to resume from"
        return f"{last} holds the last good checkpoint ({where(*self.last_good)}); --resume continues from it"

    def _check_finite(self, consequence: str) -> None:
        """Raise :class:`TrainingStopped` if the raw or EMA weights hold NaN or inf."""
        bad = nonfinite_tensors(self.model.state_dict())
        if self.ema_model is not None:
            bad += [f"ema {k}" for k in nonfinite_tensors(self.ema_model.state_dict())]
        if bad:
            raise TrainingStopped(
                f"training stopped at batch {self.iteration} (epoch {self.epoch + 1}): the weights became "
                f"non-finite (NaN or inf in {len(bad)} tensors, e.g. {bad[0]}) and {consequence}; lower lr "
                f"(now {self.cfg.lr}) or set grad_clip; {self._last_good_note()}")

    def _save(self) -> None:
        self._check_finite("they were not checkpointed")
        state = self._state()
        if self.dist.main:
            atomic_write(self.workdir / "last.pt", lambda tmp: torch.save(state, tmp))
        self.last_good = (self.iteration, self.epoch, self.pos)
        self.last_save = time.monotonic()

    def _load(self, path: Path) -> None:
        fresh = "to start afresh there instead, run without --resume and with --overwrite"
        try:
            s = read_tensor_file(path)
        except CheckpointError as e:
            raise CheckpointError(f"cannot resume: {e}; {fresh}") from e
        if not isinstance(s, dict) or s.get("format") != TRAIN_STATE_FORMAT:
            raise CheckpointError(f"{path} is not a pcnn training state (format {TRAIN_STATE_FORMAT!r}); {fresh}")
        bad = nonfinite_tensors(s.get("model") or {}) + nonfinite_tensors(s.get("ema") or {})
        if bad:
            raise CheckpointError(f"{path} holds non-finite weights (NaN or inf in {len(bad)} tensors, e.g. "
                                  f"{bad[0]}): that run had diverged when it was saved, so it cannot be "
                                  f"resumed; {fresh} (with a lower lr or a grad_clip)")
        saved = TrainConfig.from_dict(s["config"])
        if saved.model != self.cfg.model:
            raise CheckpointError(f"{path} was trained with model {saved.model}, not {self.cfg.model}")
        changed = sorted(k for k, v in self.cfg.to_dict().items() if saved.to_dict().get(k) != v)
        if changed and self.dist.main:
            warnings.warn(f"resuming with changed settings {changed}; the run is no longer an exact continuation"
                          if set(changed) - {"epochs", "max_steps", "max_minutes", "progress", "tensorboard", "wandb",
                                             "checkpoint_minutes", "checkpoint_every_steps", "data_dir"}
                          else f"resuming with changed settings {changed}")
        self.model.load_state_dict(s["model"])
        if self.ema_model is not None:
            if s["ema"] is not None:
                self.ema_model.load_state_dict(s["ema"])
            else:
                self.ema_model.load_state_dict(self.model.state_dict())
        self.optimizer.load_state_dict(device_optimizer_state(s["optimizer"], self.optimizer))
        saved_precision = self._resume_amp(s, path)
        if self.scaler is not None and s["scaler"] is not None:
            self.scaler.load_state_dict(s["scaler"])
        for k in ("step", "iteration", "epoch", "pos", "bad_in_row", "bad_total"):
            setattr(self, k, s[k])
        # What the run trained in, step by step: a run resumed on another machine may change
        # precision (a bf16 run continued on a CPU without bf16), and its results must say so.
        self.amp_segments = [dict(seg) for seg in s.get("amp_segments") or [{"step": 0, "precision": saved_precision}]]
        if self.amp_segments[-1]["precision"] != self.amp.precision:
            self.amp_segments.append({"step": self.step, "precision": self.amp.precision})
        # State written before ship rule v2 kept the best validation bits/dim, which is the
        # objective of a likelihood-only run.
        self.best_objective = s["best_objective"] if "best_objective" in s else s["best_bpd"]
        self.last_good = (self.iteration, self.epoch, self.pos)
        self._warn_runtime_change(path, s.get("runtime"))
        self.perm, self.epoch_sums, self.history = s["perm"], dict(s["epoch_acc"]), list(s["history"])
        self.gen.set_state(s["data_generator"])
        rng = s["rng"]
        if len(rng) == self.dist.world:
            set_rng_state(rng[self.dist.rank])
        else:
            warnings.warn(f"{path} was written by {len(rng)} process(es), this run has {self.dist.world}: "
                          "data order is kept, dropout RNG streams are reseeded")
            torch.manual_seed(self.cfg.seed * 1_000_003 + self.dist.rank + 1 + self.iteration)

    def _warn_runtime_change(self, path: Path, saved: Optional[dict]) -> None:
        """Warn when a resume runs with another CPU thread count or device than the state was
        written with (precision changes are handled by :meth:`_resume_amp`)."""
        if not saved or not self.dist.main:  # states written before pcnn recorded the runtime
            return
        now = self._runtime()
        if now["device"] == "cpu" and saved.get("threads") != now["threads"]:
            n = saved.get("threads")
            warnings.warn(f"{path} was written with {n} CPU thread{'s' if n != 1 else ''}, this run uses "
                          f"{now['threads']}: CPU sums then differ in the last bits, so the run is no longer a "
                          f"bitwise continuation; set OMP_NUM_THREADS={n} (or torch.set_num_threads({n})) to "
                          "continue exactly")
        if saved.get("device") != now["device"]:
            warnings.warn(f"{path} was written on device {saved.get('device')}, this run uses {now['device']}: "
                          "the run is no longer an exact continuation")

    def _set_amp(self, choice: AmpChoice) -> None:
        self.amp, self.amp_dtype = choice, choice.dtype
        self.scaler = torch.amp.GradScaler(self.dist.device.type) if choice.precision == "fp16" else None

    def _resume_amp(self, s: dict, path: Path) -> str:
        """Keep the precision the run was trained in when ``amp`` is unchanged and the run resumes
        on the same kind of device, even if this machine would choose otherwise (``auto`` on
        another CPU): a run changes precision only when its ``amp`` setting is changed. On another
        kind of device (a CPU run continued on a GPU, or back) the device's own choice is used:
        the saved one may not run there (fp16 on a CPU) or be emulated (bf16 on a T4, or on a
        CPU without bf16 instructions). Returns the precision the state was trained in."""
        dev = self.dist.device
        if s.get("amp"):
            saved = AmpChoice.from_dict(s["amp"])
        else:
            saved = legacy_amp(TrainConfig.from_dict(s["config"]).amp, dev)
        if saved.mode != self.cfg.amp or saved.precision == self.amp.precision:
            return saved.precision
        saved_device = (s.get("runtime") or {}).get("device")
        if saved_device is not None and saved_device != dev.type:
            if self.dist.main:
                warnings.warn(f"{path} was trained in {saved.precision} on {saved_device}; continuing on {dev.type} "
                              f"in {self.amp.precision} ({self.amp.reason})")
            return saved.precision
        if saved.precision == "fp16" and dev.type == "cpu":
            if self.dist.main:
                warnings.warn(f"{path} was trained in fp16 ({saved.reason}), which this CPU cannot run; "
                              f"continuing in {self.amp.precision} ({self.amp.reason})")
            return saved.precision
        if dev.type == "cpu" and saved.precision == "bf16" and not cpu_native_bf16():
            if self.dist.main:  # another CPU model: bf16 would be emulated here, many times slower
                warnings.warn(f"{path} was trained in bf16 ({saved.reason}), which this CPU only emulates; "
                              f"continuing in {self.amp.precision} ({self.amp.reason})")
            return saved.precision
        if dev.type == "cuda" and saved.precision == "bf16" and self.amp.precision == "fp16":
            if self.dist.main:  # another GPU model: bf16 would be emulated here
                warnings.warn(f"{path} was trained in bf16 ({saved.reason}), which this GPU only emulates; "
                              f"continuing in fp16 ({self.amp.reason})")
            return saved.precision
        if self.dist.main:
            change = ("set amp explicitly to change it" if self.cfg.amp == "auto" else
                      f"change amp from {self.cfg.amp!r} to change it, e.g. 'auto' for this machine's choice")
            warnings.warn(f"amp={self.cfg.amp} would choose {self.amp.precision} here ({self.amp.reason}), but "
                          f"{path} was trained in {saved.precision} ({saved.reason}); keeping {saved.precision} "
                          f"so the run continues as it started ({change})")
        self._set_amp(AmpChoice(saved.mode, saved.precision, f"kept from the run state: {saved.reason}"))
        return saved.precision
