"""One bounded call on a lent GPU machine that loses nothing: device facts and tests, the
GPU benchmark, a training run to a wall-clock budget, its best export and 500 samples.

On the GPU machine (the `run` tool runs one command of at most 10 minutes; only files under
$OUT come back, at most 8 of at most 16 MiB each):

    python scripts/gpu_run.py --data-tensors .gpu/data.pt --preset configs/film_large.json \
        --budget-minutes 9 --out $OUT

Issue 33's call (the T4 path on a big GPU as well as the chip's own, and notebook 02's
``train_live`` with its compilations counted) adds ``--bench-amps auto fp16 --live-epochs 3``.

Locally, before the call (the course data beside the checkout does not travel, so it is
packed and carried; the working tree that travels may be at most 64 MiB):

    python scripts/gpu_run.py --pack-data .gpu/data.pt      # train + validation as uint8 tensors (~15 MB)
    python scripts/gpu_run.py --check-size --carry .gpu/data.pt

and after it:

    python scripts/gpu_run.py --join <files_at> --to checkpoints/stages/NAME.safetensors
    python scripts/gpu_run.py --samples-to-pngs <files_at>/samples.pt --to runs/gpu_samples
    python -m pcnn evaluate-generation --gen runs/gpu_samples --real-floor --out gen.json   # FID, KID, probe

What comes back in --out (at most 8 files, checked before anything is written):

* ``results.tar.gz``: ``device.json`` (GPU, torch, amp choices, timings, what was returned),
  ``tests.log`` (``pytest -m device`` on the device), ``bench.md`` / ``bench.json``
  (``benchmarks/bench_gpu.py``), ``train.log``, ``metrics.jsonl``, ``config.json`` and
  ``manifest.json`` (every returned file's bytes and sha256, and the export's whole sha256).
* ``best.safetensors``: the run's best export (``best.safetensors`` of its workdir, chosen by
  the trainer's rule), whole or as ``best.safetensors.partNN`` pieces of at most 15 MiB.
* ``samples.pt``: 500 samples of that export (125 per class, seed 3, in batches of 100 with
  seed 3 + b, the protocol of ``python -m pcnn evaluate``) as one uint8 tensor with labels,
  so FID-2048, KID and the probe are computed at home on a CPU.

The training run is the preset with ``max_minutes`` set so that the whole call ends within
``--budget-minutes`` with ``--reserve-minutes`` left for its evaluation, export, sampling and
packing. CI runs it on the CPU with tiny settings (tests/test_gpu_run.py) so it cannot rot.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import signal
import time
import traceback
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pcnn  # noqa: E402
from pcnn import logs  # noqa: E402
from pcnn.model.precision import (cuda_compile_problem, cuda_native_bf16, cuda_precision, describe_cpu, resolve_amp)  # noqa: E402
from pcnn.data.download import file_sha256  # noqa: E402
from pcnn.sampling.sets import write_images  # noqa: E402
from pcnn.train import TrainConfig, apply_overrides, train  # noqa: E402

#: One returned file may be at most 16 MiB; stay below with a margin.
PART_BYTES = 15 << 20
#: The device tool returns at most this many files from $OUT.
MAX_FILES = 8
#: The working tree that travels to the device machine (tracked + untracked-not-ignored files and the
#: carried paths) may be at most this large.
TRAVEL_LIMIT = 64 << 20
ARCHIVE = "results.tar.gz"
EXPORT = "best.safetensors"
SAMPLES = "samples.pt"


def device_facts(device: torch.device) -> dict:
    facts = {"device": str(device), "torch": torch.__version__, "cpu": describe_cpu()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        facts.update(gpu=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2 ** 30, 1),
                     cuda=torch.version.cuda, native_bf16=cuda_native_bf16(device),
                     auto_precision=cuda_precision(device)[0], compile_problem=cuda_compile_problem(device))
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


# ---------------------------------------------------------------- what travels, what comes back

def travelling_bytes(root: Path = ROOT, carry=()) -> int:
    """Bytes of the working tree that travels to the device machine: tracked and untracked files
    git does not ignore (``git ls-files -co --exclude-standard``) plus every carried path."""
    root = Path(root)
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout
    total = 0
    for name in {n for n in out.decode(errors="surrogateescape").split("\0") if n}:
        p = root / name
        if p.is_file() and not p.is_symlink():  # a deleted tracked file is still listed
            total += p.stat().st_size
    for c in carry:
        p = root / c
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
    return total


def check_travel_size(root: Path = ROOT, carry=(), limit: int = TRAVEL_LIMIT) -> int:
    """The travelling size, or ``SystemExit`` with one sentence when a call would be refused."""
    n = travelling_bytes(root, carry)
    if n > limit:
        raise SystemExit(f"error: the working tree that would travel to the GPU machine is {n / 2 ** 20:.1f} MiB "
                         f"(tracked and untracked-not-ignored files{' plus ' + ', '.join(map(str, carry)) if carry else ''}), "
                         f"over the {limit / 2 ** 20:.0f} MiB a call may carry: ignore or remove large files first")
    return n


def parts_needed(nbytes: int, part_bytes: int = PART_BYTES) -> int:
    return max(1, math.ceil(nbytes / part_bytes))


def check_returned_count(export_bytes: int, part_bytes: int = PART_BYTES) -> int:
    """Files the call returns (archive + samples + the export's pieces), or ``SystemExit`` over 8."""
    n = 2 + parts_needed(export_bytes, part_bytes)
    if n > MAX_FILES:
        raise SystemExit(f"error: an export of {export_bytes / 2 ** 20:.0f} MiB needs {n - 2} pieces of "
                         f"{part_bytes / 2 ** 20:.0f} MiB, so the call would return {n} files, more than the "
                         f"{MAX_FILES} the device tool returns: train a smaller model or return fewer files")
    return n


def export_bytes_estimate(cfg: TrainConfig) -> int:
    """Size of a float32 export of ``cfg.model`` (weights plus a generous allowance for the header)."""
    n = sum(t.numel() for t in pcnn.PixelCNNpp(cfg.model).state_dict().values())
    return 4 * n + (1 << 20)


def split_for_return(path: Path, out: Path, part_bytes: int = PART_BYTES) -> dict:
    """Copy ``path`` into ``out`` whole, or as ``NAME.partNN`` pieces; returns its manifest entry
    (``sha256`` of the whole file, ``bytes``, ``files``) for the archive's ``manifest.json``."""
    data = path.read_bytes()
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    if len(data) <= part_bytes:
        (out / path.name).write_bytes(data)
        return {**entry, "files": [path.name]}
    files = []
    for i in range(0, len(data), part_bytes):
        p = out / f"{path.name}.part{i // part_bytes:02d}"
        p.write_bytes(data[i:i + part_bytes])
        files.append(p.name)
    return {**entry, "files": files}


def read_manifest(folder: Path) -> dict:
    """``manifest.json`` from ``folder/results.tar.gz`` (or beside it), {} when neither is there."""
    folder = Path(folder)
    if (folder / "manifest.json").is_file():
        return json.loads((folder / "manifest.json").read_text())
    if (folder / ARCHIVE).is_file():
        with tarfile.open(folder / ARCHIVE) as tar:
            try:
                return json.loads(tar.extractfile("manifest.json").read())
            except KeyError:
                return {}
    return {}


def join_parts(folder: Path, to: Path, name: str = EXPORT) -> Path:
    """Rebuild ``name`` from ``folder`` (whole, or from its parts), checked against the sha256 in
    the manifest (or a ``NAME.sha256`` file, as older calls wrote)."""
    folder = Path(folder)
    whole = folder / name
    parts = sorted(folder.glob(f"{name}.part*"))
    if whole.is_file():
        data = whole.read_bytes()
    elif parts:
        data = b"".join(p.read_bytes() for p in parts)
    else:
        raise SystemExit(f"error: neither {whole} nor its parts are in {folder}")
    want = read_manifest(folder).get("files", {}).get(name, {}).get("sha256")
    if want is None and (folder / f"{name}.sha256").is_file():
        want = (folder / f"{name}.sha256").read_text().strip()
    if want is None and parts:
        raise SystemExit(f"error: no sha256 for the {len(parts)} parts of {name} ({ARCHIVE} or {name}.sha256 missing)")
    if want is not None and hashlib.sha256(data).hexdigest() != want:
        raise SystemExit(f"error: {name} rebuilt from {folder} does not match its sha256")
    to = Path(to)
    to.parent.mkdir(parents=True, exist_ok=True)
    to.write_bytes(data)
    pcnn.load(to)  # refuses a broken or non-finite export
    return to


def pack_data(to: Path) -> Path:
    from pcnn.data.dataset import load_split
    tr, va = load_split("train", size=32), load_split("validation", size=32)
    to = Path(to)
    to.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"train": {"images": tr.images, "labels": tr.labels},
                "validation": {"images": va.images, "labels": va.labels}}, to)
    return to


# ---------------------------------------------------------------- samples

def sample_set(model, per_class: int = 125, seed: int = 3, batch_size: int = 100) -> dict:
    """``per_class`` samples of every class as in :func:`pcnn.sampling.sets.write_sample_set` (class-major
    labels, batch b drawn with seed ``seed + b``), kept as one uint8 tensor instead of PNGs."""
    labels = torch.tensor([c for c in range(model.config.num_classes) for _ in range(per_class)])
    images = [pcnn.sample(model, labels[i:i + batch_size], generator=torch.Generator().manual_seed(seed + b))
              for b, i in enumerate(range(0, len(labels), batch_size))]
    return {"images": torch.cat(images).cpu(), "labels": labels, "seed": seed, "batch_size": batch_size,
            "per_class": per_class}


def samples_to_pngs(path: Path, to: Path) -> Path:
    """Write a ``samples.pt`` as ``Class<c>_image_<nn>.png`` files (what ``evaluate-generation`` reads)."""
    s = torch.load(path, map_location="cpu", weights_only=True)
    write_images(s["images"], s["labels"], to)
    return Path(to)


# ---------------------------------------------------------------- the call

def timed_training(cfg: TrainConfig, data_tensors, wd: Path, log: Path) -> dict:
    train_data = val_data = None
    if data_tensors:
        t = torch.load(data_tensors, map_location="cpu", weights_only=True)
        train_data = (t["train"]["images"], t["train"]["labels"])
        val_data = (t["validation"]["images"], t["validation"]["labels"])
    with open(log, "w") as f, contextlib.redirect_stderr(f), contextlib.redirect_stdout(f):
        t0 = time.perf_counter()
        hist = train(cfg, wd, train_data, val_data, progress=False)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "max_minutes": cfg.max_minutes, "epochs_run": len(hist),
            "last_row": hist[-1] if hist else None}


class Terminated(SystemExit):
    """A SIGTERM arrived (the device tool's time limit): what finished is written back, then the call ends."""


def live_compile_check(device: torch.device, epochs: int, wd: Path, data_tensors=None,
                       preset: Path = ROOT / "configs" / "starter.json", images: int = 512) -> dict:
    """Notebook 02's ``train_live`` for ``epochs`` epochs of the starter-size network on the device
    (the real training split when ``data_tensors`` is given, else ``images`` random ones), with dynamo's
    counters read before and after: one trainer per run compiles its graphs once."""
    from torch._dynamo.utils import counters
    from pcnn.notebook import live
    if data_tensors:
        t = torch.load(data_tensors, map_location="cpu", weights_only=True)
        data = (t["train"]["images"], t["train"]["labels"])
        val = (t["validation"]["images"][:128], t["validation"]["labels"][:128])
    else:
        g = torch.Generator().manual_seed(0)
        data = (torch.randint(0, 256, (images, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(images) % 4)
        val = (data[0][:128], data[1][:128])
    cfg = TrainConfig.from_dict({**json.loads(Path(preset).read_text()),
                                 "compile": "reduce-overhead" if device.type == "cuda" else "default",
                                 "val_every": 1, "checkpoint_minutes": 60.0})
    class GraphsPerEpoch:
        """Stands in for the live plot: train_live calls ``update`` after every epoch."""
        def __init__(self):
            self.counts = []

        def update(self, workdir):
            self.counts.append(counters["stats"]["unique_graphs"])

    torch._dynamo.reset()
    counters.clear()
    per_epoch = GraphsPerEpoch()
    t = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()) as printed, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        rows = live.train_live(cfg, wd, until=epochs, train_data=data, val_data=val, progress=False, plot=per_epoch)
    return {"epochs": len(rows), "seconds": time.monotonic() - t,
            "unique_graphs_after_each_epoch": per_epoch.counts,
            "compiled_once": len(set(per_epoch.counts)) == 1 and per_epoch.counts[0] > 0,
            "compile_lines": printed.getvalue().count("compile: torch.compile"),
            "epoch_seconds": [r.get("seconds") for r in rows], "printed": printed.getvalue()[-3000:],
            "warnings": [str(w.message)[:500] for w in warned]}


def run_bench(a, out: Path, amp: str = "auto") -> dict:
    """``benchmarks/bench_gpu.py`` under ``amp``, written to ``bench.md`` / ``bench.json`` (``auto``) or
    ``bench_<amp>.md`` / ``.json``."""
    import bench_gpu  # benchmarks/bench_gpu.py (on sys.path above)
    name = "bench.md" if amp == "auto" else f"bench_{amp}.md"
    argv = ["--device", a.device, "--sizes", *a.sizes, "--batches", *map(str, a.batches), "--rounds",
            str(a.bench_rounds), "--steps", str(a.bench_steps), "--trainer-steps", str(a.bench_trainer_steps),
            "--out", str(out / name), "--random-data", "--score-images", str(a.bench_score_images), "--amp", amp]
    if a.starter_dir:
        argv += ["--starter-dir", a.starter_dir]
    if a.peak_size:
        argv += ["--peak-size", str(a.peak_size)]
    with contextlib.redirect_stdout(io.StringIO()):
        res = bench_gpu.main(argv)
    return {"rows": len(res["results"])}


def pack(folder: Path, to: Path) -> Path:
    with tarfile.open(to, "w:gz") as tar:
        for p in sorted(folder.iterdir()):
            tar.add(p, arcname=p.name)
    return to


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="results folder (default $OUT)")
    ap.add_argument("--preset", default=str(ROOT / "configs" / "film_large.json"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a preset setting (repeatable)")
    ap.add_argument("--budget-minutes", type=float, default=9.0, help="wall-clock budget of the whole call")
    ap.add_argument("--reserve-minutes", type=float, default=1.5,
                    help="kept at the end of the budget for the final evaluation, export, samples and packing")
    ap.add_argument("--minutes", type=float, default=None, help="cap the training run's minutes below the budget")
    ap.add_argument("--data-tensors", help="train/validation tensors made by --pack-data (default: the data folder)")
    ap.add_argument("--sizes", nargs="+", default=["1/160/5"], help="bench sizes (nr_resnet/nr_filters/nr_mix)")
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 256], help="bench batch sizes")
    ap.add_argument("--bench-rounds", type=int, default=3)
    ap.add_argument("--bench-steps", type=int, default=20)
    ap.add_argument("--bench-trainer-steps", type=int, default=40)
    ap.add_argument("--bench-score-images", type=int, default=1024,
                    help="images the benchmark scores eager vs compiled (issue 26, item 2; 0: skip)")
    ap.add_argument("--starter-dir", default=None,
                    help="the course starter (default ../shared/cpen455-starter, which does not travel to a lent "
                         "machine by itself: without it the bench has no starter rows)")
    ap.add_argument("--peak-size", type=int, default=None, help="matmul size of the bf16 peak")
    ap.add_argument("--no-bench", action="store_true", help="skip the benchmark")
    ap.add_argument("--bench-amps", nargs="+", default=["auto"],
                    help="precisions to benchmark, e.g. auto fp16 (fp16: what amp=auto picks on a T4 or P100)")
    ap.add_argument("--live-epochs", type=int, default=0,
                    help="also run notebook 02's train_live for this many epochs of a small run and count "
                         "its compilations (issue 33: one per run)")
    ap.add_argument("--tests-timeout", type=float, default=180.0)
    ap.add_argument("--samples-per-class", type=int, default=125)
    ap.add_argument("--pack-data", metavar="FILE", help="only write the train/validation tensors to FILE")
    ap.add_argument("--check-size", action="store_true", help="only check the travelling working tree (and --carry)")
    ap.add_argument("--carry", nargs="*", default=[], help="with --check-size: carried (ignored) paths")
    ap.add_argument("--join", metavar="FOLDER", help="only rebuild the export from FOLDER (see --to)")
    ap.add_argument("--samples-to-pngs", metavar="FILE", help="only write a samples.pt as PNGs into --to")
    ap.add_argument("--to", help="with --join / --samples-to-pngs: where to write")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    if a.pack_data:
        path = pack_data(Path(a.pack_data))
        print(path)
        try:
            rel = path.resolve().relative_to(ROOT)
            print(f"travelling with --carry {rel}: {check_travel_size(ROOT, [rel]) / 2 ** 20:.1f} MiB "
                  f"(limit {TRAVEL_LIMIT >> 20} MiB)")
        except ValueError:  # packed outside the checkout: it cannot be carried from there
            print(f"note: {path} is outside the checkout; carry paths are relative to it", file=sys.stderr)
        return 0
    if a.check_size:
        n = check_travel_size(ROOT, a.carry)
        print(f"travelling working tree: {n / 2 ** 20:.1f} MiB of {TRAVEL_LIMIT >> 20} MiB")
        return 0
    if a.join:
        print(join_parts(Path(a.join), Path(a.to or EXPORT)))
        return 0
    if a.samples_to_pngs:
        print(samples_to_pngs(Path(a.samples_to_pngs), Path(a.to or "gpu_samples")))
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
    cfg = TrainConfig.from_dict(apply_overrides(json.loads(Path(a.preset).read_text()), a.overrides))
    n_files = check_returned_count(export_bytes_estimate(cfg))  # before any time is spent
    logs.show("stderr")  # the trainer's precision / fast path / compile lines land in train.log
    with tempfile.TemporaryDirectory() as tmp:
        keep, wd = Path(tmp) / "results", Path(tmp) / "run"
        keep.mkdir()
        facts = {"budget_minutes": a.budget_minutes, "returned_files_planned": n_files, "errors": {}}
        manifest = {"files": {}}

        def write_back():
            """device.json, manifest.json and the archive as they stand: a kill later still returns them."""
            facts["total_seconds"] = time.monotonic() - t0
            (keep / "device.json").write_text(json.dumps(facts, indent=1, default=str))
            (keep / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
            pack(keep, out / ARCHIVE)

        def stage(name, fn):
            """Run one stage; an exception is recorded in device.json (``errors``), never lost."""
            try:
                facts[name] = fn()
            except (Exception, SystemExit) as e:  # later stages and the packing still run
                facts[name] = f"failed: {type(e).__name__}: {e}"
                facts["errors"][name] = traceback.format_exc()[-4000:]
                if isinstance(e, Terminated):  # recorded; no later stage starts
                    raise
            finally:
                print(f"{name}: {str(facts.get(name))[:300]} ({time.monotonic() - t0:.0f} s)", flush=True)
                write_back()

        def on_sigterm(signum, frame):  # the device tool's time limit: leave through the finally below
            raise Terminated(f"stopped by {signal.Signals(signum).name}")
        previous = signal.signal(signal.SIGTERM, on_sigterm)  # the trainer arms its own while it trains

        try:
            stage("device_facts", lambda: facts.update(device_facts(device)) or "read")
            stage("tests_rc", lambda: run_device_tests(device, keep / "tests.log", a.tests_timeout))
            if not a.no_bench:
                for amp in a.bench_amps:   # e.g. auto fp16: the chip's own choice and a T4's precision
                    stage("bench" if amp == "auto" else f"bench_{amp}", lambda amp=amp: run_bench(a, keep, amp))
            if a.live_epochs:
                stage("live", lambda: live_compile_check(device, a.live_epochs, Path(tmp) / "live", a.data_tensors))
            left = a.budget_minutes - a.reserve_minutes - (time.monotonic() - t0) / 60
            minutes = min(left, a.minutes) if a.minutes else left
            if minutes <= 0.05:
                facts["training"] = f"skipped: {left:.2f} minutes left before the reserve"
            else:
                run_cfg = TrainConfig.from_dict({**cfg.to_dict(), "max_minutes": round(minutes, 3)})
                stage("training", lambda: timed_training(run_cfg, a.data_tensors, wd, keep / "train.log"))
            for name in ("metrics.jsonl", "config.json"):
                if (wd / name).is_file():
                    (keep / name).write_text((wd / name).read_text())
            best = wd / EXPORT
            if best.is_file():
                def export_and_sample():
                    manifest["files"][EXPORT] = split_for_return(best, out)
                    manifest["best"] = pcnn.read_metadata(best)
                    t = time.monotonic()
                    model = pcnn.load(best).to(device)
                    torch.save(sample_set(model, a.samples_per_class), out / SAMPLES)
                    manifest["files"][SAMPLES] = {"sha256": file_sha256(out / SAMPLES),
                                                  "bytes": (out / SAMPLES).stat().st_size, "files": [SAMPLES]}
                    return time.monotonic() - t
                stage("sampling_s", export_and_sample)
        finally:  # whatever finished comes back, with the errors of what did not
            signal.signal(signal.SIGTERM, previous)
            write_back()
    returned = sorted(p.name for p in out.iterdir())
    print(json.dumps({"returned": returned, "training": facts.get("training"), "errors": sorted(facts["errors"])},
                     indent=1, default=str))
    if len(returned) > MAX_FILES:
        print(f"error: {len(returned)} files in {out}, more than the {MAX_FILES} that come back", file=sys.stderr)
        return 1
    return 1 if facts["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
