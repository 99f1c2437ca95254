"""Convergence parity of bf16 autocast against fp32: same seed, data and schedule.

    PCNN_DATA_DIR=../shared/cpen455 python benchmarks/bench_bf16_parity.py --workdir /work/runs/parity \
        [--sizes 1/40/5 1/80/5] [--epochs 3] [--val 519] [--out benchmarks/results/bf16_parity_cpu]

For each size, the real trainer (``pcnn.train.train``: flips, EMA, Adam,
per-step decay) runs once with ``amp=off`` and once with ``amp=bf16`` from the
same seed on the course's training split. Evaluation is always fp32 (the
trainer's own validation: bits/dim and likelihood accuracy of the raw and EMA
weights after every epoch), so the curves compare the *trained weights*, not
the arithmetic they are scored with. The criterion (issue 13): bf16 ends within
0.02 bits/dim of fp32.

Writes ``OUT.md`` (table), ``OUT.json`` (every epoch row of every run) and
``OUT.png`` (val bits/dim and accuracy against epoch, fp32 solid, bf16 dashed).
Runs are resumable: a finished run is read back from its workdir, an
interrupted one resumes exactly from its last.pt.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


from bench_model import emit
from pcnn.data.dataset import load_split
from pcnn.model.precision import cpu_name, cpu_native_bf16, describe_cpu
from pcnn.train import read_metrics
from pcnn.train import TrainConfig, train

BASE = {
    "description": "bf16 parity benchmark (benchmarks/bench_bf16_parity.py): FiLM, dropout 0.1, batch 32",
    "model": {"nr_resnet": 1, "nr_filters": 40, "nr_logistic_mix": 5, "num_classes": 4, "dropout": 0.1,
              "fusion": ["blocks_film"], "image_size": 32},
    "batch_size": 32, "lr": 1e-3, "lr_decay": 0.99995, "ema": 0.999, "augment": {"hflip": True},
    "seed": 0, "val_every": 1, "checkpoint_minutes": 5.0,
}
TOLERANCE_BPD = 0.02


def size_config(size: str, amp: str, epochs: int, val: int) -> TrainConfig:
    r, f, k = (int(v) for v in size.split("/"))
    d = json.loads(json.dumps(BASE))
    d["model"].update(nr_resnet=r, nr_filters=f, nr_logistic_mix=k)
    d.update(amp=amp, epochs=epochs, val_subset=val)
    return TrainConfig.from_dict(d)


def run_one(cfg: TrainConfig, workdir: Path, train_data, val_data) -> list:
    """The run's epoch rows: read back if finished, else trained (resuming from last.pt if any)."""
    rows = read_metrics(workdir)
    done = [r for r in rows if not r.get("partial")]
    if len(done) >= cfg.epochs:
        return done[:cfg.epochs]
    hist = train(cfg, workdir, train_data, val_data, resume=(workdir / "last.pt").exists(), progress=True)
    return [r for r in hist if not r.get("partial")]


def table(results: dict) -> list:
    # No timing columns: this measures convergence, and it may share the CPU with other work
    # (speed is bench_vs_starter.py's job).
    lines = ["| size | precision | epochs | steps | val bpd (EMA) | val bpd (raw) | val acc (EMA) | "
             "val acc (raw) | bf16 - fp32 bpd (EMA) | bf16 - fp32 bpd (raw) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for size, runs in results.items():
        for prec in ("fp32", "bf16"):
            rows = runs.get(prec)
            if not rows:
                continue
            last = rows[-1]
            delta = delta_raw = ""
            if prec == "bf16" and runs.get("fp32"):
                ref = runs["fp32"][-1]
                delta = f"{last['val_bpd'] - ref['val_bpd']:+.4f}"
                delta_raw = f"{last['val_bpd_raw'] - ref['val_bpd_raw']:+.4f}"
            lines.append(f"| {size} | {prec} | {len(rows)} | {last['step']} | "
                         f"{last['val_bpd']:.4f} | {last['val_bpd_raw']:.4f} | {last['val_acc']:.3f} | "
                         f"{last['val_acc_raw']:.3f} | {delta} | {delta_raw} |")
    return lines


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (size, runs) in enumerate(results.items()):
        for prec, style in (("fp32", "-"), ("bf16", "--")):
            rows = runs.get(prec) or []
            ep = [r["epoch"] for r in rows]
            axes[0].plot(ep, [r["val_bpd"] for r in rows], style, marker="o", color=colours[i % 10],
                         label=f"{size} {prec}")
            axes[1].plot(ep, [100 * r["val_acc"] for r in rows], style, marker="o", color=colours[i % 10],
                         label=f"{size} {prec}")
    axes[0].set(xlabel="epoch", ylabel="validation bits/dim (EMA weights, fp32 scoring)",
                title="Likelihood: bf16 training vs fp32")
    axes[1].set(xlabel="epoch", ylabel="validation accuracy, % (EMA weights)", title="Classification")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    fig.suptitle(describe_cpu(), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="folder for the runs (outside the repository)")
    ap.add_argument("--sizes", nargs="+", default=["1/40/5", "1/80/5"], help="nr_resnet/nr_filters/nr_mix")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--val", type=int, default=0, help="validation images (0 = all 519)")
    ap.add_argument("--train-subset", type=int, default=0, help="first N training images only (0 = all; tests)")
    ap.add_argument("--out", default=None, help="path stem for .md/.json/.png")
    a = ap.parse_args(argv)
    if cpu_native_bf16():
        return _main(a)
    # Parity is about bf16's arithmetic, which an emulating CPU computes too (many times slower):
    # without PCNN_CPU_BF16=1, amp=bf16 would run fp32 here and the table compare fp32 with itself.
    emit([f"{cpu_name()} has no bf16 instructions: bf16 runs emulated (PCNN_CPU_BF16=1), slowly", ""])
    old = os.environ.get("PCNN_CPU_BF16")
    os.environ["PCNN_CPU_BF16"] = "1"
    try:
        return _main(a)
    finally:
        if old is None:
            os.environ.pop("PCNN_CPU_BF16")
        else:
            os.environ["PCNN_CPU_BF16"] = old


def _main(a):
    tr = load_split("train", size=32, show_progress=False)
    va = load_split("validation", size=32, show_progress=False)
    n = a.train_subset or len(tr.labels)
    train_data, val_data = (tr.images[:n], tr.labels[:n]), (va.images, va.labels)
    results = {}
    for size in a.sizes:
        results[size] = {}
        for amp, prec in (("off", "fp32"), ("bf16", "bf16")):
            wd = Path(a.workdir) / f"{size.replace('/', '-')}_{prec}"
            results[size][prec] = run_one(size_config(size, amp, a.epochs, a.val), wd, train_data, val_data)
    lines = [f"bf16 parity on {describe_cpu()}: {a.epochs} epochs of {n} training images "
             f"({n // BASE['batch_size']} steps of {BASE['batch_size']} each), FiLM, dropout 0.1, lr 1e-3, "
             f"EMA 0.999, seed 0; validation on {a.val or len(va.labels)} images scored in fp32. "
             f"Criterion: |bf16 - fp32| <= {TOLERANCE_BPD} bits/dim.", ""] + table(results)
    emit(lines, a.out + ".md" if a.out else None)
    if a.out:
        Path(a.out + ".json").write_text(json.dumps({"cpu": describe_cpu(), "base": BASE, "epochs": a.epochs,
                                                     "train_images": n, "results": results}, indent=1))
        plot(results, Path(a.out + ".png"))
    return results


if __name__ == "__main__":
    main()
