"""pcnn.notebook.runtime (the notebook runtime) and pcnn.notebook.live (training from a notebook): set-up, paths, progress,
CSV, configs, runs that outlive the runtime."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pcnn
from pcnn import paths
from pcnn.notebook import live, runtime as nb

ROOT = Path(__file__).resolve().parents[1]


def _fake_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for s in ("train", "validation", "test"):
        (folder / f"{s}.csv").write_text("")
    return folder


def test_find_kaggle_data(tmp_path):
    assert paths.find_kaggle_data(tmp_path / "missing") is None
    assert paths.find_kaggle_data(tmp_path) is None
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "train.csv").write_text("")        # incomplete: no validation/test CSVs
    want = _fake_dataset(tmp_path / "cpen455" / "data")
    assert paths.find_kaggle_data(tmp_path) == want


def test_data_dir_prefers_argument_env_then_kaggle(tmp_path, monkeypatch):
    """One rule for the CLI, the notebooks and the scripts: argument, $PCNN_DATA_DIR, Kaggle, checkout."""
    monkeypatch.setenv("PCNN_DATA_DIR", str(tmp_path / "mine"))
    assert paths.resolve_data_dir() == tmp_path / "mine"
    assert paths.resolve_data_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("PCNN_DATA_DIR")
    monkeypatch.setattr(paths, "KAGGLE_INPUT", tmp_path / "input")
    assert paths.resolve_data_dir() == paths.repo_root() / "data"
    want = _fake_dataset(tmp_path / "input" / "cpen")
    assert paths.resolve_data_dir() == want
    assert nb.ensure_data(download=False) == want  # the notebooks' helper follows the same rule


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
    """The notebooks write the test CSV with pcnn.eval.classification.write_predictions (one writer)."""
    from pcnn.eval.classification import write_predictions
    ll = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-9.0, -2.5, -3.0, -1.25]])
    out = write_predictions(tmp_path / "a" / "pred.csv", ["test/1.jpg", "test/2.jpg"], ll.argmax(1), ll,
                            class_names=pcnn.model.config.CPEN455_CLASSES)
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["id", "label", "loglik_hamburger", "loglik_panda", "loglik_koala", "loglik_pizza"]
    assert rows[1] == ["test/1.jpg", "0", "-1.000000", "-2.000000", "-3.000000", "-4.000000"]
    assert rows[2] == ["test/2.jpg", "3", "-9.000000", "-2.500000", "-3.000000", "-1.250000"]
    out = write_predictions(tmp_path / "course.csv", ["test/1.jpg", "test/2.jpg"], ll.argmax(1), course_format=True)
    assert out.read_text().splitlines() == ["test/1.jpg,0", "test/2.jpg,3"]   # notebook 03's submission file


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


def test_read_sample_set_and_copy_subset(tmp_path):
    from pcnn.sampling.sets import copy_subset, read_sample_set, save_png
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (3, 3, 4, 4), generator=g, dtype=torch.uint8)
    for img, name in zip(imgs, ["Class1_image_00.png", "Class0_image_01.png", "Class0_image_00.png"]):
        save_png(img, tmp_path / name)
    (tmp_path / "samples_grid.png").write_bytes(b"")             # other files are ignored
    got, labels = read_sample_set(tmp_path)
    assert labels.tolist() == [0, 0, 1]
    assert torch.equal(got, imgs[[2, 1, 0]])
    with pytest.raises(FileNotFoundError):
        read_sample_set(tmp_path / "empty")
    files = sorted(tmp_path.glob("Class*.png"))
    two = copy_subset(files, tmp_path / "two", n=2, seed=1)
    assert len(list(two.iterdir())) == 2 and {p.name for p in two.iterdir()} <= {f.name for f in files}
    assert {p.name for p in copy_subset(files, tmp_path / "all").iterdir()} == {f.name for f in files}


def test_show_grid_native_size():
    import matplotlib.pyplot as plt
    from pcnn.viz.images import show_grid
    img = torch.randint(0, 256, (3, 50, 200), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    fig = show_grid(img, width=None)
    w, h = fig.get_size_inches() * fig.dpi
    assert (round(w), round(h)) == (200, 50)
    fig.canvas.draw()  # one figure pixel per image pixel: no margin, no resampling of the labels
    shown = torch.from_numpy(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()).permute(2, 0, 1)
    assert torch.equal(shown, img)
    plt.close(fig)
    fig = show_grid(img, title="t", width=None)  # a title adds a strip above, the image stays 1:1
    fig.canvas.draw()
    shown = torch.from_numpy(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()).permute(2, 0, 1)
    assert torch.equal(shown[:, -50:], img)
    plt.close(fig)


def test_show_progress_follows_tqdm_disable(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert nb.show_progress()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not nb.show_progress()


# --------------------------------------------------------------------------- the runtime: GPU, presets

def test_gpu_report_without_a_gpu_says_how_to_get_one():
    line = nb.gpu_report("colab", torch.device("cpu"))
    assert line.startswith("no GPU: ") and "Runtime > Change runtime type" in line
    assert "Settings > Accelerator" in nb.gpu_report("kaggle", torch.device("cpu"))


def test_gpu_epoch_estimate_reads_the_measured_figures():
    from pcnn.model.config import ModelConfig
    figures = live.gpu_figures()
    assert figures["gpu"] == "NVIDIA H200" and "issue #26" in figures["source"]
    small = live.gpu_epoch_estimate(ModelConfig(nr_filters=40), 3899, figures)
    want = min(r["images_per_s"] for r in figures["measured"] if r["nr_filters"] == 40)   # the slower figure
    assert small.startswith(f"estimate: about {3899 / want:.0f} s of training per epoch of 3899 images on one NVIDIA H200")
    assert f"{want:,} img/s" in small
    wide = live.gpu_epoch_estimate(ModelConfig(nr_filters=160), 3899, figures)
    assert f"{min(r['images_per_s'] for r in figures['measured'] if r['nr_filters'] == 160):,} img/s" in wide
    assert live.gpu_epoch_estimate(ModelConfig(), 10, figures={}) is None


def test_epoch_estimates_per_preset():
    figures = {"gpu": "GPU X", "measured": [{"nr_filters": 40, "images_per_s": 1000},
                                            {"nr_filters": 160, "images_per_s": 400}]}
    lines = live.epoch_estimates(4000, ["starter.json", "film_large.json"], figures)
    assert lines[0].startswith("estimated training seconds per epoch of 4,000 images on one GPU X")
    assert lines[1].split() [:3] == ["starter.json", "about", "4"] and "1/40/5" in lines[1]
    assert lines[2].split()[:3] == ["film_large.json", "about", "10"] and "1/160/5" in lines[2]
    assert "no measured GPU figures" in live.epoch_estimates(10, figures={})[0]
    deep = live.epoch_estimates(4000, ["report_chan.json"], figures)[1]           # 3/90/5: three blocks per stage
    assert deep.split()[:3] == ["report_chan.json", "about", "12"] and "333 img/s" in deep


def test_preset_lines_mark_the_shipped_recipe():
    lines = {line.split()[0]: line for line in live.preset_lines()}
    assert {"cpu_film40.json", "cpu_film40_disc.json", "starter.json", "smoke.json"} <= set(lines)
    # the shipped pcnn_cpu_film40_disc is phase B's export: its recipe is cpu_film40_disc.json
    assert lines["cpu_film40_disc.json"].endswith("<- the shipped model's recipe")
    assert "1/40/5 blocks_film" in lines["cpu_film40_disc.json"] and "phase A" in lines["cpu_film40.json"]
    assert sum("shipped model's recipe" in v for v in lines.values()) == 1
    assert set(live.PRESET_USES) == set(lines)                       # every preset says what it is for


# --------------------------------------------------------------------------- runs that outlive the runtime

def test_runs_root_per_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("PCNN_RUNS_DIR", raising=False)
    root, note = nb.runs_root("local")
    assert root == nb.repo_root() / "runs" and "runs/" in note
    root, note = nb.runs_root("kaggle")
    assert root == nb.KAGGLE_WORKING / "pcnn_runs" and "saved version" in note
    monkeypatch.setattr(nb, "mount_drive", lambda: None)           # Drive refused: the runtime's disk, said so
    root, note = nb.runs_root("colab")
    assert root == nb.repo_root() / "runs" and "loses them" in note
    monkeypatch.setattr(nb, "mount_drive", lambda: tmp_path / "MyDrive")
    root, note = nb.runs_root("colab")
    assert root == tmp_path / "MyDrive" / "pcnn_runs" and "Google Drive" in note
    monkeypatch.setenv("PCNN_RUNS_DIR", str(tmp_path / "mine"))
    assert nb.runs_root("colab")[0] == tmp_path / "mine"
    wd = nb.run_workdir("x")
    assert wd == tmp_path / "mine" / "x" and wd.is_dir()
    assert nb.show_path(wd) == "$PCNN_RUNS_DIR/x"


def _tiny_run(tmp_path):
    from pcnn.train import TrainConfig
    g = torch.Generator().manual_seed(0)
    data = (torch.randint(0, 256, (8, 3, 8, 8), generator=g, dtype=torch.uint8), torch.arange(8) % 4)
    cfg = nb.tiny_train_config(image_size=8, steps=None, batch_size=4, checkpoint_minutes=10.0)
    assert isinstance(cfg, TrainConfig)
    return cfg, data


def test_train_live_continues_and_clear_run_is_the_only_deletion(tmp_path, capsys):
    cfg, data = _tiny_run(tmp_path)
    wd = tmp_path / "run"
    assert "no run yet" in nb.run_status(wd)
    rows = live.train_live(cfg, wd, until=1, train_data=data, val_data=data, progress=False)
    assert [r["epoch"] for r in rows] == [1]
    out = capsys.readouterr()
    assert out.out.count("precision: ") == 1 and "precision: " not in out.err   # once, on stdout
    assert out.err.strip() == ""                               # not even its newline: no empty stderr box
    assert "a run with 1 whole epoch(s)" in nb.run_status(wd)
    assert live.train_live(cfg, wd, until=1, train_data=data, val_data=data, progress=False) == rows   # nothing to do
    assert "nothing to train" in capsys.readouterr().out
    rows = live.train_live(cfg, wd, until=2, train_data=data, val_data=data, progress=False, samples_every=2,
                         samples_per_class=1)
    assert [r["epoch"] for r in rows] == [1, 2] and nb.completed_epochs(wd) == 2
    assert (wd / "samples" / "epoch_002.png").is_file() and not (wd / "samples" / "epoch_001.png").exists()
    removed = nb.clear_run(wd)
    assert {"last.pt", "model.safetensors", "metrics.jsonl", "samples/"} <= set(removed)
    assert nb.completed_epochs(wd) == 0 and not (wd / "last.pt").exists()


def test_train_live_stops_run_all_after_an_interrupt(tmp_path, monkeypatch):
    calls = []

    def fake_train(cfg, workdir, **kw):
        calls.append(cfg.epochs)
        return [{"epoch": 2, "partial": True}]                 # what the trainer returns after a SIGINT in epoch 2
    monkeypatch.setattr(live, "train", fake_train)
    with pytest.raises(KeyboardInterrupt, match="stopped inside epoch 2; last.pt is saved"):
        live.train_live(nb.tiny_train_config(), tmp_path / "run", until=3, train_data=None, progress=False)
    assert calls == [3]                                          # one trainer for the whole run


RESUME_SCRIPT = """
import sys, torch
from pcnn.notebook import live, runtime as nb
g = torch.Generator().manual_seed(0)
data = (torch.randint(0, 256, (8, 3, 8, 8), generator=g, dtype=torch.uint8), torch.arange(8) % 4)
cfg = nb.tiny_train_config(image_size=8, steps=None, batch_size=4)
live.train_live(cfg, sys.argv[1], until=int(sys.argv[2]), train_data=data, val_data=data, progress=False)
"""


def test_resume_across_a_recycled_runtime_equals_one_run(tmp_path):
    """Run, new process (a recycled runtime with the run kept on Drive), resume: the same as one run."""
    import subprocess
    import sys
    script = tmp_path / "train.py"
    script.write_text(RESUME_SCRIPT)
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def run(wd, until):
        subprocess.run([sys.executable, str(script), str(wd), str(until)], check=True, env=env, cwd=tmp_path,
                       capture_output=True, text=True)
    run(tmp_path / "drive" / "split", 1)
    run(tmp_path / "drive" / "split", 2)          # a new process: the first one and its memory are gone
    run(tmp_path / "drive" / "whole", 2)
    keys = ("epoch", "step", "train_bpd", "val_bpd", "val_bpd_raw", "val_acc")
    split = [{k: r[k] for k in keys} for r in nb.read_metrics(tmp_path / "drive" / "split")]
    whole = [{k: r[k] for k in keys} for r in nb.read_metrics(tmp_path / "drive" / "whole")]
    assert [r["epoch"] for r in split] == [1, 2] and split == whole
    a = torch.load(tmp_path / "drive" / "split" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "drive" / "whole" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_history_and_export_lines_show_raw_and_ema():
    rows = [{"epoch": 1, "train_bpd": 7.1234567, "val_bpd": 6.5, "val_acc": 0.5973, "val_bpd_raw": 6.4,
             "val_acc_raw": 0.5761, "seconds": 101.2},
            {"epoch": 2, "train_bpd": 6.0, "partial": True}]
    assert live.history_lines(rows) == ["epoch 1, train 7.1235 bpd, validation EMA 6.5000 bpd / 0.5973 acc, "
                                      "raw 6.4000 bpd / 0.5761 acc, 101 s"]
    assert live.history_lines(rows, ema=False)[0] == "epoch 1, train 7.1235 bpd, validation 6.5000 bpd / 0.5973 acc, 101 s"
    meta = {"weights": "raw", "epoch": 3, "step": 57, "val_bpd": 6.4, "val_acc": 0.5761, "val_bpd_raw": 6.4,
            "val_bpd_ema": 6.5}
    assert live.export_line(meta) == ("export: raw weights after epoch 3 (step 57): validation 6.4000 bpd, "
                                    "accuracy 0.5761; EMA weights 6.5000 bpd")
