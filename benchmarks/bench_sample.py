"""Cached vs naive sampling speed.

    python benchmarks/bench_sample.py                       # nr_filters 40, batches 1 16 100, CPU
    python benchmarks/bench_sample.py --nr-filters 40 80 160 --threads 1
    python benchmarks/bench_sample.py --device cuda

Model: nr_resnet=1, nr_logistic_mix=5, fusion "blocks", 32x32 (the course
starter size), random weights (speed does not depend on them), eval mode.

* cached: one full ``pcnn.sample(..., method="cached")`` call per batch (after a
  warm-up call on batch 1), seconds per batch and images/s.
* naive: one naive step is a full forward on the whole batch plus the pixel
  draw; the naive sampler does S*S of them. We time ``--naive-steps`` such steps
  (after one warm-up step) and extrapolate: naive = S*S * mean step time.

Writes the table to benchmarks/results/sample_<device>.md.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from torch.nn.utils import parametrize

import pcnn
from pcnn.model.likelihood import mixture_params, sample_from_params
from pcnn.model.likelihood import draw_noise


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_cached(model, labels, device):
    _sync(device)
    t = time.perf_counter()
    pcnn.sample(model, labels, generator=torch.Generator().manual_seed(0), method="cached")
    _sync(device)
    return time.perf_counter() - t


@torch.no_grad()
def time_naive_step(model, labels, device, steps):
    """Mean seconds of one naive pixel step (full forward + draw at one pixel)."""
    cfg = model.config
    s, k = cfg.image_size, cfg.nr_logistic_mix
    u_mix, u_log = (t.to(device) for t in draw_noise(len(labels), k, s, torch.Generator().manual_seed(0)))
    x = torch.zeros(len(labels), 3, s, s, device=device)
    times = []
    with parametrize.cached():
        for n in range(steps + 1):
            i, j = divmod(n, s)
            _sync(device)
            t = time.perf_counter()
            out = model(x, labels, check=False)[:, :, i:i + 1, j:j + 1]
            x[:, :, i:i + 1, j:j + 1] = sample_from_params(mixture_params(out, k), u_mix[:, :, i:i + 1, j:j + 1],
                                                           u_log[:, :, i:i + 1, j:j + 1])
            _sync(device)
            if n:  # the first step is a warm-up
                times.append(time.perf_counter() - t)
    return sum(times) / len(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nr-filters", type=int, nargs="+", default=[40])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 100])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: torch's")
    ap.add_argument("--naive-steps", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--out", default=None, help="markdown file (default benchmarks/results/sample_<device>.md)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    header = ("| nr_filters | batch | cached s/batch | cached img/s | naive s/batch (extrap.) "
              "| naive step s | speed-up |\n|---:|---:|---:|---:|---:|---:|---:|")
    print(header)
    for nf in args.nr_filters:
        cfg = pcnn.ModelConfig(nr_resnet=1, nr_filters=nf, nr_logistic_mix=5, fusion="blocks",
                               image_size=args.image_size, dropout=0.5)
        torch.manual_seed(0)
        model = pcnn.PixelCNNpp(cfg).to(device).eval()
        time_cached(model, torch.tensor([0], device=device), device)  # warm-up
        for b in args.batches:
            labels = (torch.arange(b) % cfg.num_classes).to(device)
            cached = time_cached(model, labels, device)
            step = time_naive_step(model, labels, device, args.naive_steps)
            naive = step * cfg.image_size ** 2
            row = f"| {nf} | {b} | {cached:.2f} | {b / cached:.1f} | {naive:.0f} | {step:.3f} | {naive / cached:.0f}x |"
            rows.append(row)
            print(row, flush=True)
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    note = (f"\nDevice: {args.device} ({dev}), torch {torch.__version__}, intra-op threads: {threads}, "
            f"image {args.image_size}x{args.image_size}, nr_resnet=1, nr_logistic_mix=5, fusion blocks.\n"
            "cached: one full `pcnn.sample(method=\"cached\")` call per batch. naive: extrapolated as "
            f"S*S x the mean time of {args.naive_steps} naive pixel steps (each one full forward + the "
            "pixel draw), not run to the end.\n")
    print(note)
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"sample_{device.type}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# Sampling speed: cached vs naive\n\n" + header + "\n" + "\n".join(rows) + "\n" + note)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
