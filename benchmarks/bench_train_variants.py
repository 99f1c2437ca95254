"""Before/after of each training-speed change, measured interleaved in one process.

    python benchmarks/bench_train_variants.py [--rounds 6] [--compile] [--out benchmarks/results/train_variants_cpu.md]
    python benchmarks/bench_train_variants.py --variants pcnn-before pcnn --profile   # where the time goes

This machine's speed drifts by tens of percent over minutes (shared host), and
the project's sessions do not always get the same CPU model, so variants are
timed in alternation (A B C A B C ...) and compared by the median of their
rounds, never against a figure taken at another time or on another machine.
Every variant is the same model maths (course starter size 1/40/5, batch 32,
fusion blocks, dropout 0.5, the same loss); only how the pieces are computed differs:

  port-style    : the pieces a straightforward port of the original code uses:
                  ``torch.nn.Dropout`` (Bernoulli mask) and 1x1 "NIN" layers done as
                  permute -> reshape -> weight-normed Linear -> reshape -> permute
  where-dropout : our model with the byte-mask dropout applied by ``torch.where``
                  (what pcnn shipped before the float-mask change)
  eager-celu    : pcnn with concat-ELU as three eager ops (neg, cat, elu) instead of
                  its single autograd node (what pcnn shipped before that change)
  pcnn-before   : where-dropout and eager-celu together: the library before both changes
  pcnn          : the library as it is (byte mask, applied by a multiply; 1x1 convs in NCHW)
  pcnn-cl       : the same in channels-last memory format (TrainConfig.channels_last)
  port-style-2d : port-style with channel-wise ``nn.Dropout2d`` (as some ports do); NOT the
                  same maths (whole channels dropped), shown because it is the cheap extreme
  no-dropout    : pcnn without dropout: NOT the same maths, the floor for what dropout costs
  compiled      : pcnn under torch.compile (CPU inductor; one-off compile time reported)
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import weight_norm

import pcnn
import pcnn.model.layers
from bench_model import cpu_name, emit  # same folder: run as `python benchmarks/...`
from pcnn.model.layers import NIN, ByteDropout
from pcnn.model.likelihood import nll


class WhereByteDropout(ByteDropout):
    """The previous ByteDropout: the same byte mask, applied with a select."""

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = self.keep_mask(x)
        return torch.where(keep, x * self.scale, torch.zeros((), dtype=x.dtype, device=x.device))


class PermuteNIN(nn.Module):
    """A 1x1 layer the way the original code (and ports of it) computes it: a dense
    layer over the channel axis after moving channels last."""

    def __init__(self, cin, cout):
        super().__init__()
        self.lin = weight_norm(nn.Linear(cin, cout))

    def forward(self, x):
        b, c, h, w = x.shape
        z = self.lin(x.permute(0, 2, 3, 1).reshape(b * h * w, c))
        return z.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def _swap(model, kind, factory):
    for m in list(model.modules()):
        for name, child in list(m.named_children()):
            if isinstance(child, kind):
                setattr(m, name, factory(child))


@contextlib.contextmanager
def _eager_concat_elu():
    saved = pcnn.model.layers.concat_elu
    pcnn.model.layers.concat_elu = lambda x: torch.nn.functional.elu(torch.cat([x, -x], dim=1))
    try:
        yield
    finally:
        pcnn.model.layers.concat_elu = saved


def make(variant):
    torch.manual_seed(0)
    cfg = pcnn.ModelConfig(nr_resnet=1, nr_filters=40, nr_logistic_mix=5, fusion="blocks")
    model = pcnn.PixelCNNpp(cfg).train()
    if variant.startswith("port-style"):
        drop_cls = nn.Dropout2d if variant == "port-style-2d" else nn.Dropout
        _swap(model, ByteDropout, lambda d: drop_cls(d.p))
        _swap(model, NIN, lambda n: PermuteNIN(n.conv.in_channels, n.conv.out_channels))
    if variant == "no-dropout":
        _swap(model, ByteDropout, lambda d: nn.Identity())
    if variant in ("where-dropout", "pcnn-before"):
        _swap(model, ByteDropout, lambda d: WhereByteDropout(d.p))
    cl = variant == "pcnn-cl"
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def loss_fn(x, y):
        return nll(x, model(x, y, check=False), 5, reduction="mean")
    fn = torch.compile(loss_fn) if variant == "compiled" else loss_fn

    def step(x, y):
        if variant in ("eager-celu", "pcnn-before"):
            with _eager_concat_elu():
                return _step(x, y)
        return _step(x, y)

    def _step(x, y):
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        fn(x, y).backward()
        opt.step()
    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per round")
    ap.add_argument("--compile", action="store_true", help="include the torch.compile variant")
    ap.add_argument("--variants", nargs="+", default=None, help="subset to run, in this order")
    ap.add_argument("--profile", action="store_true",
                    help="instead of timing, print torch.profiler's op table (3 steps) for each variant")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (32, 3, 32, 32), generator=g).float() / 127.5 - 1
    y = torch.arange(32) % 4
    variants = ["port-style", "port-style-2d", "pcnn-before", "where-dropout", "eager-celu", "pcnn", "pcnn-cl",
                "no-dropout"]
    variants = (a.variants or variants) + (["compiled"] if a.compile else [])
    steps, notes = {}, {}
    for v in variants:
        t = time.perf_counter()
        steps[v] = make(v)
        steps[v](x, y)  # warm-up (and compilation)
        notes[v] = time.perf_counter() - t
    if a.profile:
        from torch.profiler import profile
        for v in variants:
            with profile() as prof:
                for _ in range(3):
                    steps[v](x, y)
            print(f"## {v}\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
        return
    rates = {v: [] for v in variants}
    for _ in range(a.rounds):
        for v in variants:
            t = time.perf_counter()
            for _ in range(a.steps):
                steps[v](x, y)
            rates[v].append(32 * a.steps / (time.perf_counter() - t))
    base = statistics.median(rates[variants[0]])
    lines = [f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch 32, starter size 1/40/5, "
             f"{a.rounds} interleaved rounds of {a.steps} steps", "",
             f"| variant | train-step img/s (median) | rounds | vs {variants[0]} | first step incl. setup (s) |",
             "|---|---|---|---|---|"]
    for v in variants:
        med = statistics.median(rates[v])
        lines.append(f"| {v} | {med:.1f} | {', '.join(f'{r:.1f}' for r in rates[v])} | {med / base:.2f}x | "
                     f"{notes[v]:.1f} |")
    emit(lines, a.out)


if __name__ == "__main__":
    main()
