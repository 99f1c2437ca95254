#!/usr/bin/env python
"""Does a checkpoint over- or underfit? Eval-mode accuracy and bits/dim on training images vs validation.

    PCNN_DATA_DIR=../shared/cpen455 python scripts/fit_gap.py \
        checkpoints/stages/pcnn_cpu_blocks40_stage3.safetensors --n-train 520 --out results/shipped/3_disc_finetune_lowlr/fit_gap.json

All of it is studies.experiments.fit_gap.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pcnn  # noqa: E402
from pcnn.data.dataset import load_split  # noqa: E402
from studies.experiments import fit_gap, hardware, write_results  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--n-train", type=int, default=520, help="training images to score (random, --seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="JSON to write")
    a = p.parse_args(argv)
    model = pcnn.load(a.checkpoint)
    size = model.config.image_size
    res = fit_gap(model, load_split("train", a.data_dir, size=size), load_split("validation", a.data_dir, size=size),
                  n_train=a.n_train, seed=a.seed)
    res.update(checkpoint=Path(a.checkpoint).name, n_train=a.n_train, seed=a.seed, hardware=hardware())
    if a.out:
        write_results(res, a.out)
    print(json.dumps({k: res[k] for k in ("train", "validation", "bpd_gap")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
