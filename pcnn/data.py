"""The CPEN455 image data: loading, validation, augmentation and download.

Layout (the course's own, see ``data/README.md``)::

    <data_dir>/train.csv  validation.csv  test.csv   # no header, rows `train/0000001.jpg,0`
    <data_dir>/train/*.jpg  validation/*.jpg  test/*.jpg

The folder is :func:`resolve_data_dir`: an explicit argument, else ``$PCNN_DATA_DIR``,
else ``data`` relative to the current directory.

Preprocessing (exactly, for every image; it matches the course's 64 -> 32 resize)
----------------------------------------------------------------------------------
1. decode the file to a ``uint8`` tensor ``(3, H, W)`` with
   ``torchvision.io.decode_image(..., mode=ImageReadMode.RGB)``: grayscale is
   replicated to three equal channels, RGBA drops alpha, CMYK is converted to RGB
   (files torchvision cannot decode go through ``PIL.Image.open(...).convert("RGB")``,
   which gives byte-identical pixels on the CPEN455 files);
2. ``x = img.float() / 255`` (float in [0, 1]);
3. ``x = torchvision.transforms.v2.functional.resize(x, [size, size],
   interpolation=InterpolationMode.BILINEAR, antialias=True)`` (skipped when the
   image already is ``size x size``);
4. back onto the 8-bit grid: ``round(x * 255)`` clamped to 0..255, stored ``uint8``.

Images are decoded once per :func:`load_split` call and kept in memory as a
``uint8 (N, 3, size, size)`` tensor (the 3,899 training images take 12 MB and
about a second to load, so there is no on-disk cache). The model sees
:func:`to_float` of them: ``v / 127.5 - 1``, the exact 8-bit grid in [-1, 1]
that the discretised logistic mixture likelihood assumes; :func:`to_uint8`
inverts it (round, clamp).

Bad data (every message names the CSV, its 1-based row and the file)
--------------------------------------------------------------------
* missing CSV -> :class:`DataError` saying where to put the files and that
  ``python -m pcnn data download`` fetches them;
* malformed row (not exactly two fields ``path,label``) -> :class:`DataError`;
* label not an integer or not in ``-1..len(CLASS_NAMES)-1`` -> :class:`DataError`
  (``-1`` = unlabelled, used by test.csv);
* path absolute or escaping the data folder (``../x.jpg``) -> :class:`DataError`;
* CSV with no rows (or every row skipped) -> :class:`DataError`;
* image file missing, unreadable or not decodable (corrupt JPEG): with
  ``on_error="raise"`` (default) a :class:`DataError` listing every bad file of
  the split (all files are tried first, so one run reports all of them); with
  ``on_error="skip"`` each bad file is left out with a ``warnings.warn`` naming
  file and row, and every other image is kept. Missing and corrupt files are
  treated alike: both mean the CSV promises an image that cannot be had.
Blank lines (e.g. a trailing one) are ignored; a UTF-8 BOM is tolerated.

Augmentation (training only; :func:`augment`, :class:`AugmentConfig`)
---------------------------------------------------------------------
Horizontal flip (on by default), random rotation, colour jitter, Gaussian noise,
cut-out and small translations, drawn per image from the given
``torch.Generator`` (same generator state -> same output). All geometric and
photometric steps are done in float and the result is rounded back onto the
8-bit grid once, so the output is again ``uint8`` and a valid input for the
discretised likelihood.

Per-channel normalisation is opt-in only (``AugmentConfig.normalize=False``)
----------------------------------------------------------------------------
:func:`normalize` maps ``x`` in [-1, 1] to ``(x - mean) / std`` per channel
(:func:`channel_stats`). PixelCNN++'s discretised logistic likelihood assumes
its input lies on the 8-bit grid in [-1, 1]: each value owns a bin of width
2/255 and the edge values -1 and 1 own the open-ended tails (the CDF below
-1 + 1/255 and above 1 - 1/255). Normalised data are off that grid and outside
[-1, 1]: bins no longer centre on data values, their width is wrong by the
factor ``1/std``, the edge-bin rule fires at the wrong values (or never), so the
likelihood is no longer a probability of the 8-bit image. Bits/dim are then not
comparable with published numbers or with un-normalised runs, and the per-class
likelihoods used for classification are distorted. It is therefore not a
default; the training loop never applies it unless asked.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

import torch
import torch.nn.functional as F

from .config import CPEN455_CLASSES
from .likelihood import to_float, to_uint8  # noqa: F401  (re-exported: pcnn.data.to_float)

#: Class names by label (the course's files call them Class0..Class3).
CLASS_NAMES = CPEN455_CLASSES
#: The course's splits, each ``<split>.csv`` + ``<split>/`` folder.
SPLITS = ("train", "validation", "test")
#: Public copy of the course repository (its ``data/`` folder is the data set).
COURSE_URL = "https://codeload.github.com/DSL-Lab/CPEN455HW-2023W2/zip/refs/heads/main"
#: Environment variable naming the data folder.
ENV_VAR = "PCNN_DATA_DIR"

_RESIZE_CHUNK = 512  # images resized per batch (bounds the float32 working memory)
#: Largest image :func:`load_split` decodes, read from the file's header before any pixel
#: is decoded (a 4 MB JPEG can claim 16000x16000 pixels and take 8 GB to decode).
MAX_PIXELS = "4096x4096"
#: Environment variable overriding :data:`MAX_PIXELS` (``WxH`` or a pixel count).
MAX_PIXELS_ENV = "PCNN_MAX_IMAGE_PIXELS"


class DataError(ValueError):
    """The data set is missing or malformed; the message says which file/row and what to do."""


def resolve_data_dir(data_dir=None) -> Path:
    """The data folder: ``data_dir`` if given, else ``$PCNN_DATA_DIR``, else ``data`` (cwd-relative)."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("data")


def _where_to_put(root: Path) -> str:
    return (f"put the CPEN455 files there ({', '.join(s + '.csv' for s in SPLITS)} and the "
            f"{'/, '.join(SPLITS)}/ image folders, the layout of data/ in the course repository "
            f"DSL-Lab/CPEN455HW-2023W2), point ${ENV_VAR} or --data-dir at a folder that has them, "
            f"or run `python -m pcnn data download --data-dir {root}`")


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Row:
    line: int     # 1-based line number in the CSV
    path: str     # as written in the CSV, e.g. "train/0000001.jpg"
    label: int    # -1..len(CLASS_NAMES)-1


def _csv_path(root: Path, split: str) -> Path:
    if not isinstance(split, str) or not split or any(c in split for c in "/\\") or split.startswith("."):
        raise DataError(f"invalid split name {split!r}; expected one of {SPLITS} (or another <name>.csv)")
    return root / f"{split}.csv"


def _check_rel_path(root: Path, csv_name: str, line: int, rel: str) -> Path:
    where = f"{csv_name} row {line}"
    if not rel:
        raise DataError(f"{where}: empty image path")
    if rel.startswith(("/", "\\", "~")) or (len(rel) > 1 and rel[1] == ":"):  # /x, \\x, ~/x, C:x
        raise DataError(f"{where}: image path {rel!r} is absolute (or home-relative); paths must be relative to the "
                        f"data folder {root}")
    parts = rel.replace("\\", "/").split("/")
    if ".." in parts:
        raise DataError(f"{where}: image path {rel!r} leaves the data folder {root} ('..' is not allowed)")
    # Absolute paths and '..' are rejected above, so the path is lexically inside the
    # folder; symlinks inside it (e.g. data/train -> elsewhere) are allowed on purpose.
    return root / rel


def read_csv(split: str, data_dir=None) -> list[_Row]:
    """Parse and validate ``<data_dir>/<split>.csv`` (no images are opened).

    Raises :class:`DataError` for a missing CSV, a malformed row, a bad label, a path
    outside the data folder, or a CSV without rows.
    """
    root = resolve_data_dir(data_dir)
    path = _csv_path(root, split)
    if not path.is_file():
        raise DataError(f"{path} not found (split {split!r}); {_where_to_put(root)}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    hi = len(CLASS_NAMES) - 1
    rows: list[_Row] = []
    for line, fields in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if not fields or all(not f.strip() for f in fields):
            continue  # blank line
        where = f"{path.name} row {line}"
        if len(fields) != 2:
            raise DataError(f"{where}: expected 2 fields 'path,label', got {len(fields)}: {','.join(fields)!r}")
        rel, lab = fields[0].strip(), fields[1].strip()
        try:
            label = int(lab)
        except ValueError:
            raise DataError(f"{where} ({rel}): label {lab!r} is not an integer; expected -1 "
                            f"(unlabelled) or 0..{hi} ({', '.join(CLASS_NAMES)})") from None
        if not -1 <= label <= hi:
            raise DataError(f"{where} ({rel}): unknown label {label}; expected -1 (unlabelled) "
                            f"or 0..{hi} ({', '.join(CLASS_NAMES)})")
        _check_rel_path(root, path.name, line, rel)
        rows.append(_Row(line, rel, label))
    if not rows:
        raise DataError(f"{path} has no rows: split {split!r} is empty")
    return rows


# ---------------------------------------------------------------------------------------------
# Decoding and loading
# ---------------------------------------------------------------------------------------------

def _decode_pil(data: bytes) -> torch.Tensor:
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")  # L, LA, P, RGBA, CMYK, ... -> RGB
        t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        return t.view(im.height, im.width, 3).permute(2, 0, 1).contiguous()


def _decode_rgb(data: bytes) -> torch.Tensor:
    """Bytes of an image file -> uint8 (3, H, W) RGB. Raises on undecodable data.

    torchvision's decoder first (its image I/O is deprecated from 0.29 on; where it is
    gone, PIL alone is used: on the CPEN455 files both give byte-identical pixels).
    """
    try:
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:  # pragma: no cover - future torchvision without image I/O
        return _decode_pil(data)
    try:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except Exception as tv_err:  # noqa: BLE001 - fall back to PIL for formats torchvision lacks
        try:
            return _decode_pil(data)
        except Exception:  # noqa: BLE001
            raise tv_err from None


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """The course resize of uint8 ``(B, 3, H, W)`` to ``(B, 3, size, size)`` (module docstring, steps 2-4)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF
    if images.shape[-2:] == (size, size):
        return images.clone()
    out = []
    for chunk in images.split(_RESIZE_CHUNK):
        x = chunk.float() / 255
        x = TF.resize(x, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
        out.append((x * 255).round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else images.new_zeros((0, 3, size, size))


@dataclass
class Split:
    """A split held in memory: ``images[i]`` is the file ``paths[i]`` with label ``labels[i]``."""
    name: str
    images: torch.Tensor  # uint8 (N, 3, size, size), course preprocessing (module docstring)
    labels: torch.Tensor  # int64 (N,); -1 = unlabelled (test)
    paths: list           # CSV paths, e.g. "train/0000001.jpg"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx) -> "Split":
        """A new Split of the rows ``idx`` (slice, list/tuple of ints, int or bool tensor)."""
        if isinstance(idx, slice):
            return Split(self.name, self.images[idx], self.labels[idx], list(self.paths[idx]))
        t = torch.as_tensor(idx)
        if t.dtype == torch.bool:
            t = t.nonzero().flatten()
        t = t.to(torch.long).flatten()
        return Split(self.name, self.images[t], self.labels[t], [self.paths[i] for i in t.tolist()])

    def class_counts(self) -> dict:
        """``{class name: count}``, plus ``"unlabelled"`` when there are -1 labels."""
        out = {n: int((self.labels == i).sum()) for i, n in enumerate(CLASS_NAMES)}
        unl = int((self.labels == -1).sum())
        if unl:
            out["unlabelled"] = unl
        return out

    def __repr__(self) -> str:
        return (f"Split(name={self.name!r}, n={len(self)}, images={tuple(self.images.shape)} "
                f"{self.images.dtype}, classes={self.class_counts()})")


def pixel_limit(max_pixels=None) -> tuple[int, str]:
    """``(pixels, description)`` of the decode limit: ``max_pixels`` (an int or ``"WxH"``), else
    ``$PCNN_MAX_IMAGE_PIXELS``, else :data:`MAX_PIXELS` (4096x4096)."""
    if max_pixels is not None:
        value, source = max_pixels, "max_pixels"
    elif os.environ.get(MAX_PIXELS_ENV, "").strip():
        value, source = os.environ[MAX_PIXELS_ENV].strip(), MAX_PIXELS_ENV
    else:
        value, source = MAX_PIXELS, "the default"
    try:
        if isinstance(value, str) and "x" in value.lower():
            w, h = (int(v) for v in value.lower().split("x"))
            n, text = w * h, f"{w}x{h} pixels"
        elif isinstance(value, bool):
            raise ValueError
        else:
            n = int(value)
            text = f"{n} pixels"
        if n < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{source}: the pixel limit must be a positive pixel count or WIDTHxHEIGHT "
                         f"(e.g. 4096x4096), got {value!r}") from None
    return n, f"{text} ({source})"


def _header_size(data: bytes):
    """(width, height) from the image header (no pixel is decoded), or None if PIL cannot tell."""
    from PIL import Image
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # PIL's own bomb check would refuse to even report the size
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:  # noqa: BLE001 - not an image PIL knows: the decoder gives the error
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _decode_all(root: Path, csv_name: str, rows, decoded: list, kept: list, bad: list,
                limit: tuple = (4096 * 4096, "4096x4096 pixels")) -> None:
    """Read and decode every row's file, appending to ``decoded``/``kept`` or a message to ``bad``."""
    for row in rows:
        f = root / row.path
        try:
            data = f.read_bytes()
        except FileNotFoundError:
            bad.append(f"{csv_name} row {row.line}: image file {f} is missing")
            continue
        except OSError as e:
            bad.append(f"{csv_name} row {row.line}: cannot read image file {f}: {e}")
            continue
        wh = _header_size(data)
        if wh is not None and wh[0] * wh[1] > limit[0]:
            bad.append(f"{csv_name} row {row.line}: image file {f} is {wh[0]}x{wh[1]} pixels, over the decode "
                       f"limit of {limit[1]}; raise it with load_split(max_pixels=...) or {MAX_PIXELS_ENV}=WxH")
            continue
        try:
            img = _decode_rgb(data)
        except Exception as e:  # noqa: BLE001
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            bad.append(f"{csv_name} row {row.line}: cannot decode image file {f} "
                       f"(corrupt or not an image: {msg})")
            continue
        decoded.append(img)
        kept.append(row)


def load_split(split: str, data_dir=None, size: int = 32, on_error: str = "raise",
               show_progress: bool = True, max_pixels=None) -> Split:
    """Load ``<data_dir>/<split>.csv`` and its images, preprocessed as in the module docstring.

    ``on_error``: ``"raise"`` (a :class:`DataError` listing every missing/undecodable
    image by file and CSV row) or ``"skip"`` (leave those images out, one
    ``warnings.warn`` per file). CSV problems always raise (see module docstring).
    ``max_pixels``: the largest image to decode (pixels or ``"WxH"``; default
    ``$PCNN_MAX_IMAGE_PIXELS``, else 4096x4096), checked from each file's header
    before decoding; a bigger image counts as undecodable (``on_error`` applies).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    limit = pixel_limit(max_pixels)
    root = resolve_data_dir(data_dir)
    rows = read_csv(split, root)
    csv_name = f"{split}.csv"

    it = rows
    if show_progress:
        try:
            from tqdm.auto import tqdm
            it = tqdm(rows, desc=f"loading {split}", unit="img", leave=False)
        except ImportError:  # pragma: no cover - tqdm is a dependency
            pass
    decoded: list[torch.Tensor] = []
    kept: list[_Row] = []
    bad: list[str] = []
    with warnings.catch_warnings():
        # torchvision >= 0.29 warns on every decode that its image I/O is deprecated.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.")
        _decode_all(root, csv_name, it, decoded, kept, bad, limit)

    if bad:
        if on_error == "raise":
            shown = "\n  ".join(bad[:10])
            more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise DataError(f"{len(bad)} of {len(rows)} images of split {split!r} in {root} cannot be "
                            f"loaded:\n  {shown}{more}\n(pass on_error='skip' to leave them out "
                            f"with a warning)")
        for msg in bad:
            warnings.warn(f"skipping {msg}", stacklevel=2)
    if not kept:
        raise DataError(f"split {split!r} in {root}: none of its {len(rows)} images could be loaded")

    # Resize images of equal shape together (bilinear+antialias is per image, so batching is exact).
    images = torch.empty((len(kept), 3, size, size), dtype=torch.uint8)
    groups: dict = {}
    for i, img in enumerate(decoded):
        groups.setdefault(tuple(img.shape), []).append(i)
    for idx in groups.values():
        images[idx] = resize_uint8(torch.stack([decoded[i] for i in idx]), size)
    labels = torch.tensor([r.label for r in kept], dtype=torch.int64)
    return Split(split, images, labels, [r.path for r in kept])


# ---------------------------------------------------------------------------------------------
# Value ranges
# ---------------------------------------------------------------------------------------------

# to_float / to_uint8 live in pcnn.likelihood (the grid the likelihood is defined on) and are
# imported above, so pcnn.data.to_float keeps working.


def channel_stats(split) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (each ``(3,)``, float32) of ``to_float(split.images)``.

    ``split``: a :class:`Split` or a uint8 ``(N, 3, H, W)`` tensor. For opt-in
    :func:`normalize` only (see the module docstring for why it is not a default).
    """
    images = split.images if isinstance(split, Split) else split
    x = to_float(images).to(torch.float64).transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(1).to(torch.float32), x.std(1).to(torch.float32)


def normalize(x_float: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Opt-in per-channel ``(x - mean) / std`` on ``(..., 3, H, W)`` floats in [-1, 1].

    The result is off the 8-bit grid and outside [-1, 1]: do not feed it to the
    discretised likelihood as if it were ordinary data (module docstring).
    """
    mean = torch.as_tensor(mean, dtype=x_float.dtype, device=x_float.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=x_float.dtype, device=x_float.device).view(-1, 1, 1)
    return (x_float - mean) / std


def denormalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`."""
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x * std + mean


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; every random draw is per image. Defaults: flip only."""
    hflip: bool = True          # mirror left-right with probability 0.5
    rotate_deg: float = 0.0     # rotate by an angle uniform in [-rotate_deg, +rotate_deg] degrees (reflect-padded)
    color_jitter: float = 0.0   # strength s in [0, 1): brightness, contrast, saturation factors uniform in [1-s, 1+s]
    noise_std: float = 0.0      # std of added Gaussian noise in 0..255 pixel units (e.g. 2.0 = 2/255 of the range)
    cutout: int = 0             # side in pixels of one square set to mid-grey (128) at a uniform centre; 0 = off
    translate: int = 0          # shift by an integer uniform in [-translate, +translate] pixels in x and y (reflect-padded)
    normalize: bool = False     # opt-in per-channel mean/std normalisation, applied by the caller after to_float (not by augment)

    def __post_init__(self):
        for name in ("rotate_deg", "color_jitter", "noise_std"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"AugmentConfig.{name} must be a finite number >= 0, got {v!r}")
        if self.color_jitter >= 1:
            raise ValueError(f"AugmentConfig.color_jitter must be < 1 (factors in [1-s, 1+s]), "
                             f"got {self.color_jitter!r}")
        for name in ("cutout", "translate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"AugmentConfig.{name} must be an int >= 0 (pixels), got {v!r}")

    @property
    def is_identity(self) -> bool:
        return not (self.hflip or self.rotate_deg or self.color_jitter or self.noise_std
                    or self.cutout or self.translate)


def _uniform(n, lo, hi, g):
    return torch.rand(n, generator=g, device=g.device, dtype=torch.float64) * (hi - lo) + lo


def augment(images_uint8: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Randomly augment a uint8 batch ``(B, 3, H, W)``; returns uint8 of the same shape.

    Steps, in this order and each only when enabled: horizontal flip; rotation and
    translation (one bilinear resample, reflection padding); colour jitter
    (brightness, contrast, saturation); cut-out; Gaussian noise. The work is done
    in float and rounded back onto the 8-bit grid once at the end. Random numbers
    come only from ``generator`` (on its own device, moved to the images' device),
    so the same generator state gives the same output. ``cfg.normalize`` is not
    applied here (the output stays uint8).
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4 or images_uint8.shape[1] != 3:
        raise ValueError(f"augment expects uint8 (B, 3, H, W), got {images_uint8.dtype} "
                         f"{tuple(images_uint8.shape)}")
    B, C, H, W = images_uint8.shape
    dev = images_uint8.device
    g = generator
    if B == 0 or cfg.is_identity:
        return images_uint8.clone()
    x = images_uint8
    if cfg.hflip:
        flip = (torch.rand(B, generator=g, device=g.device) < 0.5).to(dev)
        x = torch.where(flip.view(B, 1, 1, 1), x.flip(-1), x)
    x = x.to(torch.float32)  # 0..255

    if cfg.rotate_deg or cfg.translate:
        ang = _uniform(B, -cfg.rotate_deg, cfg.rotate_deg, g) * (math.pi / 180)
        if cfg.translate:
            t = cfg.translate
            tx = torch.randint(-t, t + 1, (B,), generator=g, device=g.device).to(torch.float64)
            ty = torch.randint(-t, t + 1, (B,), generator=g, device=g.device).to(torch.float64)
        else:
            tx = ty = torch.zeros(B, dtype=torch.float64, device=g.device)
        # affine_grid maps output coords (normalised, [-1,1] across W/H) to input coords.
        # Rotation about the centre in pixel units, then shift by (tx, ty) pixels.
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.zeros(B, 2, 3, dtype=torch.float64, device=g.device)
        theta[:, 0, 0] = cos
        theta[:, 0, 1] = -sin * H / W
        theta[:, 1, 0] = sin * W / H
        theta[:, 1, 1] = cos
        theta[:, 0, 2] = -tx * 2 / W  # sample from x - tx: content moves right by tx pixels
        theta[:, 1, 2] = -ty * 2 / H
        grid = F.affine_grid(theta.to(device=dev, dtype=torch.float32), [B, C, H, W], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    if cfg.color_jitter:
        s = cfg.color_jitter
        bri = _uniform(B, 1 - s, 1 + s, g).to(device=dev, dtype=torch.float32).view(B, 1, 1, 1)
        con = _uniform(B, 1 - s, 1 + s, g).to(device=dev, dtype=torch.float32).view(B, 1, 1, 1)
        sat = _uniform(B, 1 - s, 1 + s, g).to(device=dev, dtype=torch.float32).view(B, 1, 1, 1)
        lum = torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)
        x = (x * bri).clamp(0, 255)
        mean_gray = (x * lum).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = ((x - mean_gray) * con + mean_gray).clamp(0, 255)
        gray = (x * lum).sum(1, keepdim=True)
        x = ((x - gray) * sat + gray).clamp(0, 255)

    if cfg.cutout:
        side = cfg.cutout
        cy = torch.randint(0, H, (B,), generator=g, device=g.device).to(dev)
        cx = torch.randint(0, W, (B,), generator=g, device=g.device).to(dev)
        y0 = (cy - side // 2).view(B, 1, 1)
        x0 = (cx - side // 2).view(B, 1, 1)
        yy = torch.arange(H, device=dev).view(1, H, 1)
        xx = torch.arange(W, device=dev).view(1, 1, W)
        box = (yy >= y0) & (yy < y0 + side) & (xx >= x0) & (xx < x0 + side)
        x = torch.where(box.unsqueeze(1), torch.full_like(x, 128.0), x)

    if cfg.noise_std:
        noise = torch.randn(x.shape, generator=g, device=g.device, dtype=torch.float32)
        x = x + noise.to(dev) * float(cfg.noise_std)

    return x.round_().clamp_(0, 255).to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# Verification and download
# ---------------------------------------------------------------------------------------------

def verify(data_dir=None, splits: Sequence[str] = SPLITS) -> dict:
    """Check the CSVs and that every listed image exists (no decoding).

    Returns ``{split: {"n": rows, "missing": [paths], "classes": {name: count}}}``;
    raises :class:`DataError` for a missing or malformed CSV.
    """
    root = resolve_data_dir(data_dir)
    report = {}
    for split in splits:
        rows = read_csv(split, root)
        classes = {n: 0 for n in CLASS_NAMES}
        unl = 0
        for r in rows:
            if r.label < 0:
                unl += 1
            else:
                classes[CLASS_NAMES[r.label]] += 1
        if unl:
            classes["unlabelled"] = unl
        missing = [r.path for r in rows if not (root / r.path).is_file()]
        report[split] = {"n": len(rows), "missing": missing, "classes": classes}
    return report


def _find_data_prefix(names: list[str]) -> str:
    """The zip folder (``'<repo>-main/data/'`` or ``'data/'``) that holds train.csv."""
    cands = [n[: -len("train.csv")] for n in names
             if n.endswith("data/train.csv") and (n == "data/train.csv" or n.endswith("/data/train.csv"))]
    if not cands:
        raise DataError("the archive has no data/train.csv: it is not the CPEN455 course repository")
    return min(cands, key=lambda p: p.count("/"))


def _safe_extract(zf: zipfile.ZipFile, prefix: str, dest: Path) -> int:
    n = 0
    dest_res = dest.resolve()
    for info in zf.infolist():
        name = info.filename
        if not name.startswith(prefix) or name == prefix:
            continue
        rel = name[len(prefix):]
        parts = PurePosixPath(rel).parts
        if rel.startswith("/") or ".." in parts or "\\" in rel:
            raise DataError(f"unsafe path in archive: {name!r}")
        target = dest.joinpath(*parts)
        if not target.resolve().is_relative_to(dest_res):
            raise DataError(f"unsafe path in archive: {name!r}")
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
        n += 1
    return n


def _print_report(report: dict, root: Path, file=None) -> None:
    file = file or sys.stdout
    print(f"data folder: {root}", file=file)
    for split, r in report.items():
        cls = ", ".join(f"{k} {v}" for k, v in r["classes"].items())
        miss = f", {len(r['missing'])} missing files" if r["missing"] else ""
        print(f"  {split:<11} {r['n']:>6} images ({cls}){miss}", file=file)


def download(data_dir=None, url: str = COURSE_URL, timeout: float = 60.0, force: bool = False,
             show_progress: bool = True) -> Path:
    """Fetch the course's public data set and unpack its ``data/`` folder into ``data_dir``.

    ``url`` is a zip of the course repository (default: a codeload zip of the main
    branch of DSL-Lab/CPEN455HW-2023W2; ``file://`` URLs work too). The zip is
    saved to a temporary file beside the target, ``data/`` is extracted into a
    temporary folder, verified (train/validation/test CSVs parse, every listed image
    exists) and only then moved into ``data_dir`` (the CSVs and split folders;
    other files are added but never overwrite existing ones such as README.md).
    If ``data_dir`` already holds a complete data set and ``force`` is false,
    nothing is fetched. Network failures (``URLError``, timeouts) raise
    :class:`DataError` saying where to put the files by hand. Returns ``data_dir``.
    """
    root = resolve_data_dir(data_dir)
    say = (lambda *a: print(*a, file=sys.stderr)) if show_progress else (lambda *a: None)
    if not force:
        try:
            report = verify(root)
        except DataError:
            report = None
        if report is not None and not any(r["missing"] for r in report.values()):
            say(f"{root} already holds the data set (pass force=True / --force to fetch again)")
            if show_progress:
                _print_report(report, root, file=sys.stderr)
            return root

    root.mkdir(parents=True, exist_ok=True)
    manual = (f"download it by hand from https://github.com/DSL-Lab/CPEN455HW-2023W2 (folder data/) "
              f"and put its contents into {root.resolve()} ({', '.join(s + '.csv' for s in SPLITS)} "
              f"and the {'/, '.join(SPLITS)}/ folders), or set ${ENV_VAR} to a folder that has them")
    with tempfile.TemporaryDirectory(prefix=".pcnn-download-", dir=root) as tmp:
        tmp = Path(tmp)
        zpath = tmp / "archive.zip"
        say(f"downloading {url} ...")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(zpath, "wb") as out:
                total = 0
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    total += len(chunk)
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise DataError(f"cannot download the CPEN455 data from {url} ({reason}); you may be "
                            f"offline: {manual}") from e
        say(f"downloaded {total / 2**20:.1f} MiB; unpacking data/ ...")
        try:
            with zipfile.ZipFile(zpath) as zf:
                prefix = _find_data_prefix(zf.namelist())
                staged = tmp / "data"
                staged.mkdir()
                n = _safe_extract(zf, prefix, staged)
        except zipfile.BadZipFile as e:
            raise DataError(f"{url} is not a valid zip archive ({e}); {manual}") from e
        zpath.unlink()
        try:
            report = verify(staged)
        except DataError as e:
            raise DataError(f"the downloaded data set is incomplete: {e}") from e
        missing = {s: r["missing"] for s, r in report.items() if r["missing"]}
        if missing:
            desc = "; ".join(f"{s}: {len(m)} missing, e.g. {m[0]}" for s, m in missing.items())
            raise DataError(f"the downloaded data set is incomplete (images listed in the CSVs "
                            f"are absent: {desc}); {manual}")
        owned = {f"{s}.csv" for s in SPLITS} | set(SPLITS)
        for entry in sorted(staged.iterdir()):
            target = root / entry.name
            if target.exists() or target.is_symlink():
                if entry.name not in owned:
                    continue  # never overwrite our own README.md etc.
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            shutil.move(str(entry), str(target))
    say(f"unpacked {n} files into {root}")
    if show_progress:
        _print_report(verify(root), root, file=sys.stderr)
    return root


# ---------------------------------------------------------------------------------------------
# CLI: `pcnn data download|info`
# ---------------------------------------------------------------------------------------------

def _cmd_download(args) -> int:
    try:
        download(args.data_dir, url=args.url, timeout=args.timeout, force=args.force)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_info(args) -> int:
    root = resolve_data_dir(args.data_dir)
    status = 0
    print(f"data folder: {root}")
    if not any((root / f"{s}.csv").is_file() for s in args.splits):
        print(f"error: no data set there: {_where_to_put(root)}")
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


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``data`` (subcommands ``download`` and ``info``); each ``func(args)`` returns an exit code."""
    p = subparsers.add_parser("data", help="download or inspect the CPEN455 data set",
                              description="Download or inspect the CPEN455 data set.")
    sub = p.add_subparsers(dest="data_command", metavar="{download,info}")
    sub.required = True
    dirhelp = f"data folder (default: ${ENV_VAR}, else ./data)"

    d = sub.add_parser("download", help="fetch the course's public copy and verify it")
    d.add_argument("--data-dir", default=None, help=dirhelp)
    d.add_argument("--url", default=COURSE_URL, help="zip of the course repository (default: %(default)s)")
    d.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default: %(default)s)")
    d.add_argument("--force", action="store_true", help="fetch even if the data set is already there")
    d.set_defaults(func=_cmd_download)

    i = sub.add_parser("info", help="images per split and class, and missing files")
    i.add_argument("--data-dir", default=None, help=dirhelp)
    i.add_argument("--splits", nargs="+", default=list(SPLITS), help="splits to list (default: all)")
    i.set_defaults(func=_cmd_info)
    return p
