"""``pcnn course export`` / ``pcnn course grade``: CPEN455 compatibility (:mod:`pcnn.course`)."""
from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path


from pcnn.model.checkpoint import write_json
from pcnn.course.hook import DEFAULT_PATH as COURSE_MODEL_PATH
from pcnn.course.hook import export_for_course, load_course_model
from pcnn.course.grading import grade
from pcnn.paths import DATA_ENV_VAR, default_checkpoint, resolve_data_dir


from .common import _guidance_args


def add_commands(sub) -> None:
    """Add this group's subcommands (flags beside their code) to the ``sub`` subparsers."""
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
    cg.add_argument("--workdir", default=None,
                    help="empty folder to grade in, kept afterwards (default: a temporary one)")
    cg.add_argument("--mode", default="validation",
                    help="split the classification script scores (default: %(default)s)")
    cg.add_argument("--no-generation", action="store_true", help="skip the generation script (it samples 100 images)")
    cg.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the scripts")
    _guidance_args(cg)
    cg.add_argument("--out", default=None, help="write the result here as JSON")
    cg.set_defaults(func=cmd_course_grade)


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
            workdir = args.workdir
            if not workdir:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pcnn-grade-"))) / "course"
            res = grade(args.starter, checkpoint, root, workdir, mode=args.mode,
                        generation=not args.no_generation, threads=args.threads, guidance=args.guidance,
                        guide=args.guide, plausible=args.plausible, schedule=args.schedule)
    except (RuntimeError, ModuleNotFoundError) as e:  # a script failed (its output is the message), or its imports
                                                      # are absent
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.out:
        res["out"] = str(write_json(res, args.out, sort_keys=True))
    print(json.dumps(res, indent=1))
    return 0
