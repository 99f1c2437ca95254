"""scripts/gpu_run.py, dry-run on the CPU as CI runs it, its split/join of large exports, and the
trainer's wall-clock budget (max_minutes) it relies on."""
import hashlib
import json
import sys
import warnings

import pytest
import torch

import pcnn
import pcnn.train.loop
from pcnn.train import TrainConfig

from conftest import ROOT
from test_train import fake_data, load_state, run, tiny_train

sys.path.insert(0, str(ROOT / "scripts"))
import gpu_run  # noqa: E402


def test_cpu_dry_run_writes_every_result(tmp_path):
    images, labels = fake_data(64, size=32)
    data = tmp_path / "data.pt"
    torch.save({"train": {"images": images, "labels": labels},
                "validation": {"images": images[:8], "labels": labels[:8]}}, data)
    out = tmp_path / "out"
    rc = gpu_run.main(["--device", "cpu", "--minutes", "0.2", "--preset", str(ROOT / "configs" / "smoke.json"),
                       "--data-tensors", str(data), "--sizes", "1/8/2", "--bench-steps", "1", "--no-compile",
                       "--tests-timeout", "240", "--out", str(out)])
    assert rc == 0
    facts = json.loads((out / "device.json").read_text())
    assert facts["device"] == "cpu" and facts["tests_rc"] == 0, (out / "tests.log").read_text()[-2000:]
    assert "passed" in (out / "tests.log").read_text()
    assert facts["amp_fp16"].startswith("refused")
    bench = (out / "bench.md").read_text().splitlines()
    row = [r for r in bench if r.startswith("| 1/8/2")][0].split("|")
    assert len(row) == 5 and all(float(c) > 0 for c in row[2:4])  # fp32 and bf16 columns
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["val_bpd"] > 0
    model = pcnn.load(out / "model.safetensors")
    assert model.config.nr_filters == 8
    assert len(list(out.iterdir())) <= 8  # the device tool returns at most 8 files


def test_split_and_join_round_trip(tmp_path):
    torch.manual_seed(0)
    model = pcnn.PixelCNNpp(pcnn.ModelConfig(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, image_size=8))
    src = pcnn.checkpoint.save(tmp_path / "model.safetensors", model)
    out = tmp_path / "out"
    out.mkdir()
    files = gpu_run.split_for_return(src, out, part_bytes=4096)
    assert len(files) > 2 and all(f.stat().st_size <= 4096 for f in files)
    assert (out / "model.safetensors.sha256").read_text().strip() == hashlib.sha256(src.read_bytes()).hexdigest()
    rebuilt = gpu_run.join_parts(out, tmp_path / "rebuilt.safetensors")
    assert rebuilt.read_bytes() == src.read_bytes()
    (out / "model.safetensors.part01").write_bytes(b"x" * 10)
    with pytest.raises(SystemExit, match="sha256"):
        gpu_run.join_parts(out, tmp_path / "bad.safetensors")


def test_max_minutes_stops_on_time_and_resumes(tmp_path, monkeypatch):
    clock = {"t": 1000.0}

    def fake_monotonic():
        clock["t"] += 5.0        # every call to the clock costs 5 "seconds"
        return clock["t"]
    monkeypatch.setattr(pcnn.train.loop.time, "monotonic", fake_monotonic)
    cfg = tiny_train(epochs=2, max_minutes=0.5)     # 8 batches in all
    hist = run(cfg, tmp_path / "w")
    s = load_state(tmp_path / "w")
    assert 0 < s["iteration"] < 8 and hist[-1]["partial"]
    assert pcnn.load(tmp_path / "w" / "model.safetensors")   # evaluated and exported on the way out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(TrainConfig.from_dict({**cfg.to_dict(), "max_minutes": None}), tmp_path / "w", resume=True)
    assert load_state(tmp_path / "w")["iteration"] == 8


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "5", True])
def test_max_minutes_validation(bad):
    with pytest.raises(ValueError, match="max_minutes"):
        TrainConfig(max_minutes=bad)
