"""Before/after of each training-speed change, measured interleaved in one process.

    python benchmarks/bench_train_variants.py [--rounds 4] [--compile] [--out benchmarks/results/train_variants_cpu.md]

This machine's speed drifts by tens of percent over minutes (shared host), so
variants are timed in alternation (A B C A B C ...) and compared by the median
of their rounds, never against a figure taken at another time.
Variants (course starter size 1/40/5, batch 32, fusion blocks, dropout 0.5):
  torch-dropout : the model with torch.nn.Dropout (Bernoulli mask) - the "before"
  byte-dropout  : our ByteDropout (pcnn.layers), the shipped default
  compiled      : byte-dropout under torch.compile (CPU inductor; one-off compile time reported)
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import pcnn
from bench_model import emit  # same folder: run as `python benchmarks/...`
from pcnn.layers import ByteDropout
from pcnn.likelihood import nll


def make(variant):
    torch.manual_seed(0)
    cfg = pcnn.ModelConfig(nr_resnet=1, nr_filters=40, nr_logistic_mix=5, fusion="blocks")
    model = pcnn.PixelCNNpp(cfg).train()
    if variant == "torch-dropout":
        for m in model.modules():
            for name, child in list(m.named_children()):
                if isinstance(child, ByteDropout):
                    setattr(m, name, torch.nn.Dropout(child.p))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def loss_fn(x, y):
        return nll(x, model(x, y, check=False), 5, reduction="mean")
    fn = torch.compile(loss_fn) if variant == "compiled" else loss_fn

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        fn(x, y).backward()
        opt.step()
    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per round")
    ap.add_argument("--compile", action="store_true", help="include the torch.compile variant")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (32, 3, 32, 32), generator=g).float() / 127.5 - 1
    y = torch.arange(32) % 4
    variants = ["torch-dropout", "byte-dropout"] + (["compiled"] if a.compile else [])
    steps, notes = {}, {}
    for v in variants:
        t = time.perf_counter()
        steps[v] = make(v)
        steps[v](x, y)  # warm-up (and compilation)
        notes[v] = time.perf_counter() - t
    rates = {v: [] for v in variants}
    for _ in range(a.rounds):
        for v in variants:
            t = time.perf_counter()
            for _ in range(a.steps):
                steps[v](x, y)
            rates[v].append(32 * a.steps / (time.perf_counter() - t))
    base = statistics.median(rates[variants[0]])
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 32, starter size 1/40/5, "
             f"{a.rounds} interleaved rounds of {a.steps} steps", "",
             "| variant | train-step img/s (median) | rounds | vs torch-dropout | first step incl. setup (s) |",
             "|---|---|---|---|---|"]
    for v in variants:
        med = statistics.median(rates[v])
        lines.append(f"| {v} | {med:.1f} | {', '.join(f'{r:.1f}' for r in rates[v])} | {med / base:.2f}x | "
                     f"{notes[v]:.1f} |")
    emit(lines, a.out)


if __name__ == "__main__":
    main()
