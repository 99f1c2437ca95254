"""The fusion comparison v2 (scripts/fusion_v2.py, scripts/fusion_comparison.py --design): plan,
statistics, report, and one tiny run end to end on a synthetic data folder."""
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import fusion_v2 as F  # noqa: E402  (scripts/ is not a package)


def test_mcnemar_exact_is_the_two_sided_binomial_tail():
    assert F.mcnemar_exact(0, 0) == 1.0
    assert F.mcnemar_exact(0, 5) == pytest.approx(2 / 32)               # 2 * (1/2)^5
    assert F.mcnemar_exact(9, 1) == pytest.approx(2 * 11 / 1024)        # 2 * (C(10,0) + C(10,1)) / 2^10
    assert F.mcnemar_exact(1, 9) == F.mcnemar_exact(9, 1)
    assert F.mcnemar_exact(3, 3) == 1.0                                 # capped at 1


def test_holm_steps_down_and_stays_monotone():
    assert F.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert F.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert F.holm([0.001]) == pytest.approx([0.001])


def test_paired_bootstrap_extremes_and_width():
    same = np.array([[1, 0, 1, 1, 0, 1.0] * 20])
    r = F.paired_bootstrap(same, same, draws=500)
    assert (r["diff"], r["lo"], r["hi"], r["p"]) == (0.0, 0.0, 0.0, 1.0)
    r = F.paired_bootstrap(np.ones((2, 50)), np.zeros((3, 50)), draws=500)
    assert (r["diff"], r["lo"], r["hi"], r["p"]) == (1.0, 1.0, 1.0, 0.0)
    # one seed each: the interval is the paired one, about 1.96 sd(a - b) / sqrt(N) either side
    g = np.random.default_rng(1)
    a, b = (g.random((1, 2000)) < 0.7).astype(float), (g.random((1, 2000)) < 0.6).astype(float)
    r = F.paired_bootstrap(a, b, draws=4000, seed=3)
    half = 1.96 * np.std(a - b) / math.sqrt(2000)
    assert r["diff"] == pytest.approx(float(a.mean() - b.mean()))
    assert (r["hi"] - r["lo"]) / 2 == pytest.approx(half, rel=0.1)
    assert r["p"] < 0.001
    with pytest.raises(ValueError, match="different images"):
        F.paired_bootstrap(np.ones((1, 3)), np.ones((1, 4)))


def test_matched_seeds_cancel_a_shared_seed_effect():
    """Seed 1 worse for both strategies by the same amount: matched by seed, the difference is
    exactly the strategies' (+0.1 everywhere); drawn independently, the seed effect widens it."""
    g = np.random.default_rng(0)
    base = g.random(300)
    a = np.stack([base + 0.1, base + 1.1])          # seed 0, seed 1 (+1: a bad seed for everyone)
    b = np.stack([base, base + 1.0])
    m = F.paired_bootstrap(a, b, draws=400, matched_seeds=True)
    assert (m["lo"], m["hi"]) == pytest.approx((0.1, 0.1)) and m["p"] == 0.0
    free = F.paired_bootstrap(a, b, draws=400)
    assert free["lo"] < -0.5 and free["hi"] > 0.7      # the seed draw dominates
    with pytest.raises(ValueError, match="matched seeds need the same seeds"):
        F.paired_bootstrap(a, b[:1], matched_seeds=True)


def test_strategies_of_one_seed_share_the_trunk_initialisation():
    """Why the comparison matches seeds: the trainer seeds torch before it builds the network, and
    every strategy's class parameters come after the trunk's draws, so one seed gives every
    strategy the same trunk, except input_concat (its wider first layer changes the draws)."""
    from pcnn.model.config import ModelConfig
    from pcnn.model.network import PixelCNNpp

    def trunk(name, seed=1):
        torch.manual_seed(seed)
        cfg = ModelConfig(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, image_size=8, fusion=tuple(F.STRATEGIES[name]))
        return PixelCNNpp(cfg).state_dict()

    none = trunk("none")
    for name in ("input", "first_conv", "middle", "late", "blocks", "blocks_film"):
        sd = trunk(name)
        assert all(torch.equal(none[k], sd[k]) for k in none), name
    concat = trunk("input_concat")
    assert not all(torch.equal(none[k], concat[k]) for k in none if concat[k].shape == none[k].shape)
    assert not all(torch.equal(none[k], trunk("none", seed=2)[k]) for k in none)


def test_compare_uses_only_the_seeds_both_ran():
    runs = [_run("input", 0, [1] * 30 + [0] * 10), _run("input", 1, [1] * 10 + [0] * 30),
            _run("late", 0, [1] * 20 + [0] * 20)]
    row, = F.compare(runs, "late", "correct", draws=200)
    assert row["other"] == "input" and row["seeds"] == [0] and row["seeds_best"] == [0]
    assert row["diff"] == pytest.approx(-0.25)            # late_s0 20/40 vs input_s0 30/40; input_s1 left out
    assert [m["seed"] for m in row["mcnemar"]] == [0]
    assert "| input | 0 | -25.0 |" in F.markdown_comparisons([dict(row, p_holm=row["p"], verdict="x")], "late", "correct")


def _run(name, seed, correct, bpd=5.0, n_classes=4):
    """A results dict with the fields the report reads; image i has label i % 4."""
    n = len(correct)
    labels = [i % 4 for i in range(n)]
    pred = [lab if ok else (lab + 1) % 4 for lab, ok in zip(labels, correct)]
    nll = bpd * 3 * 8 * 8 * math.log(2)
    log_px = [[-nll if c == lab else -nll - 10 for c in range(n_classes)] for lab in labels]
    if not F.STRATEGIES[name]:
        log_px, pred = [[-nll] for _ in labels], None
    acc = float(np.mean(correct)) if F.STRATEGIES[name] else None
    return {"format": F.RUN_FORMAT, "name": name, "seed": seed, "config": {"model": {"image_size": 8, "num_classes": n_classes}},
            "ema": {"accuracy": acc, "macro_f1": acc, "bpd": bpd},
            "validation": {"log_px": log_px, "pred": pred, "labels": labels, "files": [f"v{i}" for i in range(n)]},
            "generation": {"fid_2048": 100.0 + seed, "fid_192": 1.0, "kid_mean": 0.01, "probe": {"accuracy": 0.5}},
            "metrics_log": [{"epoch": 1, "val_acc": acc, "val_bpd": bpd + 1}, {"epoch": 2, "val_acc": acc, "val_bpd": bpd}],
            "seconds": {"train_log": 3600.0}}


def _acc_runs(accs, seeds=(0, 1), n=40):
    """Runs whose seed s of strategy k gets the first round(acc * n) images right."""
    runs = []
    for name, acc in accs.items():
        for s in seeds:
            k = round(acc * n)
            runs.append(_run(name, s, [1] * k + [0] * (n - k)))
    return runs


def test_plan_picks_the_best_three_for_the_extra_seed():
    design = F.DESIGNS["cpu10"]
    cond = [n for n in F.STRATEGIES if F.STRATEGIES[n]]
    plan = F.planned_runs(design, [])
    assert plan["total"] == 21 and plan["undecided"] == 3 and plan["top"] is None
    assert plan["runs"][:9] == [(n, 0) for n in F.STRATEGIES] and len(plan["runs"]) == 18
    accs = {n: 0.5 for n in cond}
    accs.update(late=0.8, middle=0.7, blocks=0.6, blocks_film=0.6)
    runs = _acc_runs(accs)
    for r in runs:   # blocks_film ties blocks on accuracy but has the lower bits/dim
        if r["name"] == "blocks_film":
            r["ema"]["bpd"] = 4.0
    plan = F.planned_runs(design, runs)
    assert plan["top"] == ["late", "middle", "blocks_film"] and plan["undecided"] == 0
    assert plan["runs"][18:] == [("late", 2), ("middle", 2), ("blocks_film", 2)] and plan["total"] == 21
    gpu = F.planned_runs(F.DESIGNS["gpu30"], runs)     # the GPU design: 3 seeds of everything, no selection
    assert gpu["total"] == 27 and gpu["top"] is None and gpu["runs"][18:] == [(n, 2) for n in F.STRATEGIES]
    # one conditional run missing: not decided yet
    assert F.top_strategies([r for r in runs if (r["name"], r["seed"]) != ("late", 1)], [0, 1], 3) is None


def test_run_config_changes_only_fusion_and_seed():
    base = json.loads((ROOT / "configs" / "fusion_cpu10.json").read_text())
    a, b = F.run_config(base, "combo", 1), F.run_config(base, "none", 0)
    assert a["model"]["fusion"] == ["input_concat", "blocks_film", "middle", "late"] and a["seed"] == 1
    assert b["model"]["fusion"] == [] and b["seed"] == 0
    for d in (a, b):
        rest = {k: v for k, v in d.items() if k not in ("model", "seed", "description")}
        assert rest == {k: v for k, v in base.items() if k not in ("model", "seed", "description")}
        assert {k: v for k, v in d["model"].items() if k != "fusion"} == \
            {k: v for k, v in base["model"].items() if k != "fusion"}


def test_report_summary_best_and_paired_verdicts():
    accs = {"late": 0.9, "middle": 0.875, "input": 0.4}
    runs = _acc_runs(accs) + [_run("none", 0, [0] * 40, bpd=6.0), _run("none", 1, [0] * 40, bpd=6.0)]
    summary = F.summarize(runs)
    assert summary["late"]["accuracy"]["mean"] == pytest.approx(0.9) and summary["late"]["accuracy"]["sd"] == 0.0
    assert summary["late"]["fid_2048"]["mean"] == pytest.approx(100.5)
    assert summary["late"]["fid_2048"]["sd"] == pytest.approx(math.sqrt(0.5))
    assert summary["none"]["accuracy"]["mean"] is None and summary["none"]["bpd"]["mean"] == pytest.approx(6.0)
    assert F.choose_best(summary) == "late"
    rows = {r["other"]: r for r in F.compare(runs, "late", "correct", draws=2000)}
    assert set(rows) == {"middle", "input"}          # accuracy: conditional strategies only
    assert rows["input"]["diff"] == pytest.approx(0.5) and rows["input"]["verdict"] == "best better"
    assert rows["middle"]["diff"] == pytest.approx(0.025) and rows["middle"]["verdict"] == "not separated"
    assert rows["middle"]["mcnemar"] == [{"seed": 0, "best_only": 1, "other_only": 0, "p": 1.0},
                                         {"seed": 1, "best_only": 1, "other_only": 0, "p": 1.0}]
    bpd = {r["other"]: r for r in F.compare(runs, "late", "bpd", draws=2000)}
    assert bpd["none"]["diff"] == pytest.approx(-1.0) and bpd["none"]["verdict"] == "best better"
    assert bpd["middle"]["diff"] == pytest.approx(0.0) and bpd["middle"]["verdict"] == "not separated"


def test_seed_spread_is_said_while_some_strategies_have_one_seed():
    runs = [_run("input", 0, [1] * 30 + [0] * 10, bpd=4.1), _run("input", 1, [1] * 22 + [0] * 18, bpd=4.2),
            _run("late", 0, [1] * 25 + [0] * 15, bpd=4.15), _run("none", 0, [1] * 40, bpd=4.12)]
    lines = F.seed_spread(F.summarize(runs))
    assert len(lines) == 1
    assert "EMA accuracy by up to 20.0 points (input)" in lines[0] and "bits/dim by up to 0.100 (input)" in lines[0]
    assert "(late, none)" in lines[0]
    both = runs + [_run("late", 1, [1] * 25 + [0] * 15, bpd=4.15), _run("none", 1, [1] * 40, bpd=4.12)]
    assert F.seed_spread(F.summarize(both)) == []                    # every strategy has two seeds
    assert F.seed_spread(F.summarize(runs[2:])) == []                # nobody has two yet
    assert lines[0] in F.conclusion(F.summarize(runs), "input", [], [], {"done": 4, "total": 21, "missing": []}, None)


def test_shared_seed_effect_names_the_range_and_the_strategies_that_went_the_other_way():
    runs = [_run("input", 0, [1] * 40, bpd=4.10), _run("input", 1, [1] * 40, bpd=4.22),
            _run("late", 0, [1] * 40, bpd=4.12), _run("late", 1, [1] * 40, bpd=4.22),
            _run("input_concat", 0, [1] * 40, bpd=4.30), _run("input_concat", 1, [1] * 40, bpd=4.22),
            _run("blocks", 0, [1] * 40, bpd=4.11), _run("blocks", 2, [1] * 40, bpd=4.00),
            _run("none", 1, [0] * 40, bpd=4.2)]
    lines = F.shared_seed_effect(F.summarize(runs))
    assert len(lines) == 1                       # seed 2: only blocks ran it beside seed 0
    assert lines[0].startswith("Seed 1 against seed 0 moved bits/dim by -0.080 to +0.120 across the 3 "
                               "strategies that ran both (2 up, 1 down; down: input_concat).")
    assert "except input_concat, combo" in lines[0]
    assert F.shared_seed_effect(F.summarize(runs[:1] + runs[2:3])) == []   # one seed only
    assert lines[0] in F.conclusion(F.summarize(runs), "input", [], [], {"done": 9, "total": 21, "missing": []}, None)


def test_every_later_seed_goes_in_one_bullet_with_the_explanation_said_once():
    runs = [_run(n, s, [1] * 40, bpd=b) for n, s, b in
            [("input", 0, 4.10), ("input", 1, 4.20), ("input", 2, 4.05),
             ("late", 0, 4.12), ("late", 1, 4.22), ("late", 2, 4.10)]]
    lines = F.shared_seed_effect(F.summarize(runs))
    assert len(lines) == 1
    assert "Seed 1 against seed 0 moved bits/dim by +0.100 to +0.100 across the 2 strategies" in lines[0]
    assert "Seed 2 against seed 0 moved bits/dim by -0.050 to -0.020 across the 2 strategies" in lines[0]
    assert lines[0].count("One seed gives every strategy") == 1


def test_plain_answer_recommends_the_unseparated_group_and_sizes_the_gaps():
    accs = {"late": 0.9, "middle": 0.875, "input": 0.4, "blocks": 0.5}
    runs = _acc_runs(accs) + [_run("none", 0, [0] * 40, bpd=6.0), _run("none", 1, [0] * 40, bpd=6.0)]
    summary = F.summarize(runs)
    acc = F.compare(runs, "late", "correct", draws=2000)
    bpd = F.compare(runs, "late", "bpd", draws=2000)
    text = F.plain_answer(summary, "late", acc, bpd, final=True)
    # a strategy whose fusion is its name is not repeated in brackets
    assert text.startswith("In plain words: to classify by likelihood, let the class enter as late or middle do;")
    gaps = sorted(r["diff"] * 100 for r in acc if r["verdict"] == "best better")
    assert f"classify {gaps[0]:.1f} to {gaps[-1]:.1f} points worse than late" in text
    assert F.plain_answer(summary, "late", acc, bpd, final=False).startswith("Provisionally:")
    # nothing separated in bits/dim: said, with the label's bound when given
    tied = [dict(r, verdict="not separated") for r in bpd]
    assert "No bits/dim difference from late was detected" in F.plain_answer(summary, "late", acc, tied, True)
    assert "at most 0.00065" in F.plain_answer(summary, "late", acc, tied, True, F.label_bpd_bound(4, 32))
    lines = F.conclusion(summary, "late", acc, tied, {"done": 9, "total": 9, "missing": []}, None)
    assert lines[1] == F.plain_answer(summary, "late", acc, tied, True)
    like = [c for c in lines if c.startswith("Likelihood:")][0]
    assert "late's bits/dim is not separated from any other strategy's" in like and "no other" not in like
    mid = {r["other"]: r for r in acc}["middle"]
    assert (f"It is not separated from middle ({mid['diff'] * 100:+.1f} points, 95% interval {mid['lo'] * 100:+.1f} "
            f"to {mid['hi'] * 100:+.1f}) at this budget") in " ".join(lines)
    floor = {"fid_2048": 108.3, "fid_192": 1.5, "probe": {"accuracy": 0.948}}
    lines = F.conclusion(summary, "late", acc, tied, {"done": 9, "total": 9, "missing": []}, floor)
    gen = [c for c in lines if c.startswith("Generation:")][0]
    fids = {n: sm["fid_2048"]["mean"] for n, sm in summary.items()}
    lo, hi = min(fids, key=fids.get), max(fids, key=fids.get)
    assert f"ranges {fids[lo]:.1f} ({lo}) to {fids[hi]:.1f} ({hi}); real validation images score 108.3" in gen
    # every model's course FID-192 (1.0) is below the real images' (1.5): it is said to be no floor
    assert [c for c in lines if c.startswith("The course's FID-192 is no floor here: real validation images score 1.50")]
    floor["fid_192"] = 0.5
    assert not [c for c in F.conclusion(summary, "late", acc, tied, {"done": 9, "total": 9, "missing": []}, floor)
                if "FID-192 is no floor" in c]


def test_the_label_bounds_what_conditioning_can_do_to_bits_per_dim():
    """log2(K) / (3 H W); and it is a true bound: the label-averaged mixture of a conditional model
    is within it of the conditional model on every image (checked on random per-class likelihoods)."""
    assert F.label_bpd_bound(4, 32) == pytest.approx(2 / 3072)
    assert F.label_bpd_bound(10, 8, channels=1) == pytest.approx(math.log2(10) / 64)
    g = np.random.default_rng(0)
    log_px_c = g.normal(-2000, 30, size=(200, 4))                 # log p(x | c) in nats, 200 images
    labels = g.integers(0, 4, 200)
    dims = 3 * 32 * 32
    cond = -log_px_c[np.arange(200), labels] / math.log(2) / dims
    mix = -(np.logaddexp.reduce(log_px_c, axis=1) - math.log(4)) / math.log(2) / dims
    assert np.all(mix - cond <= F.label_bpd_bound(4, 32) + 1e-12)
    runs = _acc_runs({"late": 0.9, "input": 0.5})
    assert F.design_bound(runs) == pytest.approx(F.label_bpd_bound(4, 8))
    runs[0]["config"]["model"]["image_size"] = 16                  # runs disagree: no single bound
    assert F.design_bound(runs) is None and F.design_bound([]) is None
    runs = _acc_runs({"late": 0.9, "input": 0.5}, seeds=(0,)) + [_run("none", 0, [0] * 40, bpd=5.3)]
    bpd = F.compare(runs, "late", "bpd", draws=500)
    line = [c for c in F.conclusion(F.summarize(runs), "late", [], bpd, {"done": 3, "total": 3, "missing": []},
                                    None, bound=0.0005) if c.startswith("The unconditional")][0]
    assert "at most 0.00050" in line and "(up to 0.300)" in line


def test_seed_pairs_of_different_precisions_are_named():
    runs = _acc_runs({"late": 0.9, "input": 0.5}, seeds=(0, 1))
    for r in runs:
        fp32 = r["name"] == "input" and r["seed"] == 0
        r["amp"] = {"mode": "bf16", "precision": "fp32" if fp32 else "bf16", "reason": "test"}
    summary = F.summarize(runs)
    acc = F.compare(runs, "late", "correct", draws=500)
    lines = F.conclusion(summary, "late", acc, [], {"done": 4, "total": 4, "missing": []}, None)
    pairs = [c for c in lines if c.startswith("In the paired accuracy tests against late")]
    assert len(pairs) == 1 and "different precisions: input s0;" in pairs[0]


def test_summary_figure_marks_seeds_and_fp32_runs():
    runs = _acc_runs({"late": 0.9, "input": 0.5}, seeds=(0, 1, 2))
    for r in runs:
        r["amp"] = {"mode": "bf16", "precision": "fp32" if r["seed"] == 1 else "bf16", "reason": "test"}
    import matplotlib.pyplot as plt
    fig = F.plot_summary(F.summarize(runs), None, "late")
    dots = [ln for ln in fig.axes[0].lines if ln.get_marker() in F.SEED_MARKERS]
    assert sorted(ln.get_marker() for ln in dots) == sorted(["o", "s", "^"] * 2)
    assert all((ln.get_markerfacecolor() == "none") == (ln.get_marker() == "s") for ln in dots)
    assert [t.get_text() for t in fig.legends[0].get_texts()][:3] == ["seed 0", "seed 1", "seed 2"]
    assert "trained in fp32 (hollow)" in [t.get_text() for t in fig.legends[0].get_texts()]
    for r in runs:
        r["amp"]["precision"] = "bf16"
    plain = F.plot_summary(F.summarize(runs), None, "late")               # no fp32 run: no hollow entry
    assert [t.get_text() for t in plain.legends[0].get_texts()] == ["seed 0", "seed 1", "seed 2", "chance (accuracy)"]
    plt.close(plain)
    plt.close(fig)


def test_build_report_counts_done_of_planned(tmp_path):
    runs = _acc_runs({"late": 0.9, "input": 0.5}, seeds=(0,))
    for r in runs:
        (tmp_path / f"{r['name']}_s{r['seed']}.json").write_text(json.dumps(r))
    (tmp_path / "not_a_run.json").write_text(json.dumps({"format": "other"}))
    rep = F.build_report(tmp_path, F.DESIGNS["cpu10"], draws=200)
    assert rep["status"]["done"] == 2 and rep["status"]["total"] == 21 and rep["status"]["undecided"] == 3
    assert len(rep["status"]["missing"]) == 16 and "late_s1" in rep["status"]["missing"]
    assert rep["best"] == "late" and rep["conclusion"][0].startswith("2 of 21 planned runs are finished")
    assert "| late **(best)** | late | 0 | ? | 90.0 (1) |" in rep["table"]   # _run records no precision
    likelihood = [c for c in rep["conclusion"] if c.startswith("Likelihood:")]
    assert len(likelihood) == 1 and "from the rest" not in likelihood[0]   # no empty "rest" with one other run
    assert F.build_report(tmp_path / "empty", F.DESIGNS["cpu10"])["conclusion"] == [
        "No run has finished yet (0 of 21): nothing can be concluded."]


def test_report_says_the_seed_matching_amendment_only_for_the_design_it_was_made_in(tmp_path):
    runs = _acc_runs({"late": 0.9, "input": 0.5}, seeds=(0, 1))
    for r in runs:
        (tmp_path / f"{r['name']}_s{r['seed']}.json").write_text(json.dumps(r))
    rep = F.build_report(tmp_path, F.DESIGNS["cpu10"], draws=200)
    cpu = F.report_markdown(rep, "cpu10")
    assert "Matching by seed is an amendment of the rules, made after 11 of 21 runs" in cpu
    assert "With two seeds a quarter of the draws use one seed alone" in cpu     # both rows have seeds 0 and 1
    gpu = F.report_markdown(F.build_report(tmp_path, F.DESIGNS["gpu30"], draws=200), "gpu30")
    assert "amendment" not in gpu and "exact McNemar per seed):" in gpu
    one = tmp_path / "one"
    one.mkdir()
    for r in runs[::2]:                                                          # seed 0 only
        (one / f"{r['name']}_s{r['seed']}.json").write_text(json.dumps(r))
    assert "With two seeds" not in F.report_markdown(F.build_report(one, F.DESIGNS["cpu10"], draws=200), "cpu10")


def test_separated_is_any_row_with_a_verdict_either_way():
    assert not F.separated([]) and not F.separated([{"verdict": "not separated"}])
    assert F.separated([{"verdict": "not separated"}, {"verdict": "best worse"}])
    assert F.separated([{"verdict": "best better"}])


def test_sync_doc_replaces_only_between_its_markers(tmp_path):
    rep = F.build_report(tmp_path / "none_yet", F.DESIGNS["cpu10"])
    block = F.doc_block(rep, "cpu10", "../results/fusion/v2")
    assert block.startswith("**0 of 21 planned runs finished**") and "summary.png" not in block
    assert "- No run has finished yet (0 of 21): nothing can be concluded." in block
    begin, end = F.doc_markers("cpu10")
    page = tmp_path / "page.md"
    page.write_text(f"# Page\n\nbefore\n{begin}\nold table\n{end}\nafter\n")
    assert F.sync_doc(page, "cpu10", "new table\n\n- line")
    assert page.read_text() == f"# Page\n\nbefore\n{begin}\nnew table\n\n- line\n{end}\nafter\n"
    assert F.doc_block_in(page, "cpu10") == "new table\n\n- line"
    assert F.sync_doc(page, "cpu10", "new table\n\n- line") and F.doc_block_in(page, "cpu10") == "new table\n\n- line"
    assert not F.sync_doc(page, "gpu30", "x") and F.doc_block_in(page, "gpu30") is None   # no markers: untouched
    page.write_text(f"{begin}\nno end\n")
    with pytest.raises(ValueError, match="has no"):
        F.sync_doc(page, "cpu10", "x")
    assert page.read_text() == f"{begin}\nno end\n"


def test_design_doc_carries_the_committed_cpu10_report():
    """docs/design.md shows the same table and conclusion as results/fusion/v2 (the page is
    rewritten by `--design cpu10 --report`; a hand edit or a stale copy fails here)."""
    rep = json.loads((ROOT / "results/fusion/v2/report.json").read_text())
    got = F.doc_block_in(ROOT / "docs/design.md", "cpu10")
    assert got is not None, "docs/design.md lost the cpu10 report markers"
    assert got == F.doc_block(rep, "cpu10", "../results/fusion/v2")
    assert rep["table"] in (ROOT / "results/fusion/v2/report.md").read_text()


def test_report_command_updates_the_doc_only_for_the_committed_folder(tmp_path, monkeypatch):
    import fusion_comparison as FC
    rep = F.build_report(tmp_path / "none_yet", F.DESIGNS["cpu10"])
    begin, end = F.doc_markers("cpu10")
    page = tmp_path / "design.md"
    page.write_text(f"{begin}\nold\n{end}\n")
    assert not FC.sync_design_doc(rep, "cpu10", tmp_path / "elsewhere", doc=page)
    assert F.doc_block_in(page, "cpu10") == "old"
    assert FC.sync_design_doc(rep, "cpu10", ROOT / "results/fusion/v2", doc=page)
    rel = Path(os.path.relpath(ROOT / "results/fusion/v2", tmp_path)).as_posix()   # the figure's link from the page
    assert F.doc_block_in(page, "cpu10") == F.doc_block(rep, "cpu10", rel)


def test_precision_per_run_is_reported_and_a_mix_is_said(tmp_path):
    """Runs record what they trained in; results from before that are read by what their amp
    setting meant then; a report over runs of two precisions says which ran in which."""
    runs = _acc_runs({"late": 0.9, "input": 0.5}, seeds=(0, 1))
    runs[0]["config"]["amp"] = "bf16"                              # late_s0: written before amp was recorded
    runs[1]["amp"] = {"mode": "bf16", "precision": "fp32", "reason": "no bf16 instructions"}   # late_s1
    runs[2]["config"]["amp"] = "off"                               # input_s0
    assert [F.run_precision(r) for r in runs] == ["bf16", "fp32", "fp32", "?"]
    changed = {**runs[1], "amp": {**runs[1]["amp"], "segments": [{"step": 0, "precision": "bf16"},
                                                                  {"step": 500, "precision": "fp32"}]}}
    assert F.run_precision(changed) == "bf16>fp32"
    summary = F.summarize(runs)
    assert summary["late"]["precision"] == ["bf16", "fp32"]
    table = F.markdown_summary(summary, None, {}, "late")
    assert "| late **(best)** | late | 0,1 | bf16,fp32 | 90.0 ± 0.0 (2) |" in table
    status = {"done": 4, "total": 4, "missing": []}
    mixed = [c for c in F.conclusion(summary, "late", [], [], status, None) if "one precision" in c]
    assert len(mixed) == 1 and "bf16: late_s0" in mixed[0] and "fp32: input_s0, late_s1" in mixed[0] and "?: input_s1" in mixed[0]
    assert "parity" not in mixed[0]
    ev = F.parity_evidence()                                       # the committed benchmark's figures
    assert ev["size"] == "1/40/5" and ev["epochs"] >= 1 and 0 < ev["acc_fp32"] <= 1 and ev["bpd_bf16"] > 0
    quoted = [c for c in F.conclusion(summary, "late", [], [], status, None, ev) if "one precision" in c][0]
    assert f"{abs(ev['bpd_bf16'] - ev['bpd_fp32']):.4f} bits/dim" in quoted and ev["cpu"] in quoted
    assert F.parity_evidence(tmp_path / "missing.json") is None
    for r in runs:
        r["amp"] = {"mode": "off", "precision": "fp32", "reason": "amp=off"}
    assert not [c for c in F.conclusion(F.summarize(runs), "late", [], [], status, None) if "one precision" in c]


@pytest.mark.parametrize("native", [True, False])
def test_measure_times_both_precisions_and_says_what_bf16_ran_as(tmp_path, monkeypatch, one_thread, native):
    """--measure on a tiny preset: CPU seconds per image in both settings, and on a CPU without
    bf16 instructions the record says amp=bf16 ran fp32 (its 'bf16' figures are fp32 timings)."""
    from gen_helpers import write_data_dir
    from pcnn.model import precision
    import fusion_comparison as FC
    monkeypatch.setattr(precision, "_cpuinfo", lambda: "flags\t: fpu avx2" + (" amx_bf16" if native else "") + "\n")
    data = write_data_dir(tmp_path / "data", per_class=(3, 2, 2))
    cfg = json.loads((ROOT / "configs" / "fusion_cpu10.json").read_text())
    cfg.update(model=dict(cfg["model"], nr_filters=8, nr_logistic_mix=2, image_size=8), batch_size=4)
    (tmp_path / "tiny.json").write_text(json.dumps(cfg))
    res = FC.measure({"config": str(tmp_path / "tiny.json")}, tmp_path, data, steps=2, repeats=1)
    assert json.loads((tmp_path / "epoch_cost.json").read_text())["amp_bf16_ran_as"] == res["amp_bf16_ran_as"]
    assert res["amp_bf16_ran_as"]["precision"] == ("bf16" if native else "fp32")
    assert all(len(v) == 1 and v[0] > 0 for v in res["cpu_seconds_per_train_image"].values())
    assert res["train_images_per_epoch"] > 0 and res["run_cpu_hours_train_and_eval"] >= 0


def test_tiny_design_end_to_end(tmp_path, monkeypatch, one_thread):
    """Two strategies, one seed each, trained, scored and sampled on a synthetic data folder by the
    real command; then the report. The EMA figures equal the trainer's last logged row."""
    from pcnn.eval import fid
    if fid.fid_helper_weights_path() is None and not fid._hub_weights_path().is_file():
        pytest.skip("needs offline Inception weights")
    from gen_helpers import write_data_dir
    import fusion_comparison as FC
    data = write_data_dir(tmp_path / "data", per_class=(3, 2, 2))
    cfg = json.loads((ROOT / "configs" / "fusion_cpu10.json").read_text())
    cfg.update(model=dict(cfg["model"], nr_filters=8, nr_logistic_mix=2, image_size=8), epochs=2, batch_size=4,
               ema=0.9, amp="off")
    (tmp_path / "tiny.json").write_text(json.dumps(cfg))
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = ["--design", "cpu10", "--config", str(tmp_path / "tiny.json"), "--workdir", str(runs), "--out", str(out),
            "--data-dir", str(data), "--only", "late", "none", "--per-class", "1", "--min-images", "2",
            "--kid-subsets", "5", "--cache-dir", str(tmp_path / "cache")]
    assert FC.main(args + ["--deadline-minutes", "1"]) == 0   # 1 min < the 3 min reserve: the floor, no run
    assert sorted(p.name for p in out.glob("*.json")) == ["real_floor.json"] and not (runs / "late_s0").exists()
    assert FC.main(args + ["--limit", "1"]) == 0
    assert sorted(p.name for p in out.glob("*.json")) == ["late_s0.json", "real_floor.json"]
    assert FC.main(args) == 0                           # resumes the plan: none_s0, then seed 1 of both
    got = sorted(p.name for p in out.glob("*_s*.json"))
    assert got == ["late_s0.json", "late_s1.json", "none_s0.json", "none_s1.json"]
    late = json.loads((out / "late_s0.json").read_text())
    last = late["metrics_log"][-1]
    assert last["epoch"] == 2 and late["ema"]["accuracy"] == pytest.approx(last["val_acc"])
    assert late["ema"]["bpd"] == pytest.approx(last["val_bpd"], rel=1e-5)
    assert late["config"]["model"]["fusion"] == ["late"] and late["config"]["seed"] == 0
    assert len(late["validation"]["log_px"]) == 8 and len(late["validation"]["log_px"][0]) == 4
    assert late["ema"]["correct"] == sum(p == y for p, y in zip(late["validation"]["pred"],
                                                                  late["validation"]["labels"]))
    assert late["amp"]["precision"] == "fp32" and late["amp"]["mode"] == "off"    # what it trained in
    assert late["amp"]["segments"] == [{"step": 0, "precision": "fp32"}]
    assert late["hardware"]["cpu"] and isinstance(late["hardware"]["cpu_bf16_flags"], list)
    g = late["generation"]
    assert g["n"] == 4 and g["per_class"] == 1 and g["fid_2048"] >= 0 and 0 <= g["probe"]["accuracy"] <= 1
    none = json.loads((out / "none_s1.json").read_text())
    assert none["ema"]["accuracy"] is None and none["validation"]["pred"] is None and none["seed"] == 1
    floor = json.loads((out / "real_floor.json").read_text())
    assert floor["format"] == F.FLOOR_FORMAT and floor["n"] == 4
    assert FC.main(args) == 0                           # everything finished: nothing is retrained
    assert json.loads((out / "late_s0.json").read_text()) == late
    assert FC.main(["--design", "cpu10", "--out", str(out), "--report", "--draws", "200"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["status"]["done"] == 4 and rep["best"] == "late" and rep["bpd_comparison"][0]["other"] == "none"
    assert (out / "curves.png").stat().st_size > 0 and (out / "summary.png").stat().st_size > 0
    assert "4 of 21 planned runs finished" in (out / "report.md").read_text()
    # the whole run dict round-trips torch-free (the notebook reads it without training)
    assert torch.tensor(late["validation"]["log_px"]).shape == (8, 4)


def _tiny_preset(tmp_path):
    cfg = json.loads((ROOT / "configs" / "fusion_cpu10.json").read_text())
    cfg.update(model=dict(cfg["model"], nr_filters=8, nr_logistic_mix=2, image_size=8), epochs=2, batch_size=4,
               ema=0.9, amp="off")
    (tmp_path / "tiny.json").write_text(json.dumps(cfg))
    return tmp_path / "tiny.json"


def test_gpu_call_returns_pending_runs_that_finish_here_as_if_scored_there(tmp_path, monkeypatch, one_thread):
    """The bounded GPU call on the CPU: two worker processes train a run each without Inception
    weights, the call comes back as an archive in at most 8 files, and --unpack finishes the runs
    here. The finished file equals an ordinary run's (same training, same samples, same metrics)."""
    from pcnn.eval import fid
    from gen_helpers import write_data_dir
    import fusion_comparison as FC
    data = write_data_dir(tmp_path / "data", per_class=(3, 2, 2))
    tiny = _tiny_preset(tmp_path)
    common = ["--design", "cpu10", "--config", str(tiny), "--data-dir", str(data), "--per-class", "1"]
    scoring = ["--min-images", "2", "--kid-subsets", "5", "--cache-dir", str(tmp_path / "cache")]
    ret = tmp_path / "OUT"
    assert FC.main(common + ["--only", "late", "none", "--limit", "1", "--workdir", str(tmp_path / "gpu"),
                             "--return-to", str(ret), "--gpu-call", "2", "--budget-minutes", "6"]) == 0
    back = sorted(p.name for p in ret.iterdir())
    assert back == [F.RETURN_ARCHIVE, F.RETURN_MANIFEST]          # small: one piece and its manifest
    manifest = json.loads((ret / F.RETURN_MANIFEST).read_text())
    assert {"results/late_s0.json", "results/none_s0.json", "results/late_s0.samples.pt",
            "logs/worker0.log", "logs/worker1.log", "logs/call.json"} <= set(manifest["members"])
    pending = json.loads((tmp_path / "gpu" / "results" / "late_s0.json").read_text())
    assert pending["format"] == F.PENDING_FORMAT and pending["generation"]["pending"] is True
    assert pending["generation"]["samples"]["n"] == 4
    status = F.build_report(tmp_path / "gpu" / "results", F.DESIGNS["cpu10"], draws=100)["status"]
    assert status["done"] == 0 and status["pending"] == ["late_s0", "none_s0"]
    assert "late_s0" not in status["missing"]
    if fid.fid_helper_weights_path() is None and not fid._hub_weights_path().is_file():
        pytest.skip("the rest (measuring here) needs offline Inception weights")
    home = tmp_path / "home"
    assert FC.main(common + scoring + ["--workdir", str(tmp_path / "here"), "--out", str(home),
                                       "--unpack", str(ret), "--draws", "100"]) == 0
    assert sorted(p.name for p in home.glob("*_s*")) == ["late_s0.json", "none_s0.json"]   # samples deleted
    late = json.loads((home / "late_s0.json").read_text())
    assert late["format"] == F.RUN_FORMAT and late["generation"]["scored_later"]["samples_sha256"]
    assert (tmp_path / "here" / "late_s0" / "samples_grid.png").stat().st_size > 0
    assert json.loads((home / "report.json").read_text())["status"]["done"] == 2
    assert (tmp_path / "here" / "call_logs" / "call.json").is_file()
    # the same run trained and scored in one go, in this process
    ref = tmp_path / "ref"
    assert FC.main(common + scoring + ["--only", "late", "--limit", "1", "--workdir", str(tmp_path / "refruns"),
                                       "--out", str(ref)]) == 0
    want = json.loads((ref / "late_s0.json").read_text())
    assert late["validation"] == want["validation"] and late["ema"] == want["ema"]
    for key in ("fid_2048", "fid_192", "kid_mean", "n", "per_class", "sample_seed"):
        assert late["generation"][key] == pytest.approx(want["generation"][key], rel=1e-9), key
    assert late["generation"]["probe"]["accuracy"] == want["generation"]["probe"]["accuracy"]
    # a second unpack keeps the finished files and finishes nothing again
    assert FC.main(common + scoring + ["--workdir", str(tmp_path / "here"), "--out", str(home),
                                       "--unpack", str(ret), "--draws", "100"]) == 0
    assert json.loads((home / "late_s0.json").read_text()) == late
    assert not list(home.glob("*.samples.pt"))


def test_pack_for_return_refuses_too_many_files_and_unpack_checks_the_archive(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "a_s0.json").write_text(json.dumps({"format": F.PENDING_FORMAT}))
    (out / f"a_s0{F.SAMPLES_SUFFIX}").write_bytes(np.random.default_rng(0).bytes(5000))   # incompressible
    (tmp_path / "w.log").write_text("worker log")
    with pytest.raises(ValueError, match="more than the 8 files"):
        F.pack_for_return(out, tmp_path / "ret", part_bytes=600)
    assert not (tmp_path / "ret").exists()                         # nothing written
    m = F.pack_for_return(out, tmp_path / "ret", extra=[tmp_path / "w.log"], part_bytes=2000)
    assert m["pieces"] == [f"{F.RETURN_ARCHIVE}.part{i:02d}" for i in range(3)]
    got = F.unpack_returned(tmp_path / "ret", tmp_path / "home", tmp_path / "logs")
    assert sorted(got["results"]) == ["a_s0.json", f"a_s0{F.SAMPLES_SUFFIX}"] and got["logs"] == ["w.log"]
    assert (tmp_path / "home" / f"a_s0{F.SAMPLES_SUFFIX}").read_bytes() == (out / f"a_s0{F.SAMPLES_SUFFIX}").read_bytes()
    # a run finished here already is kept, its returned copy and samples skipped
    (tmp_path / "home2").mkdir()
    (tmp_path / "home2" / "a_s0.json").write_text(json.dumps({"format": F.RUN_FORMAT, "kept": 1}))
    got = F.unpack_returned(tmp_path / "ret", tmp_path / "home2", tmp_path / "logs")
    assert sorted(got["skipped"]) == ["a_s0.json", f"a_s0{F.SAMPLES_SUFFIX}"] and got["results"] == []
    assert json.loads((tmp_path / "home2" / "a_s0.json").read_text())["kept"] == 1
    # a damaged or missing piece is refused
    piece = tmp_path / "ret" / m["pieces"][1]
    piece.write_bytes(b"x" + piece.read_bytes()[1:])
    with pytest.raises(ValueError, match="does not match"):
        F.unpack_returned(tmp_path / "ret", tmp_path / "home3", tmp_path / "logs")
    piece.unlink()
    with pytest.raises(FileNotFoundError, match="lacks"):
        F.unpack_returned(tmp_path / "ret", tmp_path / "home3", tmp_path / "logs")
    with pytest.raises(FileNotFoundError, match="not what a fusion call returns"):
        F.unpack_returned(tmp_path, tmp_path / "home3", tmp_path / "logs")


def test_finish_pending_keeps_runs_whose_samples_do_not_match_and_drops_orphans(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    torch.save({"images": torch.zeros(4, 3, 8, 8, dtype=torch.uint8), "labels": torch.arange(4)},
               out / f"late_s0{F.SAMPLES_SUFFIX}")
    (out / f"blocks_s1{F.SAMPLES_SUFFIX}").write_bytes(b"a worker stopped before its results file")
    rec = {"format": F.PENDING_FORMAT, "name": "late", "seed": 0,
           "generation": {"pending": True, "per_class": 1, "sample_seed": 0, "sampling_seconds": 1.0,
                          "samples": {"file": f"late_s0{F.SAMPLES_SUFFIX}", "n": 4, "sha256": "0" * 64}}}
    (out / "late_s0.json").write_text(json.dumps(rec))
    (out / "middle_s0.json").write_text(json.dumps(dict(rec, name="middle", generation=dict(
        rec["generation"], samples={"file": f"middle_s0{F.SAMPLES_SUFFIX}", "n": 4, "sha256": "0" * 64}))))
    assert [p.name for p in F.pending_runs(out)] == ["late_s0.json", "middle_s0.json"]
    got = F.finish_pending(out, tmp_path / "w", tmp_path, extractor=None)
    assert got["finished"] == [] and sorted(got["failed"]) == ["late_s0", "middle_s0"]
    assert "does not match the sha256" in got["failed"]["late_s0"] and "missing" in got["failed"]["middle_s0"]
    assert json.loads((out / "late_s0.json").read_text()) == rec        # still pending, samples kept
    assert (out / f"late_s0{F.SAMPLES_SUFFIX}").is_file() and not (out / f"blocks_s1{F.SAMPLES_SUFFIX}").exists()


def test_gpu_call_stops_a_worker_at_the_deadline_and_still_returns(tmp_path, one_thread):
    """A worker that would train past the call's deadline (a negative reserve stands for a run that
    overruns) gets SIGTERM at the deadline: its run stops after the batch in flight and saves
    last.pt, the call packs what there is (the logs) and says which worker it stopped."""
    from gen_helpers import write_data_dir
    import fusion_comparison as FC
    data = write_data_dir(tmp_path / "data", per_class=(3, 2, 2))
    cfg = json.loads(_tiny_preset(tmp_path).read_text())
    (tmp_path / "long.json").write_text(json.dumps(dict(cfg, epochs=100000)))
    ret, wd = tmp_path / "OUT", tmp_path / "gpu"
    t0 = time.time()
    assert FC.main(["--design", "cpu10", "--config", str(tmp_path / "long.json"), "--data-dir", str(data),
                    "--only", "late", "--workdir", str(wd), "--return-to", str(ret), "--gpu-call", "1",
                    "--budget-minutes", "0.75", "--pack-minutes", "0.25", "--reserve-minutes", "-5"]) == 1
    assert time.time() - t0 < 0.75 * 60 + 15
    call = json.loads((wd / "logs" / "call.json").read_text())
    assert call["stopped_at_deadline"] == {"0": "SIGTERM"} and call["finished_runs"] == []
    assert "SIGTERM: the run stops after this batch" in (wd / "logs" / "worker0.log").read_text()
    assert (wd / "runs" / "late_s0" / "last.pt").is_file()
    members = json.loads((ret / F.RETURN_MANIFEST).read_text())["members"]
    assert "logs/call.json" in members and not any(m.startswith("results/") for m in members)
