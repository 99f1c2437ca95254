"""Forward + backward time of the elementwise pieces that were rewritten for speed.

    python benchmarks/bench_elementwise.py [--repeats 20] [--out benchmarks/results/elementwise_cpu.md]

Dropout at p = 0.5 on a (32, 80, 32, 32) tensor (the widest dropout input at the
starter size, batch 32): ``nn.Dropout``, the byte mask applied by ``torch.where``
(pcnn before) and by a multiply (pcnn now). Concat-ELU on (32, 40, 32, 32):
three eager ops vs ``pcnn.model.layers.concat_elu``'s single autograd node. Each
figure is the mean of --repeats forward + backward calls after 2 warm-up calls,
the variants of one piece alternating in two passes.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bench_model import cpu_name, emit  # same folder: run as `python benchmarks/...`
from bench_train_variants import WhereByteDropout
from pcnn.model.layers import ByteDropout, concat_elu


def _ms(fn, x, g, repeats):
    for _ in range(2):
        fn(x).backward(g)
    t = time.perf_counter()
    for _ in range(repeats):
        fn(x).backward(g)
    return (time.perf_counter() - t) / repeats * 1000


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    pieces = {
        "dropout 32x80x32x32": ((32, 80, 32, 32), (32, 80, 32, 32), {
            "nn.Dropout": torch.nn.Dropout(0.5).train(),
            "byte mask + torch.where (before)": WhereByteDropout(0.5).train(),
            "byte mask * float mask (pcnn)": ByteDropout(0.5).train()}),
        "concat-ELU 32x40x32x32": ((32, 40, 32, 32), (32, 80, 32, 32), {
            "neg + cat + elu (before)": lambda x: F.elu(torch.cat([x, -x], dim=1)),
            "one autograd node (pcnn)": concat_elu}),
    }
    lines = [f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
             f"forward + backward, mean of {a.repeats} calls, best of 2 alternating passes", "",
             "| piece | implementation | ms |", "|---|---|---|"]
    for piece, (shape, gshape, impls) in pieces.items():
        x = torch.randn(shape, requires_grad=True)
        g = torch.randn(gshape)
        times = {name: [] for name in impls}
        for _ in range(2):
            for name, f in impls.items():
                times[name].append(_ms(f, x, g, a.repeats))
        for name in impls:
            lines.append(f"| {piece} | {name} | {min(times[name]):.1f} |")
    emit(lines, a.out)


if __name__ == "__main__":
    main()
