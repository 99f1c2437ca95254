#!/usr/bin/env python
"""Class guidance trade-off: probe accuracy, FID-2048, KID and the course FID@192 against w.

    PCNN_DATA_DIR=../shared/cpen455 python scripts/guidance_tradeoff.py \
        checkpoints/pcnn_cpu_film40_disc.safetensors --work runs/guidance --out results/guidance --threads 2

Samples go under --work (outside results/: 6,500 PNGs), resumable set by set; the JSON,
Markdown table and plot go to --out. All of it is pcnn.guidance_tradeoff.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import pcnn  # noqa: E402
from pcnn.guidance import GUIDES  # noqa: E402
from pcnn.guidance_tradeoff import WEIGHTS, guidance_tradeoff, pick_default, tradeoff_table  # noqa: E402
from pcnn.plots import plot_guidance_tradeoff  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--work", required=True, help="folder for the sample sets (resumable)")
    p.add_argument("--out", required=True, help="folder for tradeoff.json, tradeoff.md, tradeoff.png")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--weights", type=float, nargs="+", default=list(WEIGHTS))
    p.add_argument("--guides", nargs="+", default=list(GUIDES), choices=list(GUIDES))
    p.add_argument("--per-class", type=int, default=125)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--min-images", type=int, default=500, help="FID-2048's minimum (lower only for smoke runs)")
    p.add_argument("--course-per-class", type=int, default=25)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    model = pcnn.load(a.checkpoint)
    res = guidance_tradeoff(model, a.work, a.data_dir, a.weights, a.guides, a.per_class, a.seed, a.batch_size,
                            min_images=a.min_images, course_per_class=a.course_per_class,
                            progress=not a.quiet, checkpoint=a.checkpoint)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tradeoff.json").write_text((Path(a.work) / "tradeoff.json").read_text())
    pick = pick_default(res)
    text = tradeoff_table(res)
    text += ("\n\nBy the rule fixed before measuring: " + ("no guided setting keeps FID-2048 at or below w = 0's"
             if pick is None else f"guide {pick['guide']}, w = {pick['w']:g} (probe {pick['probe'] * 100:.1f} %, "
             f"FID-2048 {pick['fid_2048']:.1f})") + f"\n\n{res['hardware']['cpu']}, {res['hardware']['threads']} "
             f"thread(s); {a.checkpoint}\n")
    (out / "tradeoff.md").write_text(text)
    plot_guidance_tradeoff(res, out / "tradeoff.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
