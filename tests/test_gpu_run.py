"""scripts/gpu_run.py, dry-run on the CPU as CI runs it, its split/join of large exports, and the
trainer's wall-clock budget (max_minutes) it relies on."""
import hashlib
import json
import subprocess
import sys
import tarfile
import warnings

import pytest
import torch

import pcnn
import pcnn.train.loop
from pcnn.train import TrainConfig

from conftest import ROOT, STARTER
from test_train import fake_data, load_state, run, tiny_train

sys.path.insert(0, str(ROOT / "scripts"))
import gpu_run  # noqa: E402


@pytest.mark.usefixtures("one_thread")  # tiny models: two OpenMP threads on a busy 2-core box are 10x slower
def test_cpu_dry_run_returns_everything_in_at_most_8_files(tmp_path):
    images, labels = fake_data(64, size=32)
    data = tmp_path / "data.pt"
    torch.save({"train": {"images": images, "labels": labels},
                "validation": {"images": images[:8], "labels": labels[:8]}}, data)
    out = tmp_path / "out"
    rc = gpu_run.main(["--device", "cpu", "--budget-minutes", "6", "--reserve-minutes", "0.5", "--minutes", "0.1",
                       "--preset", str(ROOT / "configs" / "smoke.json"), "--set", "val_subset=0",
                       "--data-tensors", str(data), "--sizes", "1/8/2", "--batches", "4", "--bench-rounds", "1",
                       "--bench-steps", "1", "--bench-trainer-steps", "2", "--bench-score-images", "0", "--peak-size", "64",
                       "--starter-dir", str(STARTER), "--samples-per-class", "2", "--tests-timeout", "240",
                       "--out", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["best.safetensors", "results.tar.gz", "samples.pt"]
    with tarfile.open(out / "results.tar.gz") as tar:
        names = set(tar.getnames())
        assert names >= {"device.json", "tests.log", "bench.md", "bench.json", "train.log", "metrics.jsonl",
                         "config.json", "manifest.json"}
        facts = json.loads(tar.extractfile("device.json").read())
        tests_log = tar.extractfile("tests.log").read().decode()
        bench = tar.extractfile("bench.md").read().decode()
        rows = [json.loads(line) for line in tar.extractfile("metrics.jsonl").read().decode().splitlines()]
    assert facts["device"] == "cpu" and facts["tests_rc"] == 0, tests_log[-2000:]
    assert "passed" in tests_log and facts["amp_fp16"].startswith("refused")
    assert facts["training"]["max_minutes"] <= 0.1 and rows and rows[-1]["val_bpd"] > 0
    assert {"| 1/8/2 | 4 | starter", "| 1/8/2 | 4 | pcnn-eager", "| 1/8/2 | 4 | pcnn-fast"} <= \
        {"|".join(line.split("|")[:4]).strip() for line in bench.splitlines()}
    manifest = gpu_run.read_manifest(out)
    assert manifest["files"]["best.safetensors"]["sha256"] == hashlib.sha256(
        (out / "best.safetensors").read_bytes()).hexdigest()
    assert manifest["best"]["selected_by"]  # the trainer's best export, not the last one
    assert pcnn.load(out / "best.safetensors").config.nr_filters == 8
    s = torch.load(out / "samples.pt", weights_only=True)
    assert s["images"].dtype == torch.uint8 and s["images"].shape == (8, 3, 32, 32)
    assert s["labels"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and s["seed"] == 3
    pngs = gpu_run.samples_to_pngs(out / "samples.pt", tmp_path / "pngs")
    assert sorted(p.name for p in pngs.iterdir())[:3] == ["Class0_image_00.png", "Class0_image_01.png",
                                                         "Class1_image_00.png"]


def test_budget_leaves_the_reserve(tmp_path, monkeypatch):
    """With no time left before the reserve the training is skipped, not overrun."""
    images, labels = fake_data(16, size=32)
    data = tmp_path / "data.pt"
    torch.save({"train": {"images": images, "labels": labels},
                "validation": {"images": images[:8], "labels": labels[:8]}}, data)
    monkeypatch.setattr(gpu_run, "run_device_tests", lambda *a: 0)
    out = tmp_path / "out"
    assert gpu_run.main(["--device", "cpu", "--budget-minutes", "0.5", "--reserve-minutes", "0.5", "--no-bench",
                         "--preset", str(ROOT / "configs" / "smoke.json"), "--data-tensors", str(data),
                         "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["results.tar.gz"]
    with tarfile.open(out / "results.tar.gz") as tar:
        assert json.loads(tar.extractfile("device.json").read())["training"].startswith("skipped")


def test_split_and_join_round_trip(tmp_path):
    torch.manual_seed(0)
    model = pcnn.PixelCNNpp(pcnn.ModelConfig(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, image_size=8))
    src = pcnn.model.checkpoint.save(tmp_path / "best.safetensors", model)
    out = tmp_path / "out"
    out.mkdir()
    entry = gpu_run.split_for_return(src, out, part_bytes=4096)
    files = [out / f for f in entry["files"]]
    assert len(files) > 2 and all(f.stat().st_size <= 4096 for f in files)
    assert entry["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() and entry["bytes"] == src.stat().st_size
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "manifest.json").write_text(json.dumps({"files": {"best.safetensors": entry}}))
    gpu_run.pack(tmp_path / "keep", out / "results.tar.gz")
    rebuilt = gpu_run.join_parts(out, tmp_path / "rebuilt.safetensors")
    assert rebuilt.read_bytes() == src.read_bytes()
    (out / "best.safetensors.part01").write_bytes(b"x" * 10)
    with pytest.raises(SystemExit, match="sha256"):
        gpu_run.join_parts(out, tmp_path / "bad.safetensors")
    (out / "results.tar.gz").unlink()
    with pytest.raises(SystemExit, match="no sha256"):
        gpu_run.join_parts(out, tmp_path / "bad.safetensors")


def test_returned_file_count_is_checked_before_the_call():
    assert gpu_run.check_returned_count(57 << 20) == 6          # a 1/160/5 export: 4 parts + archive + samples
    with pytest.raises(SystemExit, match="would return 9 files, more than the 8"):
        gpu_run.check_returned_count(100 << 20)
    big = TrainConfig.from_json(ROOT / "configs" / "film_large.json")
    assert 50 << 20 < gpu_run.export_bytes_estimate(big) < 90 << 20
    gpu_run.check_returned_count(gpu_run.export_bytes_estimate(big))


def test_travelling_tree_fits_and_the_check_says_so(tmp_path):
    """What travels to the GPU machine: tracked + untracked-not-ignored files + carried paths <= 64 MiB."""
    n = gpu_run.travelling_bytes(ROOT)
    assert 0 < n and n + (16 << 20) <= gpu_run.TRAVEL_LIMIT, f"{n / 2 ** 20:.1f} MiB + the packed data"
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("ignored/\n")
    (repo / "a.txt").write_bytes(b"a" * 1000)
    (repo / "ignored").mkdir()
    (repo / "ignored" / "data.pt").write_bytes(b"d" * 5000)
    assert gpu_run.travelling_bytes(repo) == 1000 + len("ignored/\n")
    assert gpu_run.travelling_bytes(repo, ["ignored/data.pt"]) == 6000 + len("ignored/\n")
    with pytest.raises(SystemExit, match=r"error: the working tree that would travel .* over the 0 MiB a call may carry"):
        gpu_run.check_travel_size(repo, ["ignored"], limit=4096)
    assert gpu_run.main(["--check-size"]) == 0


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


def test_a_failing_training_still_returns_the_facts_and_the_error(tmp_path, monkeypatch):
    """Issue 33: before, an exception in training left --out empty (device facts and tests' log lost)."""
    images, labels = fake_data(16, size=32)
    data = tmp_path / "data.pt"
    torch.save({"train": {"images": images, "labels": labels},
                "validation": {"images": images[:8], "labels": labels[:8]}}, data)

    def tests(device, log, timeout):
        log.write_text("3 passed\n")
        return 0

    def broken(*a):
        raise AssertionError("Expected grad_scale and found_inf to be None")
    monkeypatch.setattr(gpu_run, "run_device_tests", tests)
    monkeypatch.setattr(gpu_run, "timed_training", broken)
    out = tmp_path / "out"
    assert gpu_run.main(["--device", "cpu", "--budget-minutes", "5", "--no-bench", "--preset",
                         str(ROOT / "configs" / "smoke.json"), "--data-tensors", str(data), "--out", str(out)]) == 1
    assert [p.name for p in out.iterdir()] == ["results.tar.gz"]
    with tarfile.open(out / "results.tar.gz") as tar:
        facts = json.loads(tar.extractfile("device.json").read())
        assert tar.extractfile("tests.log").read() == b"3 passed\n"
    assert facts["device"] == "cpu" and facts["tests_rc"] == 0 and facts["cpu"]
    assert facts["training"] == "failed: AssertionError: Expected grad_scale and found_inf to be None"
    assert "Traceback" in facts["errors"]["training"] and list(facts["errors"]) == ["training"]


@pytest.mark.usefixtures("one_thread")
def test_live_compile_check_counts_one_compilation(tmp_path, monkeypatch):
    """The GPU call's train_live stage, on the CPU with dynamo's eager backend: 2 epochs, one compile line."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None, **kw: real(fn, backend="eager"))
    res = gpu_run.live_compile_check(torch.device("cpu"), 2, tmp_path / "live",
                                     preset=ROOT / "configs" / "smoke.json", images=16)
    torch._dynamo.reset()
    counts = res["unique_graphs_after_each_epoch"]
    assert res["epochs"] == 2 and len(counts) == 2 and counts[0] == counts[1] > 0 and res["compiled_once"]
    assert res["compile_lines"] == 1 and not any("eagerly" in w for w in res["warnings"])


def test_each_benchmarked_precision_has_its_own_file(tmp_path, monkeypatch):
    import types
    import bench_gpu
    seen = []
    monkeypatch.setattr(bench_gpu, "main", lambda argv: seen.append(argv) or {"results": [1, 2]})
    a = types.SimpleNamespace(device="cpu", sizes=["1/8/2"], batches=[4], bench_rounds=1, bench_steps=1,
                              bench_trainer_steps=1, bench_score_images=0, starter_dir=None, peak_size=None)
    assert gpu_run.run_bench(a, tmp_path, "fp16") == {"rows": 2}
    assert gpu_run.run_bench(a, tmp_path) == {"rows": 2}
    outs = [argv[argv.index("--out") + 1] for argv in seen]
    amps = [argv[argv.index("--amp") + 1] for argv in seen]
    assert outs == [str(tmp_path / "bench_fp16.md"), str(tmp_path / "bench.md")] and amps == ["fp16", "auto"]


def test_a_sigterm_returns_what_finished(tmp_path, monkeypatch):
    """The device tool's time limit sends SIGTERM: the stages done so far come back, and no later stage starts."""
    import os
    import signal
    images, labels = fake_data(16, size=32)
    data = tmp_path / "data.pt"
    torch.save({"train": {"images": images, "labels": labels},
                "validation": {"images": images[:8], "labels": labels[:8]}}, data)

    def tests_then_killed(device, log, timeout):
        log.write_text("1 passed\n")
        os.kill(os.getpid(), signal.SIGTERM)
        return 0
    started = []
    monkeypatch.setattr(gpu_run, "run_device_tests", tests_then_killed)
    monkeypatch.setattr(gpu_run, "timed_training", lambda *a: started.append(1))
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="stopped by SIGTERM"):
        gpu_run.main(["--device", "cpu", "--no-bench", "--preset", str(ROOT / "configs" / "smoke.json"),
                      "--data-tensors", str(data), "--out", str(out)])
    assert started == [] and signal.getsignal(signal.SIGTERM) is not None
    with tarfile.open(out / "results.tar.gz") as tar:
        facts = json.loads(tar.extractfile("device.json").read())
        assert tar.extractfile("tests.log").read() == b"1 passed\n"
    assert facts["device"] == "cpu" and facts["tests_rc"] == "failed: Terminated: stopped by SIGTERM"
