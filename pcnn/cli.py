"""Command line: ``python -m pcnn <command> --help``.

The CLI only parses arguments and calls the library; no logic lives here.
"""
from __future__ import annotations

import argparse
import csv
import errno
import json
import sys
from pathlib import Path

import torch


def _device(name: str | None) -> torch.device:
    """``--device``: auto, cpu, cuda, cuda:N or mps; ``ValueError`` for a name or a device not here."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA GPU is available here (torch.cuda.is_available() is "
                             "False); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name}: MPS (Apple GPU) is not available here; use --device cpu or auto")
    return dev


def _os_error_message(e: OSError) -> str | None:
    """One line for the OSErrors an ordinary mistake causes (a file in the way, a full disk), else None."""
    from .checkpoint import DiskFullError
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
    from .config import CPEN455_CLASSES
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


def cmd_classify(args) -> int:
    from . import data, load
    from .classify import log_likelihoods, metrics
    from tqdm.auto import tqdm
    dev = _device(args.device)
    if args.out:
        _check_out_file(Path(args.out))
    model = load(args.checkpoint, device=dev)
    split = data.load_split(args.split, args.data_dir, show_progress=not args.quiet)
    x = data.to_float(split.images)
    bar = tqdm(total=1, desc=f"scoring {args.split}", disable=args.quiet)

    def tick(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()
    ll = log_likelihoods(model, x, batch_size=args.batch_size, flip_average=args.flip_average, progress=tick,
                         precision=args.precision)
    bar.close()
    pred = ll.argmax(1)
    result = {"checkpoint": str(args.checkpoint), "split": args.split, "n": len(split),
              "flip_average": args.flip_average, "precision": args.precision}
    labelled = split.labels >= 0
    if labelled.all():
        result.update(metrics(split.labels.numpy(), pred.numpy(), model.config.num_classes))
    elif labelled.any():
        print(f"note: {int((~labelled).sum())} unlabelled rows; metrics use the labelled ones", file=sys.stderr)
        result.update(metrics(split.labels[labelled].numpy(), pred[labelled].numpy(), model.config.num_classes))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "label", *[f"loglik_{c}" for c in range(ll.shape[1])]])
            for p, lab, row in zip(split.paths, pred.tolist(), ll.tolist()):
                w.writerow([p, lab, *[f"{v:.6f}" for v in row]])
        result["csv"] = str(out)
    print(json.dumps(result, indent=1 if args.pretty else None))
    return 0


def cmd_sample(args) -> int:
    from . import load
    from .sample import grid_path_for, write_sample_set
    dev = _device(args.device)
    model = load(args.checkpoint, device=dev)
    nc = model.config.num_classes if model.config.conditional else 1
    classes = None if not args.classes else [_class_index(c, nc) for c in args.classes]
    kw = {} if args.method is None else {"method": args.method}
    real = None
    if args.real_row:
        from .data import load_split
        val = load_split("validation", args.data_dir, size=model.config.image_size, show_progress=False)
        real = (val.images, val.labels)
    paths = write_sample_set(model, args.out, per_class=args.per_class, classes=classes, seed=args.seed,
                             batch_size=args.batch_size, show_progress=not args.quiet,
                             temperature=args.temperature, real=real, **kw)
    print(json.dumps({"images": len(paths), "out": str(args.out), "grid": str(grid_path_for(args.out)),
                      "seed": args.seed, "temperature": args.temperature}))
    return 0


def cmd_complete(args) -> int:
    """Complete one image (a file or a split's row) as the chosen classes; write a labelled grid PNG."""
    from . import load
    from .grids import class_names_for, completion_grid
    from .sample import complete_as_every_class, save_png
    model = load(args.checkpoint, device=_device(args.device))
    cfg = model.config
    if not cfg.conditional:
        raise ValueError("completion as a class needs a class-conditional checkpoint")
    if (args.image is None) == (args.split is None):
        raise ValueError("give exactly one of --image FILE or --split NAME --index I")
    if args.image is not None:
        from PIL import Image
        from .data import resize_uint8
        try:
            with Image.open(args.image) as im:
                import numpy as np
                arr = torch.from_numpy(np.asarray(im.convert("RGB")).copy())
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read image {args.image}: {e}") from None
        image = resize_uint8(arr.permute(2, 0, 1)[None].contiguous(), cfg.image_size)
        source = str(args.image)
    else:
        from .data import load_split
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
                                   method=args.method, temperature=args.temperature)
    names = class_names_for(cfg.num_classes)
    grid = completion_grid(image, done, args.keep_rows, class_names=[names[c] for c in classes], scale=args.scale)
    out = save_png(grid, args.out)
    print(json.dumps({"source": source, "keep_rows": args.keep_rows, "classes": [names[c] for c in classes],
                      "seed": args.seed, "temperature": args.temperature, "grid": str(out)}))
    return 0


def default_checkpoint():
    """The shipped checkpoint (checkpoints/*.safetensors beside the package), or None."""
    root = Path(__file__).resolve().parents[1] / "checkpoints"
    found = sorted(root.glob("*.safetensors"))
    return found[0] if found else None


def cmd_demo(args) -> int:
    """Classify the validation split and draw a class-conditional grid, on the shipped
    checkpoint if there is one, else on a tiny model trained for ``--train-steps`` steps."""
    from . import data, load
    from .classify import log_likelihoods, metrics
    from .sample import grid_path_for, write_sample_set
    dev = _device(args.device)
    out = Path(args.out)
    ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    val = data.load_split("validation", args.data_dir)
    if ckpt is None:
        from .train import TrainConfig, train
        print(f"no shipped checkpoint found: training a tiny model for {args.train_steps} steps")
        cfg = TrainConfig.from_dict({
            "model": {"nr_resnet": 1, "nr_filters": 16, "nr_logistic_mix": 5, "fusion": ["blocks"]},
            "epochs": 1000, "max_steps": args.train_steps, "batch_size": 32, "lr": 2e-3, "ema": 0.99,
            "val_subset": 64, "val_every": 1000, "data_dir": args.data_dir})
        train(cfg, out / "train", val_data=val, resume=(out / "train" / "last.pt").exists())
        ckpt = out / "train" / "model.safetensors"
    model = load(ckpt, device=dev)
    print(f"checkpoint: {ckpt} ({model.config})")
    ll = log_likelihoods(model, data.to_float(val.images), batch_size=args.batch_size)
    m = metrics(val.labels.numpy(), ll.argmax(1).numpy(), model.config.num_classes)
    print(f"validation ({len(val)} images): accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}")
    print(f"confusion matrix (rows true, columns predicted): {m['confusion_matrix']}")
    write_sample_set(model, out / "samples", per_class=args.per_class, seed=0, show_progress=not args.quiet)
    print(f"samples: {out / 'samples'} (grid: {grid_path_for(out / 'samples')})")
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
    c.add_argument("--batch-size", type=int, default=None,
                   help="(image, class) pairs per forward pass (default: 32 on CPU, 256 on GPU)")
    c.add_argument("--flip-average", action="store_true", help="average log p over the image and its mirror")
    c.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="network precision (the likelihood is always fp32); bf16 is faster on CPUs with bf16 "
                        "but flips some predictions (benchmarks/results/bf16_scoring_cpu.md), so fp32 is the default")
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

    from .course import add_course_parser
    from .data import add_data_parser
    from .fid import add_fid_parser
    from .generation import add_generation_parser
    from .train import add_train_parser
    add_train_parser(sub)
    add_data_parser(sub)
    add_fid_parser(sub)
    add_generation_parser(sub)
    add_course_parser(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
