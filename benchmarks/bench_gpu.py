"""The training step on a GPU: the course starter, pcnn eager and pcnn's fast path, alternated in one process.

    python benchmarks/bench_gpu.py --starter-dir ../shared/cpen455-starter \
        [--device cuda] [--sizes 1/40/5 1/160/5] [--batches 64 256] [--rounds 3] [--steps 20] \
        [--amp auto] [--trainer-steps 40] [--out benchmarks/results/gpu_h200.md]

Variants, per size and batch, on one fixed batch of real training images (random images
without a data folder), timed in alternating rounds (A B C A B C ...), medians:

  starter     the course starter's own step: its PixelCNN (unconditional) and its
              discretized_mix_logistic_loss, fp32, Adam (imported at run time from
              --starter-dir; nothing of it is copied here)
  pcnn-eager  the trainer's own step (pcnn.train.Trainer._train_step: forward, fp32 loss,
              backward, gradient norm, Adam, EMA, the per-step finite check) with every
              fast-path lever off, under --amp
  pcnn-fast   the same step with the fast path as ``auto`` resolves it on the device
              (pcnn.train.accel; on CUDA: CUDA graphs via torch.compile reduce-overhead,
              channels-last, fused AdamW/Adam, finite checks read every 50 steps);
              --compile overrides its compile mode

Also: FLOPs per image of one step (torch.utils.flop_counter, forward + backward), the
achieved TFLOP/s and its share of a measured bf16 matmul on the same device, the seconds
the first fast step took (compilation), and the real trainer end to end (pcnn.train.train
with the fast path on in-memory data: gather, flips, step, EMA; the images/s of its second
epoch, so compilation is not in it), and scoring (pcnn.log_likelihoods eager against compiled
at one fixed batch). On a CPU it runs as a smoke test (tests/test_benchmarks.py).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_model import emit  # same folder: run as `python benchmarks/...`
from bench_vs_starter import batch_of_images, load_starter, model_config, step_flops
from pcnn.model.precision import describe_cpu, resolve_amp
from pcnn.train import TrainConfig, train
from pcnn.train.distributed import DistContext
from pcnn.train.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]
#: Every fast-path lever off: the trainer as it ran before issue 26.
EAGER = dict(compile="off", channels_last=False, fused_optimizer=False, device_data=False, check_every=1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype=torch.bfloat16, n: int = 8192, repeats: int = 5) -> float:
    """TFLOP/s of the best of ``repeats`` n x n matmuls in ``dtype`` on ``device``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e12


def bench_config(size: str, batch: int, amp: str, **fast) -> TrainConfig:
    return TrainConfig(model=model_config(size), epochs=1, batch_size=batch, lr=2e-4, ema=0.9995, amp=amp,
                       checkpoint_minutes=1e6, eval_batch_size=8, **fast)


def trainer_step(size: str, batch: int, amp: str, device: torch.device, workdir: Path, **fast):
    """(step(x, y), loss(x, y), trainer): the trainer's own ``_train_step`` on a fixed batch."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(batch) % 4
    cfg = bench_config(size, batch, amp, **fast)
    ctx = DistContext()
    ctx.device = device  # --device, even where CUDA is visible
    with contextlib.redirect_stderr(io.StringIO()):
        tr = Trainer(cfg, workdir, ctx, (images, labels), (images[:4], labels[:4]), False, False)

    def step(x, y):
        tr._train_step(x, y)

    def loss(x, y):
        return tr.loss_fn(x, y)[0]
    return step, loss, tr


def finish(tr, device) -> None:
    """What the trainer does at a read: bring the deferred counters home (one sync)."""
    tr._read_checks()
    sync(device)


def time_round(fn, x, y, steps: int, device, tr=None) -> float:
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn(x, y)
    if tr is not None:
        finish(tr, device)
    sync(device)
    return x.shape[0] * steps / (time.perf_counter() - t)


def trainer_end_to_end(size: str, batch: int, amp: str, steps: int, device, data) -> dict:
    """images/s of the real trainer's second epoch (the first one compiles), fast path auto."""
    images, labels = data
    n = batch * max(1, steps)
    reps = -(-n // len(labels))
    images, labels = images.repeat(reps, 1, 1, 1)[:n], labels.repeat(reps)[:n]
    cfg = dataclasses.replace(bench_config(size, batch, amp), epochs=2, val_every=2, val_subset=8)
    with tempfile.TemporaryDirectory() as wd, contextlib.redirect_stderr(io.StringIO()):
        t = time.perf_counter()
        hist = train(cfg, wd, (images, labels), (images[:8], labels[:8]), progress=False)
        seconds = time.perf_counter() - t
    return {"images_per_s": hist[-1]["images_per_s"], "first_epoch_s": hist[0]["seconds"],
            "steps_per_epoch": n // batch, "total_s": seconds}


def scoring(size: str, batch: int, n: int, device, rounds: int, data) -> dict:
    """Classification by likelihood (pcnn.log_likelihoods, fp32) of ``n`` images under every
    class, eager against compiled at one fixed batch of ``batch`` (image, class) pairs (issue 26,
    item 2; reduce-overhead on CUDA, default elsewhere), alternated, medians of images/s. The
    first compiled call is timed apart (compilation); the two agree within float rounding."""
    from pcnn import PixelCNNpp, log_likelihoods  # the core's scorer; this file is not a library
    from pcnn.model.likelihood import to_float
    images, _ = data
    x = to_float(images.repeat(-(-n // len(images)), 1, 1, 1)[:n]).to(device)
    torch.manual_seed(0)
    model = PixelCNNpp(model_config(size)).to(device).eval()
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    t = time.perf_counter()
    compiled = log_likelihoods(model, x, batch_size=batch, compile=mode)
    sync(device)
    compile_s = time.perf_counter() - t
    eager = log_likelihoods(model, x, batch_size=batch)
    rates = {"eager": [], mode: []}
    for _ in range(rounds):
        for name in rates:
            sync(device)
            t = time.perf_counter()
            log_likelihoods(model, x, batch_size=batch, compile="off" if name == "eager" else mode)
            sync(device)
            rates[name].append(n / (time.perf_counter() - t))
    return {"size": size, "batch": batch, "images": n, "mode": mode, "first_compiled_call_s": compile_s,
            "rates": rates, "medians": {k: statistics.median(v) for k, v in rates.items()},
            "max_abs_diff_nats": float((compiled - eager).abs().max()),
            "argmax_agree": float((compiled.argmax(1) == eager.argmax(1)).float().mean())}


def run(a) -> dict:
    device = torch.device(a.device)
    try:
        PixelCNN, starter_loss = load_starter(Path(a.starter_dir))
        starter_note = None
    except SystemExit as e:  # e.g. on a lent GPU machine, where ../shared does not travel
        PixelCNN = starter_loss = None
        starter_note = f"no starter rows: {e}"
        print(starter_note, file=sys.stderr)
    choice = resolve_amp(a.amp, device)
    peak = matmul_peak(device, n=a.peak_size)
    facts = {"device": str(device), "torch": torch.__version__, "cpu": describe_cpu(), "amp": choice.to_dict(),
             "bf16_matmul_tflops": peak, "starter": starter_note or str(Path(a.starter_dir).resolve())}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    fast_over = {"compile": a.compile} if a.compile else {}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in a.sizes:
            for batch in a.batches:
                x, y, data, note = batch_of_images(batch, random_data=a.random_data)
                x, y = x.to(device), y.to(device)
                if PixelCNN is not None:
                    s_step, s_loss, s_model = _on_device(PixelCNN, starter_loss, size, device)
                wd = Path(tmp) / f"{size.replace('/', '_')}_{batch}"
                e_step, e_loss, e_tr = trainer_step(size, batch, a.amp, device, wd / "eager", **EAGER)
                f_step, _, f_tr = trainer_step(size, batch, a.amp, device, wd / "fast", **fast_over)
                xf = x.contiguous(memory_format=torch.channels_last) if f_tr.fast.channels_last else x
                flops = {"pcnn": step_flops(e_loss, x, y)}
                if PixelCNN is not None:
                    flops["starter"] = step_flops(s_loss, x, y)
                    s_model.zero_grad(set_to_none=True)
                e_tr.model.zero_grad(set_to_none=True)
                t = time.perf_counter()
                for _ in range(a.warmup):  # compilation, CUDA graph recording, cuDNN autotuning
                    f_step(xf, y)
                finish(f_tr, device)
                compile_s = time.perf_counter() - t
                for _ in range(a.warmup):
                    if PixelCNN is not None:
                        s_step(x, y)
                    e_step(x, y)
                sync(device)
                rates = {"starter": [], "pcnn-eager": [], "pcnn-fast": []}
                if PixelCNN is None:
                    del rates["starter"]
                for _ in range(a.rounds):
                    if PixelCNN is not None:
                        rates["starter"].append(time_round(s_step, x, y, a.steps, device))
                    rates["pcnn-eager"].append(time_round(e_step, x, y, a.steps, device, e_tr))
                    rates["pcnn-fast"].append(time_round(f_step, xf, y, a.steps, device, f_tr))
                for name, r in rates.items():
                    fl = flops["starter" if name == "starter" else "pcnn"] / batch
                    med = statistics.median(r)
                    results.append({"size": size, "batch": batch, "variant": name, "median": med, "rounds": r,
                                    "gflop_per_image": fl / 1e9, "tflops": fl * med / 1e12,
                                    "pct_bf16_peak": 100 * fl * med / 1e12 / peak,
                                    "compile_s": compile_s if name == "pcnn-fast" else None,
                                    "fast": f_tr.fast.describe() if name == "pcnn-fast" else None, "data": note})
                del e_tr, f_tr
        e2e = score = None
        _, _, data, _ = batch_of_images(a.batches[0], random_data=a.random_data)   # the whole split (or random)
        if a.trainer_steps:
            size, batch = a.sizes[-1], a.batches[0]
            e2e = {"size": size, "batch": batch, **trainer_end_to_end(size, batch, a.amp, a.trainer_steps, device, data)}
        if a.score_images:
            score = scoring(a.sizes[-1], a.batches[-1], a.score_images, device, a.rounds, data)
    return {"facts": facts, "results": results, "trainer": e2e, "scoring": score, "rounds": a.rounds,
            "steps": a.steps}


def _on_device(PixelCNN, starter_loss, size, device):
    """The starter's step with its model on ``device`` (its optimizer built after the move)."""
    r, f, k = (int(v) for v in size.split("/"))
    torch.manual_seed(0)
    model = PixelCNN(nr_resnet=r, nr_filters=f, nr_logistic_mix=k, input_channels=3).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)

    def loss(x, y):
        return starter_loss(x, model(x))

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss(x, y).backward()
        opt.step()
    return step, loss, model


def table(res: dict) -> list:
    f = res["facts"]
    where = f.get("gpu") or f["cpu"]
    lines = [f"{where}, torch {f['torch']}; amp {f['amp']['mode']} -> {f['amp']['precision']}; measured bf16 matmul "
             f"{f['bf16_matmul_tflops']:.3g} TFLOP/s; {res['rounds']} alternating rounds of {res['steps']} steps, "
             "medians (benchmarks/bench_gpu.py)", "",
             "| size | batch | variant | img/s | rounds | vs starter | GFLOP/image | TFLOP/s | % of bf16 matmul | "
             "compile s |", "|---|---|---|---|---|---|---|---|---|---|"]
    base = {}
    for r in res["results"]:
        if r["variant"] == "starter":
            base[(r["size"], r["batch"])] = r["median"]
        b = base.get((r["size"], r["batch"]))
        comp = f"{r['compile_s']:.1f}" if r["compile_s"] is not None else ""
        vs = f"{r['median'] / b:.2f}x" if b else ""
        lines.append(f"| {r['size']} | {r['batch']} | {r['variant']} | {r['median']:.1f} | "
                     f"{', '.join(f'{v:.1f}' for v in r['rounds'])} | {vs} | "
                     f"{r['gflop_per_image']:.2f} | {r['tflops']:.3f} | {r['pct_bf16_peak']:.1f} % | {comp} |")
    if not base:
        lines += ["", f"({f['starter']})"]
    fast = [r["fast"] for r in res["results"] if r["fast"]]
    if fast:
        lines += ["", f"pcnn-fast ran with: {fast[0]}."]
    t = res["trainer"]
    if t:
        lines += ["", f"Real trainer end to end (fast path auto, {t['size']}, batch {t['batch']}, "
                      f"{t['steps_per_epoch']} steps per epoch): {t['images_per_s']:.1f} img/s in its second epoch "
                      f"(first epoch, compilation included if any: {t['first_epoch_s']:.1f} s)."]
    sc = res.get("scoring")
    if sc:
        m = sc["medians"]
        lines += ["", f"Scoring (pcnn.log_likelihoods, fp32, {sc['size']}, {sc['images']} images x every class, "
                      f"{sc['batch']} pairs per forward): eager {m['eager']:.1f} img/s, compile={sc['mode']} "
                      f"{m[sc['mode']]:.1f} img/s ({m[sc['mode']] / m['eager']:.2f}x; first compiled call "
                      f"{sc['first_compiled_call_s']:.1f} s; max difference {sc['max_abs_diff_nats']:.2g} nats, "
                      f"argmax agreement {sc['argmax_agree'] * 100:.1f} %)."]
    return lines


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--starter-dir", default=str(ROOT.parent / "shared" / "cpen455-starter"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", nargs="+", default=["1/40/5", "1/160/5"], help="nr_resnet/nr_filters/nr_mix")
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant per round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, CUDA graphs)")
    ap.add_argument("--amp", default="auto", help="precision of the pcnn variants: auto | off | bf16 | fp16")
    ap.add_argument("--compile", default=None, help="override pcnn-fast's compile mode (off | default | reduce-overhead)")
    ap.add_argument("--trainer-steps", type=int, default=40, help="steps per epoch of the end-to-end run (0: skip)")
    ap.add_argument("--score-images", type=int, default=256,
                    help="images scored eager vs compiled at the last size and batch (0: skip)")
    ap.add_argument("--peak-size", type=int, default=None, help="matmul size of the bf16 peak (CUDA 8192, CPU 1024)")
    ap.add_argument("--random-data", action="store_true", help="random images instead of the training split")
    ap.add_argument("--out", default=None, help="write the markdown table here (and a .json beside it)")
    a = ap.parse_args(argv)
    if a.peak_size is None:
        a.peak_size = 8192 if a.device.startswith("cuda") else 1024
    res = run(a)
    emit(table(res), a.out)
    if a.out:
        Path(a.out).with_suffix(".json").write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
