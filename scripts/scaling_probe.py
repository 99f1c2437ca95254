#!/usr/bin/env python
"""Scaling probe (issue #15): train several model sizes with one recipe in timed segments, then
tabulate and plot validation bits/dim and accuracy per CPU-hour and pick a size by the rule in
studies.scaling (fixed before the probe ran).

    OMP_NUM_THREADS=1 PCNN_DATA_DIR=../shared/cpen455 python scripts/scaling_probe.py \
        --sizes 1/40/5,1/80/5 --segments 3 --segment-minutes 10 --workroot /work/runs/scaling
    python scripts/scaling_probe.py --report --workroot /work/runs/scaling --out results/scaling

Several probes may run at once on different sizes with the same --workroot (one log each size).
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studies import scaling  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "scaling_probe.json"))
    p.add_argument("--sizes", default="1/40/5,1/80/5,1/160/5", help="comma-separated nr_resnet/nr_filters/nr_logistic_mix")
    p.add_argument("--segments", type=int, default=3)
    p.add_argument("--segment-minutes", type=float, default=10.0)
    p.add_argument("--workroot", required=True, help="run folders and probe logs (outside the repository)")
    p.add_argument("--budget-hours", type=float, default=10.0, help="CPU-hours the chosen size should reach its best in")
    p.add_argument("--report", action="store_true", help="only build the table and plot from the logs")
    p.add_argument("--out", default="results/scaling", help="folder for probe.md, probe.json, probe.png (--report)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    root = Path(a.workroot)
    sizes = [s.strip() for s in a.sizes.split(",") if s.strip()]
    for s in sizes:
        scaling.parse_size(s)
    if not a.report:
        base = json.loads(Path(a.config).read_text())
        for s in sizes:  # one log per size so that parallel probes never write the same file
            scaling.run_probe(base, [s], root, root / f"probe_{s.replace('/', '-')}.jsonl", a.segments,
                              segment_minutes=a.segment_minutes, progress=not a.no_progress)
        return 0
    records = [r for f in sorted(root.glob("probe_*.jsonl")) for r in scaling.read_log(f)]
    records.sort(key=lambda r: (scaling.parse_size(r["size"]), r["segment"]))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps({"budget_hours": a.budget_hours, "records": records,
                                                "fits": scaling.extrapolate(records, a.budget_hours),
                                                "choice": scaling.choose(records, a.budget_hours)}, indent=1) + "\n")
    table = scaling.markdown(records, a.budget_hours)
    (out / "probe.md").write_text(table + "\n")
    scaling.plot(records, out / "probe.png", a.budget_hours)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
