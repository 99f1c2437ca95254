"""Frozen, validated configuration of a conditional PixelCNN++ model.

The model is PixelCNN++ (Salimans et al. 2017) made class-conditional as in the
conditional PixelCNN (van den Oord et al. 2016). A checkpoint carries this config
so :func:`pcnn.load` rebuilds the model without retyping hyperparameters.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping

#: CPEN455 classes by label; the course's file names call them Class0..Class3.
CPEN455_CLASSES = ("hamburger", "panda", "koala", "pizza")


def class_names_for(num_classes: int, class_names=None) -> list:
    """``class_names`` (default the CPEN455 names) cut or padded with ``Class<k>`` to ``num_classes``.

    The one rule for naming classes on plots, grids, widgets and tables.
    """
    names = list(CPEN455_CLASSES if class_names is None else class_names)[:num_classes]
    return names + [f"Class{k}" for k in range(len(names), num_classes)]

#: Every way the class label can enter the network (see :mod:`pcnn.model.fusion`).
FUSION_MODES = (
    "input",         # learned per-class map added to the image (early fusion)
    "input_concat",  # one-hot class planes concatenated to the input channels
    "first_conv",    # per-class embedding added to u and ul after the first convs
    "middle",        # per-class embedding added to u and ul at the 8x8 bottleneck
    "late",          # per-class bias added to the 10*K mixture parameters
    "blocks",        # per-class bias on every gated block's gate pre-activation (TF's `h`)
    "blocks_film",   # per-class FiLM (scale and shift) of every gate pre-activation
)


def parse_fusion(value: Any) -> tuple[str, ...]:
    """Normalise a fusion spec to a sorted tuple of known mode names.

    Accepts a tuple/list of names, a string joined with ``+`` or ``,``
    (``"first_conv+blocks"``), or ``"none"`` / ``""`` / ``None`` for the
    unconditional model. Unknown names raise ``ValueError`` (typos must not be
    silently accepted).
    """
    if value is None:
        return ()
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace(",", "+").split("+")]
        parts = [p for p in parts if p and p != "none"]
    else:
        parts = [str(p).strip() for p in value]
    unknown = sorted(set(parts) - set(FUSION_MODES))
    if unknown:
        raise ValueError(
            f"unknown fusion mode(s) {unknown}; choose from {list(FUSION_MODES)} "
            "(combine with '+', or 'none' for the unconditional model)")
    # Sorted so that "a+b" and "b+a" are the same config (and the same checkpoint).
    return tuple(sorted(set(parts), key=FUSION_MODES.index))


@dataclass(frozen=True)
class ModelConfig:
    nr_resnet: int = 1            # gated residual blocks per stage (down pass: +1 at 16 and 32)
    nr_filters: int = 40          # channels of both streams u and ul
    nr_logistic_mix: int = 5      # K, mixture components; the head outputs 10*K channels
    num_classes: int = 4          # classes for conditioning (CPEN455: 4)
    dropout: float = 0.5          # element-wise dropout in each gated block (as TF, not Dropout2d)
    fusion: tuple = ("blocks",)   # subset of FUSION_MODES; () = unconditional
    image_size: int = 32          # H = W in pixels; a multiple of 4 (three stages, two /2 steps)

    def __post_init__(self):
        object.__setattr__(self, "fusion", parse_fusion(self.fusion))
        for name in ("nr_resnet", "nr_filters", "nr_logistic_mix", "num_classes", "image_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {v!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.image_size % 4:
            raise ValueError(f"ModelConfig.image_size must be a multiple of 4, got {self.image_size}")

    @property
    def conditional(self) -> bool:
        return bool(self.fusion)

    def same_parameters(self, other: "ModelConfig") -> bool:
        """True when both configs build the same parameter set, so weights carry over.

        Only ``dropout`` may differ: it has no parameters (a fine-tune may lower it).
        """
        return dataclasses.replace(self, dropout=other.dropout) == other

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["fusion"] = list(self.fusion)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Build from a mapping, rejecting unknown keys with the list of valid ones."""
        return from_dict(cls, d)


def from_dict(cls, d: Mapping[str, Any]):
    """Instantiate dataclass ``cls`` from ``d``; unknown keys raise ``ValueError``."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; valid keys: {sorted(names)}")
    return cls(**dict(d))
