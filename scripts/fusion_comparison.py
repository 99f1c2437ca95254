#!/usr/bin/env python
"""Train every fusion strategy under one budget and write one results file per run.

    PCNN_DATA_DIR=../shared/cpen455 python scripts/fusion_comparison.py \
        --config configs/fusion_budget.json --workdir ../runs/fusion --out results/fusion

Only ``model.fusion`` differs between the runs (same size, epochs, seed, augmentation,
optimiser). Each run is :func:`pcnn.experiments.run_and_record`: training with
:func:`pcnn.train.train` (resumed if its workdir holds ``last.pt``), 25 samples per
class (seed 0) and FID at dims 192 and 2048 against the test images, then
``<out>/<name>.json``. A strategy whose results file exists is skipped, so the
script can be killed and started again at any time.

    python scripts/fusion_comparison.py --report --out results/fusion

writes the table (``<out>/table.md``) and the bar plots (``<out>/comparison.png``)
from the results files, without training.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

#: name -> fusion modes. "combo" is the combination of the best public peer result
#: (early one-hot concatenation, FiLM in every block, bottleneck and late injection).
STRATEGIES = {
    "input": ["input"], "input_concat": ["input_concat"], "first_conv": ["first_conv"],
    "middle": ["middle"], "late": ["late"], "blocks": ["blocks"], "blocks_film": ["blocks_film"],
    "combo": ["input_concat", "blocks_film", "middle", "late"], "none": [],
}


def report(out: Path) -> int:
    """Table and plots of the results files in ``out``."""
    import matplotlib
    matplotlib.use("Agg")
    from pcnn.experiments import load_results, markdown_table
    from pcnn.plots import plot_results
    order = {n: i for i, n in enumerate(STRATEGIES)}
    results = sorted(load_results(out), key=lambda r: order.get(r["name"], len(order)))
    if not results:
        print(f"no results files in {out}", file=sys.stderr)
        return 1
    table = markdown_table(results)
    (out / "table.md").write_text(table + "\n")
    plot_results(results).savefig(out / "comparison.png", dpi=80)
    print(table)
    return 0


def main(argv=None) -> int:
    from pcnn.data import load_split, resolve_data_dir
    from pcnn.experiments import run_and_record
    from pcnn.fid import load_inception
    from pcnn.train import TrainConfig
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/fusion_budget.json")
    p.add_argument("--workdir", help="parent of the per-strategy run folders (outside the repo); needed to train")
    p.add_argument("--out", default="results/fusion", help="folder of the results files")
    p.add_argument("--only", nargs="*", choices=list(STRATEGIES), help="a subset of the strategies")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--report", action="store_true", help="only write <out>/table.md and <out>/comparison.png")
    a = p.parse_args(argv)
    if a.report:
        return report(Path(a.out))
    if not a.workdir:
        p.error("--workdir is needed to train (or pass --report)")
    if a.threads:
        torch.set_num_threads(a.threads)
    root = resolve_data_dir(a.data_dir)
    base = TrainConfig.from_json(a.config).to_dict()
    size = base["model"]["image_size"]
    train_split = load_split("train", root, size=size)
    val_split = load_split("validation", root, size=size)
    inception = load_inception("cpu")
    out = Path(a.out)
    for name in a.only or STRATEGIES:
        target = out / f"{name}.json"
        if target.exists():
            print(f"{name}: {target} exists, skipped", flush=True)
            continue
        d = dict(base, model=dict(base["model"], fusion=STRATEGIES[name]))
        d["description"] = f"fusion comparison: {name} = {STRATEGIES[name] or 'unconditional'}; " + base.get(
            "description", "")
        t0 = time.time()
        res = run_and_record(TrainConfig.from_dict(d), Path(a.workdir) / name, target, name=name,
                             train_data=train_split, val_data=val_split, fid_ref_dir=root / "test",
                             fid_model=inception)
        f = res["final"]
        print(f"{name}: acc {f['accuracy']}, F1 {f['macro_f1']}, bpd {f['val_bpd']:.4f}, "
              f"FID192 {f['fid_192']}, FID2048 {f['fid_2048']}, {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
