"""What bf16 autocast would change in classification: flipped predictions, |delta log p|, speed.

    PCNN_DATA_DIR=../shared/cpen455 python benchmarks/bench_bf16_scoring.py \
        [--checkpoint checkpoints/pcnn_cpu_film40_disc.safetensors] [--out benchmarks/results/bf16_scoring_cpu.md]

Scores the whole validation split with ``pcnn.log_likelihoods`` in fp32 (the
default) and with ``precision="bf16"`` (network under bf16 autocast, likelihood
in fp32), and reports accuracy under each, how many predictions flip, the
largest and median |log p(x|c) difference| in nats, and the time of each pass.
The library keeps fp32 as the default for scoring unless nothing flips.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import pcnn
from bench_model import emit
from pcnn.data.dataset import load_split
from pcnn.model.likelihood import to_float
from pcnn.paths import default_checkpoint
from pcnn.model.precision import describe_cpu

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(default_checkpoint()),
                    help="default: the shipped checkpoint (the committed table measured stage 4)")
    ap.add_argument("--limit", type=int, default=0, help="first N validation images only (0 = all)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    model = pcnn.load(a.checkpoint)
    va = load_split("validation", size=model.config.image_size, show_progress=False)
    n = a.limit or len(va.labels)
    x, y = to_float(va.images[:n]), va.labels[:n]
    ll, secs = {}, {}
    for prec in ("fp32", "bf16", "fp32 again"):
        t = time.perf_counter()
        ll[prec] = pcnn.log_likelihoods(model, x, precision=prec.split()[0])
        secs[prec] = time.perf_counter() - t
    assert torch.equal(ll["fp32"], ll["fp32 again"]), "fp32 scoring is not repeatable"
    p32, p16 = ll["fp32"].argmax(1), ll["bf16"].argmax(1)
    d = (ll["bf16"] - ll["fp32"]).abs()
    acc = {k: (v.argmax(1) == y).float().mean().item() for k, v in ll.items() if k != "fp32 again"}
    flipped = int((p32 != p16).sum())
    margin = ll["fp32"].sort(1, descending=True).values
    margin = margin[:, 0] - margin[:, 1]
    lines = [f"{describe_cpu()}; {Path(a.checkpoint).name}; {n} validation images x "
             f"{model.config.num_classes} classes", "",
             "| precision | accuracy | seconds | flipped vs fp32 | max abs delta log p (nats) | median abs delta (nats) |",
             "|---|---|---|---|---|---|",
             f"| fp32 | {100 * acc['fp32']:.2f} % | {secs['fp32']:.1f} | | | |",
             f"| bf16 | {100 * acc['bf16']:.2f} % | {secs['bf16']:.1f} | {flipped} of {n} | {d.max():.2f} | "
             f"{d.median():.2f} |", "",
             f"Median fp32 margin between the two most likely classes: {margin.median():.2f} nats; "
             f"{int((margin < d.max()).sum())} images have a margin below the largest bf16 error. "
             f"Decision: {'bf16 could be the default (nothing flips)' if flipped == 0 else 'scoring stays fp32 by default'}."]
    emit(lines, a.out)


if __name__ == "__main__":
    main()
