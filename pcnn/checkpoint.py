"""Save and load models with their config inside (safetensors: no code runs on load)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import torch

from .config import ModelConfig
from .model import PixelCNNpp

FORMAT = "pcnn-model-v1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or does not fit its config."""


def atomic_write(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` then rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save(path, model: PixelCNNpp, metadata: Optional[dict] = None) -> Path:
    """Write ``model``'s weights and config to ``path`` (safetensors), atomically.

    ``metadata``: extra JSON-serialisable facts (epoch, metrics, class names...).
    """
    from safetensors.torch import save_file
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": model.config.to_json(),
            "metadata": json.dumps(metadata or {}, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))
    return path


def read_metadata(path) -> dict:
    """The ``metadata`` dict stored by :func:`save` (without loading the weights)."""
    return json.loads(_open(path)[1].get("metadata", "{}"))


def _open(path):
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers/data
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({path.stat().st_size} bytes): {e}") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pcnn model checkpoint (format {meta.get('format')!r}, "
                              f"expected {FORMAT!r})")
    return state, meta


def load(path, device: str | torch.device = "cpu", config: Optional[ModelConfig] = None) -> PixelCNNpp:
    """Rebuild the model stored at ``path`` from its own config, in eval mode.

    If ``config`` is given it must equal the stored one (else :class:`CheckpointError`).
    """
    state, meta = _open(path)
    try:
        stored = ModelConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} has an unreadable config: {e}") from e
    if config is not None and config != stored:
        raise CheckpointError(f"checkpoint {path} is for config {stored}, not the requested {config}")
    model = PixelCNNpp(stored)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    bad_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or bad_shape:
        raise CheckpointError(f"checkpoint {path} does not fit its config {stored}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, wrong shapes {bad_shape[:5]}")
    model.load_state_dict(state)
    return model.to(device).eval()
