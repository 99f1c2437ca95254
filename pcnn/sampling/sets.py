"""Sample-set folders: the one place that names, writes and reads them.

A *sample set* is a folder of same-size PNGs named ``<Name>_image_<nn>.png``, the course's
convention (``Class<c>`` by default, so ``Class2_image_07.png`` is the 8th image of class 2),
with nothing else in it, because FID (ours and the course's ``generation_evaluation.py``)
reads every image in the folder; the overview grid goes beside the folder
(:func:`grid_path_for`). Generated sets (:func:`write_sample_set`), real-image floors
(:func:`pcnn.eval.generation.write_real_floor`, :func:`real_course_set`) and subsets
(:func:`subset_by_class`, :func:`copy_subset`) are all written through :func:`write_images`
and read back through :func:`read_sample_set` (or :func:`load_images` for any list of files).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from pcnn.model.config import CPEN455_CLASSES
from pcnn.model.likelihood import check_temperature
from pcnn.viz.grids import class_grid
from .guidance import DEFAULT_GUIDE, resolve_guidance
from .sample import check_class_values, sample

SET_GLOB = "*_image_*.png"
_SET_FILE = re.compile(r"^(.+)_image_(\d+)\.png$")
_CLASS_RE = re.compile(r"^class(\d+)_", re.IGNORECASE)


def set_file_name(name: str, n: int) -> str:
    """The file of the ``n``-th image of a set's class called ``name``: ``Class2``, 7 -> ``Class2_image_07.png``."""
    return f"{name}_image_{n:02d}.png"


def class_of_file(name: str, class_names: Sequence[str] = CPEN455_CLASSES) -> Optional[int]:
    """The intended class in a sample's file name: ``Class2_image_07.png`` or ``koala_...`` -> 2; else None."""
    m = _CLASS_RE.match(name)
    if m:
        return int(m.group(1))
    low = name.lower()
    for k, n in enumerate(class_names):
        if low.startswith(n.lower() + "_"):
            return k
    return None


def make_grid(images: torch.Tensor, nrow: int = 10, pad: int = 2) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> one uint8 grid image (3, H', W'), white padding."""
    from torchvision.utils import make_grid as tv_grid
    grid = tv_grid(images, nrow=nrow, padding=pad, pad_value=255)
    if len(images) == 1:  # torchvision returns a lone image unpadded; pad it like a grid of many
        grid = torch.nn.functional.pad(grid, (pad, pad, pad, pad), value=255)
    return grid


def save_png(image: torch.Tensor, path) -> Path:
    """Write a uint8 (3, H, W) tensor as PNG (lossless, so pixels survive exactly)."""
    from PIL import Image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.cpu().permute(1, 2, 0).numpy()).save(path, format="PNG")
    return path


def write_sample_set(model, out_dir, per_class: int = 25, classes: Optional[Sequence[int]] = None,
                     seed: int = 0, batch_size: int = 100, method: Optional[str] = None,
                     file_names: Optional[Sequence[str]] = None, show_progress: bool = True,
                     temperature: float = 1.0, real: Optional[tuple] = None,
                     grid_per_row: int = 10, grid_scale: int = 3, guidance=0.0,
                     guide: str = DEFAULT_GUIDE, exact_bins: bool = False, plausible: float = 0.0,
                     schedule="constant") -> list[Path]:
    """Generate ``per_class`` images of each class into ``out_dir`` as PNG, plus a grid image.

    The grid goes *beside* the folder (:func:`grid_path_for`: ``samples/`` ->
    ``samples_grid.png``), so ``out_dir`` holds only same-size samples, as FID
    (ours and the course's) expects. Files follow the course's convention ``Class<c>_image_<nn>.png`` (``file_names``
    overrides the ``Class<c>`` part). Reproducible: batch b uses seed ``seed + b``.
    ``temperature``, ``guidance``, ``guide``, ``exact_bins``, ``plausible``, ``schedule``: as in
    :func:`sample`. The grid is :func:`pcnn.viz.grids.class_grid`: one
    row per class labelled with its name, the first ``grid_per_row`` samples upscaled
    ``grid_scale`` times; ``real=(images, labels)`` (uint8) adds a row of real
    images under each class's samples.
    Sample files of an earlier set in ``out_dir`` (``*_image_*.png``) are deleted first.
    Returns the paths of the images (grid excluded).
    """
    from tqdm.auto import tqdm
    temperature = check_temperature(temperature)
    guidance, guide, plausible, schedule = resolve_guidance(model, guidance, guide, plausible, schedule)
    cfg = model.config
    schedule.check_rows(cfg.image_size)
    if per_class < 1 or batch_size < 1:
        raise ValueError(f"per_class and batch_size must be >= 1, got {per_class}, {batch_size}")
    classes = list(range(cfg.num_classes)) if classes is None else list(classes)
    check_class_values(classes, cfg, "classes")  # before the folder is made
    names = list(file_names) if file_names is not None else None
    labels = torch.tensor([c for c in classes for _ in range(per_class)])
    out_dir = clear_set(out_dir)
    kw = {} if method is None else {"method": method}
    images = []
    bar = tqdm(total=len(labels) * cfg.image_size, desc="sampling rows", disable=not show_progress)
    for b, start in enumerate(range(0, len(labels), batch_size)):
        chunk = labels[start:start + batch_size]
        done = [0]

        def tick(rows, total, done=done, n=len(chunk)):
            bar.update((rows - done[0]) * n)
            done[0] = rows
        images.append(sample(model, chunk, generator=torch.Generator().manual_seed(seed + b), progress=tick,
                             temperature=temperature, guidance=guidance, guide=guide, exact_bins=exact_bins,
                             plausible=plausible, schedule=schedule, **kw))
    bar.close()
    images = torch.cat(images)
    paths = write_images(images, labels, out_dir, names)
    save_png(sample_grid(images, labels, cfg, real=real, per_row=grid_per_row, scale=grid_scale),
             grid_path_for(out_dir))
    return paths


def sample_grid(images: torch.Tensor, labels, config, real: Optional[tuple] = None, per_row: int = 10,
                scale: int = 3) -> torch.Tensor:
    """The grid :func:`write_sample_set` saves beside a set: :func:`pcnn.viz.grids.class_grid` with
    one row per class (``real=(images, labels)`` adds real rows). An unconditional model's rows
    are all labelled ``unconditional``: its labels only spread the set over the course's
    ``Class<c>`` file names, they name no class of its samples."""
    names = None if config.conditional else ["unconditional"] * config.num_classes
    real_images, real_labels = real if real is not None else (None, None)
    return class_grid(images, labels, names, real_images=real_images, real_labels=real_labels, per_row=per_row,
                      scale=scale)


def grid_path_for(out_dir) -> Path:
    """Where :func:`write_sample_set` puts the grid of ``out_dir``: ``<out_dir>_grid.png`` beside it."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}_grid.png"


def clear_set(out_dir) -> Path:
    """Make ``out_dir`` and delete the set files (``*_image_*.png``) of an earlier set in it.

    A set written earlier into the same folder (more images, other classes) would mix with
    the new one and change what FID measures.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(SET_GLOB):
        old.unlink()
    return out_dir


def write_images(images: torch.Tensor, labels, out_dir, names: Optional[Sequence[str]] = None) -> list[Path]:
    """Write uint8 ``images`` (N, 3, S, S) with class ``labels`` (N,) into ``out_dir`` as a set.

    The k-th image of class c becomes ``<names[c]>_image_<kk>.png`` (``names`` default
    ``Class<c>``; a label of -1 means "any class" and is named ``Real``), in the order given.
    Earlier set files in ``out_dir`` are deleted first (:func:`clear_set`). Returns the paths.
    """
    labels = torch.as_tensor(labels).flatten().tolist()
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    out_dir = clear_set(out_dir)
    counts: dict = {}
    paths = []
    for img, c in zip(images, labels):
        name = "Real" if c < 0 else (names[c] if names is not None else f"Class{c}")
        k = counts.get(c, 0)
        counts[c] = k + 1
        paths.append(save_png(img, out_dir / set_file_name(name, k)))
    return paths


def load_images(files: Sequence) -> torch.Tensor:
    """Decode image files of one size to uint8 ``(N, 3, H, W)`` (RGB)."""
    from PIL import Image
    imgs = []
    for f in files:
        with Image.open(f) as im:
            imgs.append(torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1))
    return torch.stack(imgs)


def read_sample_set(folder) -> tuple:
    """The images of a set (files ``<Name>_image_<nn>.png`` naming their class, see
    :func:`class_of_file`) as ``(uint8 (N, 3, S, S), labels (N,))``, ordered by class then
    number."""
    found = []
    for f in Path(folder).glob(SET_GLOB):
        m = _SET_FILE.match(f.name)
        c = class_of_file(f.name)
        if m and c is not None:
            found.append((c, int(m.group(2)), f))
    if not found:
        raise FileNotFoundError(f"no Class<c>_image_<nn>.png files in {folder}")
    found.sort()
    return load_images([f for _, _, f in found]), torch.tensor([c for c, _, _ in found])


def subset_by_class(src: Path, dest: Path, per_class: int) -> Path:
    """Copy the first ``per_class`` ``<class>_image_NN.png`` files of every class of ``src`` to ``dest``."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    by_class: dict = {}
    for f in sorted(Path(src).glob(SET_GLOB)):
        by_class.setdefault(f.name.rsplit("_image_", 1)[0], []).append(f)
    for files in by_class.values():
        for f in files[:per_class]:
            shutil.copy(f, dest / f.name)
    return dest


def copy_subset(files: Sequence, dest, n: Optional[int] = None, seed: int = 0) -> Path:
    """Copy ``n`` of ``files`` (all when None; a seeded random choice otherwise) into ``dest``
    (e.g. a smaller FID reference set); returns ``dest``."""
    import shutil
    files = sorted(Path(f) for f in files)
    if n is not None and n < len(files):
        g = torch.Generator().manual_seed(seed)
        files = [files[i] for i in sorted(torch.randperm(len(files), generator=g)[:n].tolist())]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, dest / f.name)
    return dest


def real_course_set(val, dest: Path, per_class: int) -> Path:
    """The first ``per_class`` images of every class of the split ``val`` as a set in ``dest``
    (course size; the folder is emptied first)."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    picks = [(val.labels == c).nonzero().flatten()[:per_class] for c in sorted(set(val.labels.tolist()))]
    idx = torch.cat(picks)
    write_images(val.images[idx], val.labels[idx], dest)
    return dest
