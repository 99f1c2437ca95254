"""``pcnn train``: the training loop from the command line (:func:`pcnn.train.train`)."""
from __future__ import annotations

import json
import sys


from pcnn.model.checkpoint import DiskFullError
from pcnn.train import TrainingStopped, load_run_config, read_data_tensors, train


def add_commands(sub) -> None:
    """Add this group's subcommands (flags beside their code) to the ``sub`` subparsers."""
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
