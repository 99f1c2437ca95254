"""The CPEN455 image data: reading the CSVs, decoding and resizing, checking.

Layout (the course's own, see ``data/README.md``)::

    <data_dir>/train.csv  validation.csv  test.csv   # no header, rows `train/0000001.jpg,0`
    <data_dir>/train/*.jpg  validation/*.jpg  test/*.jpg

The folder is :func:`pcnn.paths.resolve_data_dir`: an explicit argument, else
``$PCNN_DATA_DIR``, else ``data/`` in the checkout (``./data`` for a wheel).

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
* label not an integer or not in ``-1..len(CPEN455_CLASSES)-1`` -> :class:`DataError`
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

Augmentation and the opt-in normalisation are :mod:`pcnn.data.augment`; downloading is
:mod:`pcnn.data.download`.
"""
from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from pcnn.model.config import CPEN455_CLASSES
from pcnn.paths import DATA_ENV_VAR, resolve_data_dir

#: The course's splits, each ``<split>.csv`` + ``<split>/`` folder.
SPLITS = ("train", "validation", "test")

_RESIZE_CHUNK = 512  # images resized per batch (bounds the float32 working memory)
#: Largest image :func:`load_split` decodes, read from the file's header before any pixel
#: is decoded (a 4 MB JPEG can claim 16000x16000 pixels and take 8 GB to decode).
MAX_PIXELS = "4096x4096"
#: Environment variable overriding :data:`MAX_PIXELS` (``WxH`` or a pixel count).
MAX_PIXELS_ENV = "PCNN_MAX_IMAGE_PIXELS"


class DataError(ValueError):
    """The data set is missing or malformed; the message says which file/row and what to do."""


def where_to_put(root: Path) -> str:
    """The sentence that says how to get the data set into ``root``."""
    return (f"put the CPEN455 files there ({', '.join(s + '.csv' for s in SPLITS)} and the "
            f"{'/, '.join(SPLITS)}/ image folders, the layout of data/ in the course repository "
            f"DSL-Lab/CPEN455HW-2023W2), point ${DATA_ENV_VAR} or --data-dir at a folder that has them, "
            f"or run `python -m pcnn data download --data-dir {root}`")


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Row:
    line: int     # 1-based line number in the CSV
    path: str     # as written in the CSV, e.g. "train/0000001.jpg"
    label: int    # -1..len(CPEN455_CLASSES)-1


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
        raise DataError(f"{path} not found (split {split!r}); {where_to_put(root)}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    hi = len(CPEN455_CLASSES) - 1
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
                            f"(unlabelled) or 0..{hi} ({', '.join(CPEN455_CLASSES)})") from None
        if not -1 <= label <= hi:
            raise DataError(f"{where} ({rel}): unknown label {label}; expected -1 (unlabelled) "
                            f"or 0..{hi} ({', '.join(CPEN455_CLASSES)})")
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


def read_image(path, size: int) -> torch.Tensor:
    """One image file -> uint8 (1, 3, size, size), decoded and resized as :func:`load_split`
    does; ``ValueError`` if it cannot be read."""
    try:
        data = Path(path).read_bytes()
        img = _decode_rgb(data)
    except (OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    return resize_uint8(img[None].contiguous(), size)


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
        out = {n: int((self.labels == i).sum()) for i, n in enumerate(CPEN455_CLASSES)}
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
        classes = {n: 0 for n in CPEN455_CLASSES}
        unl = 0
        for r in rows:
            if r.label < 0:
                unl += 1
            else:
                classes[CPEN455_CLASSES[r.label]] += 1
        if unl:
            classes["unlabelled"] = unl
        missing = [r.path for r in rows if not (root / r.path).is_file()]
        report[split] = {"n": len(rows), "missing": missing, "classes": classes}
    return report
