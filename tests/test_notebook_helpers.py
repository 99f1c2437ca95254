"""pcnn.notebook helpers the numbered notebooks call: set-up, paths, progress, CSV, configs."""
import csv
import json
from pathlib import Path

import pytest
import numpy as np
import torch

import pcnn
from pcnn import notebook as nb

ROOT = Path(__file__).resolve().parents[1]


def _fake_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for s in ("train", "validation", "test"):
        (folder / f"{s}.csv").write_text("")
    return folder


def test_find_kaggle_data(tmp_path):
    assert nb.find_kaggle_data(tmp_path / "missing") is None
    assert nb.find_kaggle_data(tmp_path) is None
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "train.csv").write_text("")        # incomplete: no validation/test CSVs
    want = _fake_dataset(tmp_path / "cpen455" / "data")
    assert nb.find_kaggle_data(tmp_path) == want


def test_data_dir_prefers_env_then_kaggle(tmp_path, monkeypatch):
    monkeypatch.setenv("PCNN_DATA_DIR", str(tmp_path / "mine"))
    assert nb.data_dir() == tmp_path / "mine"
    monkeypatch.delenv("PCNN_DATA_DIR")
    monkeypatch.setattr(nb, "KAGGLE_INPUT", tmp_path / "input")
    assert nb.data_dir() == nb.repo_root() / "data"
    want = _fake_dataset(tmp_path / "input" / "cpen")
    assert nb.data_dir() == want


def test_show_path_and_scrub(tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setenv("PCNN_DATA_DIR", str(tmp_path / "data"))
    assert nb.show_path(ROOT / "runs" / "x", root=ROOT) == "runs/x"
    assert nb.show_path(tmp_path / "data", root=ROOT) == "$PCNN_DATA_DIR"
    tmp = Path(tempfile.gettempdir()).resolve()
    assert nb.show_path(tmp / "pcnn-fid-1" / "generated", root=ROOT) == "<tmp>/pcnn-fid-1/generated"
    assert nb.show_path("/nonexistent/a/b/c", root=ROOT) == ".../b/c"
    gen = tmp / "pcnn-fid-1" / "generated"
    assert nb.scrub_paths(f"images ({gen}) vs {tmp_path / 'data'}", gen, tmp_path / "data") == \
        "images (<tmp>/pcnn-fid-1/generated) vs $PCNN_DATA_DIR"


def test_describe_setup_has_no_absolute_paths(monkeypatch):
    monkeypatch.setenv("PCNN_DATA_DIR", "/somewhere/cpen455")
    line = nb.describe_setup(Path("/somewhere/cpen455"), torch.device("cpu"), True)
    assert line.startswith("environment: local, device: cpu, data: $PCNN_DATA_DIR, smoke: True, pcnn 0.1.0 at ")
    assert "/somewhere" not in line


def test_setup_plots_sizes():
    import matplotlib.pyplot as plt
    with plt.rc_context():
        nb.setup_plots(dpi=90, font_size=12)
        assert plt.rcParams["figure.dpi"] == 90 and plt.rcParams["font.size"] == 12
        assert plt.rcParams["axes.titlesize"] == 13 and plt.rcParams["xtick.labelsize"] == 11


def test_progress_line_keeps_final_state():
    p = nb.ProgressLine("log p(x|c)", unit="images")
    assert p.text == "log p(x|c): starting" and p.handle is None     # no IPython here: text only
    p(3, 10)
    assert p.text.startswith("log p(x|c): 3 / 10 images in ")
    p(10, 10)
    assert p.text.startswith("log p(x|c): 10 / 10 images in ") and p.text.endswith(" s")


def test_write_predictions_with_class_names(tmp_path):
    """The notebooks write the test CSV with pcnn.classify.write_predictions (one writer)."""
    from pcnn.classify import write_predictions
    ll = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-9.0, -2.5, -3.0, -1.25]])
    out = write_predictions(tmp_path / "a" / "pred.csv", ["test/1.jpg", "test/2.jpg"], ll.argmax(1), ll,
                            class_names=pcnn.config.CPEN455_CLASSES)
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["id", "label", "loglik_hamburger", "loglik_panda", "loglik_koala", "loglik_pizza"]
    assert rows[1] == ["test/1.jpg", "0", "-1.000000", "-2.000000", "-3.000000", "-4.000000"]
    assert rows[2] == ["test/2.jpg", "3", "-9.000000", "-2.500000", "-3.000000", "-1.250000"]
    assert nb.write_predictions is write_predictions


def test_tiny_train_config_reads_smoke_json():
    d = json.loads((ROOT / "configs" / "smoke.json").read_text())
    cfg = nb.tiny_train_config()
    assert cfg.model.nr_filters == d["model"]["nr_filters"] and cfg.model.nr_resnet == d["model"]["nr_resnet"]
    assert cfg.batch_size == d["batch_size"] and cfg.max_steps == 4 and cfg.model.image_size == 32
    cfg = nb.tiny_train_config(image_size=8, steps=None, fusion="late", batch_size=4, ema=0.0)
    assert cfg.model.image_size == 8 and cfg.max_steps is None and cfg.batch_size == 4 and cfg.ema == 0.0
    assert "late" in str(cfg.model.fusion)
    assert nb.config_path("smoke.json") == ROOT / "configs" / "smoke.json"
    with pytest.raises(FileNotFoundError, match="set-up cell"):
        nb.config_path("no_such_preset.json")


def test_get_model_uses_the_shipped_checkpoint_or_says_what_to_do(tmp_path, monkeypatch):
    model, source = nb.get_model(dev=torch.device("cpu"))
    assert source == "shipped checkpoint pcnn_cpu_film40_disc.safetensors"
    assert isinstance(model, pcnn.PixelCNNpp) and model.config.nr_filters == 40
    monkeypatch.chdir(tmp_path)                                   # outside any checkout: no checkpoint
    monkeypatch.setattr(nb, "find_checkpoint", lambda root=None: None)
    with pytest.raises(FileNotFoundError, match="set-up cell"):
        nb.get_model()


def test_read_sample_set(tmp_path):
    from pcnn.sample import save_png
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (3, 3, 4, 4), generator=g, dtype=torch.uint8)
    for img, name in zip(imgs, ["Class1_image_00.png", "Class0_image_01.png", "Class0_image_00.png"]):
        save_png(img, tmp_path / name)
    (tmp_path / "samples_grid.png").write_bytes(b"")             # other files are ignored
    got, labels = nb.read_sample_set(tmp_path)
    assert labels.tolist() == [0, 0, 1]
    assert torch.equal(got, imgs[[2, 1, 0]])
    with pytest.raises(FileNotFoundError):
        nb.read_sample_set(tmp_path / "empty")


def test_show_grid_native_size():
    import matplotlib.pyplot as plt
    img = torch.randint(0, 256, (3, 50, 200), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    fig = nb.show_grid(img, width=None)
    w, h = fig.get_size_inches() * fig.dpi
    assert (round(w), round(h)) == (200, 50)
    fig.canvas.draw()  # one figure pixel per image pixel: no margin, no resampling of the labels
    shown = torch.from_numpy(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()).permute(2, 0, 1)
    assert torch.equal(shown, img)
    plt.close(fig)
    fig = nb.show_grid(img, title="t", width=None)  # a title adds a strip above, the image stays 1:1
    fig.canvas.draw()
    shown = torch.from_numpy(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()).permute(2, 0, 1)
    assert torch.equal(shown[:, -50:], img)
    plt.close(fig)


def test_show_progress_follows_tqdm_disable(monkeypatch, tmp_path):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert nb.show_progress()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not nb.show_progress()
    seen = {}
    monkeypatch.setattr(nb, "write_sample_set", lambda *a, **kw: seen.update(kw) or [])
    nb.write_fid_samples(None, tmp_path / "g", per_class=1)
    assert seen["show_progress"] is False                       # recorded runs draw no bar
    nb.write_fid_samples(None, tmp_path / "g", per_class=1, progress=True)
    assert seen["show_progress"] is True


def test_plot_curves_whole_epochs_and_readable_legend():
    import matplotlib.pyplot as plt
    rows = [{"epoch": e, "train_bpd": 5.0 - 0.1 * e, "val_bpd": 5.1 - 0.1 * e, "val_acc": 0.3 + 0.1 * e} for e in (1, 2, 3)]
    fig = nb.plot_curves({"run": rows})
    ax_bpd, ax_acc = fig.axes[:2]
    ticks = [t for t in ax_bpd.get_xticks() if 1 <= t <= 3]
    assert ticks == [1.0, 2.0, 3.0]
    assert [t.get_text() for t in ax_bpd.get_legend().get_texts()] == ["run train", "run val"]
    assert ax_bpd.get_legend().get_texts()[0].get_fontsize() >= 9
    assert list(ax_acc.get_lines()[0].get_ydata()) == pytest.approx([0.4, 0.5, 0.6])
    plt.close(fig)
