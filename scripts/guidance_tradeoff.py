#!/usr/bin/env python
"""Class guidance trade-off, issue #34: plausibility constraint x schedule x w, every metric, one command.

    PCNN_DATA_DIR=../shared/cpen455 python scripts/guidance_tradeoff.py \
        checkpoints/pcnn_cpu_film40_disc.safetensors --work /work/runs/guidance34 --out results/guidance --threads 1

Draws every setting of the grid fixed in results/guidance/README.md (studies.guidance_tradeoff.plausible_grid:
w = 0, then w in {1, 2, 4, 8} x alpha in {0, 0.03, 0.1, 0.3} with the constant schedule, and ramp and
interval:0:16 at alpha = 0.1), 125 per class at seed 3 from the same noise, under --work (outside
results/: 12,500 PNGs), then scores each set once (FID-2048, KID, Inception probe, course FID@192,
precision / recall / density / coverage, speckle and clipped-colour rates, each beside the real
floor). Both phases resume set by set: run the same command again after a stop. ``--phase sample``
only draws (the scoring can follow later). The results go to --out as plausible_tradeoff.json /
.md / .png, one same-noise grid per class (a row per setting) and plausible_compare.png (w = 0,
issue #28's default and the rule's pick, every class, the same noise). ``--write-checkpoint`` puts the
setting the rule picks into the checkpoint's metadata (pcnn.sampling.guidance.METADATA_KEY).

``--grid 28`` reruns issue #28's grid (guides x w, results/guidance/tradeoff.*) instead.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import pcnn  # noqa: E402
import studies.guidance_tradeoff as gt  # noqa: E402
from pcnn.sampling.guidance import GUIDES  # noqa: E402


def issue28(a, model) -> int:
    from pcnn.viz.generation import plot_guidance_tradeoff
    res = gt.guidance_tradeoff(model, a.work, a.data_dir, a.weights, a.guides, a.per_class, a.seed, a.batch_size,
                               min_images=a.min_images, course_per_class=a.course_per_class,
                               progress=not a.quiet, checkpoint=a.checkpoint)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tradeoff.json").write_text((Path(a.work) / "tradeoff.json").read_text())
    pick = gt.pick_default(res)
    text = gt.tradeoff_table(res)
    text += ("\n\nBy the rule fixed before measuring: " + ("no guided setting keeps FID-2048 at or below w = 0's"
             if pick is None else f"guide {pick['guide']}, w = {pick['w']:g} (probe {pick['probe'] * 100:.1f} %, "
             f"FID-2048 {pick['fid_2048']:.1f})") + f"\n\n{res['hardware']['cpu']}, {res['hardware']['threads']} "
             f"thread(s); {a.checkpoint}\n")
    (out / "tradeoff.md").write_text(text)
    plot_guidance_tradeoff(res, out / "tradeoff.png")
    print(text)
    return 0


def sample_order(settings):
    """w = 0 first, then w = 4, 2, 8, 1 (the settings nearest today's default first, so a run
    stopped early has the most telling sets)."""
    rank = {0.0: 0, 4.0: 1, 2.0: 2, 8.0: 3, 1.0: 4}
    return sorted(settings, key=lambda s: rank.get(s.w, 5))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--work", required=True, help="folder for the sample sets and per-set scores (resumable)")
    p.add_argument("--out", required=True, help="folder for the results files and figures")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--grid", default="34", choices=["34", "28"], help="issue #34's grid (default) or #28's")
    p.add_argument("--phase", default="all", choices=["all", "sample", "score"],
                   help="sample only, score only (sets already drawn), or both (default)")
    p.add_argument("--weights", type=float, nargs="+", default=None,
                   help="guidance weights (default: 1 2 4 8 for --grid 34; 0 0.5 1 2 4 for --grid 28)")
    p.add_argument("--alphas", type=float, nargs="+", default=list(gt.PLAUSIBLE_ALPHAS))
    p.add_argument("--schedules", nargs="*", default=["ramp", gt.PLAUSIBLE_INTERVAL])
    p.add_argument("--schedule-alpha", type=float, default=gt.SCHEDULE_ALPHA)
    p.add_argument("--guides", nargs="+", default=list(GUIDES), choices=list(GUIDES), help="--grid 28 only")
    p.add_argument("--per-class", type=int, default=125)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--min-images", type=int, default=500, help="FID-2048's minimum (lower only for smoke runs)")
    p.add_argument("--course-per-class", type=int, default=25)
    p.add_argument("--grid-columns", type=int, default=8, help="images per class and setting in the grids")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--write-checkpoint", action="store_true",
                   help="write the rule's pick into the checkpoint's metadata (only after a complete run)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    model = pcnn.load(a.checkpoint)
    if a.grid == "28":
        a.weights = list(gt.WEIGHTS) if a.weights is None else a.weights
        return issue28(a, model)
    weights = tuple(a.weights) if a.weights is not None else gt.PLAUSIBLE_WEIGHTS
    settings = gt.plausible_grid(weights, tuple(a.alphas), tuple(a.schedules), a.schedule_alpha)
    say = (lambda m: None) if a.quiet else (lambda m: print(m, flush=True))
    if a.phase in ("all", "sample"):
        gt.sample_settings(model, a.work, sample_order(settings), a.per_class, a.seed, a.batch_size,
                           progress=not a.quiet, log=say)
    if a.phase == "sample":
        return 0
    res = gt.score_settings(a.work, settings, a.data_dir, min_images=a.min_images,
                            course_per_class=a.course_per_class, checkpoint=a.checkpoint, log=say)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res["command"] = "python scripts/guidance_tradeoff.py " + " ".join(sys.argv[1:] if argv is None else argv)
    pick = gt.pick_recommended(res)
    res["recommended"] = None if pick is None else {k: pick[k] for k in ("name", "w", "guide", "plausible",
                                                                         "schedule")}
    (out / "plausible_tradeoff.json").write_text(json.dumps(res, indent=1) + "\n")
    text = gt.plausible_table(res) + "\n\n" + gt.pick_sentence(res, pick) + "\n"
    (out / "plausible_tradeoff.md").write_text(text)
    from pcnn.viz.generation import plot_plausible_tradeoff
    plot_plausible_tradeoff(res, out / "plausible_tradeoff.png")
    for path in gt.write_setting_grids(a.work, settings, out, per_row=a.grid_columns):
        say(f"grid: {path}")
    # w = 0, issue #28's default (flat, w = 4, alpha 0, constant) and the pick, on the same noise
    from pcnn.sampling.guidance import GuidanceSetting
    from pcnn.sampling.sets import save_png
    old = GuidanceSetting(4.0, "flat", 0.0, "constant")
    shown = [s for s in settings if s.w == 0] + [s for s in settings if s == old]
    labels = ["w = 0", "flat w = 4, alpha 0 (earlier default)"][:len(shown)]
    if pick is not None:
        shown.append(gt.recommended_setting(pick))
        labels.append(f"rule's pick: {gt.recommended_setting(pick).describe()}")
    save_png(gt.compare_grid(a.work, shown, labels, per_row=a.grid_columns), out / "plausible_compare.png")
    print(text)
    if a.write_checkpoint:
        if pick is None:
            print("the rule picks no guided setting: the checkpoint's recommendation is left as it is")
        else:
            setting = gt.recommended_setting(pick, source=str(out / "plausible_tradeoff.json"))
            pcnn.model.checkpoint.update_metadata(a.checkpoint, {pcnn.sampling.guidance.METADATA_KEY: setting.to_dict()})
            print(f"wrote {setting.describe()} into {a.checkpoint}'s metadata")
    return 0


if __name__ == "__main__":
    sys.exit(main())
