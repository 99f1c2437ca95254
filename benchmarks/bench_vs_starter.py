"""pcnn's training speed against the real CPEN455 course starter, timed alternately in one process.

    python benchmarks/bench_vs_starter.py --starter-dir ../shared/cpen455-starter \
        [--sizes 1/40/5 1/160/5] [--rounds 3] [--steps 3] [--levers] [--out benchmarks/results/vs_starter_cpu.md]

The starter's ``model.py`` / ``layers.py`` / ``utils.py`` are imported at run
time from ``--starter-dir`` (the course's public code; nothing of it is copied
into this repository). Variants, per size, batch 32, Adam, on one fixed batch of
real training images (random images when no data folder is found):

  starter        the starter's own step: its PixelCNN (unconditional, Dropout2d 0.5),
                 its discretized_mix_logistic_loss, fp32
  pcnn-fp32      our bare step with the starter's settings (dropout 0.5, fp32), but
                 class-conditional (FiLM in every gated block), i.e. more work
  pcnn-auto      the same under the precision amp="auto" picks on this machine
  trainer-auto   the real trainer end to end (pcnn.train.train on in-memory data:
                 indexing, flips, the step, EMA), amp="auto"; its own images_per_s

``--levers`` adds, at 1/40/5 only, the candidates of issue 13 item 4 under the
same precision as pcnn-auto: channels-last, batch 64, torch.compile (inductor),
and one thread. Rounds alternate all variants of a size (A B C D A B C D ...) and
each figure is the median of its rounds, because this host's speed drifts.

Also reported: the machine's measured peaks (a 2048x2048 matmul in fp32 and bf16)
and each step's achieved GFLOP/s (FLOPs of one forward + backward counted by
``torch.utils.flop_counter``), so the distance to the limit is known.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import pcnn
from bench_model import emit  # same folder: run as `python benchmarks/...`
from pcnn.model.precision import autocast, describe_cpu, resolve_amp
from pcnn.train import TrainConfig, train, training_loss

BATCH = 32


def load_starter(starter_dir: Path):
    """Import the starter's model and loss from its folder (its files import each other by bare name)."""
    starter_dir = Path(starter_dir).resolve()
    if not (starter_dir / "model.py").is_file() or not (starter_dir / "utils.py").is_file():
        raise SystemExit(f"error: {starter_dir} does not hold the course starter's model.py and utils.py")
    sys.path.insert(0, str(starter_dir))
    try:
        model_mod = importlib.import_module("model")
        utils_mod = importlib.import_module("utils")
    finally:
        sys.path.remove(str(starter_dir))
    return model_mod.PixelCNN, utils_mod.discretized_mix_logistic_loss


@functools.lru_cache(maxsize=1)
def _train_split():
    """The training split at 32x32, decoded once per process (every size and batch reuses it)."""
    from pcnn.data.dataset import load_split
    return load_split("train", size=32, show_progress=False)


def batch_of_images(batch: int = BATCH, random_data: bool = False):
    """(x in [-1, 1], labels) from the training split, or seeded random images without data."""
    try:
        if random_data:
            raise OSError("random images asked for")
        tr = _train_split()
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(tr.labels), generator=g)[:batch]
        return tr.images[idx].float() / 127.5 - 1, tr.labels[idx].long(), (tr.images, tr.labels), "real training images"
    except (OSError, ValueError):
        g = torch.Generator().manual_seed(0)
        imgs = torch.randint(0, 256, (4 * batch, 3, 32, 32), generator=g, dtype=torch.uint8)
        labels = torch.arange(4 * batch) % 4
        return imgs[:batch].float() / 127.5 - 1, labels[:batch], (imgs, labels), "random images"


def model_config(size: str) -> pcnn.ModelConfig:
    r, f, k = (int(v) for v in size.split("/"))
    return pcnn.ModelConfig(nr_resnet=r, nr_filters=f, nr_logistic_mix=k, dropout=0.5, fusion="blocks_film")


def starter_step(PixelCNN, loss_fn, size: str):
    r, f, k = (int(v) for v in size.split("/"))
    torch.manual_seed(0)
    model = PixelCNN(nr_resnet=r, nr_filters=f, nr_logistic_mix=k, input_channels=3).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)

    def loss(x, y):
        return loss_fn(x, model(x))

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss(x, y).backward()
        opt.step()
    return step, loss, model


def pcnn_step(size: str, dtype, channels_last: bool = False, compiled: bool = False):
    torch.manual_seed(0)
    mc = model_config(size)
    model = pcnn.PixelCNNpp(mc).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    net = torch.compile(model) if compiled else model

    def loss(x, y):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast("cpu", dtype):
            return training_loss(net, x, y, mc)[0]

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss(x, y).backward()
        opt.step()
    return step, loss, model


def step_flops(loss, x, y) -> float:
    """FLOPs of one forward + backward of ``loss`` (counted, not timed)."""
    counter = FlopCounterMode(display=False)
    with counter:
        loss(x, y).backward()
    return float(counter.get_total_flops())


def matmul_peak(dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def trainer_rate(size: str, amp: str, steps: int, data, batch: int = BATCH) -> float:
    mc = model_config(size)
    cfg = TrainConfig(model=mc, epochs=1, batch_size=batch, lr=2e-4, ema=0.9995, amp=amp, max_steps=steps,
                      checkpoint_minutes=1000.0, val_subset=4, eval_batch_size=8)
    images, labels = data
    with tempfile.TemporaryDirectory() as wd, contextlib.redirect_stderr(io.StringIO()):
        hist = train(cfg, wd, (images, labels), (images[:4], labels[:4]), progress=False)
    return hist[-1]["images_per_s"]


def time_variants(variants: dict, rounds: int, steps: int, x, y) -> dict:
    """{name: [img/s per round]}; ``variants`` maps name -> (callable(x, y) or ("trainer", fn), batch)."""
    rates = {v: [] for v in variants}
    for _ in range(rounds):
        for name, (fn, batch, kind) in variants.items():
            if kind == "trainer":
                rates[name].append(fn())
                continue
            xb, yb = (x, y) if batch == BATCH else (x.repeat(batch // BATCH, 1, 1, 1), y.repeat(batch // BATCH))
            t = time.perf_counter()
            for _ in range(steps):
                fn(xb, yb)
            rates[name].append(batch * steps / (time.perf_counter() - t))
    return rates


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--starter-dir", required=True, help="folder with the course starter's model.py and utils.py")
    ap.add_argument("--sizes", nargs="+", default=["1/40/5", "1/160/5"], help="nr_resnet/nr_filters/nr_mix")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    ap.add_argument("--levers", action="store_true", help="also time channels-last, batch 64, compile, 1 thread")
    ap.add_argument("--random-data", action="store_true", help="random images instead of the training split")
    ap.add_argument("--peak-size", type=int, default=2048, help="matrix size of the peak-GFLOP/s matmul")
    ap.add_argument("--out", default=None, help="write the markdown table here (and a .json beside it)")
    a = ap.parse_args(argv)
    PixelCNN, starter_loss = load_starter(Path(a.starter_dir))
    x, y, data, data_note = batch_of_images(random_data=a.random_data)
    choice = resolve_amp("auto", "cpu")
    peaks = {"fp32": matmul_peak(torch.float32, a.peak_size), "bf16": matmul_peak(torch.bfloat16, a.peak_size)}
    results, flops = {}, {}
    for size in a.sizes:
        made = {"starter": starter_step(PixelCNN, starter_loss, size),
                "pcnn-fp32": pcnn_step(size, None),
                "pcnn-auto": pcnn_step(size, choice.dtype)}
        variants = {k: (v[0], BATCH, "step") for k, v in made.items()}
        variants["trainer-auto"] = (lambda s=size: trainer_rate(s, "auto", a.steps + 1, data), BATCH, "trainer")
        if a.levers and size == "1/40/5":
            variants["auto+channels-last"] = (pcnn_step(size, choice.dtype, channels_last=True)[0], BATCH, "step")
            variants["auto+batch-64"] = (made["pcnn-auto"][0], 2 * BATCH, "step")
            t = time.perf_counter()
            comp = pcnn_step(size, choice.dtype, compiled=True)[0]
            comp(x, y)
            compile_s = time.perf_counter() - t
            variants["auto+compile"] = (comp, BATCH, "step")
        for name, (fn, batch, kind) in variants.items():  # warm-up (oneDNN kernels, compilation)
            if kind == "step":
                fn(x, y)
        flops[size] = {k: step_flops(v[1], x, y) for k, v in made.items()}
        for _, _, model in made.values():
            model.zero_grad(set_to_none=True)
        rates = time_variants(variants, a.rounds, a.steps, x, y)
        if a.levers and size == "1/40/5":
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                rates["auto, 1 thread"] = time_variants({"t1": (made["pcnn-auto"][0], BATCH, "step")},
                                                        a.rounds, a.steps, x, y)["t1"]
            finally:
                torch.set_num_threads(n)
        results[size] = {k: {"median": statistics.median(v), "rounds": v} for k, v in rates.items()}
        if a.levers and size == "1/40/5":
            results[size]["auto+compile"]["compile_s"] = compile_s

    lines = [f"{describe_cpu()}; amp=auto -> {choice.precision} ({choice.reason}); batch {BATCH}, Adam, "
             f"{data_note}; {a.rounds} alternating rounds of {a.steps} steps (trainer: {a.steps + 1}-step runs). "
             f"Measured peaks ({a.peak_size} matmul): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s.",
             "", "| size | variant | img/s (median) | rounds | vs starter | vs pcnn-fp32 | step GFLOP/s | % of peak |",
             "|---|---|---|---|---|---|---|---|"]
    for size, res in results.items():
        base, ours = res["starter"]["median"], res["pcnn-fp32"]["median"]
        for name, r in res.items():
            med = r["median"]
            fl = flops[size].get(name)
            if name == "pcnn-auto":
                peak = peaks["bf16" if choice.precision == "bf16" else "fp32"]
            else:
                peak = peaks["fp32"]
            gf = f"{fl / BATCH * med / 1e9:.0f}" if fl else ""
            pct = f"{100 * fl / BATCH * med / 1e9 / peak:.0f} %" if fl else ""
            extra = f" (compile {r['compile_s']:.0f} s)" if "compile_s" in r else ""
            lines.append(f"| {size} | {name}{extra} | {med:.1f} | {', '.join(f'{v:.1f}' for v in r['rounds'])} | "
                         f"{med / base:.2f}x | {med / ours:.2f}x | {gf} | {pct} |")
    emit(lines, a.out)
    if a.out:
        Path(a.out).with_suffix(".json").write_text(json.dumps(
            {"cpu": describe_cpu(), "amp_auto": choice.to_dict(), "peaks_gflops": peaks,
             "step_gflop_per_image": {s: {k: v / BATCH / 1e9 for k, v in f.items()} for s, f in flops.items()},
             "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
