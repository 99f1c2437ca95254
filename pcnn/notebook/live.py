"""Training from a notebook: the presets and what each is for, what an epoch costs on a measured
GPU, and :func:`train_live` -- a run trained epoch by epoch with a live plot and samples every N
epochs, continued (never replaced) when it already exists, also from a new runtime.

Notebook 02 is its user (04 trains a tiny run with it). Where a run lives, and the only way to
delete one, are in :mod:`pcnn.notebook.runtime`.
"""
from __future__ import annotations

import logging
import dataclasses
import json
import warnings
from pathlib import Path
from typing import Optional

from pcnn import logs, paths
from pcnn.model.checkpoint import load, read_metadata
from .runtime import (completed_epochs, config_path, device, display_handle, find_checkpoint, show_path)
from .runtime import show_progress
from pcnn.viz.training import LiveLossPlot
from pcnn.viz.images import show_grid
from pcnn.viz.samples import same_noise_grid
from pcnn.sampling.sets import save_png
from pcnn.train import TrainConfig, read_metrics, train
from pcnn.train.workdir import break_idle_lock

#: Measured GPU speeds the notebooks quote (labelled as estimates), relative to the checkout.
#: The GPU speeds measured for issue #26 (package data, so a wheel has them too; the library
#: never reads results/ at run time).
GPU_FIGURES = Path(__file__).with_name("gpu_speeds.json")

#: What each preset in ``configs/`` is for (the files' own ``description`` says how it was run).
PRESET_USES = {
    "starter.json": "the course starter's size (1/40/5, class bias in every block): a first run",
    "cpu_film40.json": "1/40/5 with FiLM in every block, likelihood only: phase A of the shipped model",
    "cpu_film40_disc.json": "phase B: fine-tunes the phase-A export with the discriminative term "
                            "(more accuracy, a little higher bits/dim): the shipped model; needs its init_from file",
    "cpu_film40_disc_c.json": "phase C: continues phase B from the shipped export (issue #27, in timed invocations)",
    "film_large.json": "1/160/5, FiLM + input planes + bottleneck + mixture bias: a GPU run",
    "report_chan.json": "a course report's best model (3/90/5, first_conv): a GPU run",
    "report_shakouri.json": "a course report's model (2/100/5, four fusions): a GPU run",
    "fusion_budget.json": "the 2-epoch budget of the first fusion comparison (history, notebook 05)",
    "fusion_cpu10.json": "the fusion comparison v2 on a CPU: 10 epochs per strategy and seed (results/fusion)",
    "fusion_gpu30.json": "the fusion comparison v2 on a lent GPU: 30 epochs, 3 seeds (results/fusion)",
    "scaling_probe.json": "the recipe scripts/scaling_probe.py sizes (results/scaling)",
    "shipped_cpu.json": "stage 1 of the previous shipped model (history, notebook 04)",
    "shipped_cpu_disc.json": "stage 2 of the previous shipped model (history)",
    "shipped_cpu_disc2_w002.json": "a stopped stage-3 try of the previous model (history)",
    "shipped_cpu_disc3.json": "stage 3 of the previous shipped model (history)",
    "shipped_cpu_disc4.json": "stage 4 of the previous shipped model (history)",
    "lever_dropout0.json": "a 4-epoch lever probe, dropout 0 (history)",
    "smoke.json": "a tiny network for tests: seconds, not a model worth keeping",
}

log = logging.getLogger(__name__)


def gpu_figures() -> Optional[dict]:
    """The measured GPU speeds (:data:`GPU_FIGURES`; None if the file is missing)."""
    return json.loads(GPU_FIGURES.read_text()) if GPU_FIGURES.is_file() else None


def _nearest_rate(nr_filters: int, nr_resnet: int, figures: dict) -> tuple:
    """``(images/s, measured row)`` for a network of ``nr_filters`` and ``nr_resnet``: the slowest
    figure measured for the nearest ``nr_filters``, divided by ``nr_resnet`` (every measured network
    has one block per stage; the GPU step is bound by kernel launches, which grow with the
    number of blocks). An estimate, and labelled as one wherever it is shown."""
    rows = sorted(figures["measured"], key=lambda r: (abs(r["nr_filters"] - nr_filters), r["images_per_s"]))
    return rows[0]["images_per_s"] / max(1, nr_resnet), rows[0]


def gpu_epoch_estimate(model_config, n_train: int, figures: Optional[dict] = None) -> Optional[str]:
    """An estimate of the training seconds per epoch on the GPU of ``figures`` (default
    :func:`gpu_figures`) for a model like ``model_config`` and ``n_train`` images
    (:func:`_nearest_rate`), labelled as an estimate."""
    figures = figures if figures is not None else gpu_figures()
    if not figures:
        return None
    rate, r = _nearest_rate(model_config.nr_filters, model_config.nr_resnet, figures)
    depth = f", divided by nr_resnet {model_config.nr_resnet}" if model_config.nr_resnet > 1 else ""
    return (f"estimate: about {n_train / rate:.0f} s of training per epoch of {n_train} images on one {figures['gpu']} "
            f"({r['images_per_s']:,} img/s measured for {r['what']}{depth}, {figures['source']}); validation adds to "
            f"it, a free T4 is slower (not measured here), and the trainer's GPU fast path is faster")


def epoch_estimates(n_train: int, names=None, figures: Optional[dict] = None) -> list:
    """One line per preset (default: every ``configs/*.json``): the estimated seconds of training per
    epoch of ``n_train`` images on the measured GPU (:func:`_nearest_rate`, the rule of
    :func:`gpu_epoch_estimate`), or one line saying no GPU figures are available."""
    figures = figures if figures is not None else gpu_figures()
    if not figures:
        return ["no measured GPU figures here (pcnn/notebook/gpu_speeds.json is missing): no epoch estimates"]
    out = [f"estimated training seconds per epoch of {n_train:,} images on one {figures['gpu']} (measured images/s "
           "of the nearest width, divided by nr_resnet; validation adds to it; a T4 is slower, not measured):"]
    for name in names or [f"{n}.json" for n in paths.preset_names()]:
        m = json.loads(config_path(name).read_text()).get("model", {})
        rate, _ = _nearest_rate(m.get("nr_filters", 160), m.get("nr_resnet", 1), figures)
        out.append(f"  {name:<28} about {n_train / rate:.0f} s "
                   f"({m.get('nr_resnet', '?')}/{m.get('nr_filters', '?')}/{m.get('nr_logistic_mix', '?')}, "
                   f"{rate:,.0f} img/s)")
    return out


def preset_lines(names=None) -> list:
    """One line per preset (default: every ``configs/*.json``): file name, network
    (nr_resnet/nr_filters/K, fusion), epochs, and what it is for (:data:`PRESET_USES`, else its
    description); the preset whose description matches the shipped checkpoint's is marked."""
    shipped = None
    ck = find_checkpoint()
    if ck is not None:
        shipped = (read_metadata(ck).get("train_config") or {}).get("description")
    out = []
    for name in names or [f"{n}.json" for n in paths.preset_names()]:
        d = json.loads(config_path(name).read_text())
        m = d.get("model", {})
        fusion = m.get("fusion", "")
        fusion = "+".join(fusion) if isinstance(fusion, list) else fusion
        net = f"{m.get('nr_resnet', '?')}/{m.get('nr_filters', '?')}/{m.get('nr_logistic_mix', '?')} {fusion}"
        use = PRESET_USES.get(name) or d.get("description", "").split(". ")[0]
        mark = "  <- the shipped model's recipe" if shipped and d.get("description") == shipped else ""
        out.append(f"{name:<28} {net:<40} {d.get('epochs', '?'):>4} epochs  {use}{mark}")
    return out


def train_live(config, workdir, until: int, train_data=None, val_data=None, plot: Optional[LiveLossPlot] = None,
               progress: Optional[bool] = None, samples_every: int = 0, samples_per_class: int = 4,
               idle_minutes: Optional[float] = None) -> list:
    """Train the run in ``workdir`` until it has ``until`` whole epochs: one :func:`pcnn.train.train`
    call for the whole run (``resume=True`` once a ``last.pt`` exists), whose per-epoch callbacks
    redraw ``plot`` from ``metrics.jsonl`` and show samples. Returns the full history; a run already
    there is continued (nothing is trained when it has ``until`` epochs), never replaced.

    One trainer per run: the loss is compiled once (``compile=auto`` on a GPU), and the
    precision and fast-path lines are shown once, on stdout (:func:`pcnn.logs.show`). Each call
    continues exactly from ``workdir/last.pt``; only ``epochs`` differs between calls, so the run
    equals one uninterrupted run, also across a restarted kernel or a new runtime.
    ``samples_every`` > 0: after every such epoch, a same-noise grid of ``samples_per_class`` per
    class (from the export when validation ran at that epoch, else from the EMA weights) is saved
    as ``samples/epoch_<e>.png`` and shown. A lock left by another host (a recycled runtime) is
    taken over when the run's files have been idle ``idle_minutes`` (default 3 x
    ``checkpoint_minutes``; :func:`pcnn.train.workdir.break_idle_lock`). An interrupted kernel stops the
    trainer after its batch (it evaluates, exports and saves ``last.pt``); this then raises
    ``KeyboardInterrupt``, so Run all stops there as an interrupt should.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    workdir = Path(workdir)
    progress = show_progress() if progress is None else progress
    logs.show("stdout")  # the trainer logs; a notebook paints stderr red
    note = break_idle_lock(workdir, idle_minutes if idle_minutes is not None else 3 * cfg.checkpoint_minutes)
    if note:
        log.info(note)
    done = completed_epochs(workdir)
    if done >= until:
        log.info(f"{show_path(workdir)} already has {done} epoch(s) (target {until}): nothing to train")
        return read_metrics(workdir)
    if done:
        log.info(f"resuming {show_path(workdir)} after epoch {done}")
    callbacks = []
    if plot is not None:
        def redraw(ev) -> None:
            plot.update(ev.workdir)
        callbacks.append(redraw)
    if samples_every:
        callbacks.append(_EpochSamples(samples_every, samples_per_class))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"resuming with changed settings \['epochs'\]$")
        rows = train(dataclasses.replace(cfg, epochs=until), workdir, train_data=train_data, val_data=val_data,
                     resume=(workdir / "last.pt").exists(), progress=progress, callbacks=callbacks)
    if rows and rows[-1].get("partial"):   # the kernel was interrupted (or a SIGTERM): the trainer saved last.pt
        raise KeyboardInterrupt(f"training stopped inside epoch {rows[-1]['epoch']}; last.pt is saved: run this "
                                "cell again (or Run all) to resume")
    done = completed_epochs(workdir)
    if done < until:  # interrupted between epochs (during validation, saving or a callback)
        raise KeyboardInterrupt(f"training stopped after epoch {done} of {until}; last.pt is saved: run this "
                                "cell again (or Run all) to resume")
    return read_metrics(workdir)


class _EpochSamples:
    """The per-epoch callback of :func:`train_live` that saves and shows a same-noise grid every
    ``every`` epochs, updating one output in place."""

    def __init__(self, every: int, per_class: int):
        self.every, self.per_class, self.handle = every, per_class, None

    def __call__(self, ev) -> None:
        if ev.epoch % self.every:
            return
        if ev.exported:  # validation ran: the export is what the run would hand out now
            _, grid = save_epoch_samples(ev.workdir, ev.epoch, self.per_class)
            what = "export"
        else:
            grid = same_noise_grid(ev.model, per_class=self.per_class, seed=0, scale=2)
            save_png(grid, Path(ev.workdir) / "samples" / f"epoch_{ev.epoch:03d}.png")
            what = f"{'EMA' if ev.weights == 'ema' else 'raw'} weights"
        import matplotlib.pyplot as plt  # only when samples are shown
        fig = show_grid(grid, title=f"samples after epoch {ev.epoch} ({what}, seed 0)", width=None)
        if self.handle is None:
            self.handle = display_handle(fig)
        else:
            self.handle.update(fig)
        plt.close(fig)


def save_epoch_samples(workdir, epoch: int, per_class: int = 4, seed: int = 0) -> tuple:
    """A same-noise grid (:func:`pcnn.viz.samples.same_noise_grid`) of the export in ``workdir`` saved as
    ``workdir/samples/epoch_<epoch>.png``; returns ``(path, grid)``."""
    model = load(Path(workdir) / "model.safetensors", device=device())
    grid = same_noise_grid(model, per_class=per_class, seed=seed, scale=2)
    return save_png(grid, Path(workdir) / "samples" / f"epoch_{epoch:03d}.png"), grid


def history_lines(rows, ema: bool = True) -> list:
    """One line per whole epoch: train bits/dim, validation bits/dim and accuracy of the EMA
    weights and of the raw weights (both where they differ), seconds; 4 decimals."""
    out = []
    for r in rows:
        if r.get("partial"):
            continue
        parts = [f"epoch {r['epoch']}", f"train {r['train_bpd']:.4f} bpd" if r.get("train_bpd") is not None else ""]
        if r.get("val_bpd") is not None:
            if ema:
                parts.append(f"validation EMA {r['val_bpd']:.4f} bpd / {r['val_acc']:.4f} acc")
                parts.append(f"raw {r['val_bpd_raw']:.4f} bpd / {r['val_acc_raw']:.4f} acc")
            else:
                parts.append(f"validation {r['val_bpd']:.4f} bpd / {r['val_acc']:.4f} acc")
        if r.get("seconds") is not None:
            parts.append(f"{r['seconds']:.0f} s")
        out.append(", ".join(p for p in parts if p))
    return out


def export_line(meta: dict) -> str:
    """What ``model.safetensors`` holds, from its metadata: which weights (EMA or raw, the lower
    validation bits/dim) and their figures, beside the other weights' bits/dim."""
    other = "raw" if meta.get("weights") == "ema" else "EMA"
    other_bpd = meta.get("val_bpd_raw") if other == "raw" else meta.get("val_bpd_ema")
    tail = f"; {other} weights {other_bpd:.4f} bpd" if other_bpd is not None else ""
    return (f"export: {meta.get('weights')} weights after epoch {meta.get('epoch')} (step {meta.get('step')}): "
            f"validation {meta['val_bpd']:.4f} bpd, accuracy {meta['val_acc']:.4f}{tail}")
