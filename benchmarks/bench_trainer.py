"""End-to-end training throughput of ``pcnn.train.train`` on the real CPEN455 images.

    PCNN_DATA_DIR=../shared/cpen455 python benchmarks/bench_trainer.py [--steps 40] [--batches 32 64] \
        [--rounds 2] [--out benchmarks/results/trainer_cpu.md]

Unlike ``bench_train_variants.py`` (the bare step on a fixed tensor), this runs
the trainer as users do with the course-starter preset (``configs/starter.json``,
1/40/5, fusion blocks, dropout 0.5, flips, EMA, Adam): data indexing,
augmentation, the step, the EMA update and the metric bookkeeping. The figure is
the trainer's own ``images_per_s`` (training-loop seconds only; the end-of-run
validation on ``--val`` images is not counted). Batch sizes alternate round by
round because this host's speed drifts over minutes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from bench_model import cpu_name, emit  # same folder: run as `python benchmarks/...`
from pcnn.data.dataset import load_split
from pcnn.train import TrainConfig, apply_overrides, train

ROOT = Path(__file__).resolve().parents[1]


def run_once(base: dict, batch: int, steps: int, train_data, val_data) -> float:
    """One short run of the trainer with ``base`` (a config dict); returns its images_per_s."""
    d = apply_overrides(base, [f"batch_size={batch}", f"max_steps={steps}", "epochs=1", "checkpoint_minutes=1000"])
    with tempfile.TemporaryDirectory() as wd:
        hist = train(TrainConfig.from_dict(d), wd, train_data=train_data, val_data=val_data, progress=False)
    return hist[-1]["images_per_s"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="training batches per run")
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--val", type=int, default=8, help="validation images for the end-of-run evaluation")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    tr = load_split("train", size=32, show_progress=False)
    va = load_split("validation", size=32, show_progress=False)
    val = (va.images[:a.val], va.labels[:a.val])
    base = json.loads((ROOT / "configs" / "starter.json").read_text())
    rates = {b: [] for b in a.batches}
    for _ in range(a.rounds):
        for b in a.batches:
            rates[b].append(run_once(base, b, a.steps, (tr.images, tr.labels), val))
    lines = [f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads; configs/starter.json "
             f"(1/40/5, blocks, dropout 0.5, flips, EMA); {a.steps} steps per run, {a.rounds} alternating rounds", "",
             "| batch | trainer img/s (median) | rounds |", "|---|---|---|"]
    for b in a.batches:
        lines.append(f"| {b} | {statistics.median(rates[b]):.1f} | {', '.join(f'{r:.1f}' for r in rates[b])} |")
    emit(lines, a.out)


if __name__ == "__main__":
    main()
