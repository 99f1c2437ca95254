"""What several commands share: class and guidance arguments, output-file checks."""
from __future__ import annotations

import argparse
from pathlib import Path


from pcnn.model.config import CPEN455_CLASSES
from pcnn.sampling.guidance import DEFAULT_GUIDE, GUIDES, RECOMMENDED, resolve_guidance


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
