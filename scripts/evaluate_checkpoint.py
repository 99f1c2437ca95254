#!/usr/bin/env python
"""Measure everything a model card states about a checkpoint and write it as JSON.

    PCNN_DATA_DIR=../shared/cpen455 python scripts/evaluate_checkpoint.py \
        checkpoints/pcnn_cpu_film40.safetensors --out checkpoints/pcnn_cpu_film40.json

Validation accuracy / macro F1 / bits/dim (plain and mirror-averaged), 25
samples per class (seed 0, cached sampler) and FID at dims 192 and 2048 against
the test images. All of it is studies.experiments.evaluate_checkpoint.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcnn.paths import resolve_data_dir  # noqa: E402
from studies.experiments import evaluate_checkpoint  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="JSON to write")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--samples-dir", default=None, help="where the FID samples go (default beside the checkpoint)")
    p.add_argument("--no-fid", action="store_true")
    a = p.parse_args(argv)
    root = resolve_data_dir(a.data_dir)
    res = evaluate_checkpoint(a.checkpoint, a.out, data_dir=root,
                              fid_ref_dir=None if a.no_fid else root / "test", samples_dir=a.samples_dir)
    summary = {k: res[k] for k in ("plain", "flip_average")}
    for v in summary.values():
        v.pop("confusion_matrix", None)
    print(json.dumps({"summary": summary, "fid": res.get("fid", {}).get("scores"),
                      "weights": res.get("fid", {}).get("weights")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
