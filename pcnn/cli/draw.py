"""Drawing commands: ``sample`` (a sample set and its grid), ``complete`` (completion as every
class), ``demo`` (classify and sample with the shipped model or a tiny one trained on the spot)."""
from __future__ import annotations

import json
from pathlib import Path


from pcnn.model.checkpoint import load
from pcnn.model.classify import log_likelihoods
from pcnn.eval.classification import metrics
from pcnn.data.dataset import load_split, read_image
from pcnn.model.likelihood import to_float
from pcnn.viz.grids import class_names_for, completion_grid
from pcnn.paths import default_checkpoint, load_preset
from pcnn.model.precision import resolve_device
from pcnn.sampling.sample import complete_as_every_class
from pcnn.sampling.sets import grid_path_for, save_png, write_sample_set
from pcnn.train import TrainConfig, train


from .common import _class_index, _guidance_used, _guidance_args


def add_commands(sub) -> None:
    """Add this group's subcommands (flags beside their code) to the ``sub`` subparsers."""
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
