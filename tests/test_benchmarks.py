"""The benchmark scripts run and write their tables (tiny settings; timings are not asserted)."""
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from conftest import STARTER, data_dir  # noqa: E402

import bench_model  # noqa: E402
import bench_train_variants  # noqa: E402


def _rows(path):
    return [line for line in path.read_text().splitlines() if line.startswith("| ") and "---" not in line]


def test_cpu_name_is_text():
    assert isinstance(bench_model.cpu_name(), str) and bench_model.cpu_name()


def test_train_variants_table(tmp_path):
    out = tmp_path / "variants.md"
    bench_train_variants.main(["--rounds", "1", "--steps", "1", "--variants", "port-style", "eager-celu", "pcnn",
                               "--out", str(out)])
    rows = _rows(out)
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["port-style", "eager-celu", "pcnn"]
    assert all(float(r.split("|")[2]) > 0 for r in rows[1:])
    assert rows[1].split("|")[4].strip() == "1.00x"


def test_port_style_nin_has_the_nin_shape():
    import torch
    nin = bench_train_variants.PermuteNIN(6, 4)
    assert nin(torch.randn(2, 6, 3, 5)).shape == (2, 4, 3, 5)


def test_trainer_bench_on_real_images(tmp_path, monkeypatch):
    import bench_trainer
    monkeypatch.setenv("PCNN_DATA_DIR", str(data_dir()))
    out = tmp_path / "trainer.md"
    bench_trainer.main(["--steps", "1", "--batches", "4", "--rounds", "1", "--val", "4", "--out", str(out)])
    rows = _rows(out)
    assert rows[1].split("|")[1].strip() == "4" and float(rows[1].split("|")[2]) > 0


def test_elementwise_bench_table(tmp_path):
    import bench_elementwise
    out = tmp_path / "elementwise.md"
    bench_elementwise.main(["--repeats", "1", "--out", str(out)])
    rows = _rows(out)[1:]
    assert len(rows) == 5 and all(float(r.split("|")[3]) > 0 for r in rows)




def test_vs_starter_table_imports_the_real_starter(tmp_path, monkeypatch):
    import pytest
    if not (STARTER / "model.py").is_file():
        pytest.skip("the course starter is not beside the checkout")
    import bench_vs_starter
    monkeypatch.setenv("PCNN_DATA_DIR", str(data_dir()))
    out = tmp_path / "vs.md"
    res = bench_vs_starter.main(["--starter-dir", str(STARTER), "--sizes", "1/8/2", "--rounds", "1", "--steps", "1",
                                 "--random-data", "--peak-size", "256", "--out", str(out)])
    assert set(res["1/8/2"]) == {"starter", "pcnn-fp32", "pcnn-auto", "trainer-auto"}
    rows = _rows(out)[1:]
    assert [r.split("|")[2].strip() for r in rows] == ["starter", "pcnn-fp32", "pcnn-auto", "trainer-auto"]
    assert rows[0].split("|")[5].strip() == "1.00x" and all(float(r.split("|")[3]) > 0 for r in rows)
    assert "peaks" in out.read_text() and out.with_suffix(".json").is_file()
    assert not (BENCH / "model.py").exists() and not (BENCH / "utils.py").exists()  # imported, never vendored


def test_bf16_parity_runs_both_precisions_and_plots(tmp_path, monkeypatch):
    import bench_bf16_parity
    monkeypatch.setenv("PCNN_DATA_DIR", str(data_dir()))
    out = tmp_path / "parity"
    res = bench_bf16_parity.main(["--workdir", str(tmp_path / "runs"), "--sizes", "1/8/2", "--epochs", "1",
                                  "--val", "8", "--train-subset", "64", "--out", str(out)])
    assert set(res["1/8/2"]) == {"fp32", "bf16"}
    import torch
    states = {p: torch.load(tmp_path / "runs" / f"1-8-2_{p}" / "last.pt", weights_only=True) for p in ("fp32", "bf16")}
    assert [states[p]["amp"]["precision"] for p in ("fp32", "bf16")] == ["fp32", "bf16"]  # really two precisions
    assert any(not torch.equal(states["fp32"]["model"][k], states["bf16"]["model"][k]) for k in states["fp32"]["model"])
    assert (tmp_path / "parity.png").stat().st_size > 10_000 and (tmp_path / "parity.json").is_file()
    rows = _rows(tmp_path / "parity.md")[1:]
    assert [r.split("|")[2].strip() for r in rows] == ["fp32", "bf16"]
    # A second call reads the finished runs back instead of training again.
    again = bench_bf16_parity.main(["--workdir", str(tmp_path / "runs"), "--sizes", "1/8/2", "--epochs", "1",
                                    "--val", "8", "--train-subset", "64"])
    assert again == res


def test_bf16_scoring_table(tmp_path, monkeypatch):
    import bench_bf16_scoring
    monkeypatch.setenv("PCNN_DATA_DIR", str(data_dir()))
    out = tmp_path / "scoring.md"
    bench_bf16_scoring.main(["--limit", "4", "--out", str(out)])
    rows = _rows(out)[1:]
    assert [r.split("|")[1].strip() for r in rows] == ["fp32", "bf16"]
    assert "of 4" in rows[1] and "Decision" in out.read_text()


def test_gpu_bench_runs_on_the_cpu_without_the_starter(tmp_path, one_thread, monkeypatch):
    """bench_gpu.py with the starter (scripts/gpu_run.py's dry run, tests/test_gpu_run.py) and without it
    (a lent machine where ../shared did not travel): the pcnn rows, FLOPs, the trainer row and the
    scoring row remain. Scoring compiles with dynamo's eager backend here (inductor on the CPU is
    tests/test_scoring_compile.py's)."""
    import torch
    import torch._dynamo
    import bench_gpu
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, mode=None, dynamic=None: real(m, backend="eager", dynamic=dynamic))
    torch._dynamo.reset()
    out = tmp_path / "gpu.md"
    res = bench_gpu.main(["--device", "cpu", "--starter-dir", str(tmp_path / "nowhere"), "--sizes", "1/8/2",
                          "--batches", "4", "--rounds", "2", "--steps", "1", "--warmup", "1", "--trainer-steps", "2",
                          "--peak-size", "64", "--random-data", "--score-images", "3", "--out", str(out)])
    torch._dynamo.reset()
    sc = res["scoring"]
    assert sc["images"] == 3 and sc["mode"] == "default" and sc["argmax_agree"] == 1.0
    assert sc["max_abs_diff_nats"] < 1e-2 and all(len(v) == 2 and min(v) > 0 for v in sc["rates"].values())
    assert "Scoring (pcnn.log_likelihoods" in out.read_text()
    assert [r["variant"] for r in res["results"]] == ["pcnn-eager", "pcnn-fast"]
    assert res["facts"]["starter"].startswith("no starter rows") and res["facts"]["bf16_matmul_tflops"] > 0
    eager, fast = res["results"]
    assert eager["gflop_per_image"] == fast["gflop_per_image"] > 0 and len(fast["rounds"]) == 2
    assert fast["compile_s"] is not None and "compile=off" in fast["fast"]  # auto on a CPU: no compile
    assert res["trainer"]["images_per_s"] > 0 and res["trainer"]["steps_per_epoch"] == 2
    text = out.read_text()
    assert "no starter rows" in text and "Real trainer end to end" in text and out.with_suffix(".json").is_file()
