"""Save and load models with their config inside (safetensors: no code runs on load)."""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Optional

import torch

from .config import ModelConfig
from .network import PixelCNNpp

FORMAT = "pcnn-model-v1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, holds non-finite weights or does not fit its config."""


class DiskFullError(OSError):
    """No space left on the device while writing ``path``; the file's previous version is intact.

    ``kept`` says what the caller still has (e.g. the last checkpoint); it ends the message.
    """

    def __init__(self, path, kept: str = ""):
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.path, self.kept = Path(path), kept

    def __str__(self) -> str:
        return f"no space left on device while writing {self.path}" + (f"; {self.kept}" if self.kept else "")


def _umask() -> int:
    try:  # Linux: read it without changing it (thread-safe)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Free bytes below which a failed write is taken to be a full disk (torch.save's C++ writer
#: reports ENOSPC only as "file write failed" / "basic_ios::clear: iostream error").
_FULL_BELOW = 64 << 20


def atomic_write(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` then rename, so a crash never leaves half a file.

    The file gets the normal mode of a new file (0666 minus the umask, e.g. 0644),
    whatever mode the writer gave the temp file. A full disk raises
    :class:`DiskFullError` (the previous version of ``path`` stays as it was).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        try:
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(path) from e
            raise
        except RuntimeError as e:
            if shutil.disk_usage(path.parent).free < _FULL_BELOW:
                raise DiskFullError(path) from e
            raise
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()



def write_json(obj, path, indent: int = 1, sort_keys: bool = False) -> Path:
    """Write ``obj`` as JSON (plus a newline) to ``path`` atomically (:func:`atomic_write`); returns the path."""
    path = Path(path)
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path

def read_tensor_file(path) -> object:
    """``torch.load(path, weights_only=True)`` on CPU with one clear :class:`CheckpointError` for
    a missing, empty, truncated, random or hostile file (the safe loader never runs code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4 in the checkpoint"
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path} is corrupt or not a plain tensor file ({size} bytes): it holds data the "
                              "safe loader refuses, and nothing in it was run") from e
    except (RuntimeError, EOFError, ValueError, KeyError, OSError, AttributeError, IndexError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in detail:
            detail = type(e).__name__
        raise CheckpointError(f"{path} is corrupt or not a plain tensor file ({size} bytes): {detail}") from e


def nonfinite_tensors(tensors) -> list[str]:
    """Names of the floating-point tensors of a ``{name: tensor}`` mapping holding NaN or inf."""
    return [k for k, v in tensors.items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


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


def update_metadata(path, updates: dict) -> Path:
    """Rewrite the checkpoint at ``path`` with ``updates`` merged into its metadata (a key whose
    value is None is removed), weights and config bit for bit as they were; atomic. Used to put
    the recommended guidance (:data:`pcnn.sampling.guidance.METADATA_KEY`) into a shipped checkpoint."""
    from safetensors.torch import save_file
    state, meta = _open(path)
    merged = json.loads(meta.get("metadata", "{}"))
    for k, v in updates.items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v
    meta = dict(meta, metadata=json.dumps(merged, sort_keys=True))
    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata=meta))
    return Path(path)


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


def load(path, device: str | torch.device = "cpu", config: Optional[ModelConfig] = None,
         allow_nonfinite: bool = False) -> PixelCNNpp:
    """Rebuild the model stored at ``path`` from its own config, in eval mode.

    If ``config`` is given it must equal the stored one (else :class:`CheckpointError`).
    The stored metadata (:func:`read_metadata`) is kept on the model as ``checkpoint_metadata``
    (e.g. its recommended guidance, :func:`pcnn.sampling.guidance.recommended_guidance`).
    Weights holding NaN or inf (a diverged run) raise :class:`CheckpointError` unless
    ``allow_nonfinite=True`` (to inspect such a file).
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
    bad = [] if allow_nonfinite else nonfinite_tensors(state)
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite weights (NaN or inf) in {len(bad)} of "
                              f"{len(state)} tensors, e.g. {bad[:3]}: the run that wrote it diverged. Pass "
                              "allow_nonfinite=True to load it anyway")
    model.load_state_dict(state)
    try:
        model.checkpoint_metadata = json.loads(meta.get("metadata", "{}"))
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path} has unreadable metadata: {e}") from e
    return model.to(device).eval()
