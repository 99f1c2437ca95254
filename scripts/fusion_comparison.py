#!/usr/bin/env python
"""Train every fusion strategy under one budget and report the comparison.

**v2 (issue 35; the rules: results/fusion/README.md).** A *design* is a preset and a plan
(``fusion_v2.DESIGNS``): ``cpu10`` trains every strategy for 10 epochs with seeds 0 and 1,
then seed 2 of the best three; ``gpu30`` every strategy for 30 epochs with seeds 0-2. One
command trains all runs of a design, one after the other, each resumable from its workdir
``<workdir>/<name>_s<seed>`` (``last.pt``) and skipped once ``<out>/<name>_s<seed>.json``
exists or while another process holds it (so a second process may run beside the first)::

    OMP_NUM_THREADS=1 PCNN_DATA_DIR=../shared/cpen455 python scripts/fusion_comparison.py \
        --design cpu10 --workdir ../runs/fusion35 --threads 1

    python scripts/fusion_comparison.py --design cpu10 --report

The report (``report.md``, ``report.json``, ``curves.png``, ``summary.png`` in the design's
results folder) works on whatever runs are finished and says how many of how many.
``--measure`` times the budget's training steps (fp32 and bf16), its evaluation and
sampling at the current thread count and writes ``<out>/epoch_cost.json``.

**v1 (history).** The 2-epoch, one-seed comparison (``configs/fusion_budget.json``,
``results/fusion/*.json``)::

    python scripts/fusion_comparison.py --config configs/fusion_budget.json --workdir ../runs/fusion \
        --out results/fusion
    python scripts/fusion_comparison.py --report --out results/fusion

Each v1 run is :func:`studies.experiments.run_and_record` (25 samples per class, FID at dims
192 and 2048); a strategy whose results file exists is skipped.
"""
import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402

from fusion_v2 import DESIGNS, STRATEGIES  # noqa: E402,F401  (scripts/ is not a package)

log = logging.getLogger("fusion_comparison")
#: The docs page that carries each design's report table and conclusion (between its markers).
DESIGN_DOC = ROOT / "docs" / "design.md"


def report(out: Path) -> int:
    """Table and plots of the results files in ``out``."""
    import matplotlib
    matplotlib.use("Agg")
    from studies.experiments import load_results, markdown_table
    from pcnn.viz.results import plot_results
    order = {n: i for i, n in enumerate(STRATEGIES)}
    results = sorted(load_results(out), key=lambda r: order.get(r["name"], len(order)))
    if not results:
        print(f"no results files in {out}", file=sys.stderr)
        return 1
    table = markdown_table(results)
    (out / "table.md").write_text(table + "\n")
    plot_results(results).savefig(out / "comparison.png", dpi=80)
    print(table)
    return 0


def measure(design: dict, out: Path, data_dir=None, steps: int = 25, repeats: int = 2) -> dict:
    """Time the design's training steps in fp32 and bf16 (alternating, ``repeats`` times each, on
    blocks_film), one evaluation pass over 128 validation images and 100 samples, at the current
    thread count; writes ``<out>/epoch_cost.json``.

    Wall-clock rates depend on what else runs on the machine, so the process's CPU time
    (``time.process_time``) is recorded too: per training image (the train() call with a
    4-image validation, so the evaluation adds almost nothing) and for the evaluation pass.
    With one thread, CPU seconds are what a run costs when it has a core to itself."""
    import os
    import tempfile
    from pcnn.model.checkpoint import load
    from pcnn.model.classify import log_likelihoods
    from pcnn.data.dataset import load_split
    from pcnn.paths import resolve_data_dir
    from pcnn.model.likelihood import to_float
    from studies.experiments import hardware, write_results
    from pcnn.sampling.sets import write_sample_set
    from pcnn.model.checkpoint import read_tensor_file
    from pcnn.train import TrainConfig, read_metrics, train
    from fusion_v2 import run_config
    root = resolve_data_dir(data_dir)
    base = TrainConfig.from_json(ROOT / design["config"]).to_dict()
    size = base["model"]["image_size"]
    tr = load_split("train", root, size=size, show_progress=False)
    va = load_split("validation", root, size=size, show_progress=False)
    tmp = Path(tempfile.mkdtemp(prefix="fusion-measure-"))
    rates = {"off": [], "bf16": []}
    cpu_per_image = {"off": [], "bf16": []}
    for r in range(repeats):
        for amp in ("off", "bf16"):
            d = dict(run_config(base, "blocks_film", 0), amp=amp, max_steps=steps, epochs=1, val_subset=4)
            c0 = time.process_time()
            train(TrainConfig.from_dict(d), tmp / f"{amp}{r}", train_data=tr, val_data=va, progress=False)
            cpu_per_image[amp].append(round((time.process_time() - c0) / (steps * base["batch_size"]), 4))
            rates[amp].append(read_metrics(tmp / f"{amp}{r}")[-1]["images_per_s"])
            log.info("%s: %.2f img/s wall, %.4f CPU s per image", amp, rates[amp][-1], cpu_per_image[amp][-1])
    # On a CPU without bf16 instructions amp=bf16 runs fp32: say what the "bf16" figures timed.
    bf16_ran = read_tensor_file(tmp / "bf160" / "last.pt")["amp"]
    model = load(tmp / "bf160" / "model.safetensors")
    c0, t0 = time.process_time(), time.perf_counter()
    log_likelihoods(model, to_float(va.images[:128]))
    cpu_eval, t_eval = time.process_time() - c0, time.perf_counter() - t0
    c0, t0 = time.process_time(), time.perf_counter()
    write_sample_set(model, tmp / "samples", per_class=25, seed=0, show_progress=False)
    cpu_sample, t_sample = time.process_time() - c0, time.perf_counter() - t0
    per_epoch = (len(tr) // base["batch_size"]) * base["batch_size"]
    cpu_bf = min(cpu_per_image["bf16"])
    cpu_32 = min(cpu_per_image["off"])
    eval_epoch = cpu_eval / 128 * len(va) * 2     # raw and EMA weights, every epoch
    run_hours = base["epochs"] * (per_epoch * cpu_bf + eval_epoch) / 3600
    res = {"threads": torch.get_num_threads(), "steps_per_measure": steps, "batch_size": base["batch_size"],
           "images_per_s_wall": rates, "cpu_seconds_per_train_image": cpu_per_image,
           "bf16_speedup_cpu_time": round(cpu_32 / cpu_bf, 3), "train_images_per_epoch": per_epoch,
           "train_cpu_seconds_per_epoch_bf16": round(per_epoch * cpu_bf, 1),
           "train_cpu_seconds_per_epoch_fp32": round(per_epoch * cpu_32, 1),
           "eval_cpu_seconds_128_images_fp32": round(cpu_eval, 1), "eval_wall_seconds_128_images": round(t_eval, 1),
           "eval_cpu_seconds_per_epoch_raw_and_ema": round(eval_epoch, 1),
           "sample_cpu_seconds_100": round(cpu_sample, 1), "sample_wall_seconds_100": round(t_sample, 1),
           "run_cpu_hours_train_and_eval": round(run_hours, 2), "epochs": base["epochs"],
           "hardware": hardware(), "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
           "design_config": design["config"], "amp_bf16_ran_as": bf16_ran,
           "note": "the machine was shared with other jobs: wall-clock rates vary with them; CPU seconds (the "
                   "fastest of the repeats) are what one thread costs when it has a core to itself"}
    write_results(res, out / "epoch_cost.json")
    return res


def run_design(name: str, design: dict, workdir: Path, out: Path, data_dir=None, only=None, limit=None,
               min_images=None, kid_subsets: int = 100, config=None, per_class=None, cache_dir=None,
               deadline_minutes=None, reserve_minutes: float = 3.0, floor: bool = True,
               defer_generation: bool = False, deadline_at=None) -> int:
    """Train and evaluate every planned run of ``design`` not finished yet; returns how many finished now.

    ``deadline_minutes``: end the call resumably by then: each run trains at most until
    ``reserve_minutes`` before it (``max_minutes``, a run-control setting, not part of the budget),
    which is left for its scoring and sampling; no run starts with less than that left.
    ``deadline_at``: the same as a wall-clock time (``time.time()``), for workers started by
    :func:`gpu_call`, whose start-up must count against the call's budget.
    ``floor=False``: leave the real floor (``<out>/real_floor.json``) to another process.
    ``defer_generation``: no Inception weights are loaded (a lent GPU has none); each run keeps its
    samples and writes a pending file, and the floor is left to :func:`finish_here`."""
    if deadline_at is None and deadline_minutes is not None:
        deadline_at = time.time() + 60 * deadline_minutes
    from pcnn.data.dataset import load_split
    from pcnn.paths import resolve_data_dir
    from pcnn.train import TrainConfig
    import fusion_v2 as F
    root = resolve_data_dir(data_dir)
    base = TrainConfig.from_json(config or ROOT / design["config"]).to_dict()
    size = base["model"]["image_size"]
    train_split = load_split("train", root, size=size, show_progress=False)
    val_split = load_split("validation", root, size=size, show_progress=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    extractor = None if defer_generation else inception_extractor(cache_dir)
    per_class = per_class or design["per_class"]
    out.mkdir(parents=True, exist_ok=True)
    if floor and not defer_generation:
        ensure_floor(out, workdir, root, extractor, per_class, size, min_images, kid_subsets)
    finished = 0
    failed = set()
    while True:
        plan = F.planned_runs(design, F.load_runs(out))
        todo = [(n, s) for n, s in plan["runs"] if not (out / f"{F.run_id(n, s)}.json").exists()
                and (not only or n in only) and (n, s) not in failed]
        if not todo:
            break
        progressed = False
        for n, s in todo:
            if deadline_at is not None:
                left = (deadline_at - time.time()) / 60 - reserve_minutes
                if left <= 0.5:
                    log.info("deadline: %.1f min left, stopping before %s", left + reserve_minutes, F.run_id(n, s))
                    return finished
                base = dict(base, max_minutes=round(left, 2))
            t0 = time.time()
            log.info("%s: training (or resuming) in %s", F.run_id(n, s), workdir / F.run_id(n, s))
            try:
                res = F.run_one(name, base, n, s, workdir, out, train_split, val_split, root, extractor,
                                per_class, min_images, kid_subsets, device)
            except Exception:   # a diverged or broken run must not stop the others; it stays missing
                log.exception("%s failed; the other runs go on (this call will not retry it)", F.run_id(n, s))
                failed.add((n, s))
                progressed = True
                break
            if res is None:
                if (workdir / F.run_id(n, s) / "job" / "train.lock").exists():
                    continue           # another process runs it
                log.info("stopped: %s is resumable", F.run_id(n, s))
                return finished
            finished += 1
            progressed = True
            log.info("%s finished in %.0f s (%d of %d planned runs done%s)", F.run_id(n, s), time.time() - t0,
                     len(F.load_runs(out)) + len(F.pending_runs(out)), plan["total"],
                     ", counting those whose generation metrics are pending" if defer_generation else "")
            if limit is not None and finished >= limit:
                return finished
            break                      # re-plan: the extra seeds are chosen once seeds 0-1 are done
        if not progressed:
            break
    return finished


def sync_design_doc(rep: dict, design_name: str, out: Path, doc: Path = DESIGN_DOC) -> bool:
    """Put the report's table and conclusion into ``doc`` (docs/design.md) when ``out`` is the
    design's committed folder, so the page shows the same numbers as the report; a report written
    elsewhere (a test, a scratch folder) leaves the page alone."""
    import fusion_v2 as F
    if Path(out).resolve() != (ROOT / DESIGNS[design_name]["out"]).resolve():
        return False
    rel = Path(os.path.relpath(Path(out).resolve(), Path(doc).resolve().parent)).as_posix()
    done = F.sync_doc(doc, design_name, F.doc_block(rep, design_name, rel))
    if done:
        log.info("%s: the %s report's table and conclusion updated", doc, design_name)
    return done


def inception_extractor(cache_dir=None):
    """The Inception feature extractor every v2 scoring uses (on the GPU when there is one)."""
    from pcnn.eval.fid import load_inception
    from pcnn.eval.generation import InceptionFeatures
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return InceptionFeatures(load_inception(device), device, 50, cache_dir=cache_dir)


def ensure_floor(out: Path, workdir: Path, root, extractor, per_class: int, size: int, min_images=None,
                 kid_subsets: int = 100) -> None:
    """Write the real floor (``<out>/real_floor.json``) unless it is there."""
    import fusion_v2 as F
    from studies.experiments import write_results
    if (out / "real_floor.json").exists():
        return
    log.info("real floor: %d validation images per class at %dx%d", per_class, size, size)
    write_results(F.floor_scores(workdir / "real_floor", root, extractor, per_class, size, min_images, kid_subsets),
                  out / "real_floor.json")


def finish_here(design: dict, out: Path, workdir: Path, data_dir=None, min_images=None, kid_subsets: int = 100,
                per_class=None, cache_dir=None, config=None) -> dict:
    """The generation metrics of every pending run in ``out`` (and the real floor if missing),
    measured on this machine's Inception (:func:`fusion_v2.finish_pending`'s answer)."""
    import fusion_v2 as F
    from pcnn.paths import resolve_data_dir
    from pcnn.train import TrainConfig
    root = resolve_data_dir(data_dir)
    extractor = inception_extractor(cache_dir)
    size = TrainConfig.from_json(config or ROOT / design["config"]).model.image_size
    ensure_floor(out, workdir, root, extractor, per_class or design["per_class"], size, min_images, kid_subsets)
    return F.finish_pending(out, workdir, root, extractor, min_images, kid_subsets)


def gpu_call(design_name: str, workdir: Path, return_to: Path, processes: int, budget_minutes: float,
             pack_minutes: float = 1.0, stagger_seconds: float = 3.0, passthrough=()) -> dict:
    """One bounded call on a lent GPU (results/fusion/README.md). ``processes`` workers of this script
    share the device, each taking the next unfinished run of the design (the run locks keep them
    apart), with ``--defer-generation`` (no Inception weights there) and one wall-clock deadline,
    ``pack_minutes`` before ``budget_minutes`` from now (their start-up counts). A worker still
    running at the deadline gets SIGTERM (its run stops after the batch in flight and saves
    ``last.pt``), and SIGKILL with its whole process group (compiler workers too) half of
    ``pack_minutes`` later. Then every results file (pending, with its samples) and the workers'
    logs are packed into ``return_to`` in at most 8 files (:func:`fusion_v2.pack_for_return`).
    ``passthrough``: more arguments for the workers (tests: a tiny preset and data). Returns the
    call's record (also packed, as ``call.json``)."""
    import os
    import signal
    import subprocess
    import fusion_v2 as F
    from studies.experiments import hardware, write_results
    t_start = time.time()
    results, runs, logs = workdir / "results", workdir / "runs", workdir / "logs"
    for d in (results, runs, logs):
        d.mkdir(parents=True, exist_ok=True)
    deadline_at = t_start + 60 * (budget_minutes - pack_minutes)
    # One compiler cache for all workers (the trainer's default is one per run folder): the
    # seeds of a strategy compile the same graphs, so only the first of them compiles cold.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(workdir / "compile_cache"))
    workers = []
    for i in range(processes):
        if time.time() >= deadline_at:
            break
        cmd = [sys.executable, str(Path(__file__).resolve()), "--design", design_name, "--workdir", str(runs),
               "--out", str(results), "--threads", "1", "--defer-generation", "--deadline-at", f"{deadline_at:.3f}",
               *passthrough]
        fh = open(logs / f"worker{i}.log", "w")
        workers.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True),
                        fh))
        log.info("worker %d started, %.2f min to the deadline", i, (deadline_at - time.time()) / 60)
        time.sleep(stagger_seconds)
    def finished_by(proc, when) -> bool:
        try:
            proc.wait(timeout=max(0.1, when - time.time()))
            return True
        except subprocess.TimeoutExpired:
            return False

    for proc, _ in workers:
        finished_by(proc, deadline_at)
    stopped = {}
    running = [i for i, (proc, _) in enumerate(workers) if proc.poll() is None]
    for i in running:            # all at once: each run stops after its batch in flight
        log.warning("worker %d still runs at the deadline: SIGTERM (its run stops resumably)", i)
        stopped[i] = "SIGTERM"
        workers[i][0].terminate()
    for i in running:
        if not finished_by(workers[i][0], deadline_at + 30 * pack_minutes):
            log.warning("worker %d still runs after SIGTERM: SIGKILL to its process group", i)
            stopped[i] = "SIGKILL"
            os.killpg(workers[i][0].pid, signal.SIGKILL)
            workers[i][0].wait()
    for _, fh in workers:
        fh.close()
    record = {"design": design_name, "processes": processes, "budget_minutes": budget_minutes,
              "pack_minutes": pack_minutes, "worker_exit_codes": [proc.returncode for proc, _ in workers],
              "stopped_at_deadline": {str(k): v for k, v in stopped.items()},
              "seconds": round(time.time() - t_start, 1),
              "finished_runs": sorted(p.stem for p in F.pending_runs(results)), "hardware": hardware()}
    if torch.cuda.is_available():
        record["cuda"] = {"device": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
                          "torch_cuda": torch.version.cuda}
    write_results(record, logs / "call.json")
    record["manifest"] = F.pack_for_return(results, return_to, extra=sorted(logs.glob("*")))
    log.info("%d run(s) back in %s (%d file(s)) after %.0f s", len(record["finished_runs"]), return_to,
             len(record["manifest"]["pieces"]) + 1, time.time() - t_start)
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--design", choices=list(DESIGNS), help="v2: the design to train or report (results/fusion/README.md)")
    p.add_argument("--config", default=None, help="v1: the budget (default configs/fusion_budget.json); "
                   "v2: replace the design's preset (tests, tiny runs)")
    p.add_argument("--workdir", help="parent of the per-run folders (outside the repo); needed to train")
    p.add_argument("--out", default=None, help="folder of the results files (v1 default results/fusion, "
                   "v2 the design's folder)")
    p.add_argument("--only", nargs="*", choices=list(STRATEGIES), help="a subset of the strategies")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--report", action="store_true", help="only write the report from the results files")
    p.add_argument("--measure", action="store_true", help="v2: time the budget (writes <out>/epoch_cost.json)")
    p.add_argument("--deadline-minutes", type=float, default=None,
                   help="v2: end the call resumably within this many minutes (a bounded GPU call)")
    p.add_argument("--no-floor", action="store_true", help="v2: leave the real floor to another process")
    p.add_argument("--reserve-minutes", type=float, default=3.0,
                   help="v2 with --deadline-minutes: what each run keeps for its scoring and sampling")
    p.add_argument("--defer-generation", action="store_true",
                   help="v2: keep each run's samples and leave the Inception metrics to --finish-pending "
                        "(a machine without the Inception weights)")
    p.add_argument("--finish-pending", action="store_true",
                   help="v2: measure the generation metrics of the pending runs in --out here")
    p.add_argument("--gpu-call", type=int, default=None, metavar="PROCESSES",
                   help="v2: one bounded call on a lent GPU with this many worker processes; needs "
                        "--workdir, --return-to and --budget-minutes")
    p.add_argument("--return-to", default=None, help="v2 --gpu-call: the folder that comes back ($OUT)")
    p.add_argument("--budget-minutes", type=float, default=9.0, help="v2 --gpu-call: the whole call's minutes")
    p.add_argument("--pack-minutes", type=float, default=1.0,
                   help="v2 --gpu-call: the workers' deadline is this long before the budget's end")
    p.add_argument("--deadline-at", type=float, default=None, help=argparse.SUPPRESS)   # gpu_call's workers
    p.add_argument("--unpack", default=None, metavar="FOLDER",
                   help="v2: what a --gpu-call returned: check it, put its runs into --out, finish them here, report")
    p.add_argument("--limit", type=int, default=None, help="v2: stop after this many runs finished "
                   "(with --gpu-call: per worker)")
    p.add_argument("--min-images", type=int, default=None, help="v2: fewest samples FID-2048 accepts (tiny runs)")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--cache-dir", default=None, help="v2: Inception feature / FID statistics cache "
                   "(default $PCNN_CACHE_DIR or ~/.cache/pcnn)")
    p.add_argument("--per-class", type=int, default=None, help="v2: samples per class (default the design's 125; tiny runs)")
    p.add_argument("--draws", type=int, default=None, help="v2 report: bootstrap draws (default 10,000)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.design:
        import fusion_v2 as F
        design = DESIGNS[a.design]
        out = Path(a.out) if a.out else ROOT / design["out"]
        if a.report:
            rep = F.write_report(out, design, a.design, v1_folder=ROOT / "results" / "fusion",
                                 draws=a.draws or F.BOOTSTRAP_DRAWS)
            sync_design_doc(rep, a.design, out)
            print(F.report_markdown(rep, a.design))
            return 0
        if a.measure:
            print(json.dumps(measure(design, out, a.data_dir), indent=1))
            return 0
        if not a.workdir:
            p.error("--workdir is needed to train, finish or unpack (or pass --report)")
        workdir = Path(a.workdir)
        if a.gpu_call is not None:
            if not a.return_to:
                p.error("--gpu-call needs --return-to (the folder that comes back, e.g. $OUT)")
            passthrough = []
            for flag, value in (("--config", a.config), ("--data-dir", a.data_dir), ("--per-class", a.per_class),
                                ("--limit", a.limit), ("--reserve-minutes", a.reserve_minutes)):
                if value is not None:
                    passthrough += [flag, str(value)]
            if a.only:
                passthrough += ["--only", *a.only]
            rec = gpu_call(a.design, workdir, Path(a.return_to), a.gpu_call, a.budget_minutes, a.pack_minutes,
                           passthrough=passthrough)
            return 0 if rec["finished_runs"] else 1
        finish = dict(data_dir=a.data_dir, min_images=a.min_images, kid_subsets=a.kid_subsets,
                      per_class=a.per_class, cache_dir=a.cache_dir, config=a.config)
        if a.unpack:
            got = F.unpack_returned(Path(a.unpack), out, workdir / "call_logs")
            log.info("unpacked %d file(s) into %s (skipped, finished here already: %s); logs in %s",
                     len(got["results"]), out, ", ".join(got["skipped"]) or "none", workdir / "call_logs")
        if a.unpack or a.finish_pending:
            got = finish_here(design, out, workdir, **finish)
            log.info("%d pending run(s) finished here: %s", len(got["finished"]), ", ".join(got["finished"]) or "none")
            rep = F.write_report(out, design, a.design, v1_folder=ROOT / "results" / "fusion",
                                 draws=a.draws or F.BOOTSTRAP_DRAWS)
            sync_design_doc(rep, a.design, out)
            for rid, why in got["failed"].items():
                print(f"error: {rid} stays pending: {why}", file=sys.stderr)
            return 1 if got["failed"] else 0
        n = run_design(a.design, design, workdir, out, a.data_dir, a.only, a.limit, a.min_images,
                       a.kid_subsets, a.config, a.per_class, a.cache_dir, a.deadline_minutes,
                       reserve_minutes=a.reserve_minutes, floor=not a.no_floor,
                       defer_generation=a.defer_generation, deadline_at=a.deadline_at)
        log.info("%d run(s) finished in this call", n)
        return 0
    out = Path(a.out or "results/fusion")
    if a.report:
        return report(out)
    if not a.workdir:
        p.error("--workdir is needed to train (or pass --report)")
    return train_v1(a, out)


def train_v1(a, out: Path) -> int:
    """The v1 comparison (2 epochs, one seed per strategy): history, kept runnable."""
    from pcnn.data.dataset import load_split
    from pcnn.paths import resolve_data_dir
    from studies.experiments import run_and_record
    from pcnn.eval.fid import load_inception
    from pcnn.train import TrainConfig
    root = resolve_data_dir(a.data_dir)
    base = TrainConfig.from_json(a.config or "configs/fusion_budget.json").to_dict()
    size = base["model"]["image_size"]
    train_split = load_split("train", root, size=size)
    val_split = load_split("validation", root, size=size)
    inception = load_inception("cpu")
    for name in a.only or STRATEGIES:
        target = out / f"{name}.json"
        if target.exists():
            print(f"{name}: {target} exists, skipped", flush=True)
            continue
        d = dict(base, model=dict(base["model"], fusion=STRATEGIES[name]))
        d["description"] = f"fusion comparison: {name} = {STRATEGIES[name] or 'unconditional'}; " + base.get(
            "description", "")
        t0 = time.time()
        res = run_and_record(TrainConfig.from_dict(d), Path(a.workdir) / name, target, name=name,
                             train_data=train_split, val_data=val_split, fid_ref_dir=root / "test",
                             fid_model=inception)
        f = res["final"]
        print(f"{name}: acc {f['accuracy']}, F1 {f['macro_f1']}, bpd {f['val_bpd']:.4f}, "
              f"FID192 {f['fid_192']}, FID2048 {f['fid_2048']}, {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
