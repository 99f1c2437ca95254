"""The benchmark scripts run and write their tables (tiny settings; timings are not asserted)."""
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from conftest import data_dir  # noqa: E402

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
