"""Fusion comparison v2 (issue 35): the design, one run, and the report over whatever runs are finished.

Scripts-side module (not part of the library): ``scripts/fusion_comparison.py --design ...``
trains with it, ``--report`` reports with it, and notebook 05 imports it (with ``scripts/``
on ``sys.path``) to show the report from the committed results files. The rules it follows
are written in ``results/fusion/README.md``.

* A **design** (:data:`DESIGNS`) is a training preset plus a plan: every strategy of
  :data:`STRATEGIES` with each of ``seeds``, then ``extra_seeds`` for the ``extra_top``
  conditional strategies with the highest mean EMA accuracy over ``seeds``
  (:func:`planned_runs`, :func:`top_strategies`).
* A **run** (:func:`run_one`) trains ``<workdir>/<name>_s<seed>`` (resumed from ``last.pt``),
  scores the validation split with the EMA weights in float32 and keeps every image's
  log p(x|c), samples ``per_class`` images per class and measures FID-2048, the course
  FID-192, KID and the Inception probe on them (:func:`pcnn.eval.generation.evaluate_generation`),
  then writes ``<out>/<name>_s<seed>.json`` (:data:`RUN_FORMAT`). On a machine without the
  Inception weights (a lent GPU: nothing is installable or downloadable there) the run keeps its
  samples as one tensor and writes a *pending* file (:data:`PENDING_FORMAT`) instead;
  :func:`finish_pending` measures the generation metrics later, here, on the same images.
* A **bounded call** on a lent GPU (:func:`pack_for_return`, :func:`unpack_returned`) brings the
  pending files and their samples back as one archive in at most :data:`MAX_RETURN_FILES` files.
* The **report** (:func:`build_report`) summarises the finished runs per strategy (mean and
  sample standard deviation over seeds), picks the best by the rule, compares it with every
  other strategy on the same validation images (exact McNemar per seed and a paired bootstrap
  over images and seeds, Holm-adjusted), draws the learning curves and the summary plot, and
  writes the conclusion in words.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

log = logging.getLogger("fusion_v2")

#: name -> fusion modes. "combo" is the combination of the best public peer result
#: (early one-hot concatenation, FiLM in every block, bottleneck and late injection).
STRATEGIES = {
    "input": ["input"], "input_concat": ["input_concat"], "first_conv": ["first_conv"],
    "middle": ["middle"], "late": ["late"], "blocks": ["blocks"], "blocks_film": ["blocks_film"],
    "combo": ["input_concat", "blocks_film", "middle", "late"], "none": [],
}
RUN_FORMAT = "pcnn-fusion-run-v2"
#: A run trained, scored on validation and sampled, whose generation metrics are still to be
#: measured (:func:`finish_pending`); its samples are in ``<out>/<name>_s<seed>.samples.pt``.
PENDING_FORMAT = "pcnn-fusion-run-v2-pending"
SAMPLES_SUFFIX = ".samples.pt"
#: What a bounded GPU call may return (the device tool): at most 8 files of at most 16 MiB each.
MAX_RETURN_FILES = 8
RETURN_PART_BYTES = 15 << 20
RETURN_ARCHIVE = "fusion_call.tar.gz"
RETURN_MANIFEST = "fusion_call_manifest.json"
FLOOR_FORMAT = "pcnn-fusion-floor-v2"
#: The designs: a training preset (only model.fusion and seed change per run) and the plan.
DESIGNS = {
    "cpu10": {"config": "configs/fusion_cpu10.json", "seeds": [0, 1], "extra_seeds": [2], "extra_top": 3,
              "per_class": 125, "out": "results/fusion/v2",
              # the rules' amendment (results/fusion/README.md): matching by seed came after the first runs
              "matched_seeds_amended": "after 11 of 21 runs"},
    "gpu30": {"config": "configs/fusion_gpu30.json", "seeds": [0, 1, 2], "extra_seeds": [], "extra_top": 0,
              "per_class": 125, "out": "results/fusion/gpu30"},
}
BOOTSTRAP_DRAWS = 10_000
ALPHA = 0.05


def run_id(name: str, seed: int) -> str:
    return f"{name}_s{seed}"


def is_conditional(name: str) -> bool:
    return bool(STRATEGIES[name])


# ----------------------------------------------------------------------------- plan


def top_strategies(runs: Sequence[dict], seeds: Sequence[int], k: int) -> Optional[List[str]]:
    """The ``k`` conditional strategies with the highest mean EMA accuracy over ``seeds`` (ties:
    lower mean bits/dim, then the order of :data:`STRATEGIES`); None until every conditional
    strategy has finished all of ``seeds``."""
    by = {(r["name"], r["seed"]): r for r in runs}
    rows = []
    for i, name in enumerate(n for n in STRATEGIES if is_conditional(n)):
        got = [by.get((name, s)) for s in seeds]
        if any(g is None for g in got):
            return None
        acc = float(np.mean([g["ema"]["accuracy"] for g in got]))
        bpd = float(np.mean([g["ema"]["bpd"] for g in got]))
        rows.append((-acc, bpd, i, name))
    return [r[3] for r in sorted(rows)[:k]]


def planned_runs(design: dict, runs: Sequence[dict]) -> dict:
    """``{"runs": [(name, seed)] known so far, in training order, "undecided": how many extra runs
    wait for the selection, "total": all planned runs, "top": the selected strategies or None}``."""
    order = [(n, s) for s in design["seeds"] for n in STRATEGIES]
    top = None
    undecided = 0
    if design["extra_top"] and design["extra_seeds"]:
        top = top_strategies(runs, design["seeds"], design["extra_top"])
        if top is None:
            undecided = design["extra_top"] * len(design["extra_seeds"])
        else:
            order += [(n, s) for s in design["extra_seeds"] for n in top]
    return {"runs": order, "undecided": undecided, "total": len(order) + undecided, "top": top}


def run_config(base: dict, name: str, seed: int) -> dict:
    """The preset with only ``model.fusion`` and ``seed`` changed (and the description saying so)."""
    d = dict(base, model=dict(base["model"], fusion=list(STRATEGIES[name])), seed=seed)
    d["description"] = f"fusion comparison v2: {name} = {STRATEGIES[name] or 'unconditional'}, seed {seed}; " + \
        base.get("description", "")
    return d


# ----------------------------------------------------------------------------- one run


def trained_amp(workdir, state: Optional[dict] = None) -> dict:
    """The precision the run in ``workdir`` trained in (the trainer's stored choice in ``last.pt``:
    mode, precision, reason, and ``segments``, the precision from each step on: a run resumed on
    another CPU may have changed it). amp=bf16 runs fp32 on a CPU without bf16 instructions.
    ``state``: ``last.pt`` already read (it is read once per run)."""
    from pcnn.model.checkpoint import read_tensor_file
    s = state if state is not None else read_tensor_file(Path(workdir) / "last.pt")
    if not s.get("amp"):
        raise ValueError(f"{workdir}/last.pt records no precision choice")
    return {**s["amp"], "segments": [dict(x) for x in s.get("amp_segments") or []]}


def ema_model(workdir, state: Optional[dict] = None):
    """The EMA weights of the run in ``workdir`` (from ``last.pt``, or ``state`` when already read), in eval mode."""
    from pcnn.model.checkpoint import read_tensor_file
    from pcnn.model.config import ModelConfig
    from pcnn.model.network import PixelCNNpp
    s = state if state is not None else read_tensor_file(Path(workdir) / "last.pt")
    if s.get("ema") is None:
        raise ValueError(f"{workdir}/last.pt holds no EMA weights (the preset must keep an EMA)")
    model = PixelCNNpp(ModelConfig.from_dict(s["config"]["model"]))
    model.load_state_dict(s["ema"])
    return model.eval()


def training_finished(log_rows: Sequence[dict], epochs: int) -> bool:
    """Whether the metrics log ends with the whole last epoch evaluated."""
    return bool(log_rows) and log_rows[-1].get("epoch") == epochs and not log_rows[-1].get("partial") \
        and log_rows[-1].get("val_bpd") is not None


def validation_scores(model, split) -> dict:
    """EMA figures on ``split`` with every image's log p(x|c) in nats (float32 network, as the trainer's evaluation)."""
    from pcnn.model.classify import log_likelihoods
    from pcnn.eval.classification import score
    from pcnn.model.likelihood import to_float
    ll = log_likelihoods(model, to_float(split.images))
    m = score(ll, split.labels, model.config)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "bpd": m["bpd"], "correct": m["correct"],
            "class_nll": m["class_nll"], "n": len(split),
            "log_px": [[round(float(v), 3) for v in row] for row in ll.tolist()],
            "pred": ll.argmax(1).tolist() if model.config.conditional else None,
            "labels": split.labels.tolist(), "files": list(split.paths)}


def generation_scores(model, sample_dir, data_root, extractor, per_class: int, seed: int,
                      min_images: Optional[int] = None, kid_subsets: int = 100) -> dict:
    """``per_class`` samples per class (seed ``seed``) and every generation metric on them
    (features and reference statistics cached in ``extractor.cache_dir``)."""
    t_sample = write_samples(model, sample_dir, per_class, seed)
    return score_samples(sample_dir, data_root, extractor, per_class, seed, t_sample, min_images, kid_subsets)


def write_samples(model, sample_dir, per_class: int, seed: int) -> float:
    """The run's sample set (:func:`pcnn.sampling.sets.write_sample_set`, seed ``seed``) as PNGs in
    ``sample_dir``, with its grid beside it; returns the seconds it took."""
    from pcnn.sampling.sets import write_sample_set
    t0 = time.perf_counter()
    write_sample_set(model, sample_dir, per_class=per_class, seed=seed, show_progress=False)
    return round(time.perf_counter() - t0, 1)


def score_samples(sample_dir, data_root, extractor, per_class: int, seed: int, sampling_seconds: float,
                  min_images: Optional[int] = None, kid_subsets: int = 100) -> dict:
    """Every generation metric of the set in ``sample_dir`` (the ``generation`` entry of a results file;
    ``seconds`` is sampling plus scoring)."""
    t0 = time.perf_counter()
    res, entry = _score_folder(sample_dir, data_root, extractor, min_images, kid_subsets)
    return {**entry, "per_class": per_class, "sample_seed": seed, "weights": res["weights"],
            "ref_n": res["ref"]["n"], "probe_validation": (res.get("probe") or {}).get("validation"),
            "warnings": res["warnings"], "sampling_seconds": sampling_seconds,
            "seconds": round(sampling_seconds + time.perf_counter() - t0, 1)}


def samples_path(out_dir, rid: str) -> Path:
    """Where a pending run keeps its samples: ``<out>/<rid>.samples.pt``."""
    return Path(out_dir) / f"{rid}{SAMPLES_SUFFIX}"


def keep_samples(sample_dir, to) -> dict:
    """The set in ``sample_dir`` as one uint8 tensor file ``to`` (``{"images", "labels"}``, the
    order of :func:`pcnn.sampling.sets.read_sample_set`), written atomically; returns its name,
    image count and sha256. PNG is lossless, so the images written back from it are the same pixels."""
    import hashlib
    import torch
    from pcnn.sampling.sets import read_sample_set
    images, labels = read_sample_set(sample_dir)
    to = Path(to)
    tmp = to.with_name(to.name + ".tmp")
    torch.save({"images": images, "labels": labels}, tmp)
    tmp.replace(to)
    return {"file": to.name, "n": len(labels), "sha256": hashlib.sha256(to.read_bytes()).hexdigest()}


def pending_runs(out_dir) -> List[Path]:
    """The pending results files (:data:`PENDING_FORMAT`) in ``out_dir``, sorted by name."""
    found = []
    for p in sorted(Path(out_dir).glob("*.json")):
        try:
            if json.loads(p.read_text()).get("format") == PENDING_FORMAT:
                found.append(p)
        except (json.JSONDecodeError, AttributeError):
            continue
    return found


def finish_pending(out_dir, work_dir, data_root, extractor, min_images: Optional[int] = None,
                   kid_subsets: int = 100) -> dict:
    """Measure the generation metrics of every pending run in ``out_dir`` on its kept samples and
    turn it into a finished results file (:data:`RUN_FORMAT`); the samples file is then deleted
    (the PNGs and their grid stay in ``<work_dir>/<run>/samples``). A run whose samples are missing
    or do not match their recorded sha256 stays pending and is listed under ``failed`` (the others
    go on); a samples file without a results file (a worker stopped between the two) is deleted,
    its run is trained again. Returns ``{"finished": [run ids], "failed": {run id: reason}}``."""
    import hashlib
    import torch
    from pcnn.model.config import ModelConfig
    from pcnn.sampling.sets import grid_path_for, sample_grid, save_png, write_images
    from studies.experiments import hardware, write_results
    out_dir = Path(out_dir)
    got = {"finished": [], "failed": {}}
    for orphan in sorted(out_dir.glob(f"*{SAMPLES_SUFFIX}")):
        if not (out_dir / (orphan.name[:-len(SAMPLES_SUFFIX)] + ".json")).is_file():
            log.warning("%s has no results file (its worker stopped before writing it): deleted", orphan.name)
            orphan.unlink()
    for p in pending_runs(out_dir):
        r = json.loads(p.read_text())
        rid = run_id(r["name"], r["seed"])
        g = r["generation"]
        src = out_dir / g["samples"]["file"]
        if not src.is_file():
            got["failed"][rid] = f"its samples {src} are missing"
        elif hashlib.sha256(src.read_bytes()).hexdigest() != g["samples"]["sha256"]:
            got["failed"][rid] = f"{src} does not match the sha256 recorded in {p.name}"
        if rid in got["failed"]:
            log.error("%s stays pending: %s", rid, got["failed"][rid])
            continue
        s = torch.load(src, map_location="cpu", weights_only=True)
        folder = Path(work_dir) / rid / "samples"
        write_images(s["images"], s["labels"], folder)
        save_png(sample_grid(s["images"], s["labels"], ModelConfig.from_dict(r["config"]["model"])),
                 grid_path_for(folder))
        gen = score_samples(folder, data_root, extractor, g["per_class"], g["sample_seed"], g["sampling_seconds"],
                            min_images, kid_subsets)
        gen["scored_later"] = {"hardware": hardware(), "samples_sha256": g["samples"]["sha256"]}
        r.update(format=RUN_FORMAT, generation=gen)
        r["seconds"]["generation"] = gen["seconds"]
        write_results(r, p)
        src.unlink()
        log.info("%s: generation measured here: FID-2048 %.1f, probe %s", rid, gen["fid_2048"],
                 (gen.get("probe") or {}).get("accuracy"))
        got["finished"].append(rid)
    return got


def _score_folder(folder, data_root, extractor, min_images, kid_subsets) -> tuple:
    """``evaluate_generation`` of one image folder against the test split: ``(result, its set's entry)``."""
    import warnings
    from pcnn.eval.generation import MIN_FID2048_IMAGES, evaluate_generation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # rank warnings of small sets are kept in the result
        res = evaluate_generation([folder], Path(data_root) / "test", data_dir=data_root,
                                  min_images=min_images or MIN_FID2048_IMAGES, extractor=extractor,
                                  device=extractor.device,
                                  kid_subsets=kid_subsets, seed=0, cache_dir=extractor.cache_dir)
    entry = dict(res["sets"][str(folder)])
    entry.pop("dir", None)
    return res, entry


def floor_scores(floor_dir, data_root, extractor, per_class: int, size: int, min_images: Optional[int] = None,
                 kid_subsets: int = 100) -> dict:
    """The real floor: ``per_class`` validation images per class at ``size``, every metric as for samples."""
    from pcnn.eval.generation import write_real_floor
    write_real_floor(floor_dir, {c: per_class for c in range(4)}, size, data_root, seed=0)
    res, entry = _score_folder(floor_dir, data_root, extractor, min_images, kid_subsets)
    return {"format": FLOOR_FORMAT, **entry, "per_class": per_class, "image_size": size, "floor_seed": 0,
            "weights": res["weights"], "ref_n": res["ref"]["n"],
            "probe_validation": (res.get("probe") or {}).get("validation")}


def run_one(design_name: str, base: dict, name: str, seed: int, workdir_root, out_dir, train_split, val_split,
            data_root, extractor, per_class: int, min_images: Optional[int] = None, kid_subsets: int = 100,
            device: str = "cpu"):
    """Train (or resume) one run, evaluate it and write its results file. Returns the results dict,
    or None when training stopped early (a signal, ``max_minutes``) or another process holds the run.
    ``device``: where the EMA weights are scored and sampled (training picks its own).
    ``extractor=None``: no Inception here; the samples are kept and a pending file is written
    (:func:`finish_pending` completes it)."""
    from studies.experiments import hardware, write_results
    from pcnn.train import TrainConfig, read_metrics, train
    from pcnn.train.workdir import WorkdirLock, WorkdirLocked
    rid = run_id(name, seed)
    wd = Path(workdir_root) / rid
    target = Path(out_dir) / f"{rid}.json"
    if target.exists():
        return json.loads(target.read_text())
    wd.mkdir(parents=True, exist_ok=True)
    try:
        job = WorkdirLock(wd / "job").acquire()   # the whole run: training, scoring, sampling
    except WorkdirLocked:
        log.info("%s: another process holds it, skipped", rid)
        return None
    if target.exists():           # another process finished it between the check above and the lock
        job.release()
        return json.loads(target.read_text())
    try:
        cfg = TrainConfig.from_dict(run_config(base, name, seed))
        t0 = time.perf_counter()
        train(cfg, wd, train_data=train_split, val_data=val_split, resume=(wd / "last.pt").exists(), progress=False)
        rows = read_metrics(wd)
        if not training_finished(rows, cfg.epochs):
            log.info("%s: training stopped before epoch %d, resumable from %s", rid, cfg.epochs, wd / "last.pt")
            return None
        t_train = time.perf_counter() - t0
        from pcnn.model.checkpoint import read_tensor_file
        state = read_tensor_file(wd / "last.pt")     # once: the EMA weights and the precision record
        model = ema_model(wd, state).to(device)
        amp = trained_amp(wd, state)
        del state
        t0 = time.perf_counter()
        val = validation_scores(model, val_split)
        t_val = time.perf_counter() - t0
        if extractor is None:
            t_sample = write_samples(model, wd / "samples", per_class, seed)
            gen = {"pending": True, "per_class": per_class, "sample_seed": seed, "sampling_seconds": t_sample,
                   "seconds": t_sample, "samples": keep_samples(wd / "samples", samples_path(out_dir, rid))}
        else:
            gen = generation_scores(model, wd / "samples", data_root, extractor, per_class, seed, min_images,
                                    kid_subsets)
        res = {"format": RUN_FORMAT if extractor is not None else PENDING_FORMAT, "design": design_name, "name": name, "seed": seed,
               "fusion": list(STRATEGIES[name]), "config": cfg.to_dict(), "metrics_log": rows,
               "ema": {k: v for k, v in val.items() if k not in ("log_px", "pred", "labels", "files")},
               "validation": {k: val[k] for k in ("log_px", "pred", "labels", "files")},
               "generation": gen, "hardware": hardware(), "amp": amp,
               "seconds": {"train_log": round(sum(r.get("seconds") or 0 for r in rows), 1),
                           "train_this_call": round(t_train, 1), "validation": round(t_val, 1),
                           "generation": gen["seconds"]}}
        write_results(res, target)
        log.info("%s: EMA accuracy %s, bits/dim %.4f, FID-2048 %s, probe %s -> %s", rid, val["accuracy"],
                 val["bpd"], "pending" if gen.get("pending") else f"{gen['fid_2048']:.1f}",
                 (gen.get("probe") or {}).get("accuracy"), target)
        return res
    finally:
        job.release()


# ----------------------------------------------------------------------------- a bounded GPU call's return


def pack_for_return(out_dir, to, extra: Sequence = (), part_bytes: int = RETURN_PART_BYTES,
                    max_files: int = MAX_RETURN_FILES) -> dict:
    """Pack the results files of ``out_dir`` (finished and pending, ``*.json``) with the pending runs'
    samples (``*.samples.pt``) as ``results/...`` and each path of ``extra`` (logs, device facts) as
    ``logs/...`` into one gzip tar, and write it into ``to`` whole or as ``<archive>.partNN`` pieces
    of at most ``part_bytes``, with :data:`RETURN_MANIFEST` (the pieces, the archive's bytes and
    sha256, the members). Nothing is written to ``to`` when the pieces and the manifest would be
    more than ``max_files`` files: a ``ValueError`` says so. Returns the manifest."""
    import hashlib
    import io
    import math
    import tarfile
    out_dir, to = Path(out_dir), Path(to)
    members = [(f, f"results/{f.name}") for f in sorted(out_dir.glob("*.json")) + sorted(out_dir.glob(f"*{SAMPLES_SUFFIX}"))]
    members += [(Path(f), f"logs/{Path(f).name}") for f in extra if Path(f).is_file()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f, arc in members:
            tar.add(str(f), arcname=arc)
    data = buf.getvalue()
    n_parts = max(1, math.ceil(len(data) / part_bytes))
    if n_parts + 1 > max_files:
        raise ValueError(f"the archive is {len(data) / 2 ** 20:.1f} MiB: {n_parts} pieces of "
                         f"{part_bytes / 2 ** 20:.0f} MiB and a manifest are more than the {max_files} files a call returns")
    to.mkdir(parents=True, exist_ok=True)
    names = [RETURN_ARCHIVE] if n_parts == 1 else [f"{RETURN_ARCHIVE}.part{i:02d}" for i in range(n_parts)]
    for i, name in enumerate(names):
        (to / name).write_bytes(data[i * part_bytes:(i + 1) * part_bytes])
    manifest = {"archive": RETURN_ARCHIVE, "pieces": names, "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), "members": [arc for _, arc in members]}
    (to / RETURN_MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def unpack_returned(folder, out_dir, logs_dir) -> dict:
    """Rebuild the archive of :func:`pack_for_return` from ``folder`` (checked against the manifest's
    sha256) and put its ``results/`` files into ``out_dir`` and its ``logs/`` into ``logs_dir``. A
    finished results file already in ``out_dir`` is kept (the returned copy is skipped); members
    with any other path are refused. Returns ``{"results": [...], "skipped": [...], "logs": [...]}``."""
    import hashlib
    import io
    import tarfile
    folder = Path(folder)
    mf = folder / RETURN_MANIFEST
    if not mf.is_file():
        raise FileNotFoundError(f"no {RETURN_MANIFEST} in {folder}: not what a fusion call returns")
    manifest = json.loads(mf.read_text())
    allowed = {RETURN_ARCHIVE} | {f"{RETURN_ARCHIVE}.part{i:02d}" for i in range(MAX_RETURN_FILES)}
    if not manifest.get("pieces") or any(n not in allowed for n in manifest["pieces"]):
        raise ValueError(f"{mf} names pieces that are not {RETURN_ARCHIVE} or its parts: {manifest.get('pieces')}")
    missing = [n for n in manifest["pieces"] if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)} of the returned archive")
    data = b"".join((folder / n).read_bytes() for n in manifest["pieces"])
    if len(data) != manifest["bytes"] or hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise ValueError(f"the archive rebuilt from {folder} does not match its manifest's sha256")
    out_dir, logs_dir = Path(out_dir), Path(logs_dir)
    got = {"results": [], "skipped": [], "logs": []}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar.getmembers():
            top, _, name = m.name.partition("/")
            if not m.isfile() or top not in ("results", "logs") or not name or "/" in name or name.startswith("."):
                raise ValueError(f"unexpected member {m.name!r} in the returned archive")
            body = tar.extractfile(m).read()
            if top == "logs":
                logs_dir.mkdir(parents=True, exist_ok=True)
                (logs_dir / name).write_bytes(body)
                got["logs"].append(name)
                continue
            dest = out_dir / name
            run_file = out_dir / (name[:-len(SAMPLES_SUFFIX)] + ".json" if name.endswith(SAMPLES_SUFFIX) else name)
            if run_file.suffix == ".json" and run_file.is_file() and \
                    json.loads(run_file.read_text()).get("format") == RUN_FORMAT:
                got["skipped"].append(name)   # finished here already (with its samples scored)
                continue
            out_dir.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(body)
            got["results"].append(name)
    return got


# ----------------------------------------------------------------------------- statistics


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: ``b`` images only the first
    model gets right, ``c`` only the second. Under no difference b ~ Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def holm(pvalues: Sequence[float]) -> List[float]:
    """Holm-Bonferroni adjusted p-values (step-down, made monotone, capped at 1), in the given order."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adj[i] = min(1.0, running)
    return adj.tolist()


def paired_bootstrap(a: np.ndarray, b: np.ndarray, draws: int = BOOTSTRAP_DRAWS, seed: int = 0,
                     level: float = 0.95, matched_seeds: bool = False) -> dict:
    """Bootstrap of mean(a) - mean(b) over images and seeds.

    ``a`` (Sa, N) and ``b`` (Sb, N): a per-image value (1/0 correct, or bits/dim) of each seed's run
    of two strategies on the same N images. Each draw resamples the N images with replacement
    (the same images for both, so the comparison is paired) and, for each strategy on its own,
    its seeds with replacement; with ``matched_seeds`` row s of both is the same seed and the
    seeds are drawn once for both (paired by seed too: a seed's shared effect, its initialisation
    and data order, cancels). Returns the observed difference, the percentile interval at
    ``level``, and the two-sided bootstrap p-value ``2 min(P(d <= 0), P(d >= 0))`` (capped at 1).
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two strategies were scored on different images: {a.shape[1]} vs {b.shape[1]}")
    if matched_seeds and a.shape[0] != b.shape[0]:
        raise ValueError(f"matched seeds need the same seeds for both: {a.shape[0]} vs {b.shape[0]} runs")
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    diffs = np.empty(draws)
    chunk = 500
    for lo in range(0, draws, chunk):
        k = min(chunk, draws - lo)
        img = rng.integers(0, n, size=(k, n))
        sa = rng.integers(0, a.shape[0], size=(k, a.shape[0]))
        sb = sa if matched_seeds else rng.integers(0, b.shape[0], size=(k, b.shape[0]))
        ma = a[:, img].mean(axis=2)      # (Sa, k): each seed's mean on the drawn images
        mb = b[:, img].mean(axis=2)
        da = np.take_along_axis(ma.T, sa, axis=1).mean(axis=1)
        db = np.take_along_axis(mb.T, sb, axis=1).mean(axis=1)
        diffs[lo:lo + k] = da - db
    tail = (1 - level) / 2
    p = min(1.0, 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    return {"diff": float(a.mean() - b.mean()), "lo": float(np.quantile(diffs, tail)),
            "hi": float(np.quantile(diffs, 1 - tail)), "p": p, "draws": draws, "level": level}


# ----------------------------------------------------------------------------- report


def load_runs(folder) -> List[dict]:
    """Every results file of :data:`RUN_FORMAT` in ``folder`` (others skipped), in plan order."""
    from studies.experiments import load_results
    out = load_results(folder, RUN_FORMAT)
    order = {n: i for i, n in enumerate(STRATEGIES)}
    return sorted(out, key=lambda r: (order.get(r["name"], len(order)), r["seed"]))


def load_floor(folder) -> Optional[dict]:
    p = Path(folder) / "real_floor.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _mean_sd(values: Sequence[Optional[float]]) -> dict:
    v = [float(x) for x in values if x is not None]
    if not v:
        return {"mean": None, "sd": None, "values": [], "n": 0}
    return {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None, "values": v,
            "n": len(v)}


def run_precision(run: dict) -> str:
    """What a run's network trained in: its recorded choice (``amp``; 'bf16>fp32' for a run that
    changed precision on resume), else, for results written before it was recorded, what its
    ``amp`` setting meant then (bf16 ran bf16 on every CPU, off ran fp32; auto depended on the
    machine: '?')."""
    if run.get("amp"):
        seq = [seg["precision"] for seg in run["amp"].get("segments") or []]
        changes = [p for i, p in enumerate(seq) if i == 0 or p != seq[i - 1]]
        return ">".join(changes) if len(changes) > 1 else run["amp"]["precision"]
    return {"bf16": "bf16", "off": "fp32"}.get(run["config"].get("amp"), "?")


#: The project's bf16-against-fp32 convergence benchmark (benchmarks/bench_bf16_parity.py).
PARITY = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "bf16_parity_cpu.json"


def parity_evidence(path=PARITY, size: str = "1/40/5") -> Optional[dict]:
    """What the bf16 parity benchmark measured at ``size`` (same seed, data and schedule in both
    precisions): its CPU, epochs, EMA validation bits/dim and accuracy in each; None without it."""
    try:
        d = json.loads(Path(path).read_text())
        fp32, bf16 = (d["results"][size][p][-1] for p in ("fp32", "bf16"))
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return {"size": size, "cpu": d.get("cpu"), "epochs": fp32["epoch"], "bpd_fp32": fp32["val_bpd"],
            "bpd_bf16": bf16["val_bpd"], "acc_fp32": fp32["val_acc"], "acc_bf16": bf16["val_acc"]}


def summarize(runs: Sequence[dict]) -> Dict[str, dict]:
    """Per strategy: its seeds and mean / sample sd over them of EMA accuracy, macro F1, bits/dim,
    FID-2048, course FID-192, KID and the probe's accuracy on the samples."""
    out = {}
    for name in STRATEGIES:
        rs = [r for r in runs if r["name"] == name]
        if not rs:
            continue
        g = [r["generation"] for r in rs]
        out[name] = {"seeds": [r["seed"] for r in rs], "fusion": "+".join(STRATEGIES[name]) or "none",
                     "precision": [run_precision(r) for r in rs],
                     "accuracy": _mean_sd([r["ema"]["accuracy"] for r in rs]),
                     "macro_f1": _mean_sd([r["ema"]["macro_f1"] for r in rs]),
                     "bpd": _mean_sd([r["ema"]["bpd"] for r in rs]),
                     "fid_2048": _mean_sd([x["fid_2048"] for x in g]),
                     "fid_192": _mean_sd([x["fid_192"] for x in g]),
                     "kid": _mean_sd([x["kid_mean"] for x in g]),
                     "probe": _mean_sd([(x.get("probe") or {}).get("accuracy") for x in g]),
                     "train_hours": _mean_sd([r["seconds"]["train_log"] / 3600 for r in rs])}
    return out


def choose_best(summary: Dict[str, dict]) -> Optional[str]:
    """The rule: the conditional strategy with the highest mean EMA accuracy (ties: lower mean bits/dim)."""
    cands = [(-s["accuracy"]["mean"], s["bpd"]["mean"], n) for n, s in summary.items()
             if is_conditional(n) and s["accuracy"]["mean"] is not None]
    return min(cands)[2] if cands else None


def per_image(run: dict, what: str) -> np.ndarray:
    """(N,) per validation image: ``correct`` (1/0 for the EMA prediction) or ``bpd`` (under the true label)."""
    v = run["validation"]
    labels = np.asarray(v["labels"])
    ll = np.asarray(v["log_px"], float)
    if what == "correct":
        return (np.asarray(v["pred"]) == labels).astype(float)
    if what == "bpd":
        dims = 3 * run["config"]["model"]["image_size"] ** 2
        true = ll[:, 0] if ll.shape[1] == 1 else ll[np.arange(len(labels)), labels]
        return -true / (dims * math.log(2))
    raise ValueError(f"what must be 'correct' or 'bpd', got {what!r}")


def compare(runs: Sequence[dict], best: str, what: str = "correct", draws: int = BOOTSTRAP_DRAWS) -> List[dict]:
    """The best strategy against every other (conditional ones only for accuracy) on the same images.

    Per other strategy: the bootstrap (:func:`paired_bootstrap`) of best - other over the seeds
    both ran, matched by seed, Holm-adjusted over the comparisons; for accuracy also the exact
    McNemar test per seed both strategies ran. Matched seeds (an amendment to the rules, see
    results/fusion/README.md): every strategy of a seed starts from the same trunk initialisation
    and sees the same data order, and the first seed-1 runs moved bits/dim by 0.12 together,
    several times the differences between strategies; a seed only one of the two ran would
    compare the seeds, not the strategies.
    """
    by = {}
    for r in runs:
        by.setdefault(r["name"], {})[r["seed"]] = r
    mine = by[best]
    rows = []
    for i, name in enumerate(n for n in STRATEGIES if n in by and n != best):
        if what == "correct" and not is_conditional(name):
            continue
        other = by[name]
        files = {tuple(x["validation"]["files"] or []) for x in list(mine.values()) + list(other.values())}
        if len(files) != 1:
            raise ValueError(f"{best} and {name} were scored on different validation images")
        common = sorted(set(mine) & set(other))
        if not common:
            continue
        a = np.stack([per_image(mine[s], what) for s in common])
        b = np.stack([per_image(other[s], what) for s in common])
        row = {"other": name, "seeds_best": sorted(mine), "seeds_other": sorted(other), "seeds": common,
               **paired_bootstrap(a, b, draws=draws, seed=i, matched_seeds=True)}
        if what == "correct":
            row["mcnemar"] = []
            for s in sorted(set(mine) & set(other)):
                ca, cb = per_image(mine[s], "correct"), per_image(other[s], "correct")
                bb, cc = int(((ca == 1) & (cb == 0)).sum()), int(((ca == 0) & (cb == 1)).sum())
                row["mcnemar"].append({"seed": s, "best_only": bb, "other_only": cc, "p": mcnemar_exact(bb, cc)})
        rows.append(row)
    for row, adj in zip(rows, holm([r["p"] for r in rows])):
        row["p_holm"] = adj
        # bits/dim: lower is better, so the best being better means a negative difference
        better = row["hi"] < 0 if what == "bpd" else row["lo"] > 0
        worse = row["lo"] > 0 if what == "bpd" else row["hi"] < 0
        row["verdict"] = ("best better" if better else "best worse" if worse else "not separated") \
            if adj < ALPHA else "not separated"
    return rows


def _pm(s: dict, fmt: str, scale: float = 1.0) -> str:
    if s["mean"] is None:
        return "-"
    m = fmt.format(s["mean"] * scale)
    return m + (" ± " + fmt.format(s["sd"] * scale) if s["sd"] is not None else "") + f" ({s['n']})"


def history_rows(v1_folder) -> Dict[str, dict]:
    """The 2-epoch, one-seed v1 results (``results/fusion/*.json``) by strategy: EMA accuracy and bits/dim, FID-2048."""
    from studies.experiments import load_results
    out = {}
    for r in load_results(v1_folder) if Path(v1_folder).is_dir() else []:
        f = r["final"]
        out[r["name"]] = {"accuracy_ema": f.get("accuracy_ema"), "val_bpd_ema": f.get("val_bpd_ema"),
                          "fid_2048": f.get("fid_2048"), "fid_n_gen": f.get("fid_n_gen")}
    return out


def markdown_summary(summary: Dict[str, dict], floor: Optional[dict], history: Dict[str, dict],
                     best: Optional[str]) -> str:
    head = ("| strategy | fusion | seeds | trained in | EMA accuracy % | macro F1 % | bits/dim | FID-2048 | FID-192 (course) | "
            "KID x1000 | probe on samples % | v1 (2 ep, 1 seed) EMA acc % / bpd |")
    lines = [head, "|" + "---|" * 12]
    for name, s in summary.items():
        h = history.get(name) or {}
        hist = "-" if not h else (f"{h['accuracy_ema'] * 100:.1f}" if h.get("accuracy_ema") is not None else "-") \
            + (f" / {h['val_bpd_ema']:.3f}" if h.get("val_bpd_ema") is not None else "")
        mark = " **(best)**" if name == best else ""
        lines.append(f"| {name}{mark} | {s['fusion']} | {','.join(map(str, s['seeds']))} | "
                     f"{','.join(s.get('precision') or ['?'])} | "
                     f"{_pm(s['accuracy'], '{:.1f}', 100)} | {_pm(s['macro_f1'], '{:.1f}', 100)} | "
                     f"{_pm(s['bpd'], '{:.3f}')} | {_pm(s['fid_2048'], '{:.1f}')} | {_pm(s['fid_192'], '{:.2f}')} | "
                     f"{_pm(s['kid'], '{:.1f}', 1000)} | {_pm(s['probe'], '{:.1f}', 100)} | {hist} |")
    if floor:
        p = (floor.get("probe") or {}).get("accuracy")
        lines.append(f"| real floor | {floor['n']} validation images | - | - | - | - | - | {floor['fid_2048']:.1f} | "
                     f"{floor['fid_192']:.2f} | {floor['kid_mean'] * 1000:.1f} | "
                     f"{'-' if p is None else f'{p * 100:.1f}'} | - |")
    return "\n".join(lines)


def markdown_comparisons(rows: Sequence[dict], best: str, what: str) -> str:
    unit, scale, fmt = ("points", 100, "{:+.1f}") if what == "correct" else ("bits/dim", 1, "{:+.4f}")
    head = f"| {best} vs | seeds | difference ({unit}) | 95% interval | bootstrap p | Holm p | verdict |"
    if what == "correct":
        head += " McNemar per seed (best only / other only, p) |"
    lines = [head, "|" + "---|" * (8 if what == "correct" else 7)]
    for r in rows:
        seeds = ",".join(map(str, r.get("seeds") or sorted(set(r["seeds_best"]) & set(r["seeds_other"]))))
        cells = (f"| {r['other']} | {seeds} | {fmt.format(r['diff'] * scale)} | [{fmt.format(r['lo'] * scale)}, "
                 f"{fmt.format(r['hi'] * scale)}] | {r['p']:.4f} | {r['p_holm']:.4f} | {r['verdict']} |")
        if what == "correct":
            cells += " " + "; ".join(f"s{m['seed']}: {m['best_only']}/{m['other_only']}, {m['p']:.3f}"
                                     for m in r["mcnemar"]) + " |"
        lines.append(cells)
    return "\n".join(lines)


def seed_spread(summary: Dict[str, dict]) -> List[str]:
    """One sentence when some strategies have several seeds and others one: how far apart two
    seeds of one strategy ended (the largest range of EMA accuracy and of bits/dim), which the
    intervals of a one-seed strategy cannot contain. Empty otherwise."""
    multi = {n: sm for n, sm in summary.items() if sm["bpd"]["n"] >= 2}
    single = [n for n, sm in summary.items() if sm["bpd"]["n"] == 1]
    if not multi or not single:
        return []
    def widest(key):
        ranges = {n: max(sm[key]["values"]) - min(sm[key]["values"]) for n, sm in multi.items()
                  if sm[key]["n"] >= 2}
        return max(ranges.items(), key=lambda kv: kv[1]) if ranges else (None, None)
    acc_name, acc_range = widest("accuracy")
    bpd_name, bpd_range = widest("bpd")
    acc = f"EMA accuracy by up to {acc_range * 100:.1f} points ({acc_name}) and " if acc_name else ""
    return [f"Seeds matter at this budget: two seeds of one strategy ended {acc}bits/dim by up to "
            f"{bpd_range:.3f} ({bpd_name}). The intervals of a strategy with one seed so far "
            f"({', '.join(single)}) cover only which validation images were drawn, not this, so its "
            "differences from the others are less certain than they look until its second seed is in."]


def shared_seed_effect(summary: Dict[str, dict]) -> List[str]:
    """One sentence per later seed that at least two strategies ran beside the first seed: how it
    moved their bits/dim against the first seed (range, and which went the other way). All
    strategies of one seed see the same data order and dropout stream and start from the same
    trunk weights, except those whose first layer is wider (input_concat, in combo too), so a
    shared shift is the seed's, not the fusion's; the matched paired tests cancel it."""
    seeds = sorted({s for sm in summary.values() for s in sm["seeds"]})
    wider = [n for n, modes in STRATEGIES.items() if "input_concat" in modes]
    clauses = []
    for s in seeds[1:]:
        d = {}
        for n, sm in summary.items():
            by_seed = dict(zip(sm["seeds"], sm["bpd"]["values"]))
            if seeds[0] in by_seed and s in by_seed:
                d[n] = by_seed[s] - by_seed[seeds[0]]
        if len(d) < 2:
            continue
        up = [n for n, v in d.items() if v > 0]
        down = [n for n, v in d.items() if v <= 0]
        minority, word = (down, "down") if len(up) >= len(down) else (up, "up")
        odd = f"; {word}: {', '.join(minority)}" if minority else ""
        clauses.append(f"Seed {s} against seed {seeds[0]} moved bits/dim by {min(d.values()):+.3f} to "
                       f"{max(d.values()):+.3f} across the {len(d)} strategies that ran both ({len(up)} up, "
                       f"{len(down)} down{odd}).")
    if not clauses:
        return []
    # The explanation is said once, after every seed's clause (one bullet, not one per seed).
    return [" ".join(clauses) + " One seed gives every strategy the same data order and the same initial trunk "
            f"(except {', '.join(wider)}, whose first layer is wider), so much of a seed's effect is shared; the "
            "paired tests compare strategies within a seed, where a shared shift cancels."]


def label_bpd_bound(num_classes: int, image_size: int, channels: int = 3) -> float:
    """How much knowing the label can lower bits/dim at most: log2(K) / (channels * H * W).
    For any conditional model p(x | c), the label-averaged mixture (1/K) sum_c' p(x | c') is an
    unconditional model with log p_mix(x) >= log p(x | c) - log K for every image, so a conditional
    model beats the best unconditional one by at most that (the mutual information of image and
    label is at most log2 K bits). A larger gap between trained models is their training's."""
    return math.log2(num_classes) / (channels * image_size * image_size)


def _entry(summary: Dict[str, dict], name: str) -> str:
    """'name (its fusion modes)', the modes only where they differ from the name."""
    fusion = summary[name]["fusion"] if name in summary else name
    return name if fusion == name else f"{name} ({fusion})"


def separated(rows: Sequence[dict]) -> bool:
    """Whether any paired row tells the best from the other strategy (either direction)."""
    return any(r["verdict"] in ("best better", "best worse") for r in rows)


def plain_answer(summary: Dict[str, dict], best: str, acc_rows: Sequence[dict], bpd_rows: Sequence[dict],
                 final: bool, bound: Optional[float] = None) -> str:
    """The student's question (where should the class enter?) answered in one sentence from the
    paired verdicts: the strategies not separated from the best are the recommendation, the
    separated ones are named with the size of their accuracy gap to the best; and whether a bits/dim
    difference from the best was detected (``bound``: :func:`label_bpd_bound`, said when given)."""
    tied = [r["other"] for r in acc_rows if r["verdict"] != "best better"]
    worse = [r for r in acc_rows if r["verdict"] == "best better"]
    top = [best] + tied
    verb = "do" if len(top) > 1 else "does"
    text = (("In plain words" if final else "Provisionally") + ": to classify by likelihood, let the class enter as "
            + " or ".join(_entry(summary, n) for n in top) + f" {verb}")
    if worse:
        gaps = [r["diff"] * 100 for r in worse]
        text += (f"; {', '.join(r['other'] for r in worse)} classify {min(gaps):.1f} to {max(gaps):.1f} points worse "
                 f"than {best} on the same validation images" if len(worse) > 1 else
                 f"; {worse[0]['other']} classifies {gaps[0]:.1f} points worse than {best} on the same validation images")
    text += "."
    if bpd_rows and not separated(bpd_rows):
        text += f" No bits/dim difference from {best} was detected, the unconditional model's included"
        text += ((f"; and the label itself can lower bits/dim by at most {bound:.5f} (see below), so judge the fusion by "
                  "classification: bits/dim cannot show what the class adds.") if bound is not None else ".")
    return text


def conclusion(summary: Dict[str, dict], best: Optional[str], acc_rows: Sequence[dict], bpd_rows: Sequence[dict],
               status: dict, floor: Optional[dict], parity: Optional[dict] = None,
               bound: Optional[float] = None) -> List[str]:
    """The report in plain words, including what it cannot conclude. ``parity``: the bf16 parity
    benchmark's figures (:func:`parity_evidence`), quoted when the runs' precisions differ;
    ``bound``: :func:`label_bpd_bound` of the design, to read the bits/dim gaps against."""
    done, total = status["done"], status["total"]
    out = []
    if not summary:
        return [f"No run has finished yet (0 of {total}): nothing can be concluded."]
    final = done >= total
    out.append(f"{done} of {total} planned runs are finished"
               + ("." if final else f"; every statement below is provisional (missing: "
                  f"{', '.join(status['missing'] + status.get('pending', [])) or 'the extra seeds, chosen once seeds 0-1 finish'})."))
    if best is None:
        return out + ["No conditional strategy has finished, so none can be called best."]
    b = summary[best]
    sd = f" ± {b['accuracy']['sd'] * 100:.1f}" if b["accuracy"]["sd"] is not None else ""
    out.append(f"Best by the rule (highest mean EMA validation accuracy): {best} ({b['fusion']}), "
               f"{b['accuracy']['mean'] * 100:.1f}{sd} % over seed(s) {', '.join(map(str, b['seeds']))}.")
    better = [r["other"] for r in acc_rows if r["verdict"] == "best better"]
    tied = [r["other"] for r in acc_rows if r["verdict"] != "best better"]
    if better:
        out.append(f"It classifies better than {', '.join(better)} (paired bootstrap over images and matched seeds, "
                   f"Holm-adjusted p < {ALPHA}).")
    if tied:
        rows = {r["other"]: r for r in acc_rows}
        said = ", ".join(f"{n} ({rows[n]['diff'] * 100:+.1f} points, 95% interval {rows[n]['lo'] * 100:+.1f} to "
                         f"{rows[n]['hi'] * 100:+.1f})" for n in tied)
        out.append(f"It is not separated from {said} at this budget: the differences are within what the "
                   "validation images and the seeds let vary, so this evidence cannot choose between them.")
    if bpd_rows:
        lower = [r["other"] for r in bpd_rows if r["verdict"] == "best better"]
        higher = [r["other"] for r in bpd_rows if r["verdict"] == "best worse"]
        rest = [r["other"] for r in bpd_rows if not separated([r])]
        by_bpd = min(summary, key=lambda n: summary[n]["bpd"]["mean"])
        if separated(bpd_rows):
            sides = ([f"lower bits/dim than {', '.join(lower)}"] if lower else []) + \
                    ([f"higher bits/dim than {', '.join(higher)}"] if higher else [])
            said = f"{best} has {' and '.join(sides)} (same paired test, Holm-adjusted)" + \
                   (f"; it is not separated from {', '.join(rest)}." if rest else ".")
        else:
            said = f"{best}'s bits/dim is not separated from any other strategy's (same paired test, Holm-adjusted)."
        out.append(f"Likelihood: the lowest mean bits/dim is {by_bpd}'s ({summary[by_bpd]['bpd']['mean']:.3f}); "
                   + said)
        if "none" in summary:
            u = summary["none"]["bpd"]["mean"]
            below = [f"{n} ({summary[n]['bpd']['mean']:.4f})" for n in summary
                     if is_conditional(n) and summary[n]["bpd"]["mean"] < u]
            gaps = [abs(summary[n]["bpd"]["mean"] - u) for n in summary if is_conditional(n)]
            line = (f"The unconditional model ('none') reaches {u:.4f} bits/dim; conditional strategies with a "
                    f"lower mean: {', '.join(below) or 'none of them'}.")
            if bound is not None:
                line += (f" Knowing the label can lower bits/dim by at most {bound:.5f} (log2 of the number of classes "
                         "over the dimensions: averaging a conditional model over the labels gives an unconditional "
                         "one within that), so the gaps to the unconditional model"
                         + (f" (up to {max(gaps):.3f})" if gaps else "")
                         + " come from how each network trains, not from what the class tells about the image.")
            out.append(line)
    out += seed_spread(summary)
    out += shared_seed_effect(summary)
    if floor:
        fids = {n: s["fid_2048"]["mean"] for n, s in summary.items()}
        lo, hi = min(fids, key=fids.get), max(fids, key=fids.get)
        out.append(f"Generation: FID-2048 (500 samples) ranges {fids[lo]:.1f} ({lo}) to "
                   f"{fids[hi]:.1f} ({hi}); real validation images score {floor['fid_2048']:.1f} under the same "
                   "protocol (the floor), so every model is far from real images; the probe's accuracy on the "
                   "samples says how recognisable each class is (real images: "
                   f"{(floor.get('probe') or {}).get('accuracy', 0) * 100:.1f} %).")
        f192 = {n: s["fid_192"]["mean"] for n, s in summary.items() if s["fid_192"]["mean"] is not None}
        under = [n for n, v in f192.items() if v < floor.get("fid_192", -math.inf)]
        if under:
            out.append(f"The course's FID-192 is no floor here: real validation images score {floor['fid_192']:.2f}, "
                       f"worse than {', '.join(under)} ({min(f192[n] for n in under):.2f} to "
                       f"{max(f192[n] for n in under):.2f}); at 192 features it ranks real images behind these "
                       "samples (docs/generation.md), so read generation from FID-2048, KID and the probe.")
    prec = {(n, seed): q for n, sm in summary.items() for seed, q in zip(sm["seeds"], sm.get("precision") or [])}
    precisions = set(prec.values())
    if len(precisions) > 1:
        by = {p: [run_id(n, seed) for (n, seed), q in prec.items() if q == p] for p in sorted(precisions)}
        out.append("The runs did not all train in one precision (amp=bf16 runs fp32 on a CPU without bf16 "
                   "instructions, and the CPU changes between sessions): "
                   + "; ".join(f"{p}: {', '.join(v)}" for p, v in by.items())
                   + ". bf16 autocast changes the arithmetic of the network (not of the likelihood), so a "
                   "difference between strategies trained in different precisions carries that too"
                   + ("." if not parity else
                      f"; the project's bf16 parity benchmark (same seed, data and schedule, {parity['size']}, "
                      f"{parity['epochs']} epochs, {parity['cpu']}) ended the two precisions "
                      f"{abs(parity['bpd_bf16'] - parity['bpd_fp32']):.4f} bits/dim and "
                      f"{abs(parity['acc_bf16'] - parity['acc_fp32']) * 100:.1f} accuracy points apart (EMA)."))
        mixed = [f"{r['other']} s{m['seed']}" for r in acc_rows for m in r.get("mcnemar") or []
                 if prec.get((best, m["seed"])) != prec.get((r["other"], m["seed"]))]
        if mixed:
            out.append(f"In the paired accuracy tests against {best}, these seed pairs trained in different "
                       f"precisions: {', '.join(mixed)}; the per-seed McNemar column shows whether the other "
                       "seeds agree.")
    out.insert(1, plain_answer(summary, best, acc_rows, bpd_rows, final, bound))
    out.append("What it cannot conclude: the ranking after longer training or at other sizes than 1/40/5 at 32x32 "
               "(10 epochs on a CPU; the GPU design runs 30 epochs); differences smaller than the intervals above; "
               "anything about the test split (all accuracies are on the 519 validation images, which the rule also "
               "used to pick the best, so the best's own figure is slightly optimistic); FID differences smaller "
               "than the spread over seeds (500 samples per model).")
    return out


def plot_curves(runs: Sequence[dict]):
    """EMA validation accuracy and bits/dim per epoch of every run (one colour per strategy, one line
    style per seed), and the bits/dim of the second half of the epochs zoomed (the strategies differ
    by hundredths of a bit there, invisible beside the first epochs' drop)."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    colours = plt.get_cmap("tab10")
    names = [n for n in STRATEGIES if any(r["name"] == n for r in runs)]
    last = 1
    zoom_vals = []
    for k, name in enumerate(names):
        for j, r in enumerate(x for x in runs if x["name"] == name):
            rows = [row for row in r["metrics_log"] if row.get("val_bpd") is not None and not row.get("partial")]
            ep = [row["epoch"] for row in rows]
            last = max([last] + ep)
            style = dict(color=colours(k % 10), lw=1.4, alpha=0.9, ls=("-", "--", ":")[j % 3],
                         label=name if j == 0 else None)
            if is_conditional(name):
                axes[0].plot(ep, [row["val_acc"] * 100 for row in rows], **style)
            axes[1].plot(ep, [row["val_bpd"] for row in rows], **style)
            axes[2].plot(ep, [row["val_bpd"] for row in rows], **style)
            zoom_vals += [row["val_bpd"] for row in rows if ep and row["epoch"] > max(ep) / 2]
    # black dash-dot: grey dotted is combo's seed 2 (tab10's eighth colour, third line style)
    axes[0].axhline(25, color="k", ls="-.", lw=1)
    axes[0].set(xlabel="epoch", ylabel="EMA validation accuracy (%)", title="accuracy (black dash-dot: chance)")
    axes[1].set(xlabel="epoch", ylabel="EMA validation bits/dim", title="bits/dim (lower is better)")
    axes[2].set(xlabel="epoch", ylabel="EMA validation bits/dim", title="bits/dim, second half (zoomed)")
    if zoom_vals:
        lo, hi = min(zoom_vals), max(zoom_vals)
        pad = max(hi - lo, 1e-3) * 0.08
        axes[2].set_ylim(lo - pad, hi + pad)
        axes[2].set_xlim(last / 2, last + 0.2)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, ncol=2, title="strategy (seed 0 solid, 1 dashed, 2 dotted)", title_fontsize=8)
    fig.tight_layout()
    return fig


#: The summary figure's marker of seed k (the paired tests match runs by seed).
SEED_MARKERS = ("o", "s", "^", "D", "v")


def plot_summary(summary: Dict[str, dict], floor: Optional[dict], best: Optional[str]):
    """One panel per metric: every seed as a dot, the mean as a bar tick; the real floor as a line."""
    import matplotlib.pyplot as plt
    panels = [("accuracy", "EMA accuracy (%)", 100), ("bpd", "bits/dim", 1), ("fid_2048", "FID-2048 (500 samples)", 1),
              ("probe", "probe on samples (%)", 100)]
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 0.45 * max(4, len(summary)) + 1.2), sharey=True)
    names = list(summary)
    for ax, (key, label, scale) in zip(axes, panels):
        for y, name in enumerate(names):
            s = summary[name][key]
            if not s["values"]:
                continue
            colour = "C3" if name == best else "C0"
            precisions = summary[name].get("precision") or ["?"] * len(s["values"])
            for v, seed, prec in zip(s["values"], summary[name]["seeds"], precisions):
                # one marker per seed (the paired tests match seeds), hollow where the run trained in fp32
                ax.plot([v * scale], [y], SEED_MARKERS[seed % len(SEED_MARKERS)], ms=6, alpha=0.8, color=colour,
                        mfc="none" if prec == "fp32" else colour)
            ax.plot([s["mean"] * scale], [y], "|", ms=16, mew=2.5, color="k")
        if key == "accuracy":
            ax.axvline(25, color="k", ls="-.", lw=1)
        if floor and key in ("fid_2048", "probe"):
            v = floor["fid_2048"] if key == "fid_2048" else (floor.get("probe") or {}).get("accuracy")
            if v is not None:
                ax.axvline(v * scale, color="green", ls="--", lw=1.2, label="real images")
                ax.legend(fontsize=8, loc="best")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(range(len(names)), [n + (" (best)" if n == best else "") for n in names])
    axes[0].invert_yaxis()
    from matplotlib.lines import Line2D
    seeds = sorted({seed for sm in summary.values() for seed in sm["seeds"]})
    handles = [Line2D([], [], ls="", marker=SEED_MARKERS[k % len(SEED_MARKERS)], color="grey", label=f"seed {k}")
               for k in seeds]
    if any("fp32" in (sm.get("precision") or []) for sm in summary.values()):
        handles.append(Line2D([], [], ls="", marker="o", color="grey", mfc="none", label="trained in fp32 (hollow)"))
    handles.append(Line2D([], [], color="k", ls="-.", lw=1, label="chance (accuracy)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("every run a marker, the mean a black tick", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def design_bound(runs: Sequence[dict]) -> Optional[float]:
    """:func:`label_bpd_bound` of the runs' model (classes, image size), None without runs or if
    the runs disagree on it (then no one bound applies)."""
    shapes = {(r["config"]["model"].get("num_classes"), r["config"]["model"].get("image_size")) for r in runs}
    if len(shapes) != 1:
        return None
    k, size = shapes.pop()
    return label_bpd_bound(k, size) if k and size else None


def build_report(out_dir, design: dict, v1_folder=None, draws: int = BOOTSTRAP_DRAWS, parity=PARITY) -> dict:
    """The report over the finished runs in ``out_dir``: a JSON-ready dict with the status, the
    summary, the best, both comparisons, the Markdown tables and the conclusion. ``parity``: the
    bf16 parity benchmark's results file (:func:`parity_evidence`), or None."""
    runs = load_runs(out_dir)
    plan = planned_runs(design, runs)
    have = {(r["name"], r["seed"]) for r in runs}
    pending = {p.stem for p in pending_runs(out_dir)}
    missing = [run_id(n, s) for n, s in plan["runs"] if (n, s) not in have and run_id(n, s) not in pending]
    status = {"done": len(have & set(plan["runs"])), "total": plan["total"], "missing": missing,
              "pending": sorted(pending), "undecided": plan["undecided"], "top": plan["top"]}
    summary = summarize(runs)
    floor = load_floor(out_dir)
    best = choose_best(summary)
    acc_rows = compare(runs, best, "correct", draws) if best else []
    bpd_rows = compare(runs, best, "bpd", draws) if best else []
    history = history_rows(v1_folder) if v1_folder is not None else {}
    rep = {"status": status, "summary": summary, "best": best, "accuracy_comparison": acc_rows,
           "bpd_comparison": bpd_rows, "floor": floor, "history_v1": history,
           "table": markdown_summary(summary, floor, history, best),
           "accuracy_table": markdown_comparisons(acc_rows, best, "correct") if acc_rows else "",
           "bpd_table": markdown_comparisons(bpd_rows, best, "bpd") if bpd_rows else "",
           "conclusion": conclusion(summary, best, acc_rows, bpd_rows, status, floor,
                                    parity_evidence(parity) if parity is not None else None, design_bound(runs)),
           "bootstrap_draws": draws, "runs": [run_id(r["name"], r["seed"]) for r in runs]}
    return rep


def report_markdown(rep: dict, design_name: str) -> str:
    s = rep["status"]
    parts = [f"# Fusion comparison v2 ({design_name}): report",
             "", f"Written by `python scripts/fusion_comparison.py --design {design_name} --report` from the "
             f"results files in this folder; the rules are in `results/fusion/README.md`.",
             "", f"**{s['done']} of {s['total']} planned runs finished.**"
             + (f" Missing: {', '.join(s['missing'])}." if s["missing"] else "")
             + (f" Trained, generation metrics not measured yet (`--finish-pending`): {', '.join(s['pending'])}."
                if s.get("pending") else "")
             + (f" {s['undecided']} more (seed 2 of the best three) are chosen when seeds 0 and 1 are done."
                if s["undecided"] else ""),
             "", "## Per strategy (mean ± sample sd over seeds, number of seeds in brackets)", "", rep["table"]]
    if s["done"]:  # the figures exist only once a run has finished (write_report draws them then)
        parts += ["", "![learning curves](curves.png)", "", "![summary](summary.png)"]
    if rep["best"]:
        none_yet = "(no other strategy has finished yet)"
        amended = DESIGNS.get(design_name, {}).get("matched_seeds_amended")
        parts += ["", f"## {rep['best']} against every other strategy, same validation images",
                  "", "Accuracy (paired bootstrap over images and the seeds both ran, matched by seed, "
                  f"{rep['bootstrap_draws']} draws; exact McNemar per seed)"
                  + (f". Matching by seed is an amendment of the rules, made {amended}, for the reason given in "
                     "`results/fusion/README.md`" if amended else "") + ":", "", rep["accuracy_table"] or none_yet,
                  "", "Bits/dim under the true label (negative: the best has the lower bits/dim)"
                  + (". With two seeds a quarter of the draws use one seed alone and a quarter the other, so "
                     "when the two seeds' differences have opposite signs p is near 0.5 even where the interval "
                     "barely covers zero" if any(len(r["seeds"]) == 2 for r in rep["bpd_comparison"]) else "")
                  + ":", "", rep["bpd_table"] or none_yet]
    parts += ["", "## Conclusion", ""] + [f"- {line}" for line in rep["conclusion"]]
    return "\n".join(parts) + "\n"


def doc_markers(design_name: str) -> tuple:
    """The two comment lines between which a Markdown page carries a design's report block."""
    return (f"<!-- fusion {design_name} report: begin (written by `scripts/fusion_comparison.py --design "
            f"{design_name} --report`; edits here are overwritten) -->", f"<!-- fusion {design_name} report: end -->")


def doc_block(rep: dict, design_name: str, figures: str) -> str:
    """The report's status, per-strategy table, summary figure and conclusion, for a docs page;
    ``figures``: the path from that page to the report's folder (for the figure's link)."""
    s = rep["status"]
    parts = [f"**{s['done']} of {s['total']} planned runs finished** (full report with the paired tables: "
             f"[`report.md`]({figures}/report.md)).", "", rep["table"]]
    if s["done"]:
        parts += ["", f"![summary: every strategy's accuracy, bits/dim, FID-2048 and probe per seed]({figures}/summary.png)"]
    parts += ["", "Conclusion (written by the report from the numbers above):", ""]
    parts += [f"- {line}" for line in rep["conclusion"]]
    return "\n".join(parts)


def sync_doc(doc_path, design_name: str, block: str) -> bool:
    """Replace what stands between :func:`doc_markers` in ``doc_path`` by ``block``. False (and the
    page untouched) when the page has no begin marker; ValueError when it has one without its end."""
    doc_path = Path(doc_path)
    begin, end = doc_markers(design_name)
    text = doc_path.read_text(encoding="utf-8")
    if begin not in text:
        return False
    head, rest = text.split(begin, 1)
    if end not in rest:
        raise ValueError(f"{doc_path}: '{begin}' has no '{end}' after it")
    tail = rest.split(end, 1)[1]
    doc_path.write_text(f"{head}{begin}\n{block}\n{end}{tail}", encoding="utf-8")
    return True


def doc_block_in(doc_path, design_name: str) -> Optional[str]:
    """What ``doc_path`` carries between the markers, or None without them."""
    begin, end = doc_markers(design_name)
    text = Path(doc_path).read_text(encoding="utf-8")
    if begin not in text or end not in text.split(begin, 1)[1]:
        return None
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n")


def write_report(out_dir, design: dict, design_name: str, v1_folder=None, draws: int = BOOTSTRAP_DRAWS) -> dict:
    """:func:`build_report` plus ``report.md``, ``report.json``, ``curves.png`` and ``summary.png`` in ``out_dir``."""
    import matplotlib.pyplot as plt
    from studies.experiments import write_results
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = build_report(out_dir, design, v1_folder, draws)
    write_results({k: v for k, v in rep.items()}, out_dir / "report.json")
    (out_dir / "report.md").write_text(report_markdown(rep, design_name))
    runs = load_runs(out_dir)
    if runs:
        for fig, name in ((plot_curves(runs), "curves.png"), (plot_summary(rep["summary"], rep["floor"], rep["best"]),
                                                              "summary.png")):
            fig.savefig(out_dir / name, dpi=80)
            plt.close(fig)
    return rep
