"""The training loop: :func:`train` and the :class:`Trainer` it runs.

``Trainer.run`` reads top to bottom: for each epoch, :meth:`Trainer._run_epoch` takes
optimizer steps (:meth:`Trainer._train_step`, skipping non-finite ones in
:meth:`Trainer._on_bad_step`) until the epoch, ``max_steps``, ``max_minutes`` or a
SIGINT/SIGTERM (:mod:`pcnn.train.stop`) ends it, then :meth:`Trainer._end_epoch` evaluates,
exports and logs. Saving and resuming live in
:class:`pcnn.train.state.RunState`, the loss in :mod:`pcnn.train.objective`. It runs to about
500 lines because it is one class whose methods share the run's state (the epoch's
position, the EMA, the exports), so the loop reads top to bottom in one place.
"""
from __future__ import annotations

import copy
import logging
import math
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from pcnn.model.checkpoint import CheckpointError, DiskFullError, atomic_write
from pcnn.model.checkpoint import load as load_export
from pcnn.model.checkpoint import save as save_model
from pcnn.data.augment import augment
from pcnn.data.dataset import load_split
from pcnn.model.likelihood import to_float
from pcnn.model.network import PixelCNNpp
from pcnn.model.precision import resolve_amp
from .workdir import WorkdirError, WorkdirLock, claim_for_run
from .accel import DeviceData, FastSteps, LossFunction, cache_is_warm, make_optimizer, resolve_fast_path
from .accel import use_compile_cache, worth_compiling
from .callbacks import EpochEnd, check_callbacks, run_callbacks
from .config import TrainConfig, ema_decay_at, exports_ema, lr_at
from .objective import evaluate, grad_norm, validation_objective
from .distributed import DistContext
from .inputs import as_training_data
from .metrics import METRIC_COLUMNS, MetricLoggers, write_metric_files
from .state import RunState, TrainingStopped, where
from .stop import StopOnSignal

log = logging.getLogger(__name__)


def _kept_note(workdir: Path, trainer) -> str:
    """What a full disk left intact, for the DiskFullError message."""
    last = workdir / "last.pt"
    good = getattr(trainer, "last_good", None)
    if good is not None:
        kept = f"{last} still holds the last checkpoint ({where(*good)})"
    elif last.exists():
        kept = f"{last} is intact"
    else:
        kept = "no checkpoint of this run had been written yet"
    return (f"{kept}, and every file written before is intact (each is replaced atomically); free some "
            "space, then rerun" + (" with --resume" if last.exists() else ""))


def train(config, workdir, train_data=None, val_data=None, resume: bool = False,
          progress: bool = True, overwrite: bool = False, callbacks=None) -> list:
    """Train a conditional PixelCNN++ and return the per-epoch history (list of metric dicts).

    ``config``: a :class:`TrainConfig` or its dict. ``train_data`` / ``val_data``: a
    :class:`pcnn.data.dataset.Split` or an ``(images_uint8, labels)`` pair; None loads the split
    from ``config.data_dir``. ``resume=True`` continues from ``workdir/last.pt`` exactly.
    The run holds ``workdir/train.lock`` and never replaces an earlier run's results
    unless ``overwrite=True`` (:mod:`pcnn.train.workdir`); a full disk raises
    :class:`pcnn.model.checkpoint.DiskFullError` saying what was kept.

    ``best.safetensors`` is chosen by the validation value of the run's own objective
    (bits/dim, plus ``disc_weight`` x the mean ``-log p(y|x)`` for a discriminative run),
    never accuracy: the best of many noisy accuracy estimates is biased upwards, the
    objective is what the run minimises and is smooth. Non-finite steps are skipped and counted (``max_bad_steps`` in
    a row
    stop the run, :class:`TrainingStopped`); non-finite weights are never saved. Under
    torchrun ``batch_size`` is global and every rank takes its slice of the same
    permutation, so N processes follow the single-process run; rank 0 evaluates and
    writes. The last incomplete batch of every epoch is dropped.

    ``callbacks``: a callable or a sequence of them, each called with a
    :class:`pcnn.train.callbacks.EpochEnd` after every whole epoch (on rank 0, after the row is
    logged and ``last.pt`` saved); one returning ``True`` stops the run there. A face that
    trains epoch by epoch (notebook 02's ``train_live``) passes its live plot and samples here
    and calls ``train`` once per run, so the loss is compiled once.

    The trainer logs (``logging``, logger ``pcnn.train``): its precision, fast-path and compile
    lines are INFO, problems WARNING. The CLI and the notebooks show them; a script shows them
    with ``pcnn.logs.show()``.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    callbacks = check_callbacks(callbacks)
    workdir = Path(workdir)
    dist_ctx = DistContext()
    lock = trainer = None
    try:
        err = None
        if dist_ctx.main:  # rank 0 owns the workdir; the others learn whether it may be used
            try:
                lock = WorkdirLock(workdir).acquire()
                claim_for_run(workdir, resume, overwrite)
            except WorkdirError as e:
                err = e
        if dist_ctx.world > 1:
            first = dist_ctx.gather_objects(None if err is None else str(err))[0]
            if err is None and first is not None:
                raise WorkdirError(first)
        if err is not None:
            raise err
        trainer = Trainer(cfg, workdir, dist_ctx, train_data, val_data, resume, progress, callbacks)
        return trainer.run()
    except DiskFullError as e:
        raise DiskFullError(e.path, kept=_kept_note(workdir, trainer)) from e
    finally:
        if lock is not None:
            lock.release()
        dist_ctx.close()


class Trainer(FastSteps, RunState):
    """One training run in ``workdir``: built by :func:`train`, which holds the workdir lock."""

    def __init__(self, cfg: TrainConfig, workdir: Path, dist_ctx: DistContext, train_data, val_data, resume, progress,
                 callbacks=()):
        self.cfg, self.workdir, self.dist = cfg, workdir, dist_ctx
        self.callbacks = tuple(callbacks) if dist_ctx.main else ()
        self.progress = progress and dist_ctx.main
        if cfg.batch_size % dist_ctx.world:
            raise ValueError(f"batch_size {cfg.batch_size} (global) is not divisible by the world size "
                             f"{dist_ctx.world}")
        self.local_batch = cfg.batch_size // dist_ctx.world
        self.fast = resolve_fast_path(cfg, dist_ctx.device, dist_ctx.world)  # pcnn.train.accel
        if dist_ctx.main:
            self._clear_temp_files()
        self._load_data(train_data, val_data)
        self._build_model()
        self._build_optimizer()
        self._reset_counters()
        last = workdir / "last.pt"  # train() took the lock and checked for earlier results
        if resume and last.exists():
            self._load(last)
        elif resume and dist_ctx.main:
            log.warning(f"note: no {last} to resume from; starting a fresh run")
        self._set_lr()
        self._build_loss()
        if dist_ctx.main:
            log.info(f"precision: {self.amp.precision} (amp={cfg.amp}: {self.amp.reason})")
            log.info(f"fast path: {self.fast.describe()}")
            atomic_write(workdir / "config.json", lambda tmp: Path(tmp).write_text(cfg.to_json() + "\n"))
            write_metric_files(workdir, self.history)
        self.loggers = MetricLoggers(cfg, workdir, dist_ctx.main)
        self.stop = StopOnSignal(announce=dist_ctx.main)  # armed only while run() runs
        dist_ctx.barrier()

    # ---------------------------------------------------------------- set-up
    def _clear_temp_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for stale in self.workdir.glob(".*.safetensors.tmp*"):  # left by a kill during atomic_write
            stale.unlink(missing_ok=True)
        for stale in self.workdir.glob(".last.pt.tmp*"):
            stale.unlink(missing_ok=True)

    def _load_data(self, train_data, val_data) -> None:
        cfg, mc = self.cfg, self.cfg.model
        if train_data is None:
            train_data = load_split("train", cfg.data_dir, size=mc.image_size, show_progress=self.progress)
        if val_data is None:
            val_data = load_split("validation", cfg.data_dir, size=mc.image_size, show_progress=self.progress)
        self.train_images, self.train_labels = as_training_data(train_data, "train", mc)
        val_images, val_labels = as_training_data(val_data, "validation", mc)
        if cfg.val_subset and cfg.val_subset < len(val_labels):
            g = torch.Generator().manual_seed(cfg.seed + 7919)
            idx = torch.randperm(len(val_labels), generator=g)[:cfg.val_subset].sort().values
            val_images, val_labels = val_images[idx], val_labels[idx]
        self.val_x, self.val_y = to_float(val_images), val_labels
        self.steps_per_epoch = len(self.train_labels) // cfg.batch_size
        self.device_data = DeviceData(self.train_images, self.train_labels, self.dist.device) \
            if self.fast.device_data else None
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training split has {len(self.train_labels)} images, fewer than one batch "
                             f"({cfg.batch_size})")

    def _build_model(self) -> None:
        """Model (identical on every rank: same seed), optional init_from weights, EMA shadow."""
        cfg, mc, dev = self.cfg, self.cfg.model, self.dist.device
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2 ** 32)
        random.seed(cfg.seed)
        self.model = PixelCNNpp(mc).to(dev)
        if cfg.init_from is not None:  # fine-tuning: the export's weights replace the fresh init
            # A fine-tune may change dropout (e.g. lower it once train and validation
            # bits/dim show the model underfits); every other field must match.
            src = load_export(cfg.init_from)
            if not src.config.same_parameters(mc):
                raise CheckpointError(f"init_from {cfg.init_from} is for model config {src.config}, "
                                      f"which differs from this run's {mc} in more than dropout")
            self.model.load_state_dict(src.state_dict())
        if self.fast.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        torch.manual_seed(cfg.seed * 1_000_003 + self.dist.rank + 1)  # dropout: one stream per rank
        self.ema_model = None
        if cfg.ema > 0:
            self.ema_model = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if self.ema_model is not None:  # shadow of every float parameter and buffer (updated in place)
            pairs = [(e, r) for e, r in zip(self.ema_model.state_dict().values(), self.model.state_dict().values())
                     if r.is_floating_point()]
            self._ema_tensors, self._raw_tensors = [e for e, _ in pairs], [r for _, r in pairs]

    def _build_optimizer(self) -> None:
        """Optimizer, precision (grad scaler for fp16), the data generator, DDP and the (compiled) loss."""
        cfg, dev = self.cfg, self.dist.device
        self.optimizer = make_optimizer(cfg, self.params, self.fast, dev)
        self._set_amp(resolve_amp(cfg.amp, dev))
        self.amp_segments = [{"step": 0, "precision": self.amp.precision}]   # a resume replaces it
        self.gen = torch.Generator().manual_seed(cfg.seed)  # data order + augmentation
        self.net = self.model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self.net = DDP(self.model, device_ids=[dev.index] if dev.type == "cuda" else None)

    def _build_loss(self) -> None:
        """The run's one loss function, compiled or not: after a resume, because ``compile=auto``
        compiles only when the steps left repay it (:func:`pcnn.train.accel.worth_compiling`)."""
        cfg = self.cfg
        left = (cfg.epochs - self.epoch) * self.steps_per_epoch - self.pos
        if cfg.max_steps is not None:
            left = min(left, cfg.max_steps - self.iteration)
        if self.fast.compile != "off":
            self.fast = worth_compiling(self.fast, cfg, max(left, 0), cache_is_warm(self.workdir))
        if self.fast.compile != "off" and self.dist.main:
            use_compile_cache(self.workdir)
        self.loss_fn = LossFunction(self.net, cfg.model, cfg.disc_weight, self.fast.compile, self.dist.main,
                                    probe=self.dist.world == 1)

    def _reset_counters(self) -> None:
        """The run's position and running sums (all of it goes into last.pt)."""
        self.step = 0          # successful optimizer updates (drives the LR schedule and EMA warm-up)
        self.iteration = 0     # batches processed, skipped ones included (max_steps counts these)
        self.epoch = 0         # 0-based epoch in progress
        self.pos = 0           # batches of the current epoch already done
        self.perm = None       # the current epoch's permutation (None: not drawn yet)
        self.bad_in_row = 0    # non-finite steps in a row (max_bad_steps stops the run)
        self.bad_total = 0
        self.epoch_sums = self._new_epoch_sums()
        self.history: list = []
        self.best_objective = math.inf  # lowest validation objective exported so far (best.safetensors)
        self.last_save = time.monotonic()
        self.last_good = None  # (iteration, epoch, pos) of the last finite last.pt of this run

    @staticmethod
    def _new_epoch_sums() -> dict:
        # Per-epoch running sums, kept in last.pt so a mid-epoch resume logs the same row.
        return {"bpd_sum": 0.0, "good": 0, "bad": 0, "seconds": 0.0, "images": 0}

    # ---------------------------------------------------------------- steps
    def _train_step(self, x: torch.Tensor, y: torch.Tensor):
        """One optimizer step on the local batch; returns (global-mean-free local bpd, skipped, bad).
        The first compiled steps run whole under the compile fallback (pcnn.train.accel)."""
        step = self._deferred_step if self.fast.deferred else self._synced_step  # deferred: no host sync
        if self.loss_fn.probing:
            return self._probe_step(step, x, y)
        return step(x, y)

    def _synced_step(self, x: torch.Tensor, y: torch.Tensor):
        """:meth:`_train_step` with one host sync per step (the CPU's path)."""
        cfg = self.cfg
        loss, bpd = self._loss_and_grads(x, y)   # pcnn.train.accel: the compile fallback lives there
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if cfg.grad_clip > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        else:
            gnorm = grad_norm(self.params)
        due = self._checkpoint_due()
        # One host sync per step: [loss non-finite, gradient non-finite, checkpoint due].
        flags = torch.stack([~torch.isfinite(loss.detach()), ~torch.isfinite(gnorm.to(bpd.device)),
                             torch.tensor(due, device=bpd.device)]).float()
        if self.dist.world > 1:  # every rank must take the same decisions
            flags = self.dist.all_reduce(flags, dist.ReduceOp.MAX)
        loss_bad, grad_bad, due = (bool(v) for v in flags.tolist())
        overflow = grad_bad and self.scaler is not None   # fp16: the scaler skips and lowers its scale
        bad = loss_bad or (grad_bad and self.scaler is None)
        if self.scaler is not None:
            if not bad:
                self.scaler.step(self.optimizer)  # skips by itself on overflow
            self.scaler.update()
        elif not bad:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not bad and not overflow:
            self._update_ema()
            self.step += 1
            for g in self.optimizer.param_groups:
                g["lr"] = lr_at(cfg, self.step)
        return float(bpd.detach()), bad, due

    @torch.no_grad()
    def _update_ema(self):
        if self.ema_model is None:
            return
        w = 1.0 - ema_decay_at(self.cfg, self.step)
        torch._foreach_lerp_(self._ema_tensors, self._raw_tensors, w)

    def _checkpoint_due(self) -> bool:
        every = self.cfg.checkpoint_every_steps
        if every and (self.iteration + 1) % every == 0:
            return True
        return time.monotonic() - self.last_save >= self.cfg.checkpoint_minutes * 60

    # ---------------------------------------------------------------- evaluation / export
    def _evaluate_and_export(self) -> dict:
        cfg, wd = self.cfg, self.workdir
        res = {}
        self._check_finite("they were not evaluated or exported")
        if self.dist.main:
            raw = evaluate(self.model, self.val_x, self.val_y, cfg.eval_batch_size)
            ema = evaluate(self.ema_model, self.val_x, self.val_y, cfg.eval_batch_size) \
                if self.ema_model is not None else None
            shown = ema or raw
            obj = {k: validation_objective(v, cfg.disc_weight) for k, v in (("raw", raw), ("ema", ema)) if v}
            res = {"val_bpd": shown["bpd"], "val_acc": shown["acc"], "val_f1": shown["f1"],
                   "val_bpd_raw": raw["bpd"], "val_acc_raw": raw["acc"], "val_f1_raw": raw["f1"],
                   "val_ce": shown.get("ce"), "val_objective": obj["ema" if ema else "raw"],
                   "val_ce_raw": raw.get("ce"), "val_objective_raw": obj["raw"]}
            use_ema = exports_ema(obj.get("ema"), obj["raw"])
            chosen, kind = (ema, "ema") if use_ema else (raw, "raw")
            model = self.ema_model if use_ema else self.model
            meta = {"weights": kind, "epoch": self.epoch + 1, "step": self.step,
                    "val_bpd": chosen["bpd"], "val_acc": chosen["acc"], "val_f1": chosen["f1"],
                    "val_ce": chosen.get("ce"), "val_objective": obj[kind], "disc_weight": cfg.disc_weight,
                    "val_bpd_raw": raw["bpd"], "val_bpd_ema": ema["bpd"] if ema else None,
                    "val_n": len(self.val_y), "train_config": cfg.to_dict(), "amp": self.amp.to_dict(),
                    "amp_segments": self.amp_segments}
            save_model(wd / "model.safetensors", model, metadata=meta)
            # best.safetensors: the lowest validation value of the run's own objective
            # (bits/dim when disc_weight is 0), never accuracy: ship rule v2's candidate.
            if obj[kind] < self.best_objective:
                self.best_objective = obj[kind]
                save_model(wd / "best.safetensors", model, metadata={**meta, "selected_by": "val_objective"})
        self.dist.barrier()
        return res

    def _finish_epoch_row(self, partial: bool) -> dict:
        cfg, a = self.cfg, self.epoch_sums
        sums = torch.tensor([a["bpd_sum"], float(a["good"])], dtype=torch.float64)
        if self.dist.world > 1:  # NCCL reduces device tensors only
            sums = self.dist.all_reduce(sums.to(self.dist.device)).cpu()
        good = sums[1].item() / self.dist.world
        train_bpd = sums[0].item() / self.dist.world / good if good else None
        row = {"epoch": self.epoch + 1, "step": self.step, "train_bpd": train_bpd}
        row.update({k: None for k in METRIC_COLUMNS if k not in row})
        last = self.epoch + 1 >= cfg.epochs
        if partial or last or (self.epoch + 1) % cfg.val_every == 0:
            row.update(self._evaluate_and_export())
            # An untrained network scores about 9 bits/dim; twice the uniform model's 8 means divergence.
            if self.dist.main and row["val_bpd"] is not None and min(row["val_bpd"], row["val_bpd_raw"]) > 16:
                warnings.warn(f"validation bits/dim {row['val_bpd']:.4g} at epoch {self.epoch + 1} is more than "
                              f"twice a uniform model's 8 bits/dim: the run has diverged (lr {cfg.lr} too high?)")
        row.update({"lr": lr_at(cfg, self.step), "seconds": round(a["seconds"], 3),
                    "images_per_s": round(a["images"] / a["seconds"], 2) if a["seconds"] > 0 else None,
                    "bad_steps": a["bad"], "partial": partial})
        return row

    def _should_stop(self, started: float) -> bool:
        """Out of ``max_minutes``, or a SIGINT/SIGTERM arrived (on any rank)."""
        late = self.stop.received is not None
        if self.cfg.max_minutes is not None and not late:
            late = time.monotonic() - started >= self.cfg.max_minutes * 60
        if self.dist.world > 1:  # every rank must stop at the same batch
            flag = torch.tensor(float(late), device=self.dist.device)
            late = bool(self.dist.all_reduce(flag, dist.ReduceOp.MAX).item())
        return late

    # ---------------------------------------------------------------- loop
    def run(self) -> list:
        """Train until ``epochs``, ``max_steps``, ``max_minutes`` or a SIGINT/SIGTERM; returns the
        history rows (the last one ``partial`` when the run stopped inside an epoch)."""
        self.last_save = started = time.monotonic()
        try:
            with self.stop:
                while self.epoch < self.cfg.epochs and not self._step_cap_reached():
                    steps, stopped = self._run_epoch(started)
                    if steps == 0:  # nothing happened since the (resumed) state: no row to log
                        break
                    self._end_epoch()
                    if stopped or self._callbacks_stop():
                        break
        finally:
            self.loggers.close()
        self.dist.barrier()
        return self.history

    def _callbacks_stop(self) -> bool:
        """Run the per-epoch callbacks after a whole epoch (:mod:`pcnn.train.callbacks`); True when
        one asks the run to stop."""
        row = self.history[-1] if self.history else None
        if row is None or row.get("partial") or (not self.callbacks and self.dist.world == 1):
            return False
        event = EpochEnd(epoch=self.epoch, epochs=self.cfg.epochs, row=dict(row), history=list(self.history),
                         workdir=self.workdir, model=self.ema_model if self.ema_model is not None else self.model,
                         weights="ema" if self.ema_model is not None else "raw",
                         exported=row.get("val_bpd") is not None)
        stop = run_callbacks(self.callbacks, event)
        if self.dist.world > 1:  # only rank 0 runs callbacks; every rank must stop at the same epoch
            flag = torch.tensor(float(stop), device=self.dist.device)
            stop = bool(self.dist.all_reduce(flag, dist.ReduceOp.MAX).item())
        return stop

    def _step_cap_reached(self) -> bool:
        return self.cfg.max_steps is not None and self.iteration >= self.cfg.max_steps

    def _run_epoch(self, started: float) -> tuple:
        """Steps from the current position to the end of the epoch, or until a cap stops the run
        (then the epoch stays partial). Returns ``(steps taken, stopped by a cap)``."""
        cfg = self.cfg
        if self.perm is None:
            self.perm = torch.randperm(len(self.train_labels), generator=self.gen)
        bar = tqdm(total=self.steps_per_epoch, initial=self.pos, disable=not self.progress,
                   desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
        steps, stopped = 0, False
        t0 = time.perf_counter()
        while self.pos < self.steps_per_epoch:
            if self._step_cap_reached() or self._should_stop(started):
                stopped = True
                break
            bpd, bad, due = self._train_step(*self._next_batch())
            self.pos += 1
            self.iteration += 1
            steps += 1
            now = time.perf_counter()
            self.epoch_sums["seconds"] += now - t0
            t0 = now
            self.epoch_sums["images"] += cfg.batch_size
            if bpd is None:  # deferred checks: the counters live on the device until the next read
                if self.iteration % self.fast.check_every == 0:
                    bpd = self._read_checks()
            elif bad:
                self._on_bad_step()
            else:
                self.bad_in_row = 0
                self.epoch_sums["bpd_sum"] += bpd
                self.epoch_sums["good"] += 1
                self.loggers.step(self.step, bpd, lr_at(cfg, self.step))
            if self.progress:
                bar.update(1)
                if bpd is not None and (steps % 5 == 1 or self.pos == self.steps_per_epoch or self.fast.deferred):
                    rate = self.epoch_sums["images"] / max(self.epoch_sums["seconds"], 1e-9)
                    bar.set_postfix(bpd=f"{bpd:.3f}", img_s=f"{rate:.0f}", refresh=False)
            if due and self.pos < self.steps_per_epoch:
                self._save()
        if self.fast.deferred:  # the read waits for the device's queued steps: their time belongs to the epoch
            self._read_checks()
            self.epoch_sums["seconds"] += time.perf_counter() - t0
        bar.close()
        return steps, stopped

    def _next_batch(self) -> tuple:
        """This rank's slice of the next global batch: (x float (b,3,S,S) in [-1,1], y (b,))."""
        cfg, dev = self.cfg, self.dist.device
        B, b = cfg.batch_size, self.local_batch
        lo = self.dist.rank * b
        idx = self.perm[self.pos * B:(self.pos + 1) * B]
        if self.device_data is not None:  # gathered and flipped on the device (pcnn.train.accel)
            return self.device_data.batch(idx, cfg.augment, self.gen, lo, b, self.fast.channels_last)
        imgs = augment(self.train_images[idx], cfg.augment, self.gen)[lo:lo + b]
        x = to_float(imgs.to(dev, non_blocking=True))
        y = self.train_labels[idx][lo:lo + b].to(dev, non_blocking=True)
        if self.fast.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _on_bad_step(self) -> None:
        """A skipped (non-finite) step: count it, warn, stop when the run cannot recover."""
        self.epoch_sums["bad"] += 1
        self.bad_total += 1
        self.bad_in_row += 1
        if self.dist.main:
            warnings.warn(f"non-finite loss or gradient at batch {self.iteration} (epoch "
                          f"{self.epoch + 1}): step skipped ({self.bad_in_row} in a row)")
        self._check_finite("the run cannot recover")  # skipping steps cannot help then
        if self.bad_in_row >= self.cfg.max_bad_steps:
            raise TrainingStopped(
                f"training stopped: {self.bad_in_row} non-finite steps in a row (NaN/inf loss or "
                f"gradient) at batch {self.iteration}, epoch {self.epoch + 1}; max_bad_steps="
                f"{self.cfg.max_bad_steps}. Lower lr, set grad_clip, or check the data; "
                f"{self._last_good_note()}")

    def _end_epoch(self) -> None:
        """Log the (possibly partial) epoch's row, evaluating and exporting when due; save last.pt."""
        partial = self.pos < self.steps_per_epoch
        row = self._finish_epoch_row(partial)
        self.history.append(row)
        if not partial:
            self.epoch += 1
            self.pos = 0
            self.perm = None
            self.epoch_sums = self._new_epoch_sums()
        self._save()
        if self.dist.main:
            write_metric_files(self.workdir, self.history, append_row=row)
            self.loggers.epoch(row)
            if self.progress:
                shown = {k: row[k] for k in ("train_bpd", "val_bpd", "val_acc", "val_bpd_raw", "val_acc_raw")
                         if row[k] is not None}
                tqdm.write(f"epoch {row['epoch']}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
