"""Interactive class-conditional sampling in a notebook (ipywidgets).

``SamplerWidget(model)`` shows a class Dropdown (by name), the number of images,
a seed, a **Sample** button, a progress bar and the images, and a **Save** button
that writes them as PNG. The callbacks are plain methods (``on_sample(button)``,
``on_save(button)``), so tests and notebooks drive the widget headlessly.

Live rows: :func:`pcnn.sampling.sample.sample` reports ``progress(rows_done, rows_total)``
and ``preview(rows_done, images_so_far)`` after each image row; the widget
advances its bar and redraws the grid, so the images form row by row (the rows
not yet sampled are mid-grey). Redrawing is throttled to every ``preview_every``
rows, since encoding a PNG per row would cost more than sampling a small model.

Tiles keep one size whatever the count (the image element is sized to the PNG's
pixels, never stretched to the output width). **Save PNGs** writes the files and
offers them as one zip through a download link (a ``data:`` URI, so it works on
Colab, Kaggle and Jupyter alike). Displayed, a widget also carries a static PNG of
its last grid in its output bundle: viewers without a widget manager (GitHub) show
that image, viewers with saved widget state (nbviewer, Voila, Jupyter) the widget.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from pcnn.model.config import CPEN455_CLASSES
from pcnn.viz.grids import completion_grid
from pcnn.sampling.guidance import (DEFAULT_GUIDE, GUIDES, RECOMMENDED, GuidanceSetting, Schedule, recommended_guidance)
from pcnn.sampling.sample import complete, sample
from pcnn.sampling.sets import make_grid, save_png
from pcnn.model.config import class_names_for


def _zip_bytes(paths) -> bytes:
    """The files ``paths`` in one zip archive (by file name), as bytes."""
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in paths:
            z.write(p, Path(p).name)
    return buf.getvalue()


def download_link(data: bytes, filename: str, text: str, mime: str = "application/zip") -> str:
    """An HTML ``<a download>`` link holding ``data`` as a base64 ``data:`` URI (no server path needed)."""
    import base64
    import html
    href = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return f'<a download="{html.escape(filename)}" href="{href}">{html.escape(text)}</a>'


def _bundle(widget, png: Optional[bytes], text: str, **kw) -> dict:
    """``widget``'s mime bundle plus a static ``image/png`` fallback and a plain-text line."""
    import base64
    data = widget._repr_mimebundle_(**kw) or {}
    data = dict(data[0] if isinstance(data, tuple) else data)
    if png:
        data["image/png"] = base64.b64encode(png).decode("ascii")
    data["text/plain"] = text
    return data


def _png_bytes(image: torch.Tensor, upscale: int = 1) -> bytes:
    """uint8 (3, H, W) -> PNG bytes (nearest-neighbour upscaled by ``upscale``)."""
    import io
    from PIL import Image
    img = Image.fromarray(image.cpu().permute(1, 2, 0).numpy())
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


#: The schedules the widgets offer (the interval is issue #34's, fixed before measuring).
SCHEDULE_CHOICES = ("constant", "ramp", "interval:0:16")


def start_setting(model, guidance, guide: str, plausible: float, schedule) -> GuidanceSetting:
    """The guided setting a widget starts at: ``guidance="recommended"`` is the checkpoint's
    recommendation (:func:`pcnn.sampling.guidance.recommended_guidance`), or w = 0 when it carries none
    or the model is unconditional; a number takes ``guide``, ``plausible``, ``schedule`` as given."""
    if isinstance(guidance, str) and guidance.strip().lower() == RECOMMENDED:
        if not model.config.conditional:
            return GuidanceSetting(0.0)
        try:
            return recommended_guidance(model)
        except ValueError:   # no recommendation in the checkpoint: start unguided
            return GuidanceSetting(0.0)
    return GuidanceSetting(guidance, guide, plausible, str(Schedule.parse(schedule)))


def _schedule_options(current: str) -> list:
    return list(SCHEDULE_CHOICES) + ([current] if current not in SCHEDULE_CHOICES else [])


def _setting_stem(w: float, alpha: float, schedule: str) -> str:
    """``_w4_a0.1_ramp``-style suffix of saved file names ("" at w = 0)."""
    if w == 0:
        return ""
    sch = "" if schedule == "constant" else "_" + schedule.replace(":", "", 1).replace(":", "-")
    return f"_w{w:g}" + (f"_a{alpha:g}" if alpha > 0 else "") + sch


class SamplerWidget:
    """ipywidgets UI around :func:`pcnn.sampling.sample.sample` for one model.

    Attributes tests may set/read: ``class_dropdown`` (value: class index, labels:
    names), ``count`` (IntSlider), ``seed`` (IntText), ``sample_button``,
    ``save_button``, ``progress`` (IntProgress, 0..100 %), ``status`` (Label),
    ``image`` (ipywidgets.Image with the PNG grid, ``upscale`` x nearest-neighbour: tiles
    of ``S * upscale`` pixels whatever the count, ``ncol`` per row), ``download`` (HTML
    with the zip link after a save), ``guidance`` (FloatSlider: class guidance w, 0 = the
    model's own distribution), ``guide`` (Dropdown of :data:`pcnn.sampling.guidance.GUIDES`), ``plausible``
    (FloatSlider: the plausibility constraint alpha) and ``schedule`` (Dropdown: constant, ramp,
    interval:0:16), starting at the checkpoint's recommended guidance (``guidance="recommended"``,
    the default; w = 0 when the checkpoint carries none), ``images`` (last uint8 batch (N, 3, S, S) or None),
    ``last_saved`` (paths written by the last save), ``grid_png`` (the last PNG grid).
    ``display()`` / ``widget`` show it. CSS classes ``pcnn-sampler``, ``pcnn-grid`` and
    ``pcnn-status`` name the parts for browser tests.
    """

    def __init__(self, model, class_names: Sequence[str] = CPEN455_CLASSES, out_dir="samples/widget",
                 max_count: int = 16, upscale: int = 4, method: Optional[str] = None,
                 preview_every: int = 4, ncol: int = 8, guidance=RECOMMENDED, guide: str = DEFAULT_GUIDE,
                 plausible: float = 0.0, schedule: str = "constant"):
        import ipywidgets as W
        self.preview_every = max(1, int(preview_every))  # redraw the forming images every N rows
        self.preview_frames = 0
        self.model = model
        cfg = model.config
        n = cfg.num_classes if cfg.conditional else 1
        self.class_names = class_names_for(n, class_names) if cfg.conditional else ["(unconditional)"]
        self.out_dir = Path(out_dir)
        self.upscale = upscale
        self.ncol = max(1, int(ncol))
        self.grid_png: Optional[bytes] = None
        self.method = method
        self.images: Optional[torch.Tensor] = None
        self.labels: Optional[torch.Tensor] = None
        self.drawn: Optional[tuple] = None   # (class, seed, w, alpha, schedule) of the images shown
        start = start_setting(model, guidance, guide, plausible, schedule)
        self.last_saved: list = []
        self.busy = False

        self.class_dropdown = W.Dropdown(options=[(nm, i) for i, nm in enumerate(self.class_names)], value=0,
                                         description="class")
        self.count = W.IntSlider(value=min(4, max_count), min=1, max=max_count, description="images")
        self.seed = W.IntText(value=0, description="seed")
        # Every w draws with the exact 256-bin sampler (exact_bins), so one seed gives the same
        # noise at every w and moving the slider shows what guidance changes, nothing else.
        self.guidance = W.FloatSlider(value=start.w, min=0.0, max=max(8.0, start.w), step=0.5,
                                      description="guidance", disabled=not cfg.conditional, readout_format=".1f")
        self.guide = W.Dropdown(options=list(GUIDES), value=start.guide, description="guide",
                                disabled=not cfg.conditional, layout=W.Layout(width="220px"))
        # the plausibility constraint and the schedule (pcnn.sampling.guidance; results/guidance/ measures them)
        self.plausible = W.FloatSlider(value=start.plausible, min=0.0, max=0.5, step=0.01, description="alpha",
                                       disabled=not cfg.conditional, readout_format=".2f")
        self.schedule = W.Dropdown(options=_schedule_options(start.schedule), value=start.schedule,
                                   description="schedule", disabled=not cfg.conditional,
                                   layout=W.Layout(width="260px"))
        self.sample_button = W.Button(description="Sample", button_style="primary", icon="random")
        self.save_button = W.Button(description="Save PNGs", icon="save", disabled=True)
        self.progress = W.IntProgress(value=0, min=0, max=100, description="rows")
        self.status = W.Label(value="choose a class, the number of images and a seed, then press Sample")
        self.image = W.Image(format="png", layout=W.Layout(width="0px", height="0px"))
        self.download = W.HTML(value="")
        self.browser_out = W.Output()   # Colab's files.download() runs its JavaScript in here
        self.sample_button.on_click(self.on_sample)
        self.save_button.on_click(self.on_save)
        self.status.add_class("pcnn-status")
        self.image.add_class("pcnn-grid")
        self.widget = W.VBox([
            W.HBox([self.class_dropdown, self.count, self.seed]),
            W.HBox([self.guidance, self.guide, self.plausible, self.schedule]),
            W.HBox([self.sample_button, self.save_button, self.progress, self.status]),
            self.download, self.browser_out,
            W.Box([self.image], layout=W.Layout(overflow="auto", max_width="100%")),
        ])
        self.widget.add_class("pcnn-sampler")

    # ------------------------------------------------------------------ callbacks
    def _on_progress(self, rows: int, total: int) -> None:
        self.progress.value = int(round(100 * rows / total))
        self.status.value = f"row {rows} / {total}"

    def grid_size(self, n: int) -> tuple:
        """(width, height) in pixels of the grid of ``n`` images: ``min(n, ncol)`` tiles of
        ``S * upscale`` pixels per row with 2-pixel gaps (also upscaled)."""
        s, pad = self.model.config.image_size, 2
        ncol = min(n, self.ncol)
        nrow = -(-n // ncol)
        return ((ncol * (s + pad) + pad) * self.upscale, (nrow * (s + pad) + pad) * self.upscale)

    def _show(self, images: torch.Tensor) -> None:
        """Draw ``images`` as the grid, the image element sized to the PNG's own pixels."""
        grid = make_grid(images.cpu(), nrow=min(len(images), self.ncol))
        self.grid_png = _png_bytes(grid, self.upscale)
        w, h = self.grid_size(len(images))
        self.image.layout.width, self.image.layout.height = f"{w}px", f"{h}px"
        self.image.value = self.grid_png

    def _on_preview(self, rows: int, images: torch.Tensor) -> None:
        self.preview_frames += 1
        if rows % self.preview_every == 0 or rows == images.shape[-2]:
            self._show(images)

    def on_sample(self, button=None) -> torch.Tensor:
        """Sample ``count`` images of the chosen class with ``seed``; show them; return uint8 (N,3,S,S)."""
        if self.busy:
            return self.images
        self.busy = True
        self.sample_button.disabled = True
        self.save_button.disabled = True
        self.download.value = ""
        self.progress.value = 0
        try:
            c, n = int(self.class_dropdown.value), int(self.count.value)
            labels = torch.full((n,), c, dtype=torch.long)
            gen = torch.Generator().manual_seed(int(self.seed.value))
            kw = {} if self.method is None else {"method": self.method}
            w = float(self.guidance.value) if self.model.config.conditional else 0.0
            alpha, sch = float(self.plausible.value), str(self.schedule.value)
            if self.model.config.conditional:
                kw.update(guidance=w, guide=self.guide.value, exact_bins=True, plausible=alpha, schedule=sch)
            t0 = time.perf_counter()
            self.preview_frames = 0
            imgs = sample(self.model, labels, generator=gen, progress=self._on_progress,
                          preview=self._on_preview, **kw)
            self.images, self.labels = imgs.cpu(), labels
            self.drawn = (c, int(self.seed.value), w, alpha, sch)
            self._show(self.images)
            self.progress.value = 100
            how = f"guidance {w:g} ({self.guide.value}, alpha {alpha:g}, {sch})" if w > 0 else "no guidance"
            self.status.value = (f"done: {n} x {self.class_names[c]} (seed {int(self.seed.value)}, {how}) "
                                 f"in {time.perf_counter() - t0:.1f} s")
            self.save_button.disabled = False
        except Exception as e:  # shown in the UI, then re-raised for the caller
            self.status.value = f"error: {e}"
            raise
        finally:
            self.busy = False
            self.sample_button.disabled = False
        return self.images

    def file_names(self) -> list:
        """Names the next save uses: ``<class>_seed<seed>[_w<w>[_a<alpha>][_<schedule>]]_<nn>.png``, from
        what the shown images were drawn with (not the controls, which may have moved since)."""
        c, seed, w, alpha, sch = self.drawn if self.drawn is not None else (
            int(self.class_dropdown.value), int(self.seed.value), 0.0, 0.0, "constant")
        stem = f"{self.class_names[c]}_seed{seed}" + _setting_stem(w, alpha, sch)
        n = 0 if self.images is None else len(self.images)
        return [f"{stem}_{i:02d}.png" for i in range(n)]

    def on_save(self, button=None) -> list:
        """Write the last sampled images as PNGs into ``out_dir``; returns the paths."""
        if self.images is None:
            self.status.value = "nothing to save: press Sample first"
            return []
        paths = [save_png(img, self.out_dir / name) for img, name in zip(self.images, self.file_names())]
        self.last_saved = paths
        zip_name = self.file_names()[0].rsplit("_", 1)[0] + ".zip"
        data = _zip_bytes(paths)
        self.download.value = download_link(data, zip_name, f"download the {len(paths)} PNG(s) ({zip_name})")
        colab = sys.modules.get("google.colab")
        if colab is not None:   # Colab: also hand the zip to the browser's download directly
            from google.colab import files
            zip_path = self.out_dir / zip_name
            zip_path.write_bytes(data)
            with self.browser_out:
                files.download(str(zip_path))
        self.status.value = f"saved {len(paths)} PNG(s) to {self.out_dir.name}/"
        return paths

    # ------------------------------------------------------------------ display
    def display(self):
        from IPython.display import display
        display(self)
        return self

    def _repr_mimebundle_(self, **kw):  # the widget, plus its last grid as a static PNG for viewers without widgets
        what = "no images sampled yet" if self.images is None else self.status.value
        return _bundle(self.widget, self.grid_png, f"SamplerWidget ({what}); run the notebook to use it", **kw)


class CompletionWidget:
    """ipywidgets UI around :func:`pcnn.sampling.sample.complete`: "finish this panda as a pizza".

    Pick an image of ``images`` (uint8 (N, 3, S, S), e.g. the validation split) by
    ``index``, how many of its top rows to keep (``keep_rows``) and a ``seed``;
    **Complete** samples the remaining rows once per class with the same noise
    (so the completions differ only by the class, as
    :func:`pcnn.sampling.sample.complete_as_every_class`) and shows the original, the kept
    rows and one completion per class side by side. ``on_complete(button)``
    returns the completions, uint8 (C, 3, S, S), so tests drive it headlessly.
    ``guidance`` (a FloatSlider, w) completes with class guidance (the default guide, flat):
    every sampled sub-pixel is pushed toward what the chosen class predicts more than the class
    average does, given the kept rows, so a panda completed as a pizza takes the pizza's colours;
    ``plausible`` (alpha) and ``schedule`` as in :class:`SamplerWidget`. ``guidance="recommended"``
    starts at the checkpoint's recommended setting (its guide too).
    """

    def __init__(self, model, images: torch.Tensor, labels: Optional[torch.Tensor] = None,
                 class_names: Sequence[str] = CPEN455_CLASSES, upscale: int = 4, guidance=0.0,
                 plausible: float = 0.0, schedule: str = "constant"):
        import ipywidgets as W
        cfg = model.config
        if not cfg.conditional:
            raise ValueError("completing as every class needs a class-conditional model")
        s = cfg.image_size
        if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.dim() != 4 \
                or tuple(images.shape[1:]) != (3, s, s) or len(images) == 0:
            raise ValueError(f"images must be a non-empty uint8 tensor (N, 3, {s}, {s})")
        self.model, self.images, self.labels, self.upscale = model, images, labels, upscale
        self.class_names = class_names_for(cfg.num_classes, class_names)
        self.completions: Optional[torch.Tensor] = None
        self.busy = False
        self.index = W.BoundedIntText(value=0, min=0, max=len(images) - 1, description="image")
        self.keep_rows = W.IntSlider(value=s // 2, min=0, max=s, description="keep rows")
        self.seed = W.IntText(value=0, description="seed")
        start = start_setting(model, guidance, DEFAULT_GUIDE, plausible, schedule)
        self.guide_name = start.guide
        self.guidance = W.FloatSlider(value=start.w, min=0.0, max=max(8.0, start.w), step=0.5,
                                      description="guidance", readout_format=".1f")
        self.plausible = W.FloatSlider(value=start.plausible, min=0.0, max=0.5, step=0.01, description="alpha",
                                       readout_format=".2f")
        self.schedule = W.Dropdown(options=_schedule_options(start.schedule), value=start.schedule,
                                   description="schedule", layout=W.Layout(width="260px"))
        self.button = W.Button(description="Complete as every class", button_style="primary", icon="magic",
                               layout=W.Layout(width="220px"))
        self.progress = W.IntProgress(value=0, min=0, max=100, description="rows")
        self.status = W.Label(value="choose an image and the rows to keep, then press Complete")
        self.grid_png: Optional[bytes] = None
        # sized to the PNG's own pixels (set on each draw) instead of stretching to the output width
        self.image = W.Image(format="png", layout=W.Layout(width="0px", height="0px"))
        self.button.on_click(self.on_complete)
        self.widget = W.VBox([W.HBox([self.index, self.keep_rows, self.seed]),
                              W.HBox([self.guidance, self.plausible, self.schedule]),
                              W.HBox([self.button, self.progress, self.status]),
                              W.Box([self.image], layout=W.Layout(overflow="auto", max_width="100%"))])

    def on_complete(self, button=None) -> torch.Tensor:
        """Complete the chosen image as every class; show and return uint8 (C, 3, S, S)."""
        if self.busy:
            return self.completions
        self.busy, self.button.disabled, self.progress.value = True, True, 0
        try:
            i, keep, seed = int(self.index.value), int(self.keep_rows.value), int(self.seed.value)
            w, alpha, sch = float(self.guidance.value), float(self.plausible.value), str(self.schedule.value)
            c_all = len(self.class_names)
            t0 = time.perf_counter()
            outs = []
            for c in range(c_all):
                def tick(done, total, c=c):
                    self.progress.value = int(round(100 * (c + done / total) / c_all))
                    self.status.value = f"as {self.class_names[c]}: row {done} / {total}"
                outs.append(complete(self.model, self.images[i:i + 1], [c], keep,
                                     generator=torch.Generator().manual_seed(seed), progress=tick,
                                     guidance=w, guide=self.guide_name, plausible=alpha, schedule=sch,
                                     exact_bins=True)[0])
            self.completions = torch.stack(outs).cpu()
            grid = completion_grid(self.images[i:i + 1], self.completions[None], keep, class_names=self.class_names)
            self.grid_png = _png_bytes(grid)
            self.image.layout.width, self.image.layout.height = f"{grid.shape[2]}px", f"{grid.shape[1]}px"
            self.image.value = self.grid_png
            true = "" if self.labels is None else f" (a {self.class_names[int(self.labels[i])]})"
            self.progress.value = 100
            how = f"guidance {w:g}" + (f" (alpha {alpha:g}, {sch})" if w > 0 else "")
            self.status.value = (f"image {i}{true}, top {keep} rows kept, seed {seed}, {how}: done in "
                                 f"{time.perf_counter() - t0:.1f} s")
        except Exception as e:  # shown in the UI, then re-raised for the caller
            self.status.value = f"error: {e}"
            raise
        finally:
            self.busy, self.button.disabled = False, False
        return self.completions

    def display(self):
        from IPython.display import display
        display(self)
        return self

    def _repr_mimebundle_(self, **kw):
        what = "nothing completed yet" if self.completions is None else self.status.value
        return _bundle(self.widget, self.grid_png, f"CompletionWidget ({what}); run the notebook to use it", **kw)
