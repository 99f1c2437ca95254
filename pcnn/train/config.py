"""The training configuration and its schedules: :class:`TrainConfig` (frozen, validated, one
comment per field), ``key=value`` overrides, the per-step learning rate and EMA decay, and
the export rule (EMA or raw weights)."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from pcnn.model.config import ModelConfig, from_dict
from pcnn.data.augment import AugmentConfig
from pcnn.model.precision import AMP_MODES
from .workdir import WorkdirError

OPTIMIZERS = ("adam", "adamw")
#: ``TrainConfig.compile`` values (pcnn.train.accel resolves "auto" per device).
COMPILE_MODES = ("auto", "off", "default", "reduce-overhead")


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
    model: ModelConfig = field(default_factory=ModelConfig)  # the network (see pcnn.model.config)
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
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # train-time augmentation (pcnn.data.dataset)
    seed: int = 0                     # seeds model init, data order, augmentation, dropout
    val_subset: int = 0               # evaluate on this many validation images (fixed, seeded); 0 = all
    val_every: int = 1                # evaluate every this many epochs (and always at the end)
    eval_batch_size: int = 0          # (image, class) pairs per forward pass when evaluating; 0 = auto
                                      # (CPU 32, GPU 256)
    checkpoint_minutes: float = 10.0  # save last.pt at least this often (wall-clock minutes), mid-epoch too
    checkpoint_every_steps: int = 0   # also save last.pt every this many batches; 0 = off
    max_bad_steps: int = 20           # stop (RuntimeError) after this many non-finite steps in a row
    amp: str = "auto"                 # "auto" (CUDA: bf16 where native, sm_80+, else fp16; CPU: bf16 if the CPU
                                      # has it and a probe shows it pays; see pcnn.model.precision) | "off" | "bf16"
                                      # (fp32 on a CPU without bf16 instructions, where it is emulated) | "fp16"
                                      # (GPU only)
    compile: str = "auto"             # torch.compile the training loss: "auto" (CUDA: reduce-overhead; CPU: off, it
                                      # did not pay there) | "off" | "default" | "reduce-overhead" (CUDA graphs; CUDA
                                      # only); true/false = default/off (older configs)
    channels_last: Any = "auto"       # channels-last memory format: "auto" (on on CUDA, off on CPU where it gave
                                      # nothing) | true | false
    fused_optimizer: Any = "auto"     # fused Adam/AdamW kernel (fused=True): "auto" (on on CUDA, or when check_every
                                      # > 1 needs it; off on CPU) | true | false
    device_data: Any = "auto"         # keep the training split on the device and flip there: "auto" (on on CUDA) |
                                      # true | false
    check_every: int = 0              # read the finite-loss/gradient flags back every this many steps (1 = every
                                      # step; > 1 needs the fused optimizer); 0 = auto (CUDA 50, CPU and DDP 1); see
                                      # pcnn.train.accel
    tensorboard: bool = False         # log to workdir/tensorboard (needs the tensorboard package)
    wandb: bool = False               # log to Weights & Biases (needs wandb; project from $WANDB_PROJECT)
    data_dir: Optional[str] = None    # CPEN455 data folder; None = pcnn.paths.resolve_data_dir()
    disc_weight: float = 0.0          # weight of -log p(y|x) (nats/image) added to the bits/dim loss; 0 = pure
                                      # likelihood
    init_from: Optional[str] = None   # start from these weights (a pcnn export, same model config except dropout),
                                      # e.g. to fine-tune
    max_steps: Optional[int] = None   # stop after this many batches in total (smoke runs); None = no cap
    max_minutes: Optional[float] = None  # stop (evaluated, exported, resumable) after this many wall-clock minutes
                                         # of this invocation; None = no cap
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
        if isinstance(self.compile, bool):  # older configs said true / false
            object.__setattr__(self, "compile", "default" if self.compile else "off")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"TrainConfig.compile must be one of {list(COMPILE_MODES)} (or true/false), "
                             f"got {self.compile!r}")
        for name in ("channels_last", "fused_optimizer", "device_data"):
            v = getattr(self, name)
            if not (isinstance(v, bool) or v == "auto"):
                raise ValueError(f"TrainConfig.{name} must be \"auto\", true or false, got {v!r}")
        for name in ("ema_warmup", "tensorboard", "wandb"):
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
        for name in ("warmup_steps", "val_subset", "checkpoint_every_steps", "seed", "eval_batch_size",
                     "check_every"):
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
        if self.check_every > 1 and self.fused_optimizer is False:
            raise ValueError(f"TrainConfig.check_every={self.check_every} defers the finite checks, which needs "
                             "the fused optimizer to skip a bad step on the device; set fused_optimizer to true or "
                             "auto, or check_every to 1")
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


def exports_ema(ema_value: Optional[float], raw_value: float) -> bool:
    """The export rule: the EMA weights when they exist and their validation objective
    (bits/dim, plus ``disc_weight`` x cross-entropy for a discriminative run; see
    :func:`pcnn.train.objective.validation_objective`) is no higher than the raw weights'
    (a tie keeps the EMA); the raw weights otherwise."""
    return ema_value is not None and ema_value <= raw_value


def ema_decay_at(cfg: TrainConfig, k: int) -> float:
    """EMA decay of update number ``k`` (0-based): ``min(ema, (1+k)/(10+k))`` with warm-up."""
    return min(cfg.ema, (1 + k) / (10 + k)) if cfg.ema_warmup else cfg.ema


def load_run_config(config: Optional[str] = None, workdir=None, resume: bool = False,
                    overrides: Sequence[str] = (), data_dir: Optional[str] = None,
                    max_steps: Optional[int] = None) -> TrainConfig:
    """The :class:`TrainConfig` of a run: the JSON file ``config``; else, when resuming, the
    run's own ``workdir/config.json`` (never the defaults); else the defaults. Then the
    ``key=value`` ``overrides``, ``data_dir`` and ``max_steps`` on top."""
    if config:
        with open(config) as f:
            d = json.load(f)
    elif resume:  # the run's own config, never the defaults
        wd = Path(workdir)
        if not (wd / "last.pt").exists():
            raise WorkdirError(f"--resume: {wd} holds no run state (no last.pt) to resume from; check the "
                               "--workdir path, or pass --config to start a run there")
        if not (wd / "config.json").exists():
            raise WorkdirError(f"--resume: {wd} has a last.pt but no config.json; pass the run's --config")
        with open(wd / "config.json") as f:
            d = json.load(f)
    else:
        d = {}
    d = apply_overrides(d, overrides)
    if data_dir is not None:
        d["data_dir"] = data_dir
    if max_steps is not None:
        d["max_steps"] = max_steps
    return TrainConfig.from_dict(d)
