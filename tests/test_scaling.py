"""Scaling probe (studies.scaling): segments resume into one run, the log skips what is done,
the fit recovers a known law, and the table/plot are written."""
import json
import math

import pytest
import torch

from studies import scaling

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = dict(model=dict(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, image_size=8, dropout=0.0, fusion="blocks_film"),
            epochs=100, batch_size=8, lr=2e-3, lr_decay=0.999, ema=0.99, val_every=1, eval_batch_size=64,
            checkpoint_minutes=60.0, amp="off")


def data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8), torch.randint(0, 4, (n,), generator=g))


def test_parse_size_and_size_config():
    assert scaling.parse_size("1/80/5") == (1, 80, 5)
    for bad in ("1/80", "a/80/5", "0/80/5", "1/80/5/2"):
        with pytest.raises(ValueError, match="nr_resnet/nr_filters"):
            scaling.parse_size(bad)
    cfg = scaling.size_config(BASE, "2/16/3")
    assert cfg["model"]["nr_resnet"] == 2 and cfg["model"]["nr_filters"] == 16 and cfg["model"]["nr_logistic_mix"] == 3
    assert BASE["model"]["nr_filters"] == 8  # the base is not modified
    assert scaling.count_parameters(scaling.size_config(BASE, "1/16/2")) > scaling.count_parameters(BASE)


def test_run_probe_segments_resume_and_skip(tmp_path):
    train, val = data(), data(8, seed=1)
    log = tmp_path / "probe.jsonl"
    recs = scaling.run_probe(BASE, ["1/8/2"], tmp_path / "runs", log, segments=2, segment_steps=3,
                             train_data=train, val_data=val, progress=False)
    assert [r["segment"] for r in recs] == [0, 1]
    assert [r["step"] for r in recs] == [3, 6]  # the second segment continued the first run
    assert recs[1]["cpu_hours"] > recs[0]["cpu_hours"] > 0
    assert recs[0]["images"] == 24 and recs[0]["epochs"] == 1.0
    for r in recs:
        assert r["best_bpd"] == min(r["val_bpd"], r["val_bpd_raw"]) and math.isfinite(r["best_bpd"])
    # A rerun with one more segment trains only that one.
    recs = scaling.run_probe(BASE, ["1/8/2"], tmp_path / "runs", log, segments=3, segment_steps=3,
                             train_data=train, val_data=val, progress=False)
    assert [r["step"] for r in recs] == [3, 6, 9]
    assert len(log.read_text().splitlines()) == 3
    with pytest.raises(ValueError, match="exactly one"):
        scaling.run_probe(BASE, ["1/8/2"], tmp_path, log, 1)


def test_extrapolate_recovers_the_law_and_choose_picks_the_lowest():
    recs = []
    for size, a, b in (("1/40/5", 3.9, 0.2), ("1/80/5", 3.6, 0.5)):
        for h in (0.1, 0.2, 0.4, 0.8):
            recs.append({"size": size, "cpu_hours": h, "best_bpd": a + b / math.sqrt(h)})
    fits = scaling.extrapolate(recs, 10.0)
    assert fits["1/40/5"]["a"] == pytest.approx(3.9) and fits["1/80/5"]["b"] == pytest.approx(0.5)
    assert fits["1/80/5"]["predicted"] == pytest.approx(3.6 + 0.5 / math.sqrt(10))
    assert scaling.choose(recs, 10.0) == "1/80/5"  # lower asymptote wins at a long budget
    assert scaling.choose(recs, 0.1) == "1/40/5"   # but not at a short one
    with pytest.raises(ValueError):
        scaling.choose([], 10.0)


def test_markdown_and_plot(tmp_path):
    recs = [{"size": s, "parameters": p, "segment": i, "cpu_hours": h, "epochs": h, "images": 10, "val_bpd": v,
             "val_bpd_raw": v + 0.1, "val_acc": 0.5, "val_acc_raw": 0.4, "best_bpd": v, "threads": 1, "cpu": "X"}
            for s, p in (("1/40/5", 9e5), ("1/80/5", 3.6e6)) for i, (h, v) in enumerate(((0.2, 5.0), (0.4, 4.5)))]
    md = scaling.markdown(recs, 10.0)
    assert md.count("\n| 1/") == 2 and "Choice" in md and "0.90 M" in md
    scaling.plot(recs, tmp_path / "p.png", 10.0)
    assert (tmp_path / "p.png").stat().st_size > 10_000
    json.dumps(scaling.extrapolate(recs, 10.0))
