"""SamplerWidget driven headlessly: set the controls, call the click handlers, check the images."""
import pytest
import torch

pytest.importorskip("ipywidgets")

import pcnn  # noqa: E402
from pcnn.notebook.widgets import SamplerWidget  # noqa: E402

from conftest import randomize_, tiny_config  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def widget(tmp_path):
    torch.manual_seed(0)
    model = randomize_(pcnn.PixelCNNpp(tiny_config(image_size=8))).eval()
    return SamplerWidget(model, out_dir=tmp_path / "out")


def test_sample_click_produces_images(widget):
    widget.class_dropdown.value = 2
    widget.count.value = 3
    widget.seed.value = 7
    seen = []
    widget.progress.observe(lambda ch: seen.append(ch["new"]), names="value")
    imgs = widget.on_sample(widget.sample_button)
    assert imgs.shape == (3, 3, 8, 8) and imgs.dtype == torch.uint8
    assert widget.progress.value == 100 and 100 in seen and len(set(seen)) > 2  # advanced row by row
    assert widget.labels.tolist() == [2, 2, 2]
    assert widget.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert widget.preview_frames == 8  # the forming images were handed over after every row
    assert not widget.save_button.disabled and not widget.sample_button.disabled
    # Same seed and class -> same images, and they equal a direct call of pcnn.sample.
    again = widget.on_sample(None)
    assert torch.equal(imgs, again)
    direct = pcnn.sample(widget.model, [2, 2, 2], generator=torch.Generator().manual_seed(7), exact_bins=True)
    assert torch.equal(imgs, direct)
    widget.seed.value = 8
    assert not torch.equal(imgs, widget.on_sample(None))


def test_button_click_and_save(widget, tmp_path):
    from PIL import Image
    import numpy as np
    widget.class_dropdown.value = 1
    widget.count.value = 2
    widget.seed.value = 3
    assert widget.on_save(None) == []  # nothing sampled yet
    widget.sample_button.click()  # the real ipywidgets click path
    assert widget.images.shape == (2, 3, 8, 8)
    widget.save_button.click()
    paths = widget.last_saved
    names = sorted(p.name for p in paths)
    assert names == ["panda_seed3_00.png", "panda_seed3_01.png"]
    for p, img in zip(paths, widget.images):
        assert p.parent == tmp_path / "out"
        arr = np.asarray(Image.open(p))
        assert arr.shape == (8, 8, 3) and np.array_equal(arr, img.permute(1, 2, 0).numpy())


def test_class_names_in_dropdown(widget):
    labels = [lab for lab, _ in widget.class_dropdown.options]
    assert labels == list(pcnn.model.config.CPEN455_CLASSES)


def test_completion_widget_completes_as_every_class():
    from pcnn.notebook.widgets import CompletionWidget
    torch.manual_seed(0)
    model = randomize_(pcnn.PixelCNNpp(tiny_config())).eval()
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (3, 3, 8, 8), generator=g, dtype=torch.uint8)
    w = CompletionWidget(model, images, labels=torch.tensor([2, 0, 1]))
    w.index.value, w.keep_rows.value, w.seed.value = 1, 3, 5
    out = w.on_complete(w.button)
    assert out.shape == (4, 3, 8, 8) and out.dtype == torch.uint8
    assert torch.equal(out[:, :, :3], images[1:2, :, :3].expand(4, -1, -1, -1))   # kept rows untouched
    want = pcnn.complete_as_every_class(model, images[1:2], 3, seed=5, exact_bins=True)[0]
    assert torch.equal(out, want)                       # same noise for every class, as the library does
    assert len({bytes(o.numpy()) for o in out}) > 1      # the classes really differ
    assert w.progress.value == 100 and "done" in w.status.value
    assert "(a hamburger)" in w.status.value             # image 1 is labelled class 0
    assert w.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    w.keep_rows.value = 8                                # everything kept: the completions are the image
    assert torch.equal(w.on_complete(), images[1:2].expand(4, -1, -1, -1))


def test_completion_widget_rejects_bad_input():
    from pcnn.notebook.widgets import CompletionWidget
    model = pcnn.PixelCNNpp(tiny_config()).eval()
    with pytest.raises(ValueError, match="uint8"):
        CompletionWidget(model, torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="uint8"):
        CompletionWidget(model, torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="class-conditional"):
        CompletionWidget(pcnn.PixelCNNpp(tiny_config(fusion="none")), torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_tiles_keep_their_size_whatever_the_count(widget):
    from PIL import Image
    import io
    assert widget.image.layout.width == "0px"                      # nothing drawn before a click
    assert "press Sample" in widget.status.value
    for n, want in ((1, ((8 + 2) * 1 + 2, 12)), (3, ((8 + 2) * 3 + 2, 12)), (10, ((8 + 2) * 8 + 2, 2 * 10 + 2))):
        widget.count.value = n
        widget.on_sample()
        w, h = (4 * want[0], 4 * want[1])                          # upscale 4
        assert widget.grid_size(n) == (w, h)
        assert Image.open(io.BytesIO(widget.image.value)).size == (w, h)
        assert (widget.image.layout.width, widget.image.layout.height) == (f"{w}px", f"{h}px")
        assert widget.status.value.startswith(f"done: {n} x hamburger")


def test_save_offers_a_zip_download(widget):
    import base64
    import io
    import re
    import zipfile
    widget.count.value = 2
    widget.on_sample()
    assert widget.download.value == ""
    paths = widget.on_save()
    m = re.search(r'download="([^"]+)" href="data:application/zip;base64,([^"]+)"', widget.download.value)
    assert m and m.group(1) == "hamburger_seed0.zip"
    z = zipfile.ZipFile(io.BytesIO(base64.b64decode(m.group(2))))
    assert sorted(z.namelist()) == sorted(p.name for p in paths)
    assert z.read(paths[0].name) == paths[0].read_bytes()
    widget.on_sample()
    assert widget.download.value == ""                             # a new sample drops the old link


def test_mime_bundle_has_widget_view_and_png_fallback(widget):
    import base64
    before = widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in before and "image/png" not in before
    assert "no images sampled yet" in before["text/plain"]
    widget.on_sample()
    after = widget._repr_mimebundle_()
    assert base64.b64decode(after["image/png"]) == widget.grid_png == widget.image.value
    assert after["application/vnd.jupyter.widget-view+json"]["model_id"] == widget.widget.model_id
    assert "done:" in after["text/plain"]


def test_download_link_escapes():
    from pcnn.notebook.widgets import download_link
    html = download_link(b"abc", 'a"b.zip', "get <it>")
    assert html == '<a download="a&quot;b.zip" href="data:application/zip;base64,YWJj">get &lt;it&gt;</a>'


def test_save_on_colab_also_downloads_the_zip(widget, monkeypatch):
    import sys
    import types
    got = []
    colab = types.ModuleType("google.colab")
    colab.files = types.SimpleNamespace(download=lambda path: got.append(path))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.files", colab.files)
    widget.count.value = 2
    widget.on_sample()
    widget.on_save()
    assert got == [str(widget.out_dir / "hamburger_seed0.zip")]
    import zipfile
    assert sorted(zipfile.ZipFile(got[0]).namelist()) == ["hamburger_seed0_00.png", "hamburger_seed0_01.png"]


def test_guidance_slider_changes_only_what_guidance_changes(widget, tmp_path):
    """The same seed at w = 0 and w = 2: the widget's images are the library's guided samples
    (exact 256-bin draw at every w, so the noise is shared), and saves name the w."""
    widget.class_dropdown.value, widget.count.value, widget.seed.value = 3, 2, 4
    plain = widget.on_sample(None)
    assert "no guidance" in widget.status.value
    widget.guidance.value, widget.guide.value = 2.0, "flat"
    guided = widget.on_sample(None)
    assert "guidance 2 (flat, alpha 0, constant)" in widget.status.value
    want = pcnn.sample(widget.model, [3, 3], generator=torch.Generator().manual_seed(4), guidance=2.0, guide="flat")
    assert torch.equal(guided, want) and not torch.equal(plain, guided)
    assert [p.name for p in widget.on_save(None)] == ["pizza_seed4_w2_00.png", "pizza_seed4_w2_01.png"]
    widget.guidance.value, widget.seed.value = 0.0, 9     # controls moved after sampling: names follow the images
    assert widget.file_names() == ["pizza_seed4_w2_00.png", "pizza_seed4_w2_01.png"]


def test_completion_widget_guidance():
    from pcnn.notebook.widgets import CompletionWidget
    torch.manual_seed(0)
    model = randomize_(pcnn.PixelCNNpp(tiny_config())).eval()
    images = torch.randint(0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    w = CompletionWidget(model, images, guidance=2.0)
    w.keep_rows.value, w.seed.value = 4, 1
    out = w.on_complete()
    want = pcnn.complete_as_every_class(model, images[:1], 4, seed=1, guidance=2.0)[0]
    assert torch.equal(out, want) and "guidance 2" in w.status.value


def test_alpha_and_schedule_controls_reach_the_sampler_and_the_file_names(widget):
    widget.class_dropdown.value, widget.count.value, widget.seed.value = 1, 2, 3
    widget.guidance.value, widget.plausible.value, widget.schedule.value = 4.0, 0.1, "ramp"
    got = widget.on_sample(None)
    want = pcnn.sample(widget.model, [1, 1], generator=torch.Generator().manual_seed(3), guidance=4.0, guide="flat",
                       plausible=0.1, schedule="ramp")
    assert torch.equal(got, want)
    assert "guidance 4 (flat, alpha 0.1, ramp)" in widget.status.value
    assert widget.file_names() == ["panda_seed3_w4_a0.1_ramp_00.png", "panda_seed3_w4_a0.1_ramp_01.png"]
    assert list(widget.schedule.options) == ["constant", "ramp", "interval:0:16"]
    # an interval longer than this 8-row model's image is refused, in the status line too
    widget.schedule.value = "interval:0:16"
    with pytest.raises(ValueError, match="STOP must be at most 8"):
        widget.on_sample(None)
    assert "error" in widget.status.value and not widget.busy


def test_widgets_start_at_the_checkpoints_recommended_guidance(tmp_path):
    from pcnn.sampling.guidance import METADATA_KEY, GuidanceSetting
    from pcnn.notebook.widgets import CompletionWidget
    torch.manual_seed(0)
    model = randomize_(pcnn.PixelCNNpp(tiny_config(image_size=8))).eval()
    plain = SamplerWidget(model, out_dir=tmp_path)              # no recommendation in the model: w = 0
    assert plain.guidance.value == 0.0 and plain.plausible.value == 0.0
    rec = GuidanceSetting(2.0, "tempered", 0.1, "interval:1:5", source="x.json")
    loaded = pcnn.load(pcnn.save(tmp_path / "m.safetensors", model, {METADATA_KEY: rec.to_dict()}))
    w = SamplerWidget(loaded, out_dir=tmp_path)
    assert (w.guidance.value, w.guide.value, w.plausible.value, w.schedule.value) == (2.0, "tempered", 0.1,
                                                                                      "interval:1:5")
    assert "interval:1:5" in w.schedule.options
    w.count.value, w.seed.value = 2, 5
    assert torch.equal(w.on_sample(None), pcnn.sample(loaded, [0, 0], torch.Generator().manual_seed(5),
                                                      guidance="recommended"))
    explicit = SamplerWidget(loaded, out_dir=tmp_path, guidance=0.0)   # a number wins over the recommendation
    assert explicit.guidance.value == 0.0
    cw = CompletionWidget(loaded, torch.zeros(1, 3, 8, 8, dtype=torch.uint8), guidance="recommended")
    assert (cw.guidance.value, cw.plausible.value, cw.schedule.value, cw.guide_name) == (2.0, 0.1, "interval:1:5",
                                                                                        "tempered")
    cw.keep_rows.value = 2
    out = cw.on_complete()
    want = pcnn.complete_as_every_class(loaded, torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 2, seed=0,
                                        guidance="recommended")[0]
    assert torch.equal(out, want) and "alpha 0.1, interval:1:5" in cw.status.value
