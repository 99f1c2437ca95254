"""Throughput of the model: forward, training step and classification, in images/s.

    python benchmarks/bench_model.py [--sizes 1/40/5 1/160/5] [--batch 32] [--out benchmarks/results/model_cpu.md]

A training step = forward + loss + backward + Adam update (dropout on, train mode).
Classification img/s counts *images* scored against all 4 classes (4 forwards each).
Each figure is the median over --repeats timed runs after --warmup runs.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import pcnn
from pcnn.model.precision import cpu_name as precision_cpu_name
from pcnn.model.likelihood import nll


def _time(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def bench(size: str, batch: int, device: torch.device, warmup: int, repeats: int, fusion: str) -> dict:
    r, f, k = (int(v) for v in size.split("/"))
    cfg = pcnn.ModelConfig(nr_resnet=r, nr_filters=f, nr_logistic_mix=k, fusion=fusion)
    model = pcnn.PixelCNNpp(cfg).to(device)
    g = torch.Generator().manual_seed(0)
    x = (torch.randint(0, 256, (batch, 3, 32, 32), generator=g).float() / 127.5 - 1).to(device)
    y = (torch.arange(batch) % 4).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = nll(x, model(x, y, check=False), k, reduction="mean")
        loss.backward()
        opt.step()
        sync()

    model.train()
    t_train = _time(step, warmup, repeats)
    model.eval()

    @torch.no_grad()
    def fwd():
        model(x, y, check=False)
        sync()
    t_fwd = _time(fwd, warmup, repeats)

    def cls():
        pcnn.log_likelihoods(model, x)  # default chunking for the device
        sync()
    t_cls = _time(cls, max(1, warmup // 2), max(1, repeats // 2))
    return {"size": size, "batch": batch, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "forward": batch / t_fwd, "train": batch / t_train, "classify": batch / t_cls}


def cpu_name() -> str:
    """The CPU model, so tables say which machine made them (one reader: pcnn.model.precision.cpu_name)."""
    return precision_cpu_name()


def emit(lines, out=None) -> None:
    """Print a markdown table and, if ``out`` is given, write it there too."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["1/40/5", "1/160/5"], help="nr_resnet/nr_filters/nr_mix")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--fusion", default="blocks")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="also write the table (markdown) here")
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    hw = (torch.cuda.get_device_name(dev) if dev.type == "cuda" else
          f"{cpu_name()}, {torch.get_num_threads()} threads")
    lines = [f"torch {torch.__version__}, {hw}, batch {a.batch}, fusion {a.fusion}", "",
             "| size (r/f/K) | params (M) | forward img/s | train-step img/s | classify img/s (4 classes) |",
             "|---|---|---|---|---|"]
    for size in a.sizes:
        r = bench(size, a.batch, dev, a.warmup, a.repeats, a.fusion)
        lines.append(f"| {r['size']} | {r['params_M']:.2f} | {r['forward']:.1f} | {r['train']:.1f} | "
                     f"{r['classify']:.1f} |")
        print(lines[-1], flush=True)
    emit(lines, a.out)


if __name__ == "__main__":
    main()
