"""Training loop of the class-conditional PixelCNN++: exact resume, EMA, AMP, DDP.

Usage::

    python -m pcnn.train --config configs/starter.json --workdir runs/starter
    python -m pcnn.train --workdir runs/starter --resume          # continue exactly
    torchrun --nproc_per_node=4 -m pcnn.train --config configs/report_chan.json --workdir runs/chan

What it optimises: the mean over the batch of the negative log-likelihood in
**bits per dimension** (``nll`` nats per image / (3*H*W*ln 2)) under the
true label, i.e. maximum likelihood of ``p(x | y)``. Classification is then
``argmax_c log p(x | c)`` (:mod:`pcnn.classify`).

Optionally (``disc_weight`` > 0, a departure from PixelCNN++, which is purely
generative) a discriminative term is added: ``disc_weight * (-log p(y | x))``
in nats per image, with ``p(y | x)`` computed from the class likelihoods by
Bayes' rule (:func:`pcnn.likelihood.class_nll`). Each image then goes through
the network once per class (C times the cost of a generative step); the
true-class pass gives the generative term for free. The classifier is still a
pure argmax of likelihoods; only training sees the labels of the other classes.

What it writes into ``workdir`` (rank 0 only; every file atomically: temp file,
fsync, rename, so a kill never leaves half a file):

* ``config.json``: the :class:`TrainConfig` of the run.
* ``metrics.jsonl`` / ``metrics.csv``: one row per epoch, appended as the run
  goes (columns :data:`METRIC_COLUMNS`).
* ``last.pt``: everything to resume exactly (model, optimizer, EMA, grad
  scaler, step counters, epoch, position inside the epoch and the epoch's
  permutation, the data/augmentation generator and all RNG states of every
  rank), saved every ``checkpoint_minutes`` (mid-epoch too) and at the end of
  every epoch. Only tensors, numbers, strings, lists and dicts: it loads with
  ``torch.load(weights_only=True)``.
* ``model.safetensors``: the weights to use for inference (:func:`pcnn.load`),
  EMA or raw, whichever had the lower validation bits/dim at the latest
  evaluation; its metadata says which (``weights``), with epoch and metrics.
* ``best.safetensors``: the weights (EMA or raw) with the lowest validation
  bits/dim over all evaluations. See :func:`train` for why bits/dim and not
  accuracy picks it.

Determinism: model init, data order, augmentation and dropout all come from
``seed``; data order and augmentation draw from one dedicated
``torch.Generator`` and dropout from the global torch RNG, both saved in
``last.pt``, so on CPU a resumed run is bitwise equal to an uninterrupted one
when it runs with the same number of threads (CPU sums depend on it): ``last.pt``
records the thread count, device and precision, and a resume with another thread
count or device warns.

The run owns ``workdir`` while it runs (``train.lock``, :mod:`pcnn.workdir`) and
never replaces an earlier run's results without ``overwrite`` (``--overwrite``).
"""
from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import errno
import io
import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from .checkpoint import CheckpointError, DiskFullError, atomic_write, nonfinite_tensors, read_tensor_file
from .checkpoint import save as save_model
from .classify import log_likelihoods, score
from .config import ModelConfig, from_dict
from .data import AugmentConfig, augment, to_float
from .likelihood import bits_per_dim, class_nll, nll
from .model import PixelCNNpp
from .workdir import WorkdirError, WorkdirLock, claim_for_run
from .precision import AMP_MODES, AmpChoice, resolve_amp

OPTIMIZERS = ("adam", "adamw")
TRAIN_STATE_FORMAT = "pcnn-train-v1"

#: Columns of metrics.csv (metrics.jsonl rows carry the same keys, plus ``partial``).
METRIC_COLUMNS = ("epoch", "step", "train_bpd", "val_bpd", "val_acc", "val_f1", "val_bpd_raw",
                  "val_acc_raw", "val_f1_raw", "lr", "seconds", "images_per_s", "bad_steps")


# --------------------------------------------------------------------------- config

def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_float(name: str, v, ok, rule: str) -> None:
    if not _is_number(v):
        raise ValueError(f"TrainConfig.{name} must be a number {rule}, got {v!r} ({type(v).__name__})")
    if not math.isfinite(v) or not ok(v):
        raise ValueError(f"TrainConfig.{name} must be a finite number {rule}, got {v!r}")


#: (field, test, rule) for every float setting: finite, and in range.
_FLOAT_RULES = (
    ("lr", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("lr_decay", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("weight_decay", lambda v: v >= 0, ">= 0"),
    ("grad_clip", lambda v: v >= 0, ">= 0 (0 = no clipping)"),
    ("ema", lambda v: 0 <= v < 1, "in [0, 1) (0 disables it)"),
    ("disc_weight", lambda v: v >= 0, ">= 0"),
    ("checkpoint_minutes", lambda v: v > 0, "> 0"),
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (with the model's own :class:`ModelConfig`).

    Build from JSON with :meth:`from_dict` (unknown keys rejected at every
    level), change single values with :func:`apply_overrides`.
    """
    model: ModelConfig = field(default_factory=ModelConfig)  # the network (see pcnn.config)
    epochs: int = 100                 # passes over the training split
    batch_size: int = 64              # GLOBAL images per optimizer step (split evenly over DDP ranks)
    lr: float = 1e-3                  # peak learning rate
    lr_decay: float = 0.999995        # per-optimizer-STEP exponential decay gamma: lr_k = lr * gamma**k
    warmup_steps: int = 0             # linear warm-up: lr_k *= min(1, (k+1)/warmup_steps); 0 = none
    optimizer: str = "adam"           # "adam" (L2 via weight_decay, coupled) | "adamw" (decoupled decay)
    betas: tuple = (0.95, 0.9995)     # Adam (beta1, beta2); the original PixelCNN++ values
    weight_decay: float = 0.0         # L2 (adam) or decoupled (adamw) weight decay; 0 = off
    grad_clip: float = 0.0            # max global L2 norm of the gradient; 0 = no clipping
    ema: float = 0.9995               # EMA decay of the weights per step; 0 disables the EMA
    ema_warmup: bool = True           # decay_k = min(ema, (1+k)/(10+k)) after k EMA updates
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # train-time augmentation (pcnn.data)
    seed: int = 0                     # seeds model init, data order, augmentation, dropout
    val_subset: int = 0               # evaluate on this many validation images (fixed, seeded); 0 = all
    val_every: int = 1                # evaluate every this many epochs (and always at the end)
    eval_batch_size: int = 0          # (image, class) pairs per forward pass when evaluating; 0 = auto (CPU 32, GPU 256)
    checkpoint_minutes: float = 10.0  # save last.pt at least this often (wall-clock minutes), mid-epoch too
    checkpoint_every_steps: int = 0   # also save last.pt every this many batches; 0 = off
    max_bad_steps: int = 20           # stop (RuntimeError) after this many non-finite steps in a row
    amp: str = "auto"                 # "auto" (CUDA: bf16 if supported else fp16; CPU: bf16 if the CPU has it and a probe shows it pays, see pcnn.precision) | "off" | "bf16" | "fp16" (GPU only)
    compile: bool = False             # torch.compile the training forward
    channels_last: bool = False       # channels-last memory format (faster convolutions on recent GPUs)
    tensorboard: bool = False         # log to workdir/tensorboard (needs the tensorboard package)
    wandb: bool = False               # log to Weights & Biases (needs wandb; project from $WANDB_PROJECT)
    data_dir: Optional[str] = None    # CPEN455 data folder; None = pcnn.data.resolve_data_dir()
    disc_weight: float = 0.0          # weight of -log p(y|x) (nats/image) added to the bits/dim loss; 0 = pure likelihood
    init_from: Optional[str] = None   # start from these weights (a pcnn export, same model config except dropout), e.g. to fine-tune
    max_steps: Optional[int] = None   # stop after this many batches in total (smoke runs); None = no cap
    max_minutes: Optional[float] = None  # stop (evaluated, exported, resumable) after this many wall-clock minutes of this invocation; None = no cap
    description: str = ""             # free text: what this run / preset is and why (not used by training)

    def __post_init__(self):
        if isinstance(self.model, Mapping):
            object.__setattr__(self, "model", ModelConfig.from_dict(self.model))
        if isinstance(self.augment, Mapping):
            object.__setattr__(self, "augment", from_dict(AugmentConfig, self.augment))
        b = self.betas
        if (not isinstance(b, (list, tuple)) or len(b) != 2 or not all(_is_number(v) for v in b)
                or not all(math.isfinite(v) and 0 <= v < 1 for v in b)):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), e.g. [0.95, 0.9995], got {b!r}")
        object.__setattr__(self, "betas", tuple(float(v) for v in b))
        for name, ok, rule in _FLOAT_RULES:
            _check_float(name, getattr(self, name), ok, rule)
        for name in ("ema_warmup", "compile", "channels_last", "tensorboard", "wandb"):
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise ValueError(f"TrainConfig.{name} must be true or false, got {v!r} ({type(v).__name__})")
        if not isinstance(self.description, str):
            raise ValueError(f"TrainConfig.description must be a string, got {type(self.description).__name__}")
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", str(self.data_dir))
        for name in ("epochs", "batch_size", "val_every", "max_bad_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {v!r} ({type(v).__name__})")
        for name in ("warmup_steps", "val_subset", "checkpoint_every_steps", "seed", "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"TrainConfig.{name} must be a non-negative int, got {v!r} ({type(v).__name__})")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or isinstance(self.max_steps, bool)
                                           or self.max_steps < 1):
            raise ValueError(f"TrainConfig.max_steps must be a positive int or null, got {self.max_steps!r}")
        if self.max_minutes is not None and (isinstance(self.max_minutes, bool) or not isinstance(
                self.max_minutes, (int, float)) or not 0 < self.max_minutes < math.inf):
            raise ValueError(f"TrainConfig.max_minutes must be a positive finite number or null, got "
                             f"{self.max_minutes!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"TrainConfig.amp must be one of {list(AMP_MODES)}, got {self.amp!r}")
        if self.augment.normalize:
            raise ValueError("augment.normalize is not supported by training: the model has no input "
                             "normalisation of its own, so inference would see different inputs than training")
        if self.disc_weight > 0 and not self.model.conditional:
            raise ValueError("disc_weight > 0 needs a class-conditional model (model.fusion is empty)")
        if self.init_from is not None:
            object.__setattr__(self, "init_from", str(self.init_from))

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["model"] = self.model.to_dict()
        d["augment"] = dataclasses.asdict(self.augment)
        d["betas"] = list(self.betas)
        return d

    def to_json(self, indent: Optional[int] = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Build from a (JSON) mapping; unknown keys, at any level, raise ``ValueError``."""
        d = dict(d)
        if "model" in d:
            d["model"] = ModelConfig.from_dict(d["model"])
        if "augment" in d:
            d["augment"] = from_dict(AugmentConfig, d["augment"])
        return from_dict(cls, d)

    @classmethod
    def from_json(cls, path) -> "TrainConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))


_NESTED = {"model": ModelConfig, "augment": AugmentConfig}


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(cfg_dict: Mapping[str, Any], overrides: Sequence[str]) -> dict:
    """Return a copy of ``cfg_dict`` with ``"key=value"`` / ``"model.key=value"`` overrides applied.

    Values are parsed as JSON when they parse (``2e-4``, ``true``, ``null``,
    ``[0.9, 0.99]``), else kept as strings (``first_conv+blocks``). Unknown keys
    raise ``ValueError`` listing the valid ones.
    """
    out = copy.deepcopy(dict(cfg_dict))
    top = {f.name for f in dataclasses.fields(TrainConfig)}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if parts[0] not in top:
            raise ValueError(f"unknown TrainConfig key {parts[0]!r} in override {item!r}; valid keys: {sorted(top)}")
        value = _parse_value(text.strip())
        if len(parts) == 1:
            if parts[0] in _NESTED and not isinstance(value, Mapping):
                raise ValueError(f"override {item!r}: {parts[0]} is a group; set {parts[0]}.KEY=VALUE")
            out[parts[0]] = value
            continue
        cls = _NESTED.get(parts[0])
        names = {f.name for f in dataclasses.fields(cls)} if cls else set()
        if cls is None or len(parts) != 2 or parts[1] not in names:
            valid = sorted(f"{parts[0]}.{n}" for n in names) if cls else sorted(top)
            raise ValueError(f"unknown key {key!r} in override {item!r}; valid keys: {valid}")
        sub = dict(out.get(parts[0]) or {})
        if not isinstance(sub, dict):
            sub = dataclasses.asdict(sub) if dataclasses.is_dataclass(sub) else dict(sub)
        sub[parts[1]] = value
        out[parts[0]] = sub
    return out


def lr_at(cfg: TrainConfig, k: int) -> float:
    """Learning rate after ``k`` optimizer steps: ``lr * lr_decay**k * min(1, (k+1)/warmup_steps)``."""
    lr = cfg.lr * cfg.lr_decay ** k
    if cfg.warmup_steps > 0:
        lr *= min(1.0, (k + 1) / cfg.warmup_steps)
    return lr


def exports_ema(ema_bpd: Optional[float], raw_bpd: float) -> bool:
    """The export rule: the EMA weights when they exist and their validation bits/dim is
    no higher than the raw weights' (a tie keeps the EMA); the raw weights otherwise."""
    return ema_bpd is not None and ema_bpd <= raw_bpd


def ema_decay_at(cfg: TrainConfig, k: int) -> float:
    """EMA decay of update number ``k`` (0-based): ``min(ema, (1+k)/(10+k))`` with warm-up."""
    return min(cfg.ema, (1 + k) / (10 + k)) if cfg.ema_warmup else cfg.ema


# --------------------------------------------------------------------------- helpers

class _Dist:
    """Process-group facts from torchrun's RANK / WORLD_SIZE / LOCAL_RANK (single process if absent)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.owns_group = False
        cuda = torch.cuda.is_available()
        if self.world > 1:
            if cuda:
                torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank) if cuda else torch.device("cpu")
            if not dist.is_initialized():
                dist.init_process_group("nccl" if cuda else "gloo")
                self.owns_group = True
        else:
            self.device = torch.device("cuda" if cuda else "cpu")
        self.main = self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def all_reduce(self, t: torch.Tensor, op=None) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        return t

    def gather_objects(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self):
        if self.owns_group:
            dist.destroy_process_group()


def _as_data(data, name: str, cfg: ModelConfig):
    """(images uint8 (N,3,S,S), labels int64 (N,)) from a Split-like object or a tuple; validated once."""
    if isinstance(data, (tuple, list)):
        images, labels = data
    else:
        images, labels = data.images, data.labels
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    s = cfg.image_size
    if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != (3, s, s):
        raise ValueError(f"{name} images must be uint8 of shape (N, 3, {s}, {s}), got "
                         f"{images.dtype} {tuple(images.shape)} (load the split with size={s})")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
        raise ValueError(f"{name} labels must be integers of shape ({images.shape[0]},), got "
                         f"{labels.dtype} {tuple(labels.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} split is empty")
    labels = labels.long()
    if cfg.conditional and (labels.min() < 0 or labels.max() >= cfg.num_classes):
        raise ValueError(f"{name} labels must be in [0, {cfg.num_classes}), got min {labels.min().item()}, "
                         f"max {labels.max().item()} (unlabelled rows cannot be trained on)")
    return images.contiguous(), labels.contiguous()


def training_loss(net, x: torch.Tensor, y: torch.Tensor, mc: ModelConfig, disc_weight: float = 0.0) -> tuple:
    """``(loss, bpd)`` of one batch: x (B,3,H,W) in [-1,1], y (B,) int64 -> two scalars.

    ``bpd``: mean bits/dim of x under its true class (the generative term, what
    the logs report). ``loss`` = ``bpd`` + ``disc_weight`` * mean ``-log p(y|x)``
    (nats, :func:`pcnn.likelihood.class_nll`). With ``disc_weight`` > 0 the
    batch goes through ``net`` once per class (one forward of C*B images,
    class-major) and the true-class rows give the generative term. The network
    may run under autocast; the likelihood is computed in float32.
    """
    if disc_weight > 0:
        b, nc = x.shape[0], mc.num_classes
        x_in = x.repeat(nc, 1, 1, 1)
        y_in = torch.arange(nc, device=x.device).repeat_interleave(b)
    else:
        x_in, y_in = x, (y if mc.conditional else None)
    out = net(x_in, y_in, check=False)
    with torch.autocast(x.device.type, enabled=False):
        nats = nll(x_in, out.float(), mc.nr_logistic_mix, reduction="none")
        dims = 3 * mc.image_size ** 2
        if disc_weight <= 0:
            bpd = bits_per_dim(nats, dims).mean()
            return bpd, bpd
        log_px = -nats.view(nc, b).t()                                       # (B, C): log p(x | c)
        bpd = bits_per_dim(-log_px.gather(1, y[:, None]).squeeze(1), dims).mean()
        return bpd + disc_weight * class_nll(log_px, y).mean(), bpd


def _rng_state() -> dict:
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


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def _grad_norm(params) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


def _legacy_amp(mode: str, device: torch.device) -> AmpChoice:
    """What a run state written before precision choices were stored ran in
    (``auto`` meant fp32 on every CPU then), so such a run resumes unchanged."""
    if mode == "auto" and device.type != "cuda":
        return AmpChoice(mode, "fp32", "run started when amp=auto meant fp32 on CPU")
    return resolve_amp(mode, device)


def _fmt(v):
    return "" if v is None else v


def _json_safe(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _json_row(row: dict) -> str:
    """One metrics.jsonl line: valid JSON, a non-finite number (NaN, inf) becomes null."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
    return json.dumps(clean, allow_nan=False)


def _append_lines(path: Path, text: str) -> None:
    """Append ``text`` whole or not at all: a failed write (full disk) is cut back to the old end."""
    with open(path, "a", newline="") as f:
        end = f.tell()
        try:
            f.write(text)
            f.flush()
        except OSError as e:
            f.truncate(end)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(path) from e
            raise


def _write_metric_files(workdir: Path, history: list, append_row: Optional[dict] = None) -> None:
    """Append one row to metrics.jsonl/csv, or (append_row None) rewrite both from ``history``."""
    jl, cs = workdir / "metrics.jsonl", workdir / "metrics.csv"
    if append_row is not None and jl.exists() and cs.exists():
        _append_lines(jl, _json_row(append_row) + "\n")
        line = io.StringIO()
        csv.writer(line).writerow([_fmt(_json_safe(append_row.get(c))) for c in METRIC_COLUMNS])
        _append_lines(cs, line.getvalue())
        return
    rows = history

    def write_jsonl(tmp):
        with open(tmp, "w") as f:
            f.writelines(_json_row(r) + "\n" for r in rows)

    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(METRIC_COLUMNS)
            w.writerows([[_fmt(_json_safe(r.get(c))) for c in METRIC_COLUMNS] for r in rows])
    atomic_write(jl, write_jsonl)
    atomic_write(cs, write_csv)


class _Loggers:
    """Optional TensorBoard / W&B sinks: used only when asked for AND installed."""

    def __init__(self, cfg: TrainConfig, workdir: Path, enabled: bool):
        self.tb = self.wandb = None
        if not enabled:
            return
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(workdir / "tensorboard"))
            except ImportError as e:
                warnings.warn(f"tensorboard=true but TensorBoard is not usable ({e}); not logging to it")
        if cfg.wandb:
            try:
                import wandb
                self.wandb = wandb
                wandb.init(project=os.environ.get("WANDB_PROJECT", "pcnn"), name=workdir.name,
                           dir=str(workdir), config=cfg.to_dict(), resume="allow")
            except ImportError as e:
                warnings.warn(f"wandb=true but wandb is not installed ({e}); not logging to it")

    def step(self, step: int, bpd: float, lr: float):
        if self.tb is not None:
            self.tb.add_scalar("train/bpd_step", bpd, step)
            self.tb.add_scalar("train/lr", lr, step)

    def epoch(self, row: dict):
        logs = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k not in ("epoch", "step")}
        if self.tb is not None:
            for k, v in logs.items():
                self.tb.add_scalar(f"epoch/{k}", v, row["step"])
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log({**logs, "epoch": row["epoch"]}, step=row["step"])

    def close(self):
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


@torch.no_grad()
def evaluate(model: PixelCNNpp, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> dict:
    """Validation bits/dim (under the true label) and likelihood-classification accuracy / macro F1.

    ``images`` float in [-1, 1]; one batched pass scores every class.
    Unconditional models report bits/dim only (accuracy and F1 are None).
    """
    m = score(log_likelihoods(model, images, batch_size=batch_size or None), labels, model.config)
    return {"bpd": m["bpd"], "acc": m["accuracy"], "f1": m["macro_f1"]}


# --------------------------------------------------------------------------- training

class TrainingStopped(RuntimeError):
    """The trainer stopped a run that cannot go on (non-finite weights, too many non-finite
    steps); the message names the last good checkpoint, or says that there is none."""


def _where(iteration: int, epoch: int, pos: int) -> str:
    return f"batch {iteration}, " + (f"end of epoch {epoch}" if pos == 0 and epoch > 0 else f"epoch {epoch + 1}")


def _kept_note(workdir: Path, trainer) -> str:
    last = workdir / "last.pt"
    good = getattr(trainer, "last_good", None)
    if good is not None:
        where = f"{last} still holds the last checkpoint ({_where(*good)})"
    elif last.exists():
        where = f"{last} is intact"
    else:
        where = "no checkpoint of this run had been written yet"
    return (f"{where}, and every file written before is intact (each is replaced atomically); free some "
            "space, then rerun" + (" with --resume" if last.exists() else ""))


def train(config, workdir, train_data=None, val_data=None, resume: bool = False,
          progress: bool = True, overwrite: bool = False) -> list:
    """Train a conditional PixelCNN++ and return the per-epoch history (list of metric dicts).

    ``config``: a :class:`TrainConfig` (or its dict). ``train_data`` /
    ``val_data``: anything with uint8 ``.images`` (N, 3, S, S) and ``.labels``
    (a :class:`pcnn.data.Split`), or an ``(images_uint8, labels)`` tuple; None
    loads the ``train`` / ``validation`` split from ``config.data_dir`` at
    ``model.image_size``. ``resume=True`` continues from ``workdir/last.pt``
    exactly where it stopped (it starts afresh, with a note, if there is none).

    The run owns ``workdir``: it holds ``workdir/train.lock`` (:mod:`pcnn.workdir`)
    while it runs, so a second run or a resume there fails with
    :class:`pcnn.workdir.WorkdirLocked`; a lock left by a dead process of this host
    is explained and taken over. Results of an earlier run (``last.pt``, exports,
    metric rows) are never replaced unless ``overwrite=True``, which deletes them
    first: otherwise :class:`pcnn.workdir.RunExistsError` (also for ``resume=True``
    when there is no ``last.pt`` to resume from). A full disk raises
    :class:`pcnn.checkpoint.DiskFullError` saying what was kept.

    Each evaluation scores the validation images with the raw and, when
    enabled, the EMA weights. ``best.safetensors`` is selected by the lowest
    validation **bits/dim**, never by validation accuracy: picking the epoch
    with the best accuracy among many noisy evaluations selects on the
    validation set itself and overstates the accuracy one should expect on
    new data (a max over noisy estimates is biased upwards), whereas the
    likelihood is the training objective, is smooth, and is measured on all
    3*H*W sub-pixels of every image. Report accuracy on held-out data.

    Non-finite loss or gradient: the optimizer step is skipped (no update, no
    EMA step, no LR step), counted in ``bad_steps`` and warned about; after
    ``max_bad_steps`` in a row :class:`TrainingStopped` (a ``RuntimeError``) stops
    the run. Non-finite weights are never checkpointed or exported: the run stops
    as soon as it sees them (a bad step with non-finite weights, a checkpoint or an
    evaluation due); the message names the last good ``last.pt``, or says that no
    checkpoint was written. With fp16 AMP, gradient overflows are the grad
    scaler's business (skipped, not counted as bad).

    Distributed (torchrun): ``batch_size`` is the GLOBAL batch; every rank
    draws the same global permutation and augmentation, then takes its
    contiguous ``batch_size / world_size`` slice, so N processes follow the
    single-process run (same batches, same learning rate). Rank 0 alone
    evaluates and writes files; the others wait at a barrier.

    The last incomplete batch of every epoch is dropped (constant batch size).
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    workdir = Path(workdir)
    ctx = _Dist()
    lock = trainer = None
    try:
        err = None
        if ctx.main:  # rank 0 owns the workdir; the others learn whether it may be used
            try:
                lock = WorkdirLock(workdir).acquire()
                claim_for_run(workdir, resume, overwrite)
            except WorkdirError as e:
                err = e
        if ctx.world > 1:
            first = ctx.gather_objects(None if err is None else str(err))[0]
            if err is None and first is not None:
                raise WorkdirError(first)
        if err is not None:
            raise err
        trainer = _Trainer(cfg, workdir, ctx, train_data, val_data, resume, progress)
        return trainer.run()
    except DiskFullError as e:
        raise DiskFullError(e.path, kept=_kept_note(workdir, trainer)) from e
    finally:
        if lock is not None:
            lock.release()
        ctx.close()


class _Trainer:
    def __init__(self, cfg: TrainConfig, workdir: Path, ctx: _Dist, train_data, val_data, resume, progress):
        self.cfg, self.workdir, self.ctx, self.progress = cfg, workdir, ctx, progress and ctx.main
        mc = cfg.model
        if cfg.batch_size % ctx.world:
            raise ValueError(f"batch_size {cfg.batch_size} (global) is not divisible by the world size {ctx.world}")
        self.local_batch = cfg.batch_size // ctx.world
        last = workdir / "last.pt"  # train() took the lock and checked for earlier results
        if ctx.main:
            workdir.mkdir(parents=True, exist_ok=True)
            for stale in workdir.glob(".*.safetensors.tmp*"):  # left by a kill during atomic_write
                stale.unlink(missing_ok=True)
            for stale in workdir.glob(".last.pt.tmp*"):
                stale.unlink(missing_ok=True)
        if train_data is None or val_data is None:
            from .data import load_split
            show = self.progress
            if train_data is None:
                train_data = load_split("train", cfg.data_dir, size=mc.image_size, show_progress=show)
            if val_data is None:
                val_data = load_split("validation", cfg.data_dir, size=mc.image_size, show_progress=show)
        self.train_images, self.train_labels = _as_data(train_data, "train", mc)
        val_images, val_labels = _as_data(val_data, "validation", mc)
        if cfg.val_subset and cfg.val_subset < len(val_labels):
            g = torch.Generator().manual_seed(cfg.seed + 7919)
            idx = torch.randperm(len(val_labels), generator=g)[:cfg.val_subset].sort().values
            val_images, val_labels = val_images[idx], val_labels[idx]
        self.val_x, self.val_y = to_float(val_images), val_labels
        self.steps_per_epoch = len(self.train_labels) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training split has {len(self.train_labels)} images, fewer than one batch "
                             f"({cfg.batch_size})")

        # Model: identical on every rank (same seed); dropout then draws per-rank streams.
        dev = ctx.device
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2 ** 32)
        random.seed(cfg.seed)
        self.model = PixelCNNpp(mc).to(dev)
        if cfg.init_from is not None:  # fine-tuning: the export's weights replace the fresh init
            from .checkpoint import load as load_export
            # A fine-tune may change dropout (e.g. lower it once train and validation
            # bits/dim show the model underfits); every other field must match.
            src = load_export(cfg.init_from)
            if not src.config.same_parameters(mc):
                raise CheckpointError(f"init_from {cfg.init_from} is for model config {src.config}, "
                                      f"which differs from this run's {mc} in more than dropout")
            self.model.load_state_dict(src.state_dict())
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        torch.manual_seed(cfg.seed * 1_000_003 + ctx.rank + 1)
        self.ema_model = None
        if cfg.ema > 0:
            self.ema_model = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if self.ema_model is not None:  # shadow of every float parameter and buffer (updated in place)
            pairs = [(e, r) for e, r in zip(self.ema_model.state_dict().values(), self.model.state_dict().values())
                     if r.is_floating_point()]
            self._ema_tensors, self._raw_tensors = [e for e, _ in pairs], [r for _, r in pairs]
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(self.params, lr=lr_at(cfg, 0), betas=cfg.betas, weight_decay=cfg.weight_decay)
        self._set_amp(resolve_amp(cfg.amp, dev))
        self.gen = torch.Generator().manual_seed(cfg.seed)  # data order + augmentation
        self.net = self.model
        if ctx.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self.net = DDP(self.model, device_ids=[dev.index] if dev.type == "cuda" else None)
        if cfg.compile:
            self.net = torch.compile(self.net)

        # Run state (all of it goes into last.pt).
        self.step = 0          # successful optimizer updates (drives the LR schedule and EMA warm-up)
        self.iteration = 0     # batches processed, skipped ones included (max_steps counts these)
        self.epoch = 0         # 0-based epoch in progress
        self.pos = 0           # batches of the current epoch already done
        self.perm = None       # the current epoch's permutation (None: not drawn yet)
        self.bad_in_row = 0
        self.bad_total = 0
        self.acc = self._new_epoch_acc()
        self.history: list = []
        self.best_bpd = math.inf
        self.last_save = time.monotonic()
        self.last_good = None  # (iteration, epoch, pos) of the last finite last.pt of this run
        if resume and last.exists():
            self._load(last)
        elif resume and ctx.main:
            print(f"note: no {last} to resume from; starting a fresh run", file=sys.stderr)
        for g in self.optimizer.param_groups:
            g["lr"] = lr_at(cfg, self.step)
        if ctx.main:
            print(f"precision: {self.amp.precision} (amp={cfg.amp}: {self.amp.reason})", file=sys.stderr)

        if ctx.main:
            atomic_write(workdir / "config.json", lambda tmp: Path(tmp).write_text(cfg.to_json() + "\n"))
            _write_metric_files(workdir, self.history)
        self.loggers = _Loggers(cfg, workdir, ctx.main)
        ctx.barrier()

    @staticmethod
    def _new_epoch_acc() -> dict:
        # Per-epoch running sums, kept in last.pt so a mid-epoch resume logs the same row.
        return {"bpd_sum": 0.0, "good": 0, "bad": 0, "seconds": 0.0, "images": 0}

    # ---------------------------------------------------------------- checkpoint
    def _state(self) -> dict:
        rng = self.ctx.gather_objects(_rng_state())  # collective: every rank calls _save
        return {
            "format": TRAIN_STATE_FORMAT,
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema_model.state_dict() if self.ema_model is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step, "iteration": self.iteration, "epoch": self.epoch, "pos": self.pos,
            "perm": self.perm, "data_generator": self.gen.get_state(),
            "bad_in_row": self.bad_in_row, "bad_total": self.bad_total, "epoch_acc": dict(self.acc),
            "history": self.history, "best_bpd": self.best_bpd,
            "world_size": self.ctx.world, "rng": rng,
            "runtime": self._runtime(),
            "amp": self.amp.to_dict(),
        }

    def _runtime(self) -> dict:
        """What a bitwise continuation needs unchanged besides the state: threads, device, precision."""
        precision = str(self.amp_dtype or torch.float32).removeprefix("torch.")
        return {"threads": torch.get_num_threads(), "device": self.ctx.device.type, "precision": precision}

    def _last_good_note(self) -> str:
        last = self.workdir / "last.pt"
        if self.last_good is None:
            return f"no checkpoint was written by this run (no {last}), so there is nothing to resume from"
        return f"{last} holds the last good checkpoint ({_where(*self.last_good)}); --resume continues from it"

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
        if self.ctx.main:
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
        if changed and self.ctx.main:
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
        self.optimizer.load_state_dict(s["optimizer"])
        self._resume_amp(s, path)
        if self.scaler is not None and s["scaler"] is not None:
            self.scaler.load_state_dict(s["scaler"])
        for k in ("step", "iteration", "epoch", "pos", "bad_in_row", "bad_total", "best_bpd"):
            setattr(self, k, s[k])
        self.last_good = (self.iteration, self.epoch, self.pos)
        self._warn_runtime_change(path, s.get("runtime"))
        self.perm, self.acc, self.history = s["perm"], dict(s["epoch_acc"]), list(s["history"])
        self.gen.set_state(s["data_generator"])
        rng = s["rng"]
        if len(rng) == self.ctx.world:
            _set_rng_state(rng[self.ctx.rank])
        else:
            warnings.warn(f"{path} was written by {len(rng)} process(es), this run has {self.ctx.world}: "
                          "data order is kept, dropout RNG streams are reseeded")
            torch.manual_seed(self.cfg.seed * 1_000_003 + self.ctx.rank + 1 + self.iteration)

    def _warn_runtime_change(self, path: Path, saved: Optional[dict]) -> None:
        """Warn when a resume runs with another CPU thread count or device than the state was
        written with (precision changes are handled by :meth:`_resume_amp`)."""
        if not saved or not self.ctx.main:  # states written before pcnn recorded the runtime
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

    # ---------------------------------------------------------------- precision
    def _set_amp(self, choice: AmpChoice) -> None:
        self.amp, self.amp_dtype = choice, choice.dtype
        self.scaler = torch.amp.GradScaler(self.ctx.device.type) if choice.precision == "fp16" else None

    def _resume_amp(self, s: dict, path: Path) -> None:
        """Keep the precision the run was trained in when ``amp`` is unchanged, even if this
        machine would choose otherwise (``auto`` on another CPU): a run changes precision
        only when its ``amp`` setting is changed."""
        dev = self.ctx.device
        if s.get("amp"):
            saved = AmpChoice.from_dict(s["amp"])
        else:
            saved = _legacy_amp(TrainConfig.from_dict(s["config"]).amp, dev)
        if saved.mode != self.cfg.amp or saved.precision == self.amp.precision:
            return
        if saved.precision == "fp16" and dev.type == "cpu":
            if self.ctx.main:
                warnings.warn(f"{path} was trained in fp16 ({saved.reason}), which this CPU cannot run; "
                              f"continuing in {self.amp.precision} ({self.amp.reason})")
            return
        if self.ctx.main:
            warnings.warn(f"amp={self.cfg.amp} would choose {self.amp.precision} here ({self.amp.reason}), but "
                          f"{path} was trained in {saved.precision} ({saved.reason}); keeping {saved.precision} "
                          "so the run continues as it started (set amp explicitly to change it)")
        self._set_amp(AmpChoice(saved.mode, saved.precision, f"kept from the run state: {saved.reason}"))

    # ---------------------------------------------------------------- steps
    def _train_step(self, x: torch.Tensor, y: torch.Tensor):
        """One optimizer step on the local batch; returns (global-mean-free local bpd, skipped, bad)."""
        cfg, mc = self.cfg, self.cfg.model
        self.net.train()
        with torch.autocast(self.ctx.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            loss, bpd = training_loss(self.net, x, y, mc, cfg.disc_weight)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if cfg.grad_clip > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        else:
            gnorm = _grad_norm(self.params)
        due = self._checkpoint_due()
        # One host sync per step: [loss non-finite, gradient non-finite, checkpoint due].
        flags = torch.stack([~torch.isfinite(loss.detach()), ~torch.isfinite(gnorm.to(bpd.device)),
                             torch.tensor(due, device=bpd.device)]).float()
        if self.ctx.world > 1:  # every rank must take the same decisions
            flags = self.ctx.all_reduce(flags, dist.ReduceOp.MAX)
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
        if self.ctx.main:
            raw = evaluate(self.model, self.val_x, self.val_y, cfg.eval_batch_size)
            ema = evaluate(self.ema_model, self.val_x, self.val_y, cfg.eval_batch_size) \
                if self.ema_model is not None else None
            shown = ema or raw
            res = {"val_bpd": shown["bpd"], "val_acc": shown["acc"], "val_f1": shown["f1"],
                   "val_bpd_raw": raw["bpd"], "val_acc_raw": raw["acc"], "val_f1_raw": raw["f1"]}
            use_ema = exports_ema(ema["bpd"] if ema else None, raw["bpd"])
            chosen, kind = (ema, "ema") if use_ema else (raw, "raw")
            model = self.ema_model if use_ema else self.model
            meta = {"weights": kind, "epoch": self.epoch + 1, "step": self.step,
                    "val_bpd": chosen["bpd"], "val_acc": chosen["acc"], "val_f1": chosen["f1"],
                    "val_bpd_raw": raw["bpd"], "val_bpd_ema": ema["bpd"] if ema else None,
                    "val_n": len(self.val_y), "train_config": cfg.to_dict(), "amp": self.amp.to_dict()}
            save_model(wd / "model.safetensors", model, metadata=meta)
            if chosen["bpd"] < self.best_bpd:
                self.best_bpd = chosen["bpd"]
                save_model(wd / "best.safetensors", model, metadata={**meta, "selected_by": "val_bpd"})
        self.ctx.barrier()
        return res

    def _finish_epoch_row(self, partial: bool) -> dict:
        cfg, a = self.cfg, self.acc
        sums = torch.tensor([a["bpd_sum"], float(a["good"])], dtype=torch.float64)
        if self.ctx.world > 1:  # NCCL reduces device tensors only
            sums = self.ctx.all_reduce(sums.to(self.ctx.device)).cpu()
        good = sums[1].item() / self.ctx.world
        train_bpd = sums[0].item() / self.ctx.world / good if good else None
        row = {"epoch": self.epoch + 1, "step": self.step, "train_bpd": train_bpd}
        row.update({k: None for k in METRIC_COLUMNS if k not in row})
        last = self.epoch + 1 >= cfg.epochs
        if partial or last or (self.epoch + 1) % cfg.val_every == 0:
            row.update(self._evaluate_and_export())
            # An untrained network scores about 9 bits/dim; twice the uniform model's 8 means divergence.
            if self.ctx.main and row["val_bpd"] is not None and min(row["val_bpd"], row["val_bpd_raw"]) > 16:
                warnings.warn(f"validation bits/dim {row['val_bpd']:.4g} at epoch {self.epoch + 1} is more than "
                              f"twice a uniform model's 8 bits/dim: the run has diverged (lr {cfg.lr} too high?)")
        row.update({"lr": lr_at(cfg, self.step), "seconds": round(a["seconds"], 3),
                    "images_per_s": round(a["images"] / a["seconds"], 2) if a["seconds"] > 0 else None,
                    "bad_steps": a["bad"], "partial": partial})
        return row

    # ---------------------------------------------------------------- loop
    def _out_of_time(self, started: float) -> bool:
        late = time.monotonic() - started >= self.cfg.max_minutes * 60
        if self.ctx.world > 1:  # every rank must stop at the same batch
            flag = torch.tensor(float(late), device=self.ctx.device)
            late = bool(self.ctx.all_reduce(flag, dist.ReduceOp.MAX).item())
        return late

    def run(self) -> list:
        cfg, ctx = self.cfg, self.ctx
        from tqdm.auto import tqdm
        self.last_save = started = time.monotonic()
        B, b = cfg.batch_size, self.local_batch
        lo = ctx.rank * b
        stop = False
        try:
            while self.epoch < cfg.epochs and not stop:
                if cfg.max_steps is not None and self.iteration >= cfg.max_steps:
                    break
                if self.perm is None:
                    self.perm = torch.randperm(len(self.train_labels), generator=self.gen)
                bar = tqdm(total=self.steps_per_epoch, initial=self.pos, disable=not self.progress,
                           desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
                done_here = 0
                t0 = time.perf_counter()
                while self.pos < self.steps_per_epoch:
                    if cfg.max_steps is not None and self.iteration >= cfg.max_steps:
                        stop = True
                        break
                    if cfg.max_minutes is not None and self._out_of_time(started):
                        stop = True
                        break
                    idx = self.perm[self.pos * B:(self.pos + 1) * B]
                    imgs = augment(self.train_images[idx], cfg.augment, self.gen)[lo:lo + b]
                    x = to_float(imgs.to(ctx.device, non_blocking=True))
                    y = self.train_labels[idx][lo:lo + b].to(ctx.device, non_blocking=True)
                    if cfg.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    bpd, bad, due = self._train_step(x, y)
                    self.pos += 1
                    self.iteration += 1
                    done_here += 1
                    now = time.perf_counter()
                    self.acc["seconds"] += now - t0
                    t0 = now
                    self.acc["images"] += B
                    if bad:
                        self.acc["bad"] += 1
                        self.bad_total += 1
                        self.bad_in_row += 1
                        if ctx.main:
                            warnings.warn(f"non-finite loss or gradient at batch {self.iteration} (epoch "
                                          f"{self.epoch + 1}): step skipped ({self.bad_in_row} in a row)")
                        self._check_finite("the run cannot recover")  # skipping steps cannot help then
                        if self.bad_in_row >= cfg.max_bad_steps:
                            raise TrainingStopped(
                                f"training stopped: {self.bad_in_row} non-finite steps in a row (NaN/inf loss or "
                                f"gradient) at batch {self.iteration}, epoch {self.epoch + 1}; max_bad_steps="
                                f"{cfg.max_bad_steps}. Lower lr, set grad_clip, or check the data; "
                                f"{self._last_good_note()}")
                    else:
                        self.bad_in_row = 0
                        self.acc["bpd_sum"] += bpd
                        self.acc["good"] += 1
                        self.loggers.step(self.step, bpd, lr_at(cfg, self.step))
                    if self.progress:
                        bar.update(1)
                        if done_here % 5 == 1 or self.pos == self.steps_per_epoch:
                            rate = self.acc["images"] / max(self.acc["seconds"], 1e-9)
                            bar.set_postfix(bpd=f"{bpd:.3f}", img_s=f"{rate:.0f}", refresh=False)
                    if due and self.pos < self.steps_per_epoch:
                        self._save()
                bar.close()
                if done_here == 0:  # nothing happened since the (resumed) state: no row to log
                    break
                partial = self.pos < self.steps_per_epoch
                row = self._finish_epoch_row(partial)
                self.history.append(row)
                if not partial:
                    self.epoch += 1
                    self.pos = 0
                    self.perm = None
                    self.acc = self._new_epoch_acc()
                self._save()
                if ctx.main:
                    _write_metric_files(self.workdir, self.history, append_row=row)
                    self.loggers.epoch(row)
                    if self.progress:
                        shown = {k: row[k] for k in ("train_bpd", "val_bpd", "val_acc", "val_bpd_raw",
                                                     "val_acc_raw") if row[k] is not None}
                        tqdm.write(f"epoch {row['epoch']}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        finally:
            self.loggers.close()
        ctx.barrier()
        return self.history


# --------------------------------------------------------------------------- CLI

def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="JSON TrainConfig (e.g. configs/starter.json); default: the workdir's "
                                    "config.json when resuming, else the defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set lr=2e-4 --set model.nr_filters=80 (repeatable)")
    p.add_argument("--workdir", required=True, help="run folder: config, metrics, checkpoints")
    p.add_argument("--resume", action="store_true", help="continue the run in --workdir from last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --workdir: its "
                   "checkpoints, exports and metrics are deleted first (without it they are never replaced)")
    p.add_argument("--data-dir", help="CPEN455 data folder (sets data_dir)")
    p.add_argument("--data-tensors", help="a torch.save'd dict {'train': {'images', 'labels'}, "
                                          "'validation': {...}} (uint8 images) used instead of --data-dir")
    p.add_argument("--max-steps", type=int, help="stop after this many batches (sets max_steps)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args) -> TrainConfig:
    if args.config:
        with open(args.config) as f:
            d = json.load(f)
    elif args.resume:  # the run's own config, never the defaults
        wd = Path(args.workdir)
        if not (wd / "last.pt").exists():
            raise WorkdirError(f"--resume: {wd} holds no run state (no last.pt) to resume from; check the "
                               "--workdir path, or pass --config to start a run there")
        if not (wd / "config.json").exists():
            raise WorkdirError(f"--resume: {wd} has a last.pt but no config.json; pass the run's --config")
        with open(wd / "config.json") as f:
            d = json.load(f)
    else:
        d = {}
    d = apply_overrides(d, args.overrides)
    if args.data_dir is not None:
        d["data_dir"] = args.data_dir
    if args.max_steps is not None:
        d["max_steps"] = args.max_steps
    return TrainConfig.from_dict(d)


def _run(args) -> int:
    try:
        cfg = config_from_args(args)
    except (ValueError, TypeError, OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        train_data, val_data = read_data_tensors(args.data_tensors) if args.data_tensors else (None, None)
        train(cfg, args.workdir, train_data, val_data, resume=args.resume, progress=not args.no_progress,
              overwrite=args.overwrite)
    # ValueError: the project's own errors (WorkdirError, CheckpointError, DataError) and bad inputs.
    except (ValueError, TrainingStopped, DiskFullError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def read_data_tensors(path) -> tuple:
    """``(train, validation)`` ``(images, labels)`` pairs from a ``--data-tensors`` file, or ``ValueError``."""
    try:
        t = read_tensor_file(path)
    except CheckpointError as e:
        raise ValueError(f"--data-tensors {e}") from e
    layout = "{'train': {'images': uint8 (N,3,S,S), 'labels': (N,)}, 'validation': {...}}"
    if not isinstance(t, dict):
        raise ValueError(f"--data-tensors {path} holds a {type(t).__name__}, not a dict {layout}")
    out = []
    for split in ("train", "validation"):
        if not isinstance(t.get(split), dict):
            what = f"has no {split!r} entry" if split not in t else f"has a {type(t[split]).__name__} as {split!r}"
            raise ValueError(f"--data-tensors {path} {what}; expected {layout}")
        for key in ("images", "labels"):
            if not torch.is_tensor(t[split].get(key)):
                raise ValueError(f"--data-tensors {path}: {split!r} has no {key!r} tensor; expected {layout}")
        out.append((t[split]["images"], t[split]["labels"]))
    return tuple(out)


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train`` on an argparse subparsers object (``python -m pcnn train ...``)."""
    p = subparsers.add_parser("train", help="train a model", description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    p.set_defaults(func=_run)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pcnn.train", description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    return _run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
