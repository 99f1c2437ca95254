"""Training loop of the class-conditional PixelCNN++: exact resume, EMA, AMP, DDP.

Usage::

    python -m pcnn train --config configs/starter.json --workdir runs/starter
    python -m pcnn train --workdir runs/starter --resume          # continue exactly
    torchrun --nproc_per_node=4 -m pcnn train --config configs/report_chan.json --workdir runs/chan

Layout: :mod:`.config` (TrainConfig, schedules, overrides), :mod:`.objective` (the
loss and validation figures), :mod:`.loop` (``train`` and the Trainer), :mod:`.state` (``last.pt``: save, resume,
RNG), :mod:`.metrics` (metric
files and loggers), :mod:`.distributed` (torchrun context), :mod:`.inputs` (data checks),
:mod:`.callbacks` (per-epoch callbacks of one run: live plot, samples, a stop request),
:mod:`.stop` (a graceful stop on SIGINT or SIGTERM), :mod:`.workdir` (the run folder: lock, claiming, clearing),
:mod:`.accel` (the GPU fast path: compile, CUDA graphs, channels-last, fused optimizer, data on
the device, deferred finite checks; each ``auto`` keeps the CPU trainer as it was).

What it optimises: the mean over the batch of the negative log-likelihood in
**bits per dimension** (``nll`` nats per image / (3*H*W*ln 2)) under the
true label, i.e. maximum likelihood of ``p(x | y)``. Classification is then
``argmax_c log p(x | c)`` (:mod:`pcnn.model.classify`).

Optionally (``disc_weight`` > 0, a departure from PixelCNN++, which is purely
generative) a discriminative term is added: ``disc_weight * (-log p(y | x))``
in nats per image, with ``p(y | x)`` computed from the class likelihoods by
Bayes' rule (:func:`pcnn.model.likelihood.class_nll`). Each image then goes through
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

The run owns ``workdir`` while it runs (``train.lock``, :mod:`pcnn.train.workdir`) and
never replaces an earlier run's results without ``overwrite`` (``--overwrite``).
"""
from .config import (OPTIMIZERS, TrainConfig, apply_overrides, ema_decay_at, exports_ema, load_run_config, lr_at)
from .inputs import read_data_tensors
from .callbacks import EpochEnd
from .loop import Trainer, train
from .objective import evaluate, training_loss, validation_objective
from .metrics import METRIC_COLUMNS, read_metrics
from .state import TRAIN_STATE_FORMAT, TrainingStopped

__all__ = ["train", "EpochEnd", "TrainConfig", "apply_overrides", "load_run_config", "lr_at", "ema_decay_at",
           "exports_ema", "training_loss", "evaluate", "validation_objective", "Trainer", "TrainingStopped",
           "read_metrics", "read_data_tensors", "METRIC_COLUMNS", "TRAIN_STATE_FORMAT", "OPTIMIZERS"]
