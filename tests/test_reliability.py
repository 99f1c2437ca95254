"""Reliability (issue 16): a run owns its workdir, no NaN model is ever written or loaded,
a pixel limit on decoding, and a clear one-line error (exit 2) for every ordinary mistake.

Every fixture is made here and tiny (8x8 images, a 1-block network), so the module runs in
CI in well under a minute; one test kills a real training subprocess and resumes across
its stale lock.
"""
import errno
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

import pcnn
from pcnn.cli import main as cli
from pcnn.model.checkpoint import CheckpointError, DiskFullError
from pcnn.data.dataset import DataError, load_split
from pcnn.train import TrainConfig, TrainingStopped, apply_overrides, train
from pcnn.train.metrics import write_metric_files as _write_metric_files
from pcnn.train.workdir import LOCK_NAME, RunExistsError, WorkdirLock, WorkdirLocked

from conftest import ROOT, rand_images, randomize_, tiny_config

SUB_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
pytestmark = pytest.mark.usefixtures("one_thread")


def cfg_of(**kw):
    base = dict(model=dict(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, image_size=8, dropout=0.0,
                           fusion=["blocks"]),
                epochs=1, batch_size=8, lr=2e-3, lr_decay=0.999, ema=0.99, eval_batch_size=64,
                checkpoint_minutes=60.0, amp="off")  # amp off: the same float32 run on every CPU
    base.update(kw)
    return TrainConfig.from_dict(base)


def data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8),
            torch.randint(0, 4, (n,), generator=g))


def fit(cfg, workdir, n=32, **kw):
    images, labels = data(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train(cfg, workdir, (images, labels), (images[:8], labels[:8]), progress=False, **kw)


def tensors_file(path, n=32):
    images, labels = data(n)
    torch.save({"train": {"images": images, "labels": labels},
                "validation": {"images": images[:8], "labels": labels[:8]}}, path)
    return path


def cli_train(tmp_path, workdir, *extra, cfg=None):
    """``python -m pcnn train`` in process, on a tiny config and an in-file data set."""
    c = tmp_path / "cfg.json"
    c.write_text((cfg or cfg_of()).to_json())
    d = tmp_path / "data.pt"
    if not d.exists():
        tensors_file(d)
    return cli.main(["train", "--workdir", str(workdir), "--config", str(c), "--data-tensors", str(d),
                     "--no-progress", *extra])


def one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err, err
    return lines[-1]


def state(workdir):
    return torch.load(Path(workdir) / "last.pt", map_location="cpu", weights_only=True)


@pytest.fixture
def ckpt32(tmp_path):
    model = randomize_(pcnn.PixelCNNpp(tiny_config(image_size=32, nr_filters=4)))
    return pcnn.save(tmp_path / "tiny32.safetensors", model)


# ------------------------------------------------------------------ 1. silent replacement

def test_resume_without_state_or_config_is_an_error(tmp_path, capsys):
    wd = tmp_path / "typo"
    d = tensors_file(tmp_path / "data.pt")
    assert cli.main(["train", "--workdir", str(wd), "--resume", "--data-tensors", str(d), "--no-progress"]) == 2
    msg = one_line_error(capsys.readouterr().err)
    assert "no run state" in msg and str(wd) in msg and "--config" in msg
    assert not (wd / "config.json").exists()


def test_a_finished_run_without_last_pt_is_never_replaced(tmp_path):
    wd = tmp_path / "run"
    fit(cfg_of(), wd)
    (wd / "last.pt").unlink()
    before = {p.name: p.read_bytes() for p in wd.iterdir()}
    for resume in (False, True):  # a fresh run, and --resume with a config but no last.pt
        with pytest.raises(RunExistsError, match="model.safetensors") as e:
            fit(cfg_of(), wd, resume=resume)
        assert "overwrite" in str(e.value)
    assert {p.name: p.read_bytes() for p in wd.iterdir()} == before


def test_overwrite_replaces_the_earlier_run_entirely(tmp_path):
    wd = tmp_path / "run"
    fit(cfg_of(epochs=2), wd)
    assert len((wd / "metrics.jsonl").read_text().splitlines()) == 2
    hist = fit(cfg_of(seed=1), wd, overwrite=True)
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1] and rows[0]["train_bpd"] == hist[0]["train_bpd"]
    assert state(wd)["config"]["seed"] == 1 and state(wd)["epoch"] == 1
    assert pcnn.read_metadata(wd / "best.safetensors")["epoch"] == 1


def test_a_workdir_with_only_an_empty_start_is_reused(tmp_path):
    # A run stopped before its first checkpoint leaves config.json and header-only metrics:
    # no results, so a plain rerun may start there.
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / "config.json").write_text(cfg_of().to_json())
    _write_metric_files(wd, [])
    fit(cfg_of(), wd)
    assert state(wd)["epoch"] == 1


# ------------------------------------------------------------------ 2. workdir lock

def test_a_lock_held_by_a_live_process_refuses_a_second_run(tmp_path):
    wd = tmp_path / "run"
    with WorkdirLock(wd):
        with pytest.raises(WorkdirLocked, match=f"PID {os.getpid()}") as e:
            fit(cfg_of(), wd)
        assert socket.gethostname() in str(e.value)
        assert sorted(p.name for p in wd.iterdir()) == [LOCK_NAME]  # nothing written
    assert not (wd / LOCK_NAME).exists()  # released
    fit(cfg_of(), wd)
    assert not (wd / LOCK_NAME).exists()


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_stale_lock_on_this_host_is_explained_and_taken_over(tmp_path, caplog):
    wd = tmp_path / "run"
    wd.mkdir()
    pid = dead_pid()
    (wd / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "earlier"}))
    fit(cfg_of(), wd)
    err = caplog.text                      # logged by pcnn.train.workdir
    assert "stale lock" in err and f"PID {pid}" in err and "no longer running" in err
    assert not (wd / LOCK_NAME).exists() and state(wd)["epoch"] == 1


def test_a_lock_from_another_host_is_reported_not_stolen(tmp_path):
    wd = tmp_path / "run"
    wd.mkdir()
    text = json.dumps({"pid": 1, "host": "elsewhere.example", "started": "earlier"})
    (wd / LOCK_NAME).write_text(text)
    with pytest.raises(WorkdirLocked, match="elsewhere.example") as e:
        fit(cfg_of(), wd)
    assert "cannot tell" in str(e.value) and str(wd / LOCK_NAME) in str(e.value)
    assert (wd / LOCK_NAME).read_text() == text


def test_the_lock_is_released_when_training_raises(tmp_path):
    wd = tmp_path / "run"
    images, labels = data()
    with pytest.raises(ValueError, match="labels must be in"):
        train(cfg_of(), wd, (images, labels), (images[:8], labels[:8] + 10), progress=False)
    assert not (wd / LOCK_NAME).exists()


def test_kill_then_resume_across_the_stale_lock(tmp_path, capsys):
    d = tensors_file(tmp_path / "data.pt", n=64)
    cfg = cfg_of(epochs=200, checkpoint_every_steps=2)  # 8 batches an epoch: runs far longer than the test
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    wd = tmp_path / "run"
    cmd = ["--workdir", str(wd), "--data-tensors", str(d), "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "pcnn", "train", "--config", str(tmp_path / "cfg.json"), *cmd],
                            env=SUB_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not (wd / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        lock = json.loads((wd / LOCK_NAME).read_text())
        assert lock["pid"] == proc.pid and lock["host"] == socket.gethostname()
        # A resume (or a second run) while the first still runs is refused, naming the owner.
        capsys.readouterr()
        assert cli.main(["train", "--resume", *cmd]) == 2
        assert f"PID {proc.pid}" in one_line_error(capsys.readouterr().err)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert json.loads((wd / LOCK_NAME).read_text())["pid"] == proc.pid  # the kill left its lock behind
    killed = state(wd)
    rows_before = (wd / "metrics.jsonl").read_text().splitlines()
    stop = killed["iteration"] + 3
    assert cli.main(["train", "--resume", "--max-steps", str(stop), *cmd]) == 0
    err = capsys.readouterr().err
    assert "stale lock" in err and f"PID {proc.pid}" in err
    assert not (wd / LOCK_NAME).exists()
    done = state(wd)
    assert done["iteration"] == stop
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert (wd / "metrics.jsonl").read_text().splitlines()[:len(rows_before)] == rows_before
    full = [r["epoch"] for r in rows if not r["partial"]]
    assert full == list(range(1, len(full) + 1))  # no duplicated epoch rows


# ------------------------------------------------------------------ 3. NaN models

@pytest.mark.parametrize("key,value", [
    ("lr", float("inf")), ("lr", float("nan")), ("lr", 1e30), ("lr", 0.0),
    ("lr_decay", float("nan")), ("lr_decay", 1.5), ("ema", float("nan")), ("ema", 1.0),
    ("disc_weight", float("inf")), ("disc_weight", float("nan")), ("grad_clip", float("nan")),
    ("grad_clip", float("inf")), ("weight_decay", float("nan")), ("weight_decay", -0.1),
    ("betas", [float("nan"), 0.9]), ("betas", [0.9, 1.0]), ("checkpoint_minutes", float("nan")),
    ("checkpoint_minutes", float("inf")), ("checkpoint_minutes", 0),
])
def test_config_numbers_must_be_finite_and_in_range(key, value):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{key} must be"):
        cfg_of(**{key: value})


@pytest.mark.parametrize("override,expect", [
    ("lr=abc", r"TrainConfig\.lr must be a number.*'abc' \(str\)"),
    ("grad_clip=[1]", r"TrainConfig\.grad_clip must be a number"),
    ("betas=abc", r"TrainConfig\.betas must be two numbers"),
    ("ema_warmup=maybe", r"TrainConfig\.ema_warmup must be true or false"),
    ("epochs=abc", r"TrainConfig\.epochs must be a positive int.*'abc' \(str\)"),
])
def test_set_with_a_wrong_type_names_the_key_and_the_type(override, expect):
    with pytest.raises(ValueError, match=expect):
        TrainConfig.from_dict(apply_overrides(cfg_of().to_dict(), [override]))


def test_cli_set_lr_abc_is_one_line(tmp_path, capsys):
    assert cli_train(tmp_path, tmp_path / "run", "--set", "lr=abc") == 2
    assert "TrainConfig.lr must be a number" in one_line_error(capsys.readouterr().err)


def poison_weights_after(monkeypatch, step_no):
    """Make the optimizer write inf into the weights at its ``step_no``-th step (a diverging run)."""
    orig = torch.optim.Adam.step
    count = {"n": 0}

    def step(self, *a, **kw):
        out = orig(self, *a, **kw)
        count["n"] += 1
        if count["n"] == step_no:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return out
    monkeypatch.setattr(torch.optim.Adam, "step", step)


def test_a_diverged_run_stops_and_keeps_only_finite_checkpoints(tmp_path, monkeypatch):
    wd = tmp_path / "run"
    poison_weights_after(monkeypatch, 3)
    with pytest.raises(TrainingStopped, match="non-finite") as e:
        fit(cfg_of(epochs=2, checkpoint_every_steps=2), wd)
    msg = str(e.value)
    assert f"{wd / 'last.pt'} holds the last good checkpoint (batch 2" in msg
    s = state(wd)
    assert s["iteration"] == 2 and all(torch.isfinite(t).all() for t in s["model"].values())
    assert not (wd / "model.safetensors").exists() and not (wd / LOCK_NAME).exists()
    monkeypatch.undo()
    hist = fit(cfg_of(epochs=2, checkpoint_every_steps=2), wd, resume=True)  # continues from batch 2
    assert [r["epoch"] for r in hist if not r["partial"]] == [1, 2]
    pcnn.load(wd / "model.safetensors")  # finite


def test_the_stop_message_says_when_no_checkpoint_exists(tmp_path, monkeypatch):
    wd = tmp_path / "run"
    poison_weights_after(monkeypatch, 1)
    with pytest.raises(TrainingStopped) as e:
        fit(cfg_of(max_bad_steps=3), wd)
    assert "no checkpoint was written" in str(e.value) and "holds the last" not in str(e.value)
    assert not (wd / "last.pt").exists()


def test_resume_refuses_a_nonfinite_last_pt(tmp_path):
    wd = tmp_path / "run"
    fit(cfg_of(max_steps=2), wd)
    s = state(wd)
    name = next(iter(s["model"]))
    s["model"][name].fill_(float("nan"))
    torch.save(s, wd / "last.pt")
    export = (wd / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match=rf"non-finite.*{name}"):
        fit(cfg_of(), wd, resume=True)
    assert (wd / "model.safetensors").read_bytes() == export  # the finite export was not replaced


def nan_checkpoint(tmp_path, image_size=8):
    model = randomize_(pcnn.PixelCNNpp(tiny_config(image_size=image_size, nr_filters=4)))
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    return model, pcnn.save(tmp_path / "nan.safetensors", model)


def test_load_refuses_nonfinite_weights_unless_asked(tmp_path):
    model, path = nan_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="non-finite") as e:
        pcnn.load(path)
    assert str(path) in str(e.value) and "allow_nonfinite=True" in str(e.value)
    loaded = pcnn.load(path, allow_nonfinite=True)
    assert torch.isnan(next(loaded.parameters())).any()
    with pytest.raises(ValueError, match="non-finite"):
        pcnn.log_likelihoods(model, rand_images(2))


def test_classify_on_nan_weights_is_an_error(tmp_path, fake_data, capsys):
    _, path = nan_checkpoint(tmp_path, image_size=32)
    assert cli.main(["classify", "--checkpoint", str(path), "--data-dir", str(fake_data), "--quiet"]) == 2
    assert "non-finite" in one_line_error(capsys.readouterr().err)


def _no_bare_constants(text):
    def refuse(name):
        raise AssertionError(f"bare {name} in JSON")
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def test_metrics_jsonl_is_valid_json_even_with_nan(tmp_path):
    row = {"epoch": 1, "step": 3, "train_bpd": float("nan"), "val_bpd": float("inf"), "partial": False}
    _write_metric_files(tmp_path, [row])
    _write_metric_files(tmp_path, [row, {**row, "epoch": 2}], append_row={**row, "epoch": 2})
    rows = _no_bare_constants((tmp_path / "metrics.jsonl").read_text())
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["train_bpd"] is None and rows[1]["val_bpd"] is None


def test_a_run_worse_than_uniform_warns(tmp_path, monkeypatch):
    import pcnn.train.loop as T
    monkeypatch.setattr(T, "evaluate", lambda *a, **k: {"bpd": 14414.0, "acc": 0.25, "f1": 0.1})
    images, labels = data()
    with pytest.warns(UserWarning, match="diverged"):
        train(cfg_of(), tmp_path, (images, labels), (images[:8], labels[:8]), progress=False)


# ------------------------------------------------------------------ 4. pixel limit

def _jpeg_claiming(width, height):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 30, 200)).save(buf, format="JPEG")
    b = bytearray(buf.getvalue())
    i = b.index(b"\xff\xc0")  # baseline SOF0: marker, length, precision, height, width
    b[i + 5:i + 7] = height.to_bytes(2, "big")
    b[i + 7:i + 9] = width.to_bytes(2, "big")
    return bytes(b)


def test_a_huge_image_is_refused_from_its_header(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "validation").mkdir(parents=True)
    small = io.BytesIO()
    Image.new("RGB", (64, 64)).save(small, format="JPEG")
    (root / "validation" / "0.jpg").write_bytes(small.getvalue())
    (root / "validation" / "1.jpg").write_bytes(_jpeg_claiming(16000, 16000))  # a few hundred bytes
    (root / "validation.csv").write_text("validation/0.jpg,0\nvalidation/1.jpg,1\n")
    import pcnn.data.dataset as D
    decoded = []
    orig = D._decode_rgb
    monkeypatch.setattr(D, "_decode_rgb", lambda b: decoded.append(len(b)) or orig(b))
    with pytest.raises(DataError, match=r"1\.jpg is 16000x16000 pixels.*limit.*4096x4096"):
        load_split("validation", root, show_progress=False)
    assert decoded == [len(small.getvalue())]  # only the small file was ever decoded
    with pytest.warns(UserWarning, match="16000x16000"):
        assert len(load_split("validation", root, show_progress=False, on_error="skip")) == 1


def test_the_pixel_limit_is_a_setting(fake_data, monkeypatch):
    with pytest.raises(DataError, match=r"64x64 pixels.*limit of 4095 pixels"):
        load_split("validation", fake_data, max_pixels=64 * 64 - 1, show_progress=False)
    assert len(load_split("validation", fake_data, max_pixels=64 * 64, show_progress=False)) == 6
    monkeypatch.setenv("PCNN_MAX_IMAGE_PIXELS", "32x32")
    with pytest.raises(DataError, match=r"64x64 pixels.*32x32.*PCNN_MAX_IMAGE_PIXELS"):
        load_split("validation", fake_data, show_progress=False)
    monkeypatch.setenv("PCNN_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="PCNN_MAX_IMAGE_PIXELS"):
        load_split("validation", fake_data, show_progress=False)


# ------------------------------------------------------------------ 5. one-line errors (exit 2)

def test_workdir_is_a_file_or_under_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    for wd in (f, f / "sub"):
        assert cli_train(tmp_path, wd) == 2
        msg = one_line_error(capsys.readouterr().err)
        assert str(f) in msg and "is a file" in msg


def test_a_fresh_run_into_an_existing_run_is_one_line(tmp_path, capsys):
    wd = tmp_path / "run"
    assert cli_train(tmp_path, wd) == 0
    capsys.readouterr()
    assert cli_train(tmp_path, wd) == 2
    msg = one_line_error(capsys.readouterr().err)
    assert "already holds a run" in msg and "--resume" in msg and "--overwrite" in msg
    assert cli_train(tmp_path, wd, "--overwrite") == 0


def test_sample_out_an_existing_file(ckpt32, tmp_path, capsys):
    f = tmp_path / "taken.png"
    f.write_bytes(b"x")
    assert cli.main(["sample", "--checkpoint", str(ckpt32), "--per-class", "1", "--out", str(f), "--quiet"]) == 2
    msg = one_line_error(capsys.readouterr().err)
    assert str(f) in msg and "not a folder" in msg
    assert f.read_bytes() == b"x"


def test_classify_out_a_directory_fails_before_scoring(ckpt32, fake_data, tmp_path, capsys, monkeypatch):
    import pcnn.model.classify
    monkeypatch.setattr(pcnn.model.classify, "log_likelihoods", lambda *a, **k: pytest.fail("scored first"))
    assert cli.main(["classify", "--checkpoint", str(ckpt32), "--data-dir", str(fake_data), "--quiet",
                     "--out", str(tmp_path)]) == 2
    msg = one_line_error(capsys.readouterr().err)
    assert str(tmp_path) in msg and "is a folder" in msg


def test_device_cuda_without_a_gpu(ckpt32, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["sample", "--checkpoint", str(ckpt32), "--per-class", "1", "--out", str(tmp_path / "s"),
                     "--device", "cuda", "--quiet"]) == 2
    assert "--device cuda" in one_line_error(capsys.readouterr().err)
    assert cli.main(["classify", "--checkpoint", str(ckpt32), "--device", "gpu"]) == 2
    assert "--device 'gpu'" in one_line_error(capsys.readouterr().err)


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _bad_tensor_files(tmp_path):
    images, labels = data()
    yield "random", os.urandom(4096), "corrupt or not a plain tensor file"
    buf = io.BytesIO()
    torch.save({"train": _Payload(tmp_path / "pwned")}, buf)
    yield "malicious", buf.getvalue(), "corrupt or not a plain tensor file"
    buf = io.BytesIO()
    torch.save({"train": {"images": images, "labels": labels}}, buf)
    yield "no_validation", buf.getvalue(), "has no 'validation'"
    buf = io.BytesIO()
    torch.save({"train": {"images": images}, "validation": {"images": images, "labels": labels}}, buf)
    yield "no_labels", buf.getvalue(), "'train' has no 'labels'"
    yield "empty", b"", "is empty"


def test_bad_data_tensors_files(tmp_path, capsys):
    for name, blob, expect in _bad_tensor_files(tmp_path):
        d = tmp_path / f"{name}.pt"
        d.write_bytes(blob)
        assert cli.main(["train", "--workdir", str(tmp_path / name), "--data-tensors", str(d),
                         "--no-progress"]) == 2, name
        msg = one_line_error(capsys.readouterr().err)
        assert str(d) in msg and expect in msg and "weights_only" not in msg, (name, msg)
    assert not (tmp_path / "pwned").exists()  # the pickle's payload never ran


def _enospc_on_call(monkeypatch, n):
    orig = torch.save
    count = {"n": 0}

    def save(obj, f, *a, **kw):
        count["n"] += 1
        if count["n"] == n:
            with open(f, "wb") as fh:
                fh.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return orig(obj, f, *a, **kw)
    monkeypatch.setattr(torch, "save", save)


def test_disk_full_says_so_and_what_was_kept(tmp_path, monkeypatch, capsys):
    wd = tmp_path / "run"
    _enospc_on_call(monkeypatch, 2)  # the first checkpoint (batch 2) goes through, the second fails
    with pytest.raises(DiskFullError, match="no space left on device") as e:
        fit(cfg_of(checkpoint_every_steps=2), wd)
    assert f"{wd / 'last.pt'} still holds the last checkpoint (batch 2" in str(e.value)
    assert state(wd)["iteration"] == 2  # intact, loadable
    assert not list(wd.glob(".*tmp*")) and not (wd / LOCK_NAME).exists()
    # Through the CLI: one line, exit 2.
    d = tensors_file(tmp_path / "data.pt")
    monkeypatch.undo()
    _enospc_on_call(monkeypatch, 2)
    assert cli_train(tmp_path, tmp_path / "run2", "--set", "checkpoint_every_steps=2") == 2
    msg = one_line_error(capsys.readouterr().err)
    assert "no space left on device" in msg and "last.pt" in msg and d.exists()


# ------------------------------------------------------------------ 6. unclear messages

@pytest.mark.parametrize("blob,expect", [
    (b"", r"last\.pt is empty \(0 bytes\)"),
    (os.urandom(2048), r"last\.pt is corrupt or not a plain tensor file"),
    ("malicious", r"last\.pt is corrupt or not a plain tensor file"),
])
def test_bad_last_pt_messages(tmp_path, blob, expect):
    wd = tmp_path / "run"
    wd.mkdir()
    if blob == "malicious":
        buf = io.BytesIO()
        torch.save({"format": "pcnn-train-v1", "x": _Payload(tmp_path / "pwned")}, buf)
        blob = buf.getvalue()
    (wd / "last.pt").write_bytes(blob)
    with pytest.raises(CheckpointError, match=expect) as e:
        fit(cfg_of(), wd, resume=True)
    assert "weights_only" not in str(e.value) and not str(e.value).rstrip().endswith(":")
    assert not (tmp_path / "pwned").exists()


def test_log_likelihoods_accepts_float64_and_float16(tiny):
    x = rand_images(3)
    ref = pcnn.log_likelihoods(tiny, x)
    assert torch.equal(pcnn.log_likelihoods(tiny, x.double()), ref)
    half = pcnn.log_likelihoods(tiny, x.half())
    assert half.dtype == torch.float32 and torch.allclose(half, ref, rtol=1e-3)


def test_sample_rejects_class_names_and_bad_classes(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"class indices.*'panda'"):
        pcnn.sample(tiny, ["panda"])
    from pcnn.sampling.sets import write_sample_set
    out = tmp_path / "samples"
    with pytest.raises(ValueError, match=r"classes must be in \[0, 4\).*7"):
        write_sample_set(tiny, out, per_class=1, classes=[7], show_progress=False)
    assert not out.exists()


# ------------------------------------------------------------------ 7. thread count

def test_run_state_records_the_runtime_and_a_thread_change_warns(tmp_path):
    wd = tmp_path / "run"
    fit(cfg_of(max_steps=2), wd)
    rt = state(wd)["runtime"]
    assert rt == {"threads": 1, "device": "cpu", "precision": "float32"}
    torch.set_num_threads(2)  # the one_thread fixture restores it
    images, labels = data()
    with pytest.warns(UserWarning, match=r"written with 1 CPU thread.*this run uses 2.*OMP_NUM_THREADS=1"):
        train(cfg_of(max_steps=3), wd, (images, labels), (images[:8], labels[:8]), resume=True, progress=False)


# ------------------------------------------------------------------ 8. smaller

def test_classify_quiet_hides_the_loading_bar(ckpt32, fake_data, capsys):
    assert cli.main(["classify", "--checkpoint", str(ckpt32), "--data-dir", str(fake_data), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_exports_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = pcnn.save(tmp_path / "m.safetensors", pcnn.PixelCNNpp(tiny_config()))
        fit(cfg_of(), tmp_path / "run")
        os.umask(0o077)
        private = pcnn.save(tmp_path / "p.safetensors", pcnn.PixelCNNpp(tiny_config()))
    finally:
        os.umask(old)
    for p in (path, tmp_path / "run" / "model.safetensors", tmp_path / "run" / "best.safetensors",
              tmp_path / "run" / "last.pt", tmp_path / "run" / "metrics.jsonl"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_break_idle_lock_only_takes_an_idle_lock_of_another_host(tmp_path):
    """A recycled Colab runtime (a new host) resuming a run kept on Drive: the old host's lock goes only
    when the run's files have been idle long enough that no run can still be writing there."""
    import json as _json
    import os as _os
    import socket
    import time as _time
    from pcnn.train.workdir import LOCK_NAME, break_idle_lock
    wd = tmp_path / "run"
    wd.mkdir()
    assert break_idle_lock(wd, 30) is None                                    # no lock
    lock = wd / LOCK_NAME
    (wd / "last.pt").write_bytes(b"x")
    lock.write_text(_json.dumps({"pid": 1, "host": socket.gethostname()}))
    assert break_idle_lock(wd, 0) is None and lock.exists()                   # this host: WorkdirLock judges it
    lock.write_text(_json.dumps({"pid": 1, "host": "old-runtime", "started": "then"}))
    now = _time.time()
    assert break_idle_lock(wd, 30, now=now + 29 * 60) is None and lock.exists()   # busy 29 min ago: kept
    old = now - 31 * 60
    _os.utime(lock, (old, old))
    _os.utime(wd / "last.pt", (now, now))
    assert break_idle_lock(wd, 30, now=now + 60) is None and lock.exists()        # last.pt is fresh: kept
    _os.utime(wd / "last.pt", (old, old))
    note = break_idle_lock(wd, 30, now=now)
    assert note.startswith("note: removed the lock of host old-runtime") and not lock.exists()
