"""Training loop: config handling, LR schedule, exact resume (in process and after SIGKILL),
non-finite step skipping, DDP with gloo, and an end-to-end run on a few real images."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import pcnn
from pcnn.model.network import PixelCNNpp
from pcnn.cli.main import main as cli_main
from pcnn.train import (METRIC_COLUMNS, TrainConfig, apply_overrides, ema_decay_at, exports_ema, lr_at,
                        train)

from conftest import ROOT, data_dir

CONFIGS = sorted((ROOT / "configs").glob("*.json"))
# Subprocesses: one thread each (the CI box has 2 shared cores; oversubscribed
# OpenMP threads make tiny models 10-50x slower).
SUB_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


pytestmark = pytest.mark.usefixtures("one_thread")


def main(argv):
    """``python -m pcnn train ...``"""
    return cli_main(["train", *argv])


def tiny_train(**kw):
    model = dict(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, image_size=8, dropout=0.5, fusion="blocks")
    model.update(kw.pop("model", {}))
    base = dict(model=model, epochs=2, batch_size=8, lr=2e-3, lr_decay=0.999, ema=0.99, val_every=1,
                eval_batch_size=64, checkpoint_minutes=60.0)
    base.update(kw)
    return TrainConfig.from_dict(base)


def fake_data(n=32, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
            torch.randint(0, 4, (n,), generator=g))


def run(cfg, workdir, n=32, resume=False, **kw):
    images, labels = fake_data(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "resuming with changed settings ..."
        return train(cfg, workdir, (images, labels), (images[:8], labels[:8]), resume=resume, progress=False, **kw)


def load_state(workdir):
    return torch.load(Path(workdir) / "last.pt", map_location="cpu", weights_only=True)


def assert_same_tensors(a, b, what):
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs"


# ------------------------------------------------------------------ config

def test_config_json_round_trip_and_unknown_keys():
    cfg = tiny_train(optimizer="adamw", betas=[0.9, 0.99], augment={"hflip": False, "translate": 1})
    again = TrainConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg and again.betas == (0.9, 0.99) and again.augment.translate == 1
    with pytest.raises(ValueError, match="unknown TrainConfig key.*'lrr'.*valid keys"):
        TrainConfig.from_dict({"lrr": 1e-3})
    with pytest.raises(ValueError, match="unknown ModelConfig key.*nr_filter'.*valid keys"):
        TrainConfig.from_dict({"model": {"nr_filter": 8}})
    with pytest.raises(ValueError, match="unknown AugmentConfig key.*flip'"):
        TrainConfig.from_dict({"augment": {"flip": True}})
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig.from_dict({"optimizer": "sgd"})


def test_apply_overrides_parses_values_and_rejects_unknown_keys():
    d = apply_overrides({"model": {"nr_filters": 8}}, ["model.nr_filters=80", "lr=2e-4", "tensorboard=true",
                                                      "model.fusion=first_conv+blocks", "data_dir=null",
                                                      "betas=[0.9, 0.99]", "augment.rotate_deg=5"])
    cfg = TrainConfig.from_dict(d)
    assert cfg.model.nr_filters == 80 and cfg.lr == 2e-4 and cfg.tensorboard is True
    assert cfg.model.fusion == ("first_conv", "blocks") and cfg.data_dir is None
    assert cfg.betas == (0.9, 0.99) and cfg.augment.rotate_deg == 5
    for bad in ("nope=1", "model.nope=1", "augment.nope=1", "modle.nr_filters=8", "lr"):
        with pytest.raises(ValueError, match="valid keys|key=value"):
            apply_overrides({}, [bad])


def test_cli_rejects_unknown_key(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path / "w"), "--set", "model.nr_filterz=8"]) == 2
    assert "nr_filterz" in capsys.readouterr().err


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_presets_load(path):
    cfg = TrainConfig.from_json(path)
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    PixelCNNpp(cfg.model)  # builds


REMOVED_STAGES = json.loads((ROOT / "checkpoints" / "stages" / "REMOVED.json").read_text())["removed"]


@pytest.mark.parametrize("path", [p for p in CONFIGS if TrainConfig.from_json(p).init_from],
                         ids=lambda p: p.stem)
def test_preset_init_from_is_committed_and_fits(path):
    """Fine-tune presets start from a committed export whose config equals theirs up to dropout,
    or from a superseded stage that left the tree and is listed in checkpoints/stages/REMOVED.json."""
    cfg = TrainConfig.from_json(path)
    src = ROOT / cfg.init_from
    if not src.is_file():
        listed = {r["path"] for r in REMOVED_STAGES}
        assert cfg.init_from in listed, f"{path.name}: init_from {cfg.init_from} is neither in the repository " \
                                        "nor in checkpoints/stages/REMOVED.json"
        return
    stored = pcnn.load(src).config
    assert dataclasses.replace(stored, dropout=cfg.model.dropout) == cfg.model


@pytest.mark.parametrize("entry", REMOVED_STAGES, ids=lambda r: Path(r["path"]).name)
def test_removed_stages_are_restorable_from_history(entry):
    """Each removed stage names its card (still in the tree) and a commit whose blob has the
    recorded size and sha256, so its restore command gives back the very file."""
    import hashlib
    assert (ROOT / entry["card"]).exists(), entry["card"]
    assert not (ROOT / entry["path"]).exists(), f"{entry['path']} is listed as removed but is in the tree"
    assert entry["restore"] == f"git show {entry['commit'][:12]}:{entry['path']} > {entry['path']}"
    try:
        blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{entry['commit']}:{entry['path']}"],
                              capture_output=True, timeout=60)
    except FileNotFoundError:
        pytest.skip("git not installed")
    if blob.returncode != 0:
        pytest.skip(f"this clone lacks the history of {entry['path']}: {blob.stderr.decode()[:200]}")
    assert len(blob.stdout) == entry["bytes"]
    assert hashlib.sha256(blob.stdout).hexdigest() == entry["sha256"]


def test_all_presets_present():
    assert {p.stem for p in CONFIGS} >= {"starter", "report_chan", "report_shakouri", "film_large", "smoke"}


# ------------------------------------------------------------------ schedules

def test_lr_decays_per_step(tmp_path):
    cfg = tiny_train(lr=1e-3, lr_decay=0.9, epochs=1, max_steps=3, model={"dropout": 0.0})
    run(cfg, tmp_path)
    state = load_state(tmp_path)
    assert state["step"] == 3
    assert state["optimizer"]["param_groups"][0]["lr"] == 1e-3 * 0.9 ** 3  # exactly, not once per epoch
    assert [lr_at(cfg, k) for k in range(3)] == [1e-3, 1e-3 * 0.9, 1e-3 * 0.9 ** 2]
    warm = tiny_train(lr=1e-3, lr_decay=1.0, warmup_steps=4)
    assert [lr_at(warm, k) for k in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_ema_warmup_decay():
    cfg = tiny_train(ema=0.999)
    assert ema_decay_at(cfg, 0) == pytest.approx(0.1) and ema_decay_at(cfg, 90) == pytest.approx(0.91)
    assert ema_decay_at(cfg, 10 ** 6) == 0.999
    assert ema_decay_at(tiny_train(ema=0.999, ema_warmup=False), 0) == 0.999


# ------------------------------------------------------------------ end to end

def test_train_real_images_end_to_end(tmp_path):
    if not (data_dir() / "validation.csv").exists():
        pytest.skip(f"CPEN455 data not found at {data_dir()}")
    from pcnn.data.dataset import load_split
    split = load_split("validation", data_dir(), size=8, show_progress=False).subset(slice(0, 32))
    cfg = tiny_train(epochs=4, lr=5e-3, lr_decay=1.0, model={"dropout": 0.0})
    hist = train(cfg, tmp_path, split, split, progress=False)
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4]
    assert hist[-1]["train_bpd"] < hist[0]["train_bpd"] - 0.2
    assert hist[-1]["val_bpd_raw"] < hist[0]["val_bpd_raw"]
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "last.pt", "model.safetensors", "best.safetensors"):
        assert (tmp_path / name).is_file(), name
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(METRIC_COLUMNS) and len(csv_lines) == 5
    model = pcnn.load(tmp_path / "model.safetensors")
    assert model.config == cfg.model
    meta = pcnn.read_metadata(tmp_path / "model.safetensors")
    assert meta["weights"] in ("ema", "raw") and meta["epoch"] == 4
    assert meta["val_bpd"] == min(hist[-1]["val_bpd"], hist[-1]["val_bpd_raw"])
    best = pcnn.read_metadata(tmp_path / "best.safetensors")
    assert best["val_bpd"] == pytest.approx(min(min(r["val_bpd"], r["val_bpd_raw"]) for r in hist))
    assert TrainConfig.from_json(tmp_path / "config.json") == cfg
    with pytest.raises(FileExistsError):
        train(cfg, tmp_path, split, split, progress=False)


# ------------------------------------------------------------------ exact resume

def test_exact_resume_is_bitwise_equal(tmp_path):
    cfg = tiny_train(epochs=2)  # 4 batches per epoch, dropout and flips on
    straight = run(cfg, tmp_path / "straight")
    # Stop mid-epoch 1 (after batch 3 of 4), resume and stop mid-epoch 2 (batch 6), resume to the end.
    run(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 3}), tmp_path / "resumed")
    s = load_state(tmp_path / "resumed")
    assert (s["epoch"], s["pos"], s["step"]) == (0, 3, 3) and s["perm"] is not None
    run(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 6}), tmp_path / "resumed", resume=True)
    resumed = run(cfg, tmp_path / "resumed", resume=True)
    a, b = load_state(tmp_path / "straight"), load_state(tmp_path / "resumed")
    assert a["step"] == b["step"] == 8 and a["epoch"] == b["epoch"] == 2
    assert_same_tensors(a["model"], b["model"], "model")
    assert_same_tensors(a["ema"], b["ema"], "EMA")
    for k in a["optimizer"]["state"]:
        assert_same_tensors(a["optimizer"]["state"][k], b["optimizer"]["state"][k], f"optimizer state {k}")
    assert torch.equal(a["data_generator"], b["data_generator"])
    assert straight[-1]["train_bpd"] == resumed[-1]["train_bpd"]  # the epoch's row is rebuilt exactly
    assert [r["epoch"] for r in resumed if not r["partial"]] == [1, 2]


def test_sigkill_then_resume(tmp_path):
    images, labels = fake_data(64)
    data = tmp_path / "data.pt"
    torch.save({"train": {"images": images, "labels": labels},
                "validation": {"images": images[:8], "labels": labels[:8]}}, data)
    cfg = tiny_train(epochs=4, checkpoint_every_steps=2)  # 8 batches per epoch
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    work = tmp_path / "run"
    cmd = [sys.executable, "-m", "pcnn", "train", "--workdir", str(work), "--data-tensors", str(data), "--no-progress"]
    proc = subprocess.Popen(cmd + ["--config", str(tmp_path / "cfg.json")], env=SUB_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at = None
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (work / "last.pt").exists():
                s = load_state(work)
                if s["pos"] > 0 and s["iteration"] < 3 * 8:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_at = (s["epoch"], s["pos"])
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait()
    assert killed_at is not None, f"never saw a mid-epoch checkpoint: {proc.stderr.read().decode()[-2000:]}"
    s = load_state(work)  # a kill never leaves a torn last.pt
    assert s["iteration"] < 4 * 8
    res = subprocess.run(cmd + ["--resume"], env=SUB_ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    done = load_state(work)
    assert (done["epoch"], done["pos"], done["iteration"]) == (4, 0, 32)
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    pcnn.load(work / "model.safetensors")
    # Same as a run never killed (same thread count, so bitwise on CPU).
    run(cfg, tmp_path / "straight", n=64)
    assert_same_tensors(load_state(tmp_path / "straight")["model"], done["model"], "model after kill+resume")


def _signal_after_steps(monkeypatch, at_steps, sig):
    """Make the process send itself ``sig`` right after training steps ``at_steps`` (1-based)."""
    import pcnn.train.loop as loop
    orig, count = loop.Trainer._train_step, {"n": 0}

    def step(self, x, y):
        out = orig(self, x, y)
        count["n"] += 1
        if count["n"] in at_steps:
            os.kill(os.getpid(), sig)
        return out
    monkeypatch.setattr(loop.Trainer, "_train_step", step)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_at_the_next_batch_exports_and_resumes_exactly(tmp_path, monkeypatch, caplog, sig):
    """Ctrl-C / Jupyter's interrupt / a runtime's SIGTERM: nothing since the last save is lost."""
    cfg = tiny_train(epochs=2)  # 4 batches per epoch; last.pt only at epoch ends (checkpoint_minutes 60)
    run(cfg, tmp_path / "straight")
    before = signal.getsignal(sig)
    _signal_after_steps(monkeypatch, {3}, sig)
    hist = run(cfg, tmp_path / "stopped")               # returns normally, no traceback
    assert signal.getsignal(sig) is before              # the caller's handler is back
    assert f"{signal.Signals(sig).name}: the run stops after this batch" in caplog.text   # logged (pcnn.train.stop)
    s = load_state(tmp_path / "stopped")
    assert (s["epoch"], s["pos"], s["iteration"]) == (0, 3, 3)   # stopped after batch 3, saved there
    assert hist[-1]["partial"] and hist[-1]["val_bpd"] is not None
    assert pcnn.read_metadata(tmp_path / "stopped" / "model.safetensors")["step"] == 3
    monkeypatch.undo()
    run(cfg, tmp_path / "stopped", resume=True)
    assert_same_tensors(load_state(tmp_path / "straight")["model"], load_state(tmp_path / "stopped")["model"],
                        "model after signal + resume")


def test_a_second_signal_interrupts_at_once(tmp_path, monkeypatch):
    cfg = tiny_train(epochs=2)
    _signal_after_steps(monkeypatch, {2, 3}, signal.SIGINT)  # the second arrives before the loop checks
    import pcnn.train.loop as loop
    orig_check = loop.Trainer._should_stop
    monkeypatch.setattr(loop.Trainer, "_should_stop",
                        lambda self, started: False if self.iteration < 4 else orig_check(self, started))
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
        run(cfg, tmp_path / "w")
    assert signal.getsignal(signal.SIGINT) is before
    assert not (tmp_path / "w" / "last.pt").exists()  # nothing saved before the first epoch end


def test_cli_says_how_to_continue_after_a_stop(tmp_path, capsys):
    images, labels = fake_data(32)
    data = tmp_path / "data.pt"
    torch.save({"train": {"images": images, "labels": labels},
                "validation": {"images": images[:8], "labels": labels[:8]}}, data)
    (tmp_path / "cfg.json").write_text(tiny_train(epochs=2).to_json())
    work = tmp_path / "run"
    assert main(["--config", str(tmp_path / "cfg.json"), "--workdir", str(work), "--data-tensors", str(data),
                 "--no-progress", "--max-steps", "3"]) == 0
    assert f"stopped inside epoch 1 (exported, last.pt saved); continue with --resume --workdir {work}" \
        in capsys.readouterr().err


# ------------------------------------------------------------------ non-finite steps

def _poisoned_forward(monkeypatch, nan_output_calls, nan_grad_calls=()):
    orig = PixelCNNpp.forward
    count = {"n": 0}

    def forward(self, x, y=None, check=True):
        out = orig(self, x, y, check)
        if self.training:
            count["n"] += 1
            if nan_output_calls == "all" or count["n"] in nan_output_calls:
                out = out * float("nan")
            if count["n"] in nan_grad_calls:
                out.register_hook(lambda g: torch.full_like(g, float("nan")))
        return out
    monkeypatch.setattr(PixelCNNpp, "forward", forward)


def test_nonfinite_steps_are_skipped(tmp_path, monkeypatch):
    _poisoned_forward(monkeypatch, nan_output_calls={2, 3}, nan_grad_calls={6})
    cfg = tiny_train(epochs=2, max_bad_steps=3)
    images, labels = fake_data(32)
    with pytest.warns(UserWarning, match="non-finite loss or gradient"):
        hist = train(cfg, tmp_path, (images, labels), (images[:8], labels[:8]), progress=False)
    s = load_state(tmp_path)
    assert s["iteration"] == 8 and s["step"] == 5 and s["bad_total"] == 3
    assert [r["bad_steps"] for r in hist] == [2, 1]
    assert s["optimizer"]["param_groups"][0]["lr"] == cfg.lr * cfg.lr_decay ** 5
    assert all(torch.isfinite(t).all() for t in s["model"].values())
    assert all(torch.isfinite(t).all() for t in s["ema"].values())


def test_too_many_nonfinite_steps_stop_the_run(tmp_path, monkeypatch):
    _poisoned_forward(monkeypatch, nan_output_calls="all")
    cfg = tiny_train(epochs=2, max_bad_steps=3)
    with pytest.raises(RuntimeError, match="3 non-finite steps in a row"):
        run(cfg, tmp_path)


# ------------------------------------------------------------------ DDP

def test_ddp_two_gloo_processes_match_single_process(tmp_path):
    images, labels = fake_data(32)
    data = tmp_path / "data.pt"
    torch.save({"train": {"images": images, "labels": labels},
                "validation": {"images": images[:8], "labels": labels[:8]}}, data)
    cfg = tiny_train(epochs=1, max_steps=1, model={"dropout": 0.0})
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "pcnn", "train", "--config", str(tmp_path / "cfg.json"), "--workdir", str(tmp_path / "ddp"),
           "--data-tensors", str(data), "--no-progress"]
    res = subprocess.run(cmd, env=SUB_ENV, capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr[-3000:]
    ddp = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    single = run(cfg, tmp_path / "single")
    assert len(ddp) == 1 and ddp[0]["step"] == 1
    assert ddp[0]["train_bpd"] == pytest.approx(single[0]["train_bpd"], rel=1e-5)
    s = load_state(tmp_path / "ddp")
    assert s["world_size"] == 2 and len(s["rng"]) == 2


# ------------------------------------------------------------------ discriminative term, fine-tuning

@pytest.mark.parametrize("w", [0.0, 0.7])
def test_training_loss_matches_per_class_reference(w):
    """training_loss (one batched forward over all classes) == bits/dim of the true class +
    w * -log p(y|x) computed class by class in float64."""
    from conftest import rand_images, randomize_, tiny_config
    from pcnn.model.likelihood import bits_per_dim, nll
    from pcnn.train import training_loss
    torch.manual_seed(0)
    mc = tiny_config(nr_logistic_mix=2)
    model = randomize_(PixelCNNpp(mc)).eval()
    x, y = rand_images(5, seed=1), torch.tensor([0, 3, 1, 1, 2])
    loss, bpd = training_loss(model, x, y, mc, w)
    m64 = model.double()
    with torch.no_grad():
        ll = torch.stack([-nll(x.double(), m64(x.double(), torch.full((5,), c)), 2) for c in range(4)], 1)
    ref_bpd = bits_per_dim(-ll.gather(1, y[:, None]).squeeze(1), 3 * 64).mean()
    ref_ce = (torch.logsumexp(ll, 1) - ll.gather(1, y[:, None]).squeeze(1)).mean()
    assert bpd.item() == pytest.approx(ref_bpd.item(), rel=1e-5)
    assert loss.item() == pytest.approx(ref_bpd.item() + w * ref_ce.item(), rel=1e-5)
    assert loss.requires_grad


def test_disc_weight_validation():
    with pytest.raises(ValueError, match="disc_weight"):
        tiny_train(disc_weight=-1.0)
    with pytest.raises(ValueError, match="conditional"):
        tiny_train(disc_weight=0.5, model=dict(fusion=[]))


def test_train_with_disc_term_runs_and_changes_the_result(tmp_path):
    h0 = run(tiny_train(epochs=1), tmp_path / "gen")
    h1 = run(tiny_train(epochs=1, disc_weight=5.0), tmp_path / "disc")
    assert all(torch.isfinite(torch.tensor(r["train_bpd"])) for r in h0 + h1)
    a = pcnn.load(tmp_path / "gen" / "model.safetensors").state_dict()
    b = pcnn.load(tmp_path / "disc" / "model.safetensors").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_init_from_starts_at_the_exported_weights(tmp_path):
    run(tiny_train(epochs=1), tmp_path / "a")
    export = tmp_path / "a" / "model.safetensors"
    # one step at a negligible learning rate, no EMA: the weights stay those of the export
    run(tiny_train(epochs=1, max_steps=1, lr=1e-12, ema=0.0, init_from=str(export)), tmp_path / "b")
    a = pcnn.load(export).state_dict()
    b = pcnn.load(tmp_path / "b" / "model.safetensors").state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-8), k
    # a fresh init is far from it
    c = PixelCNNpp(pcnn.load(export).config).state_dict()
    assert any(not torch.allclose(a[k], c[k], atol=1e-3) for k in a)
    with pytest.raises(pcnn.CheckpointError):
        run(tiny_train(epochs=1, init_from=str(export), model=dict(nr_filters=16)), tmp_path / "c")


def test_init_from_may_change_dropout_only(tmp_path):
    """Dropout has no parameters: a fine-tune can lower it; the export then records the new value."""
    run(tiny_train(epochs=1), tmp_path / "a")
    export = tmp_path / "a" / "model.safetensors"
    src = pcnn.load(export)
    new_p = 0.0 if src.config.dropout > 0 else 0.3
    run(tiny_train(epochs=1, max_steps=1, lr=1e-12, ema=0.0, init_from=str(export), model=dict(dropout=new_p)),
        tmp_path / "b")
    b = pcnn.load(tmp_path / "b" / "model.safetensors")
    assert b.config.dropout == new_p
    assert b.config == dataclasses.replace(src.config, dropout=new_p)
    for k, v in src.state_dict().items():
        assert torch.allclose(v, b.state_dict()[k], rtol=0, atol=1e-8), k


def test_exports_ema_rule():
    """Lower validation bits/dim wins; a tie keeps the EMA; no EMA exports the raw weights."""
    assert exports_ema(3.9, 4.0) and exports_ema(4.0, 4.0)
    assert not exports_ema(4.1, 4.0) and not exports_ema(None, 4.0)


def test_validation_objective_is_the_training_objective():
    """bits/dim + disc_weight x cross-entropy (nats), bits/dim alone for a likelihood run."""
    from pcnn.train import validation_objective
    figs = {"bpd": 3.5, "ce": 0.25}
    assert validation_objective(figs, 0.0) == 3.5
    assert validation_objective(figs, 0.01) == pytest.approx(3.5025, abs=1e-12)
    with pytest.raises(ValueError, match="cross-entropy"):
        validation_objective({"bpd": 3.5, "ce": None}, 0.01)


def test_evaluate_reports_the_cross_entropy_the_loss_adds(tmp_path):
    """evaluate()'s ce is the mean -log p(y|x) of the same log-likelihoods (float64 reference)."""
    from pcnn.train import evaluate
    model = PixelCNNpp(tiny_train().model).eval()
    images, labels = fake_data(12)
    x = pcnn.model.likelihood.to_float(images)
    figs = evaluate(model, x, labels, batch_size=64)
    ll = pcnn.log_likelihoods(model, x).double()
    ref = (torch.logsumexp(ll, 1) - ll.gather(1, labels[:, None]).squeeze(1)).mean()
    assert figs["ce"] == pytest.approx(float(ref), rel=1e-6)
    assert figs["ce"] > 0


def test_best_export_is_chosen_by_the_run_objective(tmp_path):
    """With disc_weight > 0 every evaluated row carries val_objective = val_bpd + w * val_ce, and
    best.safetensors holds the row with the lowest objective (ship rule v2's candidate)."""
    from pcnn.model.checkpoint import read_metadata
    w = 2.0
    hist = run(tiny_train(epochs=3, disc_weight=w), tmp_path / "r")
    for r in hist:
        assert r["val_objective"] == pytest.approx(r["val_bpd"] + w * r["val_ce"], rel=1e-9)
        assert r["val_objective_raw"] == pytest.approx(r["val_bpd_raw"] + w * r["val_ce_raw"], rel=1e-9)
    best = read_metadata(tmp_path / "r" / "best.safetensors")
    last = read_metadata(tmp_path / "r" / "model.safetensors")
    assert best["selected_by"] == "val_objective" and best["disc_weight"] == w
    chosen = [min(r["val_objective"], r["val_objective_raw"]) for r in hist]
    assert best["val_objective"] == pytest.approx(min(chosen), rel=1e-9)
    assert best["epoch"] == 1 + chosen.index(min(chosen))
    assert last["val_objective"] == pytest.approx(chosen[-1], rel=1e-9)
    assert best["val_objective"] == pytest.approx(best["val_bpd"] + w * best["val_ce"], rel=1e-9)
    # the metric CSV carries the objective too
    header = (tmp_path / "r" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val_objective" in header and "val_ce" in header


def test_resume_reads_a_state_written_before_the_objective(tmp_path):
    """last.pt files written before ship rule v2 store best_bpd; a resume takes it as the objective."""
    wd = tmp_path / "r"
    run(tiny_train(epochs=2, max_steps=4), wd)
    s = load_state(wd)
    s["best_bpd"] = s.pop("best_objective")
    torch.save(s, wd / "last.pt")
    hist = run(tiny_train(epochs=2), wd, resume=True)
    assert hist[-1]["epoch"] == 2 and (wd / "best.safetensors").exists()
    assert load_state(wd)["best_objective"] <= s["best_bpd"]


def test_wandb_run_id_is_kept_with_the_workdir(tmp_path, monkeypatch):
    """Every train() call on one workdir (a CLI --resume, notebook 02's epoch-by-epoch calls) logs to
    the same W&B run: the id is made once and kept in the workdir (a stand-in wandb module)."""
    import sys
    import types
    from pcnn.train.metrics import MetricLoggers
    inits, ids = [], iter(["abc123", "zzz999"])
    fake = types.ModuleType("wandb")
    fake.util = types.SimpleNamespace(generate_id=lambda: next(ids))
    fake.init = lambda **kw: inits.append(kw)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = TrainConfig(wandb=True)
    for _ in range(2):
        MetricLoggers(cfg, tmp_path, enabled=True)
    assert [kw["id"] for kw in inits] == ["abc123", "abc123"] and all(kw["resume"] == "allow" for kw in inits)
    assert (tmp_path / "wandb_id.txt").read_text().strip() == "abc123"
    (tmp_path / "other").mkdir()
    MetricLoggers(cfg, tmp_path / "other", enabled=True)
    assert inits[-1]["id"] == "zzz999"   # another workdir, another run
