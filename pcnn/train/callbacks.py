"""Per-epoch callbacks of :func:`pcnn.train.train`: what a face (notebook 02's live plot, samples
every N epochs, a stop request) runs between epochs of *one* run, so the trainer, its compiled
loss and its precision line are made once per run, not once per epoch.

A callback is any callable taking an :class:`EpochEnd`; it runs after the epoch's row is
logged and ``last.pt`` is saved, so nothing it does can lose work. It returns ``True`` (the
object itself: a figure or any other truthy return value does not count) to ask the run to
stop there: the run ends with that epoch (``last.pt`` saved; ``model.safetensors`` as of the
last validation), and ``resume=True`` or the next ``train_live`` continues it exactly. Callbacks run with every
global RNG state saved and
restored around them (:func:`run_callbacks`), so a callback that samples does not change the
run: a run with callbacks equals one without, bit for bit.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from .state import rng_state, set_rng_state


@dataclasses.dataclass(frozen=True)
class EpochEnd:
    """What a callback sees after a whole epoch."""
    epoch: int                 # whole epochs done (1-based number of the epoch just finished)
    epochs: int                # the run's target (TrainConfig.epochs)
    row: dict                  # the epoch's metrics row (as in metrics.jsonl)
    history: list              # every row so far (a copy)
    workdir: Path              # the run's folder
    model: torch.nn.Module     # the weights a sample should come from: EMA when kept, else raw (eval mode)
    weights: str               # which those are: "ema" or "raw"
    exported: bool             # whether model.safetensors was written at this epoch (validation ran)

    @property
    def evaluated(self) -> bool:
        """Whether validation ran at this epoch (``val_every``, the last epoch)."""
        return self.row.get("val_bpd") is not None


Callback = Callable[[EpochEnd], Optional[bool]]


def check_callbacks(callbacks) -> tuple:
    """``callbacks`` (None, one callable or a sequence of them) as a tuple; ``TypeError`` for anything
    that is not callable."""
    if callbacks is None:
        return ()
    if callable(callbacks):
        callbacks = (callbacks,)
    out = tuple(callbacks)
    for c in out:
        if not callable(c):
            raise TypeError(f"a training callback must be callable (it receives an EpochEnd), got {c!r}")
    return out


def run_callbacks(callbacks: Sequence[Callback], event: EpochEnd) -> bool:
    """Run every callback on ``event`` (all of them, even after one asks to stop) with the global
    RNG states restored afterwards and the model left in the mode it was in; True when any
    returned ``True``."""
    if not callbacks:
        return False
    saved = rng_state()
    was_training = event.model.training
    stop = False
    try:
        event.model.eval()
        for c in callbacks:
            stop = (c(event) is True) or stop
    finally:
        event.model.train(was_training)
        set_rng_state(saved)
    return stop
