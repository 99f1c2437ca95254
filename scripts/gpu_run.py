"""One bounded call on a lent GPU machine: device facts, device tests, step timings, a timed training run.

On the GPU machine (the `device` tool runs one command of at most 10 minutes; only
files under $OUT come back, at most 8 of 16 MiB each):

    python scripts/gpu_run.py --data-tensors .gpu/data.pt --preset configs/film_large.json \
        --minutes 5 --out $OUT

Locally, before the call (the course data beside the checkout does not travel):

    python scripts/gpu_run.py --pack-data .gpu/data.pt      # train + validation as uint8 tensors (~15 MB)

and after it, to rebuild an export that came back in parts:

    python scripts/gpu_run.py --join <files_at> --to checkpoints/stages/NAME.safetensors

What it writes to --out: ``device.json`` (GPU, capability, torch, amp choice),
``tests.log`` (``pytest -m device`` with PCNN_TEST_DEVICE set to the device),
``bench.md`` (training-step img/s in fp32 / bf16 / fp16 and bf16 + torch.compile
at each size), ``train.log``, ``metrics.jsonl`` and the export
(``model.safetensors``, or ``model.safetensors.partNN`` + ``.sha256`` when it is
larger than one returned file may be). The training run is the preset with
``max_minutes`` = ``--minutes``, so it stops on time, evaluated and exported.
CI runs it on the CPU (``--device cpu --minutes 0.2`` with tiny sizes) so it
cannot rot.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pcnn  # noqa: E402
from pcnn.precision import describe_cpu, resolve_amp  # noqa: E402
from pcnn.train import TrainConfig, apply_overrides, train, training_loss  # noqa: E402

#: One returned file may be at most 16 MiB; stay below with a margin.
PART_BYTES = 15 << 20


def device_facts(device: torch.device) -> dict:
    facts = {"device": str(device), "torch": torch.__version__, "cpu": describe_cpu()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        facts.update(gpu=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2 ** 30, 1),
                     cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported())
    for mode in ("auto", "bf16", "fp16"):
        try:
            facts[f"amp_{mode}"] = resolve_amp(mode, device).to_dict()
        except ValueError as e:
            facts[f"amp_{mode}"] = f"refused: {e}"
    return facts


def run_device_tests(device: torch.device, log: Path, timeout: float) -> int:
    env = {**os.environ, "PCNN_TEST_DEVICE": device.type}
    # Device-marked tests live in tests/test_device.py; collecting only it keeps the call short.
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "device", str(ROOT / "tests" / "test_device.py")]
    with open(log, "w") as f:
        try:
            return subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            f.write(f"\n(stopped after {timeout:.0f} s)\n")
            return 124


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_rate(size: str, precision: str, compiled: bool, device: torch.device, batch: int, steps: int) -> float:
    """Training-step img/s (forward, fp32 loss, backward, Adam) of a FiLM model of ``size``."""
    r, f, k = (int(v) for v in size.split("/"))
    mc = pcnn.ModelConfig(nr_resnet=r, nr_filters=f, nr_logistic_mix=k, dropout=0.5, fusion="blocks_film")
    torch.manual_seed(0)
    model = pcnn.PixelCNNpp(mc).to(device).train()
    net = torch.compile(model) if compiled else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    g = torch.Generator().manual_seed(0)
    x = (torch.randint(0, 256, (batch, 3, 32, 32), generator=g).float() / 127.5 - 1).to(device)
    y = (torch.arange(batch) % 4).to(device)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = training_loss(net, x, y, mc)[0]
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
    for _ in range(2):  # warm-up: kernels, autotuning, compilation
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - t)


def bench_table(device: torch.device, sizes, batch: int, steps: int, compile_too: bool) -> list:
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    cols = [(p, False) for p in precisions] + ([("bf16", True)] if compile_too else [])
    head = " | ".join(f"{p}{' + compile' if c else ''}" for p, c in cols)
    lines = [f"Training step img/s on {device_facts(device).get('gpu', describe_cpu())}, batch {batch}, "
             f"{steps} timed steps after 2 warm-up steps, FiLM, dropout 0.5 (scripts/gpu_run.py)", "",
             f"| size | {head} |", "|---|" + "---|" * len(cols)]
    for size in sizes:
        cells = []
        for p, c in cols:
            try:
                cells.append(f"{step_rate(size, p, c, device, batch, steps):.1f}")
            except Exception as e:  # a failing variant is a result too; keep measuring the others
                cells.append(f"failed: {type(e).__name__}")
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return lines


def split_for_return(path: Path, out: Path, part_bytes: int = PART_BYTES) -> list:
    """Copy ``path`` into ``out`` as one file, or as ``NAME.partNN`` pieces plus ``NAME.sha256``."""
    data = path.read_bytes()
    if len(data) <= part_bytes:
        (out / path.name).write_bytes(data)
        return [out / path.name]
    files = []
    for i in range(0, len(data), part_bytes):
        p = out / f"{path.name}.part{i // part_bytes:02d}"
        p.write_bytes(data[i:i + part_bytes])
        files.append(p)
    (out / f"{path.name}.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    return files + [out / f"{path.name}.sha256"]


def join_parts(folder: Path, to: Path, name: str = "model.safetensors") -> Path:
    """Rebuild ``name`` from ``folder`` (whole, or from its parts, checked against the sha256)."""
    folder = Path(folder)
    whole = folder / name
    if whole.is_file():
        data = whole.read_bytes()
    else:
        parts = sorted(folder.glob(f"{name}.part*"))
        if not parts:
            raise SystemExit(f"error: neither {whole} nor its parts are in {folder}")
        data = b"".join(p.read_bytes() for p in parts)
        want = (folder / f"{name}.sha256").read_text().strip()
        if hashlib.sha256(data).hexdigest() != want:
            raise SystemExit(f"error: the {len(parts)} parts of {name} do not match their sha256")
    to = Path(to)
    to.parent.mkdir(parents=True, exist_ok=True)
    to.write_bytes(data)
    pcnn.load(to)  # refuses a broken or non-finite export
    return to


def pack_data(to: Path) -> Path:
    from pcnn.data import load_split
    tr, va = load_split("train", size=32), load_split("validation", size=32)
    to = Path(to)
    to.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"train": {"images": tr.images, "labels": tr.labels},
                "validation": {"images": va.images, "labels": va.labels}}, to)
    return to


def timed_training(preset: Path, overrides, minutes: float, data_tensors, out: Path) -> dict:
    d = json.loads(Path(preset).read_text())
    d = apply_overrides(d, list(overrides) + [f"max_minutes={minutes}"])
    cfg = TrainConfig.from_dict(d)
    train_data = val_data = None
    if data_tensors:
        t = torch.load(data_tensors, map_location="cpu", weights_only=True)
        train_data = (t["train"]["images"], t["train"]["labels"])
        val_data = (t["validation"]["images"], t["validation"]["labels"])
    with tempfile.TemporaryDirectory() as wd, open(out / "train.log", "w") as log, \
            contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
        t0 = time.perf_counter()
        hist = train(cfg, wd, train_data, val_data, progress=False)
        seconds = time.perf_counter() - t0
        (out / "metrics.jsonl").write_text((Path(wd) / "metrics.jsonl").read_text())
        returned = split_for_return(Path(wd) / "model.safetensors", out)
    return {"seconds": seconds, "last_row": hist[-1] if hist else None, "files": [p.name for p in returned]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="results folder (default $OUT)")
    ap.add_argument("--preset", default=str(ROOT / "configs" / "film_large.json"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a preset setting (repeatable)")
    ap.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget of the training run")
    ap.add_argument("--data-tensors", help="train/validation tensors made by --pack-data (default: the data folder)")
    ap.add_argument("--sizes", nargs="+", default=["1/40/5", "1/160/5"])
    ap.add_argument("--bench-steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-compile", action="store_true", help="skip the bf16 + torch.compile column")
    ap.add_argument("--tests-timeout", type=float, default=180.0)
    ap.add_argument("--pack-data", metavar="FILE", help="only write the train/validation tensors to FILE")
    ap.add_argument("--join", metavar="FOLDER", help="only rebuild the export from FOLDER (see --to)")
    ap.add_argument("--to", help="with --join: where to write the rebuilt export")
    a = ap.parse_args(argv)
    if a.pack_data:
        print(pack_data(Path(a.pack_data)))
        return 0
    if a.join:
        print(join_parts(Path(a.join), Path(a.to or "model.safetensors")))
        return 0
    if not a.out:
        print("error: give --out or set $OUT", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no GPU is visible", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    facts = device_facts(device)
    print(json.dumps(facts, indent=1), flush=True)
    facts["tests_rc"] = run_device_tests(device, out / "tests.log", a.tests_timeout)
    print(f"device tests: rc {facts['tests_rc']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    lines = bench_table(device, a.sizes, a.batch, a.bench_steps, not a.no_compile)
    (out / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), f"\n({time.perf_counter() - t0:.0f} s)", flush=True)
    facts["training"] = timed_training(Path(a.preset), a.overrides, a.minutes, a.data_tensors, out)
    facts["total_seconds"] = time.perf_counter() - t0
    (out / "device.json").write_text(json.dumps(facts, indent=1, default=str))
    print(json.dumps(facts["training"], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
