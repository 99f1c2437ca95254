"""Results files of finished runs, and the comparison table built from several of them.

One JSON file per run (e.g. ``results/fusion/<name>.json``)::

    {"format": "pcnn-results-v1", "name": ..., "fusion": [...], "config": {TrainConfig},
     "metrics_log": [rows of metrics.jsonl], "final": {"weights", "accuracy", "macro_f1", "val_bpd",
     "accuracy_ema", "macro_f1_ema", "val_bpd_ema", "accuracy_raw", ..., "fid_192", "fid_2048",
     "fid_weights", "train_seconds", "n_eval"}, "hardware": {...}}

``accuracy`` / ``macro_f1`` / ``val_bpd`` belong to the exported weights
(``model.safetensors``, the ones FID is measured on): EMA or raw, whichever had the
lower validation bits/dim, the same rule as :mod:`pcnn.train`'s export.

:func:`results_from_run` builds it from a training workdir (``config.json``,
``metrics.jsonl``, ``model.safetensors``), :func:`load_results` reads a folder of
them, :func:`results_table` / :func:`markdown_table` make the table and
:func:`pcnn.viz.results.plot_results` the bar plots.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch

from pcnn.text import pipe_table
from pcnn.model.checkpoint import load, read_metadata, write_json
from pcnn.model.classify import log_likelihoods
from pcnn.eval.classification import score
from pcnn.data.dataset import load_split
from pcnn.model.likelihood import to_float
from pcnn.eval.fid import fid_from_dirs
from pcnn.sampling.sets import write_sample_set
from pcnn.train import exports_ema, read_metrics, train
from pcnn.viz.results import accuracy_stderr, final_value

FORMAT = "pcnn-results-v1"

#: Table columns: (key in "final" or top level, header, number format).
COLUMNS = (
    ("name", "run", "{}"),
    ("fusion", "fusion", "{}"),
    ("weights", "weights", "{}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("macro_f1", "macro F1", "{:.3f}"),
    ("val_bpd", "bits/dim", "{:.3f}"),
    ("accuracy_ema", "EMA acc", "{:.3f}"),
    ("val_bpd_ema", "EMA bpd", "{:.3f}"),
    ("fid_192", "FID 192", "{:.1f}"),
    ("fid_2048", "FID 2048", "{:.1f}"),
    ("train_seconds", "train s", "{:.1f}"),
    ("device", "hardware", "{}"),
)


def hardware() -> dict:
    """The machine a run used: device name (GPU, or CPU with its core count), the CPU's model
    name and bf16 instruction sets (``pcnn.model.precision``), torch and Python versions."""
    import os
    from pcnn.model.precision import cpu_bf16_flags, cpu_name
    if torch.cuda.is_available():
        dev = torch.cuda.get_device_name(0)
    else:
        dev = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    # The CPU's model and bf16 instructions: they set its speed and what amp=bf16 runs in.
    return {"device": dev, "cpu": cpu_name(), "cpu_bf16_flags": list(cpu_bf16_flags()),
            "torch": torch.__version__, "python": platform.python_version()}


def _val_figures(row: dict, suffix: str = "") -> dict:
    return {"accuracy": row.get("val_acc" + suffix), "macro_f1": row.get("val_f1" + suffix),
            "val_bpd": row.get("val_bpd" + suffix)}


def final_from_log(log: Sequence[dict], ema: bool = True) -> dict:
    """The validation figures of the latest evaluated row of a metrics log.

    A log row holds the EMA weights' figures as ``val_*`` (when the run keeps an EMA)
    and the raw weights' as ``val_*_raw``. The trainer exports one of them
    (:func:`pcnn.train.exports_ema`), so ``weights`` / ``accuracy`` / ``macro_f1`` /
    ``val_bpd`` name that one; both sets are kept as ``*_ema`` and ``*_raw``.
    """
    evaluated = [r for r in log if r.get("val_bpd") is not None]
    last = evaluated[-1] if evaluated else {}
    shown, raw = _val_figures(last), _val_figures(last, "_raw")
    out = {"n_eval": None, "eval_split": "validation (training log)"}
    if ema and raw["val_bpd"] is not None:
        use_ema = exports_ema(shown["val_bpd"], raw["val_bpd"])
        out.update({f"{k}_ema": v for k, v in shown.items()})
    else:   # no EMA: the val_* columns are the raw weights' own
        raw, use_ema = shown, False
    out.update({f"{k}_raw": v for k, v in raw.items()})
    out.update(shown if use_ema else raw, weights=("ema" if use_ema else "raw") if last else None)
    return out


def results_from_run(workdir, name: Optional[str] = None, split=None, fid: Optional[dict] = None,
                     batch_size: Optional[int] = None, device=None) -> dict:
    """A results dict for the finished run in ``workdir``.

    ``split``: a :class:`pcnn.data.dataset.Split` (labelled) to measure accuracy / macro F1 /
    bits/dim on with ``model.safetensors``; None takes the last validation numbers of
    ``metrics.jsonl``. ``fid``: the result of :func:`pcnn.eval.fid.fid_from_dirs` for this
    run's samples (its scores for dims 192 and 2048, when present, and its weights are kept).
    """
    workdir = Path(workdir)
    config = json.loads((workdir / "config.json").read_text())
    log = read_metrics(workdir)
    final = final_from_log(log, ema=bool(config.get("ema")))
    if split is not None:
        model = load(workdir / "model.safetensors", device=device or "cpu")
        x = to_float(split.images)
        m = score(log_likelihoods(model, x, batch_size=batch_size), split.labels, model.config)
        final.update(accuracy=m["accuracy"], macro_f1=m["macro_f1"], val_bpd=m["bpd"],
                     n_eval=len(split), eval_split=split.name)
    fid = fid or {}
    scores = {int(k): v for k, v in (fid.get("fid") or {}).items()}
    final.update(fid_192=scores.get(192), fid_2048=scores.get(2048),
                 fid_other={str(k): v for k, v in scores.items() if k not in (192, 2048)} or None,
                 fid_weights=fid.get("weights"), fid_n_gen=fid.get("n_gen"), fid_n_ref=fid.get("n_ref"),
                 train_seconds=sum(r.get("seconds") or 0 for r in log))
    fusion = config.get("model", {}).get("fusion", [])
    return {"format": FORMAT, "name": name or workdir.name, "fusion": "+".join(fusion) or "none",
            "config": config, "metrics_log": log, "final": final, "hardware": hardware()}


def write_results(results: dict, path) -> Path:
    """Write a results dict as JSON (sorted keys, atomically)."""
    return write_json(results, path, sort_keys=True)


def load_results(folder, fmt: str = None) -> list:
    """Every ``*.json`` results file in ``folder`` of format ``fmt`` (default this module's), sorted by
    name (files of another format are skipped)."""
    fmt = fmt or FORMAT
    out = []
    for p in sorted(Path(folder).glob("*.json")):
        try:
            r = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict) and r.get("format") == fmt:
            out.append(r)
    return out


def _cell(r: dict, key: str):
    if key in ("name", "fusion"):
        return r.get(key)
    if key == "device":
        return (r.get("hardware") or {}).get("device")
    return (r.get("final") or {}).get(key)


def results_table(results: Iterable[dict], columns=COLUMNS) -> tuple:
    """``(headers, rows)``: formatted strings, ``-`` for missing values."""
    headers = [h for _, h, _ in columns]
    rows = []
    for r in results:
        row = []
        for key, _, fmt in columns:
            v = _cell(r, key)
            row.append("-" if v is None else fmt.format(v))
        rows.append(row)
    return headers, rows


def markdown_table(results: Iterable[dict], columns=COLUMNS) -> str:
    """The comparison as a Markdown table (one row per run)."""
    return pipe_table(*results_table(results, columns))


def run_and_record(config, workdir, out_json, name: Optional[str] = None, train_data=None, val_data=None,
                   eval_split=None, fid_ref_dir=None, fid_dims=(192, 2048), per_class: int = 25,
                   seed: int = 0, progress: bool = False, fid_model=None) -> dict:
    """Train ``config`` in ``workdir`` (:func:`pcnn.train.train`), optionally sample ``per_class``
    images per class and measure FID against ``fid_ref_dir``, and write the results file
    ``out_json`` (:func:`results_from_run`). Returns the results dict. ``fid_model``: a
    :func:`pcnn.eval.fid.load_inception` result to reuse over several runs (loaded per call otherwise).
    """
    workdir = Path(workdir)
    train(config, workdir, train_data=train_data, val_data=val_data, resume=(workdir / "last.pt").exists(),
          progress=progress)
    fid = None
    if fid_ref_dir is not None:
        model = load(workdir / "model.safetensors")
        gen = workdir / "samples"
        write_sample_set(model, gen, per_class=per_class, seed=seed, show_progress=progress)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rank warnings for small sets are kept in fid["warnings"]
            fid = fid_from_dirs(gen, fid_ref_dir, dims=fid_dims, model=fid_model)
    res = results_from_run(workdir, name=name, split=eval_split, fid=fid)
    write_results(res, out_json)
    return res


def evaluate_checkpoint(checkpoint, out_json=None, data_dir=None, fid_ref_dir=None, fid_dims=(192, 2048),
                        per_class: int = 25, seed: int = 0, batch_size: Optional[int] = None, device="cpu",
                        samples_dir=None, progress: bool = True) -> dict:
    """Everything a model card states about ``checkpoint``, measured by the library.

    Validation split (full): accuracy, macro F1, per-class accuracy, confusion
    matrix and bits/dim under the true label, both plain and with the
    horizontal-mirror average of the log-likelihood (test-time augmentation,
    still a pure likelihood). If ``fid_ref_dir`` is given: ``per_class`` samples
    per class (cached sampler, ``seed``) and FID at ``fid_dims`` against it.
    Writes ``out_json`` (when given) and returns the dict.
    """
    import time

    ckpt = Path(checkpoint)
    model = load(ckpt, device=device)
    cfg = model.config
    val = load_split("validation", data_dir, size=cfg.image_size, show_progress=progress)
    x = to_float(val.images)
    res = {"checkpoint": ckpt.name, "config": cfg.to_dict(), "checkpoint_metadata": read_metadata(ckpt),
           "hardware": hardware(), "validation_images": len(val)}
    for flip in (False, True):
        t0 = time.perf_counter()
        ll = log_likelihoods(model, x, batch_size=batch_size, flip_average=flip)
        m = score(ll, val.labels, cfg)
        m["val_bpd"] = m.pop("bpd")
        m["seconds"] = round(time.perf_counter() - t0, 1)
        res["flip_average" if flip else "plain"] = m
    if fid_ref_dir is not None:
        gen = Path(samples_dir) if samples_dir else ckpt.parent / f"{ckpt.stem}_samples"
        t0 = time.perf_counter()
        write_sample_set(model, gen, per_class=per_class, seed=seed, show_progress=progress)
        t_sample = time.perf_counter() - t0
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the rank warnings are kept in the result
            fid = fid_from_dirs(gen, fid_ref_dir, dims=fid_dims, device=device)
        res["fid"] = {"scores": {str(k): float(v) for k, v in fid["fid"].items()}, "weights": fid["weights"],
                      "n_gen": fid["n_gen"], "n_ref": fid["n_ref"], "per_class": per_class, "seed": seed,
                      "sampling_seconds": round(t_sample, 1), "warnings": fid.get("warnings", [])}
    if out_json is not None:
        write_results(res, out_json)
    return res


def fit_gap(model, train, val, n_train: Optional[int] = None, seed: int = 0,
            batch_size: Optional[int] = None) -> dict:
    """Over- or underfitting: eval-mode likelihood scores on training images vs validation.

    ``train`` / ``val`` are :class:`pcnn.data.dataset.Split` (uint8 images, labels). Scores
    ``n_train`` training images drawn without replacement with ``seed`` (all when
    None) and the whole of ``val`` with :func:`pcnn.eval.classification.score` (dropout off,
    no augmentation). Returns ``{"train": {...}, "validation": {...},
    "bpd_gap": train bpd - val bpd}``: a gap near zero or positive means the model
    does not overfit its training set, so less regularisation (dropout) or more
    capacity can help; a clearly negative one means it overfits.
    """
    if n_train is not None:
        if not 0 < n_train <= len(train):
            raise ValueError(f"n_train must be in 1..{len(train)}, got {n_train}")
        g = torch.Generator().manual_seed(seed)
        train = train.subset(torch.randperm(len(train), generator=g)[:n_train])
    out = {}
    for name, split in (("train", train), ("validation", val)):
        m = score(log_likelihoods(model, to_float(split.images), batch_size=batch_size), split.labels, model.config)
        m.pop("confusion_matrix", None)
        out[name] = m
    out["bpd_gap"] = out["train"]["bpd"] - out["validation"]["bpd"]
    return out


def fusion_conclusion(results: Sequence[dict], n_eval: int, within: float = 2.0) -> list:
    """What the comparison shows, read from the results: the best run by EMA and by raw
    accuracy and the runs within ``within`` standard errors of each (indistinguishable with one
    seed on ``n_eval`` images), whether the two rankings agree, and the lowest bits/dim."""
    out = []
    for label, key in (("EMA", "accuracy_ema"), ("raw", "accuracy")):
        got = [(r.get("name", "?"), final_value(r, key) if key == "accuracy" else (r.get("final") or {}).get(key))
               for r in results]
        got = [(n, v) for n, v in got if v is not None]
        if not got:
            continue
        name, best = max(got, key=lambda t: t[1])
        se = accuracy_stderr(best, n_eval)
        close = [n for n, v in sorted(got, key=lambda t: -t[1]) if n != name and best - v <= within * se]
        out.append(f"Best {label} accuracy: {name} {best:.1%} (+-{se:.1%}); within {within:g} standard errors of it: "
                   + (", ".join(close) if close else "none") + ".")
    bests = [s.split(":")[1].split()[0] for s in out]
    if len(bests) == 2:
        out.append("The EMA and raw weights agree on the best run." if bests[0] == bests[1] else
                   "The EMA and raw weights rank the runs differently: at this budget the ranking is not settled.")
    bpd = [(r.get("name", "?"), (r.get("final") or {}).get("val_bpd")) for r in results]
    bpd = [(n, v) for n, v in bpd if v is not None]
    if bpd:
        name, v = min(bpd, key=lambda t: t[1])
        out.append(f"Lowest validation bits/dim: {name} {v:.3f} (of {len(bpd)} runs, from "
                   f"{min(b for _, b in bpd):.3f} to {max(b for _, b in bpd):.3f}).")
    return out


# --------------------------------------------------------------------------- 03 mistakes
