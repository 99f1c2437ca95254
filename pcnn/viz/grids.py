"""Readable image grids: class names as row labels, tiles upscaled (nearest) to a visible size.

One drawing helper, :func:`labeled_grid`, takes a table of uint8 tiles
(rows x columns, ``None`` for an empty cell) with optional row and column
labels and returns one uint8 (3, H, W) image (save it with
:func:`pcnn.sampling.sets.save_png`, show it with :func:`pcnn.notebook.runtime.show_grid`).
Built on it:

* :func:`class_grid` - one row per class of samples, optionally followed by a
  row of real images of the same class (used by ``python -m pcnn sample``, the
  demo and the notebooks);
* :func:`completion_grid` - per source image: the original, the kept rows, and
  its completion as each class.

Labels are drawn with PIL's built-in font; nothing is downloaded. The grid of
samples from one noise draw, :func:`pcnn.viz.samples.same_noise_grid`, lives with the sampler.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from pcnn.model.config import class_names_for

WHITE = 255


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        return ImageFont.load_default()


def _text_size(draw, text: str, font) -> tuple:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1 - x0, y1 - y0


def labeled_grid(tiles: Sequence[Sequence[Optional[torch.Tensor]]], row_labels: Optional[Sequence[str]] = None,
                 col_labels: Optional[Sequence[str]] = None, scale: int = 4, pad: int = 2,
                 font_size: int = 14) -> torch.Tensor:
    """A table of uint8 (3, h, w) tiles -> one uint8 (3, H, W) image on white.

    ``tiles[r][c]`` may be ``None`` (left blank); all tiles share one size.
    Every tile is upscaled ``scale`` times by nearest neighbour (pixels stay
    sharp squares). ``row_labels`` are drawn left of the rows, ``col_labels``
    above the columns.
    """
    from PIL import Image, ImageDraw
    rows = [list(r) for r in tiles]
    if not rows or not any(t is not None for r in rows for t in r):
        raise ValueError("labeled_grid needs at least one tile")
    if scale < 1 or pad < 0:
        raise ValueError(f"scale must be >= 1 and pad >= 0, got {scale}, {pad}")
    ref = next(t for r in rows for t in r if t is not None)
    h, w = ref.shape[-2:]
    for r in rows:
        for t in r:
            if t is not None and (t.dtype != torch.uint8 or tuple(t.shape) != (3, h, w)):
                raise ValueError(f"tiles must be uint8 (3, {h}, {w}), got {t.dtype} {tuple(t.shape)}")
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    if row_labels is not None and len(row_labels) != n_rows:
        raise ValueError(f"{len(row_labels)} row labels for {n_rows} rows")
    if col_labels is not None and len(col_labels) > n_cols:
        raise ValueError(f"{len(col_labels)} column labels for {n_cols} columns")
    th, tw = h * scale, w * scale
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 0 if not row_labels else max(_text_size(probe, s, font)[0] for s in row_labels) + 3 * pad + 4
    top = 0 if not col_labels else max(_text_size(probe, s, font)[1] for s in col_labels) + 3 * pad + 4
    # a column is as wide as its tile or its label, whichever is wider (the tile is centred)
    cw = max([tw] + [_text_size(probe, s, font)[0] + 2 * pad for s in (col_labels or [])])
    width = left + n_cols * (cw + pad) + pad
    height = top + n_rows * (th + pad) + pad
    canvas = Image.new("RGB", (width, height), (WHITE,) * 3)
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        y = top + pad + r * (th + pad)
        if row_labels:
            tw_, th_ = _text_size(draw, row_labels[r], font)
            draw.text((left - tw_ - 2 * pad - 2, y + (th - th_) // 2), row_labels[r], fill=(0, 0, 0), font=font)
        for c, t in enumerate(row):
            if t is None:
                continue
            tile = Image.fromarray(t.cpu().permute(1, 2, 0).numpy()).resize((tw, th), Image.NEAREST)
            canvas.paste(tile, (left + pad + c * (cw + pad) + (cw - tw) // 2, y))
    for c, s in enumerate(col_labels or []):
        tw_, _ = _text_size(draw, s, font)
        draw.text((left + pad + c * (cw + pad) + (cw - tw_) // 2, pad), s, fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()


def class_grid(images: torch.Tensor, labels, class_names: Optional[Sequence[str]] = None,
               real_images: Optional[torch.Tensor] = None, real_labels=None, per_row: Optional[int] = None,
               scale: int = 4, pad: int = 2, font_size: int = 14) -> torch.Tensor:
    """Samples (N, 3, S, S) with their classes (N,) -> a grid with one labelled row per class.

    Classes appear in increasing order; each row holds that class's images (at
    most ``per_row``, default all). With ``real_images``/``real_labels`` a row
    ``"<name> (real)"`` of real images of the class follows each sample row, which is then
    labelled ``"<name> (generated)"``.
    """
    labels = torch.as_tensor(labels).long().cpu()
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    classes = sorted(set(labels.tolist()))
    names = class_names_for(max(classes) + 1, class_names)
    rows, row_labels = [], []
    if real_images is not None:
        real_labels = torch.as_tensor(real_labels).long().cpu()
        if real_images.shape[0] != real_labels.shape[0]:
            raise ValueError(f"{real_images.shape[0]} real images but {real_labels.shape[0]} labels")
    for c in classes:
        mine = images[labels == c]
        rows.append(list(mine[:per_row] if per_row else mine))
        row_labels.append(names[c] if real_images is None else f"{names[c]} (generated)")
        if real_images is not None:
            real = real_images[real_labels == c]
            n = len(rows[-1])
            rows.append(list(real[:n]))
            row_labels.append(f"{names[c]} (real)")
    return labeled_grid(rows, row_labels, scale=scale, pad=pad, font_size=font_size)


def masked(images: torch.Tensor, keep_rows: int, fill: int = 128) -> torch.Tensor:
    """uint8 images with every row from ``keep_rows`` on set to ``fill`` (what completion is given)."""
    out = images.clone()
    out[..., keep_rows:, :] = fill
    return out


def completion_grid(originals: torch.Tensor, completions: torch.Tensor, keep_rows: int,
                    class_names: Optional[Sequence[str]] = None, row_labels: Optional[Sequence[str]] = None,
                    scale: int = 4) -> torch.Tensor:
    """Per source image one row: the original, the kept rows (rest mid-grey), then one completion per class.

    ``originals`` uint8 (N, 3, S, S); ``completions`` uint8 (N, C, 3, S, S), completion
    ``[n, c]`` of image n as class c (e.g. from :func:`pcnn.sampling.sample.complete` on the
    images repeated once per class). Columns are labelled with the class names.
    """
    if completions.dim() != 5 or completions.shape[0] != originals.shape[0]:
        raise ValueError(f"completions must be (N, C, 3, S, S) for {originals.shape[0]} originals, "
                         f"got {tuple(completions.shape)}")
    names = class_names_for(completions.shape[1], class_names)
    keep = masked(originals, keep_rows)
    rows = [[originals[n], keep[n], *completions[n]] for n in range(originals.shape[0])]
    cols = ["original", f"first {keep_rows} rows", *[f"as {s}" for s in names]]
    return labeled_grid(rows, row_labels, col_labels=cols, scale=scale)
