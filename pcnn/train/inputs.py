"""What the trainer accepts as data: a :class:`pcnn.data.dataset.Split`, an ``(images, labels)``
pair, or a ``torch.save``'d file of both splits (``--data-tensors``), checked once."""
from __future__ import annotations

import torch

from pcnn.model.checkpoint import CheckpointError, read_tensor_file
from pcnn.model.config import ModelConfig


def as_training_data(data, name: str, cfg: ModelConfig) -> tuple:
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
