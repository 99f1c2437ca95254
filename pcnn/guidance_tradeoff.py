"""The guidance trade-off: what class guidance (:mod:`pcnn.guidance`) buys and costs.

For each guide (the class weights: running posterior, flat, tempered) and each guidance weight
w, :func:`guidance_tradeoff` samples ``per_class`` images of every class from one seed (the
same noise at every w and guide: the exact 256-bin draw, ``exact_bins=True``, also at w = 0),
then scores every set in one :func:`pcnn.generation.evaluate_generation` call beside a real
floor: FID-2048, KID, the Inception-probe accuracy per class, and the course's FID at dims 192
on its 100-image protocol (the first 25 per class), each with its real-image figure. A set
whose folder already holds its images and its ``done.json`` is not sampled again, so a run
that dies resumes where it stopped.

Issue #34 re-measures guidance with the plausibility constraint and the schedules of
:mod:`pcnn.guidance` (contrastive decoding's constraint, Li et al. 2023; guidance intervals,
Kynkäänniemi et al. 2024) over a grid of :class:`pcnn.guidance.GuidanceSetting` fixed before
the first sample (:func:`plausible_grid`), with the metrics that see what a person sees
(:mod:`pcnn.quality`: speckle and clipped-colour rates, precision / recall / density /
coverage of Naeem et al. 2020) beside FID-2048, KID and the probe: :func:`sample_settings`
draws every set (resumable set by set), :func:`score_settings` scores each set once into
``scores/<name>.json`` (resumable too), :func:`pick_recommended` applies the rule written
before measuring. Nothing here reads ``results/``: the files are passed in.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from .card import COURSE_PER_CLASS, course_fid_192, floor_rows
from .checkpoint import atomic_write
from .data import load_split
from .generation import evaluate_generation
from .guidance import DEFAULT_GUIDE, GUIDES, TEMPER, GuidanceSetting, check_guidance
from .paths import repo_root, resolve_data_dir
from .precision import describe_cpu
from .sample import write_sample_set

WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
#: Issue #34's grid, fixed before the first sample (results/guidance/README.md).
PLAUSIBLE_WEIGHTS = (1.0, 2.0, 4.0, 8.0)
PLAUSIBLE_ALPHAS = (0.0, 0.03, 0.1, 0.3)
SCHEDULE_ALPHA = 0.1
#: The guided rows of the interval schedule, chosen before measuring: the top half of the
#: 32-row image. The class (colours, the object's top) is settled in the first rows, where the
#: running posterior saturates (results/guidance/README.md), as LlamaGen's cfg-interval guides
#: only the early tokens; the rows below follow from them under the model's own class-
#: conditional distribution, untilted, so no tilt can put speckle there.
PLAUSIBLE_INTERVAL = "interval:0:16"


def plausible_grid(weights=PLAUSIBLE_WEIGHTS, alphas=PLAUSIBLE_ALPHAS, schedules=("ramp", PLAUSIBLE_INTERVAL),
                   schedule_alpha: float = SCHEDULE_ALPHA, guide: str = DEFAULT_GUIDE) -> list:
    """Issue #34's grid as :class:`GuidanceSetting` s: w = 0 first, then for every w the constant
    schedule at every alpha, then each of ``schedules`` at ``schedule_alpha``."""
    out = [GuidanceSetting(0.0)]
    for w in weights:
        out += [GuidanceSetting(w, guide, a, "constant") for a in alphas]
        out += [GuidanceSetting(w, guide, schedule_alpha, sch) for sch in schedules]
    names = [setting_name(s) for s in out]
    if len(set(names)) != len(names):
        raise ValueError("the grid repeats a setting")
    return out


def setting_name(s: GuidanceSetting) -> str:
    """Folder name of a setting's sample set: ``w0``, else ``<guide>_w<w>_a<alpha>_<schedule>``
    (``interval:0:16`` written ``interval0-16``)."""
    if s.w == 0:
        return "w0"
    return f"{s.guide}_w{s.w:g}_a{s.plausible:g}_{s.schedule.replace(':', '', 1).replace(':', '-')}"


def sample_settings(model, work, settings, per_class: int = 125, seed: int = 3, batch_size: int = 100,
                    progress: bool = True, log=print) -> dict:
    """Draw every setting's set into ``work/samples/<name>`` from one seed (the same noise at
    every setting: the exact 256-bin draw, also at w = 0); a set whose ``done.json`` records the
    same setting, count and seed is kept. Returns {name: seconds of sampling}."""
    work = Path(work)
    out = {}
    for k, st in enumerate(settings):
        name = setting_name(st)
        folder = work / "samples" / name
        done = folder / "done.json"
        want = {"per_class": per_class, "seed": seed, "setting": {**st.to_dict(), "source": None}}
        if done.is_file():
            rec = json.loads(done.read_text())
            if {k2: rec.get(k2) for k2 in want} == want:
                out[name] = float(rec["seconds"])
                continue
        log(f"sampling {name} ({k + 1}/{len(settings)}): {per_class} per class, seed {seed}")
        t0 = time.perf_counter()
        write_sample_set(model, folder, per_class=per_class, seed=seed, batch_size=batch_size, exact_bins=True,
                         show_progress=progress, **st.kwargs())
        seconds = time.perf_counter() - t0
        rec = {**want, "seconds": round(seconds, 2), "threads": torch.get_num_threads(), "cpu": describe_cpu()}
        atomic_write(done, lambda tmp: Path(tmp).write_text(json.dumps(rec) + "\n"))
        out[name] = seconds
        log(f"  {name}: {seconds / (per_class * model.config.num_classes):.3f} s per image")
    return out


def set_name(guide: str, w: float) -> str:
    """Folder name of one sample set: ``w0`` (shared by every guide), else ``<guide>_w<w>``."""
    return "w0" if w == 0 else f"{guide}_w{w:g}"


def _sample_set(model, folder: Path, per_class: int, seed: int, batch_size: int, w: float, guide: str,
                progress: bool) -> float:
    """Sample one set into ``folder`` (unless ``done.json`` says it is complete); returns seconds."""
    done = folder / "done.json"
    if done.is_file():
        rec = json.loads(done.read_text())
        if rec.get("per_class") == per_class and rec.get("seed") == seed:
            return float(rec["seconds"])
    t0 = time.perf_counter()
    write_sample_set(model, folder, per_class=per_class, seed=seed, batch_size=batch_size, guidance=w,
                     guide=guide, exact_bins=True, show_progress=progress)
    seconds = time.perf_counter() - t0
    rec = {"per_class": per_class, "seed": seed, "guidance": w, "guide": guide, "seconds": round(seconds, 2),
           "threads": torch.get_num_threads(), "cpu": describe_cpu()}
    atomic_write(done, lambda tmp: Path(tmp).write_text(json.dumps(rec) + "\n"))
    return seconds


def guidance_tradeoff(model, out_dir, data_dir=None, weights: Sequence[float] = WEIGHTS,
                      guides: Sequence[str] = GUIDES, per_class: int = 125, seed: int = 3, batch_size: int = 100,
                      cache_dir=None, min_images: int = 500, course_per_class: int = COURSE_PER_CLASS,
                      progress: bool = True, checkpoint: Optional[str] = None, log=print) -> dict:
    """Sample and score every (guide, w) set into ``out_dir``; returns the JSON-ready results.

    ``rows``: one per set (``guide``, ``w``, ``n``, ``fid_2048``, ``kid_mean``, ``kid_std``,
    ``probe`` accuracy, ``probe_per_class``, ``course_fid_192``, ``seconds_per_image``), w = 0
    once with guide ``"none"``; ``floor``: the same figures for real validation images.
    """
    out = Path(out_dir)
    weights = sorted({check_guidance(w) for w in weights})
    for g in guides:
        check_guidance(0.0, g)
    if not guides or not weights:
        raise ValueError("need at least one guide and one guidance weight")
    plan = [("none", 0.0)] if 0.0 in weights else []
    plan += [(g, w) for g in guides for w in weights if w > 0]
    data = resolve_data_dir(data_dir)
    seconds = {}
    for g, w in plan:
        name = set_name(g, w)
        log(f"sampling {name}: {per_class} per class, seed {seed}")
        seconds[name] = _sample_set(model, out / "samples" / name, per_class, seed, batch_size, w,
                                    "posterior" if g == "none" else g, progress)
    folders = [out / "samples" / set_name(g, w) for g, w in plan]
    gen = evaluate_generation(folders, data / "test", data_dir=data, real_floor=True, floor_dir=out / "real_floor",
                              cache_dir=cache_dir, min_images=min_images, log=log if progress else None)
    val = load_split("validation", data, size=model.config.image_size, show_progress=False)
    course = course_fid_192({f.name: f for f in folders}, val, Path(gen["ref"]["dir"]), out / "course", cache_dir,
                            course_per_class)

    def row(entry, **extra):
        p = entry.get("probe") or {}
        return {**extra, "n": entry["n"], "fid_2048": entry["fid_2048"], "kid_mean": entry["kid_mean"],
                "kid_std": entry["kid_std"], "probe": p.get("accuracy"), "probe_per_class": p.get("per_class")}

    rows = []
    for (g, w), f in zip(plan, folders):
        e = gen["sets"][str(f)]
        n = e["n"]
        rows.append(row(e, guide=g, w=w, course_fid_192=course["sets"][f.name],
                        seconds_per_image=round(seconds[f.name] / n, 4)))
    floor = row(gen["sets"]["real floor"], course_fid_192=course["real"])
    res = {"checkpoint": None if checkpoint is None else str(checkpoint), "config": model.config.to_dict(), "seed": seed,
           "per_class": per_class, "weights": weights, "guides": list(guides), "temper": TEMPER,
           "course_per_class": course_per_class, "course_images": course["images"], "rows": rows, "floor": floor,
           "probe_validation": (gen.get("probe") or {}).get("validation"), "kid": gen["kid"], "ref": gen["ref"],
           "hardware": {"cpu": describe_cpu(), "threads": torch.get_num_threads()},
           "warnings": gen["warnings"]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "tradeoff.json", lambda tmp: Path(tmp).write_text(json.dumps(res, indent=1) + "\n"))
    return res


def tradeoff_table(res: dict) -> str:
    """The trade-off as a Markdown table (one row per set, the real floor last)."""
    names = list((res["rows"][0].get("probe_per_class") or {}).keys())
    head = ("| guide | w | probe acc % | " + " | ".join(f"{n} %" for n in names)
            + " | FID-2048 | KID | course FID@192 | s / image |")
    lines = [head, "|" + "---|" * (7 + len(names))]

    def cells(r):
        per = r.get("probe_per_class") or {}
        return " | ".join(f"{per[n] * 100:.1f}" for n in names)
    for r in res["rows"]:
        lines.append(f"| {r['guide']} | {r['w']:g} | {r['probe'] * 100:.1f} | {cells(r)} | {r['fid_2048']:.1f} | "
                     f"{r['kid_mean']:.3f} | {r['course_fid_192']:.2f} | {r['seconds_per_image']:.3f} |")
    f = res["floor"]
    lines.append(f"| real validation images (floor) | - | {f['probe'] * 100:.1f} | {cells(f)} | {f['fid_2048']:.1f} | "
                 f"{f['kid_mean']:.3f} | {f['course_fid_192']:.2f} | - |")
    return "\n".join(lines)


def w0_row(res: dict) -> dict:
    """The unguided (w = 0) row of a trade-off; ``ValueError`` without one."""
    base = next((r for r in res["rows"] if r["w"] == 0), None)
    if base is None:
        raise ValueError("the trade-off has no w = 0 row to compare with")
    return base


def pick_default(res: dict, probe_target: float = 0.80) -> Optional[dict]:
    """The rule fixed before measuring (results/guidance/README.md): among guided rows whose
    FID-2048 is no worse than w = 0's, the smallest w reaching ``probe_target`` (ties: lower
    FID-2048); if none reaches it, the highest probe accuracy among them. None if no guided
    row keeps FID-2048 at or below w = 0's."""
    base = w0_row(res)
    ok = [r for r in res["rows"] if r["w"] > 0 and r["fid_2048"] <= base["fid_2048"]]
    if not ok:
        return None
    hit = [r for r in ok if r["probe"] >= probe_target]
    if hit:
        return min(hit, key=lambda r: (r["w"], r["fid_2048"]))
    return max(ok, key=lambda r: (r["probe"], -r["fid_2048"]))


def tradeoff_path() -> Optional[Path]:
    """``<checkout>/results/guidance/tradeoff.json`` (None outside a checkout)."""
    root = repo_root()
    return None if root is None else root / "results" / "guidance" / "tradeoff.json"


def read_tradeoff(path=None) -> Optional[dict]:
    """The committed trade-off (:func:`guidance_tradeoff`'s result) from ``path`` (default
    :func:`tradeoff_path`), or None when there is no such file."""
    path = tradeoff_path() if path is None else Path(path)
    if path is None or not path.is_file():   # outside a checkout, or nothing committed
        return None
    return json.loads(path.read_text())


def tradeoff_floors(res: dict, pick: Optional[dict] = None) -> list:
    """The samples at w = 0 and at the default guided setting (``pick``, default
    :func:`pick_default`'s; left out when there is none) beside the real floor, every figure
    under one protocol, as :func:`pcnn.card.floor_rows` gives them (for
    :func:`pcnn.plots.plot_beside_floor`)."""
    pick = pick_default(res) if pick is None else pick
    sets = {"samples, w = 0": w0_row(res)}
    if pick is not None:
        sets[f"samples, {pick['guide']} w = {pick['w']:g}"] = pick
    sets["real images"] = res["floor"]
    # older results lack course_images: course_per_class of every class
    course_n = res.get("course_images") or res["course_per_class"] * len(res["floor"]["probe_per_class"])
    return floor_rows(sets, course_n)


def default_guidance(path=None) -> dict:
    """The guided setting the measured trade-off picks by its rule (:func:`pick_default`), for the
    widget and notebook 07: ``{"guide", "w", "probe", "fid_2048", "source"}``, read from
    ``path`` (default :func:`tradeoff_path`). ``w`` is 0 (guidance off by default) when no
    guided set keeps FID-2048 at or below w = 0's, and when there is no file; ``guide`` is then
    the one with the highest probe accuracy at its largest w (what to show), or
    :data:`pcnn.guidance.DEFAULT_GUIDE` without a file."""
    path = tradeoff_path() if path is None else Path(path)
    res = read_tradeoff(path)
    if res is None:
        return {"guide": DEFAULT_GUIDE, "w": 0.0, "probe": None, "fid_2048": None, "source": None}
    pick = pick_default(res)
    if pick is None:
        top = max((r for r in res["rows"] if r["w"] > 0), key=lambda r: (r["w"], r["probe"]))
        return {"guide": top["guide"], "w": 0.0, "probe": None, "fid_2048": None, "source": str(path)}
    return {"guide": pick["guide"], "w": float(pick["w"]), "probe": pick["probe"], "fid_2048": pick["fid_2048"],
            "source": str(path)}
