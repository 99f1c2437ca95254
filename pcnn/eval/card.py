"""A model card measured by the library: everything the README and checkpoints/README.md
state about a checkpoint, in one results file (``card.json`` + ``card.md`` + plots).

* classification on the validation split (plain ``argmax_c log p(x|c)``, the headline; the
  mirror average beside it): accuracy, macro F1, per class, confusion, bits/dim;
* calibration of the posterior p(c|x): expected calibration error and a reliability diagram;
* generation (:func:`pcnn.eval.generation.evaluate_generation`): FID at dims 2048, KID, the
  Inception-probe accuracy, precision / recall / density / coverage and the speckle and
  clipped-colour rates (:mod:`pcnn.eval.quality`) on ``per_class`` samples per class, each beside
  the same figure for as many real validation images; and the course's own protocol (FID at dims 192 on
  25 samples per class, 100 images) beside real images under the same protocol;
* the training cost: training-loop seconds summed over the stages' metric logs, with the
  CPU, the thread count and the precision they ran in, as given.
"""
from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

from pcnn.model.checkpoint import atomic_write, load, read_metadata, write_json
from .classification import calibration, score
from pcnn.model.classify import log_likelihoods
from pcnn.data.dataset import load_split
from pcnn.model.likelihood import to_float
from pcnn.model.config import CPEN455_CLASSES
from .fid import fid_from_dirs, load_inception
from .generation import evaluate_generation
from pcnn.paths import resolve_data_dir
from pcnn.sampling.sets import write_sample_set
from pcnn.train import read_metrics
from pcnn.sampling.sets import real_course_set, subset_by_class
from pcnn.viz.classification import reliability_plot
from pcnn.text import cell, pipe_table


log = logging.getLogger(__name__)

COURSE_PER_CLASS = 25  # the course's generation protocol: 25 images per class, FID at dims 192


def training_cost(stages: Sequence[dict]) -> dict:
    """Sum the training-loop seconds of each stage's metric log.

    ``stages``: ``[{"name", "metrics": path of metrics.jsonl or a run folder, "cpu", "threads",
    "amp"}]``. Returns ``{"stages": [...with "seconds", "epochs"], "seconds", "cpu_hours"}``;
    CPU-hours count every thread as busy (seconds x threads / 3600)."""
    out, total, hours = [], 0.0, 0.0
    for st in stages:
        path = Path(st["metrics"])
        rows = read_metrics(path if path.is_dir() else path.parent)
        if not rows:
            raise FileNotFoundError(f"no metric rows in {path}")
        secs = sum(r.get("seconds") or 0.0 for r in rows)
        full = [r for r in rows if not r.get("partial")]
        out.append({**st, "metrics": str(st["metrics"]), "seconds": round(secs, 1), "epochs": len(full)})
        total += secs
        hours += secs * int(st.get("threads") or 1) / 3600
    return {"stages": out, "seconds": round(total, 1), "cpu_hours": round(hours, 2)}


def course_fid_192(sample_dirs: dict, val, ref: Path, work: Path, cache_dir=None,
                   per_class: int = COURSE_PER_CLASS) -> dict:
    """The course's FID@192 on its protocol (the first ``per_class`` images of every class)
    against ``ref``, for each sample folder of ``sample_dirs`` ({name: folder}) and for real
    validation images (``val``) under the same protocol, with one Inception network for all:
    ``{"sets": {name: fid}, "real": fid, "images": n, "weights": str}``. The subsets are
    written under ``work/<name>`` and ``work/real``. With 100 images the 192-d covariance is
    rank-deficient by the course's design; those warnings are silenced here."""
    model = load_inception("cpu", cache_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sets = {name: fid_from_dirs(subset_by_class(Path(f), work / name, per_class), ref, dims=(192,),
                                    cache_dir=cache_dir, model=model) for name, f in sample_dirs.items()}
        real = fid_from_dirs(real_course_set(val, work / "real", per_class), ref, dims=(192,), cache_dir=cache_dir,
                             model=model)
    return {"sets": {k: v["fid"][192] for k, v in sets.items()}, "real": real["fid"][192],
            "images": real["n_gen"], "weights": real["weights"]}


def model_card(checkpoint, out_dir, data_dir=None, per_class: int = 125, seed: int = 3,
               generation: bool = True, stages: Sequence[dict] = (), cache_dir=None,
               batch_size: Optional[int] = None, progress: bool = True) -> dict:
    """Measure the card of ``checkpoint`` into ``out_dir`` (card.json, card.md, reliability.png,
    samples/); returns the card dict. ``stages``: see :func:`training_cost` (empty: no cost)."""
    ckpt, out = Path(checkpoint), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load(ckpt)
    cfg = model.config
    val = load_split("validation", data_dir, size=cfg.image_size, show_progress=progress)
    card = {"checkpoint": ckpt.name, "config": cfg.to_dict(), "metadata": read_metadata(ckpt)}
    x = to_float(val.images)
    t0 = time.perf_counter()
    ll = log_likelihoods(model, x, batch_size=batch_size)
    card["classification"] = score(ll, val.labels, cfg)
    card["classification"]["seconds"] = round(time.perf_counter() - t0, 1)
    ll_flip = log_likelihoods(model, x, batch_size=batch_size, flip_average=True)
    card["classification_flip_average"] = score(ll_flip, val.labels, cfg)
    card["calibration"] = calibration(ll, val.labels)
    reliability_plot(card["calibration"], out / "reliability.png")
    log.info(f"validation accuracy {card['classification']['accuracy']:.4f}, ECE {card['calibration']['ece']:.4f}")
    if generation:
        samples = out / "samples"
        write_sample_set(model, samples, per_class=per_class, seed=seed, show_progress=progress)
        # The floor: per_class real validation images of every class (so the probe can score
        # them too); hence per_class <= 129, the koala count, and 125 (500 images) by default.
        gen = evaluate_generation([samples], resolve_data_dir(data_dir) / "test", data_dir=data_dir, real_floor=True,
                                  floor_dir=out / "real_floor", cache_dir=cache_dir)
        card["generation"] = gen
        course = course_fid_192({"samples": samples}, val, Path(gen["ref"]["dir"]), out / "course", cache_dir)
        card["course_fid_192"] = {"samples": course["sets"]["samples"], "real": course["real"],
                                  "images": course["images"], "weights": course["weights"]}
    if stages:
        card["training_cost"] = training_cost(stages)
    write_json(card, out / "card.json")
    atomic_write(out / "card.md", lambda tmp: Path(tmp).write_text(card_markdown(card) + "\n"))
    return card


def _threads(n) -> str:
    return "? threads" if n is None else f"{n} thread" + ("" if n == 1 else "s")


def card_markdown(card: dict) -> str:
    """The card as a short Markdown report (what card.md holds)."""
    c, f = card["classification"], card["classification_flip_average"]
    names = CPEN455_CLASSES[:len(c["per_class_accuracy"])]
    lines = [f"# Model card: `{card['checkpoint']}`", "",
             f"Model: {card['config']['nr_resnet']}/{card['config']['nr_filters']}/"
             f"{card['config']['nr_logistic_mix']}, fusion {'+'.join(card['config']['fusion'])}.", "",
             pipe_table([f"validation ({c['n']} images)", "plain argmax_c log p(x\\|c)", "mirror-averaged"],
                        [["accuracy", f"{c['accuracy'] * 100:.2f} % ({c['correct']}/{c['n']})",
                          f"{f['accuracy'] * 100:.2f} %"],
                         ["macro F1", f"{c['macro_f1']:.3f}", f"{f['macro_f1']:.3f}"],
                         ["bits/dim", f"{c['bpd']:.4f}", f"{f['bpd']:.4f}"],
                         *[[f"{n} accuracy", f"{a * 100:.1f} %", f"{b * 100:.1f} %"]
                           for n, a, b in zip(names, c["per_class_accuracy"], f["per_class_accuracy"])]]), "",
             f"Confusion matrix (rows true, columns predicted): `{c['confusion_matrix']}`", "",
             f"Calibration of p(c|x): expected calibration error **{card['calibration']['ece']:.3f}** "
             "(10 bins; `reliability.png`).", ""]
    if "generation" in card:
        g = card["generation"]
        rows = []
        for name, s in g["sets"].items():
            acc = (s.get("probe") or {}).get("accuracy")
            # cards measured before issue #34 lack the last six figures: "-"
            seen = [cell(s.get(k), ".3f") for k in ("precision", "recall", "density", "coverage")]
            seen += [cell(s.get(k), ".3f", 100, " %") for k in ("speckle", "clipped")]
            rows.append(["real floor" if name == "real floor" else "samples", s["n"], f"{s['fid_2048']:.1f}",
                         f"{s['kid_mean']:.4f}", cell(acc, ".1f", 100, " %"), *seen])
        lines.append(pipe_table(["generation", "images", "FID 2048", "KID", "probe accuracy", "precision", "recall",
                                 "density", "coverage", "speckle", "clipped colour"], rows))
        cf = card["course_fid_192"]
        lines += ["", f"Course protocol (FID at dims 192, {cf['images']} images): samples **{cf['samples']:.2f}**, "
                      f"real validation images {cf['real']:.2f}.", ""]
    if "training_cost" in card:
        tc = card["training_cost"]
        lines += [f"Training cost: {tc['cpu_hours']:.2f} CPU-hours ({tc['seconds'] / 3600:.2f} h of training loop) "
                  "over " + ", ".join(f"{s['name']} ({s['epochs']} epochs, {s.get('cpu', '?')}, "
                                      f"{_threads(s.get('threads'))}, amp {s.get('amp', '?')})"
                                      for s in tc["stages"]) + "."]
    return "\n".join(lines)


def read_card(path) -> dict:
    """A ``card.json`` (the file, or the folder holding it)."""
    path = Path(path)
    return json.loads((path / "card.json" if path.is_dir() else path).read_text())


def floor_rows(sets: dict, course_images: int) -> list:
    """Generation figures of several sets side by side, each under one protocol, for
    :func:`pcnn.viz.generation.plot_beside_floor`: ``sets`` {name: {"n", "course_fid_192", "fid_2048",
    "kid_mean", "probe" (accuracy)}} (real images among them, by a name holding "real") ->
    ``[{"metric", "lower_better", "images", "values": {name: x}}, ...]`` for the course FID@192
    (``course_images`` images), FID-2048, KID and the Inception-probe accuracy."""
    n = next(iter(sets.values()))["n"]
    out = [{"metric": f"course FID@192 ({course_images} images)", "lower_better": True, "images": course_images,
            "values": {k: e["course_fid_192"] for k, e in sets.items()}}]
    for key, name, lower in (("fid_2048", "FID-2048", True), ("kid_mean", "KID", True),
                             ("probe", "probe accuracy", False)):
        out.append({"metric": f"{name} ({n} images)", "lower_better": lower, "images": n,
                    "values": {k: e[key] for k, e in sets.items()}})
    return out


def card_floors(card: dict, samples: str = "samples (card)", real: str = "real images (card)") -> list:
    """The card's generation figures beside their real-image floors (:func:`floor_rows`): the
    course FID@192 (100 images), FID-2048, KID and the Inception-probe accuracy of the card's
    sample set and of its real floor (e.g. 500 images each)."""
    gen = card["generation"]["sets"]
    floor = gen["real floor"]
    mine = next(v for k, v in gen.items() if k != "real floor")
    course = card["course_fid_192"]

    def entry(e, course_fid):
        return {"n": e["n"], "course_fid_192": course_fid, "fid_2048": e["fid_2048"], "kid_mean": e["kid_mean"],
                "probe": e["probe"]["accuracy"]}
    return floor_rows({samples: entry(mine, course["samples"]), real: entry(floor, course["real"])},
                      course["images"])


def course_fid_sentence(samples: float, real: float, images: int) -> str:
    """One sentence on what the course's FID@192 can say, from its value for samples and for real
    images under the same protocol."""
    if real > samples:
        return (f"The course's FID@192 scores real validation photos {real:.2f} and these samples {samples:.2f}: it "
                f"ranks real images behind generated ones, because {images} images cannot estimate a 192-d "
                "covariance, so it cannot rank generators; FID-2048, KID and the probe put real images far ahead.")
    return (f"The course's FID@192 scores these samples {samples:.2f} and real validation photos {real:.2f}; with "
            f"{images} images its 192-d covariance is rank-deficient, so read it beside that floor, not alone.")
