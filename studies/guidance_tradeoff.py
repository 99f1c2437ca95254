"""The guidance trade-off: what class guidance (:mod:`pcnn.sampling.guidance`) buys and costs.

For each guide (the class weights: running posterior, flat, tempered) and each guidance weight
w, :func:`guidance_tradeoff` samples ``per_class`` images of every class from one seed (the
same noise at every w and guide: the exact 256-bin draw, ``exact_bins=True``, also at w = 0),
then scores every set in one :func:`pcnn.eval.generation.evaluate_generation` call beside a real
floor: FID-2048, KID, the Inception-probe accuracy per class, and the course's FID at dims 192
on its 100-image protocol (the first 25 per class), each with its real-image figure. A set
whose folder already holds its images and its ``done.json`` is not sampled again, so a run
that dies resumes where it stopped.

Issue #34 re-measures guidance with the plausibility constraint and the schedules of
:mod:`pcnn.sampling.guidance` (contrastive decoding's constraint, Li et al. 2023; guidance intervals,
Kynkäänniemi et al. 2024) over a grid of :class:`pcnn.sampling.guidance.GuidanceSetting` fixed before
the first sample (:func:`plausible_grid`), with the metrics that see what a person sees
(:mod:`pcnn.eval.quality`: speckle and clipped-colour rates, precision / recall / density /
coverage of Naeem et al. 2020) beside FID-2048, KID and the probe: :func:`sample_settings`
draws every set (resumable set by set), :func:`score_settings` scores each set once into
``scores/<name>.json`` (resumable too), :func:`pick_recommended` applies the rule written
before measuring. Nothing here reads ``results/``: the files are passed in.
"""
from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch

from pcnn.eval.card import COURSE_PER_CLASS, course_fid_192, floor_rows
from pcnn.sampling.sets import real_course_set, subset_by_class
from pcnn.text import MISSING, cell, pipe_table
from pcnn.model.checkpoint import write_json
from pcnn.model.config import CPEN455_CLASSES
from pcnn.data.dataset import load_split
from pcnn.eval.fid import fid_from_dirs
from pcnn.eval.generation import (KID_MAX_SUBSET, KID_SUBSETS, InceptionFeatures, evaluate_generation, frechet_2048,
                                  kid, probe_scores, train_probe, write_real_floor)
from pcnn.eval.generation import read_folder
from pcnn.viz.grids import labeled_grid
from pcnn.sampling.guidance import DEFAULT_GUIDE, GUIDES, TEMPER, GuidanceSetting, check_guidance
from pcnn.paths import resolve_data_dir
from pcnn.model.precision import describe_cpu
from pcnn.eval.quality import PRDC_K, pixel_metrics, prdc_or_none
from pcnn.sampling.sets import read_sample_set, save_png, write_sample_set
from pcnn.model.config import class_names_for

_log = logging.getLogger(__name__)
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
                    progress: bool = True, log=_log.info) -> dict:
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
        write_json(rec, done, indent=None)
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
    write_json(rec, done, indent=None)
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
                              cache_dir=cache_dir, min_images=min_images)
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
    res = {"checkpoint": None if checkpoint is None else str(checkpoint), "config": model.config.to_dict(),
           "seed": seed,
           "per_class": per_class, "weights": weights, "guides": list(guides), "temper": TEMPER,
           "course_per_class": course_per_class, "course_images": course["images"], "rows": rows, "floor": floor,
           "probe_validation": (gen.get("probe") or {}).get("validation"), "kid": gen["kid"], "ref": gen["ref"],
           "hardware": {"cpu": describe_cpu(), "threads": torch.get_num_threads()},
           "warnings": gen["warnings"]}
    out.mkdir(parents=True, exist_ok=True)
    write_json(res, out / "tradeoff.json")
    return res


def tradeoff_table(res: dict) -> str:
    """The trade-off as a Markdown table (one row per set, the real floor last)."""
    names = list((res["rows"][0].get("probe_per_class") or {}).keys())
    headers = ["guide", "w", "probe acc %", *[f"{n} %" for n in names], "FID-2048", "KID", "course FID@192",
               "s / image"]

    def cells(r):
        per = r.get("probe_per_class") or {}
        return [f"{r['probe'] * 100:.1f}", *[f"{per[n] * 100:.1f}" for n in names], f"{r['fid_2048']:.1f}",
                f"{r['kid_mean']:.3f}", f"{r['course_fid_192']:.2f}"]
    rows = [[r["guide"], f"{r['w']:g}", *cells(r), f"{r['seconds_per_image']:.3f}"] for r in res["rows"]]
    rows.append(["real validation images (floor)", MISSING, *cells(res["floor"]), MISSING])
    return pipe_table(headers, rows)


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


def read_tradeoff(path) -> Optional[dict]:
    """A trade-off results file (:func:`guidance_tradeoff`'s or :func:`score_settings`' result)
    from ``path``, or None when there is no such file. The library never looks for one itself."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def tradeoff_floors(res: dict, pick: Optional[dict] = None) -> list:
    """The samples at w = 0 and at the default guided setting (``pick``, default
    :func:`pick_default`'s; left out when there is none) beside the real floor, every figure
    under one protocol, as :func:`pcnn.eval.card.floor_rows` gives them (for
    :func:`pcnn.viz.generation.plot_beside_floor`)."""
    pick = pick_default(res) if pick is None else pick
    sets = {"samples, w = 0": w0_row(res)}
    if pick is not None:
        sets[f"samples, {pick['guide']} w = {pick['w']:g}"] = pick
    sets["real images"] = res["floor"]
    # older results lack course_images: course_per_class of every class
    course_n = res.get("course_images") or res["course_per_class"] * len(res["floor"]["probe_per_class"])
    return floor_rows(sets, course_n)


# ----------------------------------------------------------------------------- issue #34: scoring


def _set_entry(imgs, classes, ex, ref_imgs, ref_feats, probe_model, kid_subset: int, course_fid: float,
               seed: int) -> dict:
    """Every figure of one image set (uint8 (N, 3, S, S), intended classes) against the reference."""
    feats = ex.set_features(imgs)
    k_mean, k_std, _ = kid(ref_imgs, imgs, ex, subset_size=kid_subset, seed=seed)
    p = probe_scores(probe_model, feats, classes, int(probe_model.classes_.max()) + 1) or {}
    return {"n": int(len(imgs)), "fid_2048": frechet_2048(feats, ref_feats), "kid_mean": k_mean, "kid_std": k_std,
            "probe": p.get("accuracy"), "probe_per_class": p.get("per_class"), "course_fid_192": course_fid,
            **prdc_or_none(ref_feats, feats), **pixel_metrics(imgs)}


def score_settings(work, settings, data_dir=None, min_images: int = 500, course_per_class: int = COURSE_PER_CLASS,
                   cache_dir=None, checkpoint: Optional[str] = None, seed: int = 0, log=_log.info) -> dict:
    """Score every drawn set of ``settings`` (:func:`sample_settings`) and the real floor; each
    set's figures are kept in ``work/scores/<name>.json`` beside the ``done.json`` they belong to
    and reused while that is unchanged. Returns the JSON-ready result: ``rows`` (one per
    setting: its name, w, guide, plausible, schedule, then n, fid_2048, kid_mean, kid_std, probe,
    probe_per_class, course_fid_192, precision, recall, density, coverage, speckle, clipped,
    seconds_per_image) and ``floor`` (the same figures for real validation images)."""
    work, data = Path(work), resolve_data_dir(data_dir)
    names = [setting_name(s) for s in settings]
    missing = [n for n in names if not (work / "samples" / n / "done.json").is_file()]
    if missing:
        raise FileNotFoundError(f"not sampled yet: {missing} (run the sample phase first)")
    first, _, first_classes = read_folder(work / "samples" / names[0])
    size = first.shape[-1]
    if len(first) < min_images:
        raise ValueError(f"FID-2048 needs at least {min_images} images per set, {names[0]} has {len(first)}")
    ex = InceptionFeatures(None, "cpu", 50, cache_dir)
    ref_dir = data / "test"
    ref_imgs = read_folder(ref_dir)[0]
    log(f"reference: {len(ref_imgs)} images of {ref_dir}")
    ref_feats = ex.set_features(ref_imgs)
    train = load_split("train", data, size=size, show_progress=False)
    log(f"probe: features of {len(train)} training images")
    probe_model = train_probe(ex.set_features(train.images), train.labels.numpy(), seed)
    val = load_split("validation", data, size=size, show_progress=False)
    probe_val = probe_scores(probe_model, ex.set_features(val.images), val.labels.tolist(),
                             int(train.labels.max()) + 1)
    kid_subset = min(len(ref_imgs), KID_MAX_SUBSET, len(first))
    counts = {c: first_classes.count(c) for c in sorted(set(first_classes))}

    def course(folder, name):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # 100 images at 192 dims: rank-deficient by the course's design
            sub = subset_by_class(Path(folder), work / "course" / name, course_per_class)
            return fid_from_dirs(sub, ref_dir, dims=(192,), cache_dir=cache_dir, model=ex.fid_model)["fid"][192]

    rows = []
    for st, name in zip(settings, names):
        folder = work / "samples" / name
        done = json.loads((folder / "done.json").read_text())
        cached = work / "scores" / f"{name}.json"
        entry = None
        if cached.is_file():
            rec = json.loads(cached.read_text())
            if rec.get("done") == done and rec.get("probe_seed") == seed and rec.get("ref_n") == len(ref_imgs):
                entry = rec["entry"]
        if entry is None:
            log(f"scoring {name}")
            imgs, _, classes = read_folder(folder)
            entry = _set_entry(imgs, classes, ex, ref_imgs, ref_feats, probe_model, kid_subset,
                               course(folder, name), seed)
            rec = {"done": done, "probe_seed": seed, "ref_n": len(ref_imgs), "entry": entry}
            write_json(rec, cached, indent=None)
        rows.append({"name": name, **{k: v for k, v in st.to_dict().items() if k != "source"}, **entry,
                     "seconds_per_image": round(done["seconds"] / entry["n"], 4)})
    log("scoring the real floor")
    floor_dir = work / "real_floor"
    write_real_floor(floor_dir, counts, size, data, seed)
    f_imgs, _, f_classes = read_folder(floor_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f_course = fid_from_dirs(real_course_set(val, work / "course" / "real", course_per_class), ref_dir,
                                 dims=(192,), cache_dir=cache_dir, model=ex.fid_model)["fid"][192]
    floor = _set_entry(f_imgs, f_classes, ex, ref_imgs, ref_feats, probe_model, kid_subset, f_course, seed)
    res = {"issue": 34, "checkpoint": None if checkpoint is None else str(checkpoint),
           "per_class": rows[0]["n"] // max(1, len(counts)), "seed": json.loads(
               (work / "samples" / names[0] / "done.json").read_text())["seed"],
           "settings": [s.to_dict() for s in settings], "rows": rows, "floor": floor,
           "probe_validation": probe_val, "course_per_class": course_per_class,
           "course_images": course_per_class * len(counts), "ref": {"dir": str(ref_dir), "n": len(ref_imgs)},
           "kid": {"subsets": KID_SUBSETS, "subset_size": kid_subset}, "prdc_k": PRDC_K,
           "weights": ex.fid_model.weights, "hardware": {"cpu": describe_cpu(), "threads": torch.get_num_threads()}}
    write_json(res, work / "plausible_tradeoff.json")
    return res


def pick_recommended(res: dict, speckle_factor: float = 3.0) -> Optional[dict]:
    """Issue #34's rule, fixed before measuring (results/guidance/README.md): among the guided
    rows with FID-2048 no worse than w = 0's and speckle at most ``speckle_factor`` x the real
    floor's, the highest probe accuracy (compared as counts of correct images); ties go to the
    higher coverage. None when no row passes."""
    base = w0_row(res)
    limit = speckle_factor * res["floor"]["speckle"]
    ok = [r for r in res["rows"] if r["w"] > 0 and r["fid_2048"] <= base["fid_2048"] and r["speckle"] <= limit]
    if not ok:
        return None
    return max(ok, key=lambda r: (round(r["probe"] * r["n"]), r["coverage"] or 0.0))


def recommended_setting(pick: dict, source: Optional[str] = None) -> GuidanceSetting:
    """The :class:`GuidanceSetting` of a trade-off row (e.g. :func:`pick_recommended`'s)."""
    return GuidanceSetting(pick["w"], pick["guide"], pick["plausible"], pick["schedule"], source)


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:.1f}"


def plausible_table(res: dict) -> str:
    """Issue #34's trade-off as Markdown: the main table (one row per setting, the real floor
    last) and the probe accuracy per class."""
    headers = ["setting", "w", "alpha", "schedule", "probe %", "FID-2048", "KID", "course FID@192", "precision",
               "recall", "density", "coverage", "speckle %", "clipped %", "s / image"]

    def cells(r):
        return [_pct(r["probe"]), f"{r['fid_2048']:.1f}", f"{r['kid_mean']:.3f}", f"{r['course_fid_192']:.2f}",
                *[cell(r.get(k), ".3f") for k in ("precision", "recall", "density", "coverage")],
                f"{r['speckle'] * 100:.3f}", f"{r['clipped'] * 100:.3f}"]
    rows = [[r["name"], f"{r['w']:g}", f"{r['plausible']:g}", r["schedule"], *cells(r), f"{r['seconds_per_image']:.3f}"]
            for r in res["rows"]]
    rows.append(["real validation images (floor)", MISSING, MISSING, MISSING, *cells(res["floor"]), MISSING])
    names = list((res["floor"].get("probe_per_class") or {}).keys())
    per_rows = [[r["name"], *[_pct((r.get("probe_per_class") or {}).get(n)) for n in names]]
                for r in res["rows"] + [dict(res["floor"], name="real validation images (floor)")]]
    return pipe_table(headers, rows) + "\n\n" + pipe_table(["setting", *[f"{n} %" for n in names]], per_rows)


def pick_sentence(res: dict, pick: Optional[dict] = None) -> str:
    """One sentence: what the rule picks (or that nothing passes) and how it stands against the
    targets (probe >= 85 %, FID-2048 <= 200, speckle <= 3x real)."""
    base, f = w0_row(res), res["floor"]
    if pick is None:
        return (f"By the rule fixed before measuring, no guided setting keeps FID-2048 at or below w = 0's "
                f"({base['fid_2048']:.1f}) with speckle at most 3x real ({3 * f['speckle'] * 100:.3f} %).")
    hits = {"probe >= 85 %": pick["probe"] >= 0.85, "FID-2048 <= 200": pick["fid_2048"] <= 200,
            "speckle <= 3x real": pick["speckle"] <= 3 * f["speckle"]}
    met = [k for k, v in hits.items() if v]
    missed = [k for k, v in hits.items() if not v]
    return (f"By the rule fixed before measuring: {pick['name']} (probe {pick['probe'] * 100:.1f} %, FID-2048 "
            f"{pick['fid_2048']:.1f}, speckle {pick['speckle'] * 100:.3f} % against real {f['speckle'] * 100:.3f} %, "
            f"coverage {pick['coverage']:.3f}); w = 0: probe {base['probe'] * 100:.1f} %, FID-2048 "
            f"{base['fid_2048']:.1f}. Targets met: {', '.join(met) or 'none'}"
            + (f"; missed: {', '.join(missed)}." if missed else "."))


def setting_label(name: str) -> str:
    """A short row label for a set name: ``w0`` -> ``w=0``, ``flat_w4_a0.1_ramp`` -> ``w4 a0.1 ramp``."""
    return "w=0" if name == "w0" else name.split("_", 1)[1].replace("_", " ")


def write_setting_grids(work, settings, out_dir, per_row: int = 8, prefix: str = "plausible_grid",
                        labels: Optional[Sequence[str]] = None, real: bool = True, scale: int = 2) -> list:
    """One same-noise grid per class from the drawn sets: a row per setting (the first ``per_row``
    images of the class: the same noise in every row), then a row of real validation images
    (the floor, other images) when ``real``. Written as ``<prefix>_<class>.png``; returns the paths."""
    work, out = Path(work), Path(out_dir)
    names = [setting_name(s) for s in settings]
    labels = [setting_label(n) for n in names] if labels is None else list(labels)
    sets = [read_sample_set(work / "samples" / n) for n in names]
    floor = read_sample_set(work / "real_floor") if real and (work / "real_floor").is_dir() else None
    class_names = list(CPEN455_CLASSES)
    paths = []
    for c in sorted(set(sets[0][1].tolist())):
        rows = [list(imgs[lab == c][:per_row]) for imgs, lab in sets]
        row_labels = list(labels)
        if floor is not None:
            rows.append(list(floor[0][floor[1] == c][:per_row]))
            row_labels.append("real (other images)")
        cols = max(len(r) for r in rows)
        rows = [r + [None] * (cols - len(r)) for r in rows]
        grid = labeled_grid(rows, row_labels, col_labels=[f"noise {k}" for k in range(cols)], scale=scale)
        paths.append(save_png(grid, out / f"{prefix}_{class_names[c] if c < len(class_names) else c}.png"))
    return paths


def compare_grid(work, settings, labels: Sequence[str], per_row: int = 8, scale: int = 2) -> torch.Tensor:
    """One figure from the drawn sets: for every class, a row per setting of ``settings``
    (labelled ``<class>: <label>``), the first ``per_row`` images of the class, the same noise in
    every row (e.g. w = 0, the earlier default and the recommendation side by side)."""
    work = Path(work)
    if len(labels) != len(settings):
        raise ValueError(f"{len(labels)} labels for {len(settings)} settings")
    sets = [read_sample_set(work / "samples" / setting_name(s)) for s in settings]
    tiles, row_labels = [], []
    for c in sorted(set(sets[0][1].tolist())):
        name = class_names_for(c + 1)[c]
        for (imgs, lab), label in zip(sets, labels):
            tiles.append(list(imgs[lab == c][:per_row]))
            row_labels.append(f"{name}: {label}")
    cols = max(len(r) for r in tiles)
    tiles = [r + [None] * (cols - len(r)) for r in tiles]
    return labeled_grid(tiles, row_labels, col_labels=[f"noise {k}" for k in range(cols)], scale=scale)
