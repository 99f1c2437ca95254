"""pcnn.eval.card: the measured model card (classification, calibration, cost; generation on the
real checkpoint is exercised by the shipped card, too slow for a unit test)."""
import json

import pytest
import torch

import pcnn
from pcnn.eval import card
from pcnn.eval.classification import calibration
from conftest import randomize_, tiny_config


def test_model_card_without_generation(fake_data, tmp_path):
    torch.manual_seed(0)
    model = randomize_(pcnn.PixelCNNpp(tiny_config()))
    ck = pcnn.save(tmp_path / "m.safetensors", model)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text(
        json.dumps({"epoch": 1, "seconds": 1800.0, "partial": False}) + "\n"
        + json.dumps({"epoch": 2, "seconds": 900.0, "partial": True}) + "\n")
    c = card.model_card(ck, tmp_path / "card", data_dir=fake_data, generation=False, progress=False,
                        stages=[{"name": "pretrain", "metrics": tmp_path / "run", "cpu": "X", "threads": 2,
                                 "amp": "bf16"}])
    assert c["classification"]["n"] == 6 and 0 <= c["classification"]["accuracy"] <= 1
    assert c["calibration"]["n"] == 6 and sum(b["count"] for b in c["calibration"]["bins"]) == 6
    tc = c["training_cost"]
    assert tc["seconds"] == 2700.0 and tc["cpu_hours"] == 1.5 and tc["stages"][0]["epochs"] == 1
    on_disk = json.loads((tmp_path / "card" / "card.json").read_text())
    assert on_disk["classification"]["accuracy"] == c["classification"]["accuracy"]
    md = (tmp_path / "card" / "card.md").read_text()
    assert "1.50 CPU-hours" in md and "expected calibration error" in md
    assert (tmp_path / "card" / "reliability.png").stat().st_size > 5_000


def test_card_markdown_generation_rows():
    base = {"checkpoint": "m", "config": {"nr_resnet": 1, "nr_filters": 8, "nr_logistic_mix": 2, "fusion": ["blocks"]},
            "classification": {"accuracy": 0.5, "correct": 1, "n": 2, "macro_f1": 0.4, "bpd": 4.0,
                               "per_class_accuracy": [1.0, 0.0], "confusion_matrix": [[1, 0], [1, 0]]},
            "calibration": {"ece": 0.1}}
    base["classification_flip_average"] = base["classification"]
    base["generation"] = {"sets": {"s": {"n": 520, "fid_2048": 200.0, "kid_mean": 0.1, "probe": {"accuracy": 0.7},
                                         "precision": 0.5, "recall": 0.25, "density": 0.4, "coverage": 0.3,
                                         "speckle": 0.0004, "clipped": 0.02},
                                   "real floor": {"n": 520, "fid_2048": 107.0, "kid_mean": 0.03,
                                                  "probe": {"accuracy": 0.96}}}}
    base["course_fid_192"] = {"samples": 23.5, "real": 32.7, "images": 100}
    md = card.card_markdown(base)
    assert ("| samples | 520 | 200.0 | 0.1000 | 70.0 % | 0.500 | 0.250 | 0.400 | 0.300 | 0.040 % | 2.000 % |" in md
            and "| real floor | 520 | 107.0" in md)
    assert "| 96.0 % | - | - | - | - | - | - |" in md   # a card measured before issue #34
    assert "samples **23.50**, real validation images 32.70" in md


def test_training_cost_needs_rows(tmp_path):
    with pytest.raises(FileNotFoundError):
        card.training_cost([{"name": "x", "metrics": tmp_path}])


def test_reliability_plot(tmp_path):
    ll = torch.log_softmax(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)) * 3, 1)
    cal = calibration(ll, torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(1)))
    assert card.reliability_plot(cal, tmp_path / "r.png").stat().st_size > 5_000


def test_cli_evaluate(fake_data, tmp_path, capsys):
    from pcnn.cli.main import main
    torch.manual_seed(0)
    ck = pcnn.save(tmp_path / "m.safetensors", randomize_(pcnn.PixelCNNpp(tiny_config())))
    assert main(["evaluate", str(ck), "--out", str(tmp_path / "c"), "--data-dir", str(fake_data), "--no-generation",
                 "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accuracy"] == json.loads((tmp_path / "c" / "card.json").read_text())["classification"]["accuracy"]


def test_card_markdown_counts_threads_in_words():
    from pcnn.eval.card import _threads

    assert (_threads(1), _threads(2), _threads(None)) == ("1 thread", "2 threads", "? threads")


def test_card_floors_read_from_the_shipped_card():
    """Notebook 06's floors come from the card file, never typed by hand."""
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "results" / "shipped" / "card_film40"
    c = card.read_card(path)
    assert c == card.read_card(path / "card.json")
    rows = card.card_floors(c)
    assert [r["metric"].split(" (")[0] for r in rows] == ["course FID@192", "FID-2048", "KID", "probe accuracy"]
    assert rows[0]["values"] == {"samples (card)": c["course_fid_192"]["samples"],
                                 "real images (card)": c["course_fid_192"]["real"]}
    floor, mine = c["generation"]["sets"]["real floor"], c["generation"]["sets"]["results/shipped/card_film40/samples"]
    assert rows[1]["values"] == {"samples (card)": mine["fid_2048"], "real images (card)": floor["fid_2048"]}
    assert rows[3]["values"]["real images (card)"] == floor["probe"]["accuracy"] and not rows[3]["lower_better"]
    assert rows[1]["metric"] == f"FID-2048 ({mine['n']} images)"


def test_course_fid_sentence():
    s = card.course_fid_sentence(23.66, 33.66, 100)
    assert s.startswith("The course's FID@192 scores real validation photos 33.66 and these samples 23.66")
    assert "cannot rank generators" in s and s.count(". ") == 0 and s.endswith(".")
    assert "read it beside that floor" in card.course_fid_sentence(40.0, 30.0, 100)
