"""Scaling probe: which model size buys the most validation bits/dim per CPU-hour?

Each size (``nr_resnet/nr_filters/nr_logistic_mix``) trains with one recipe in
time segments; after every segment the trainer evaluates and exports on its way
out (``TrainConfig.max_minutes``) and the next segment resumes bit-exactly. One
JSON line per segment goes to the probe log, so a probe that dies loses at most
the segment it was in and a rerun skips what is logged.

The x axis is compute: the cumulative process CPU time of each size's run
(training, its epoch-end evaluations and start-up) in CPU-hours. CPU time rather
than wall time, so that other work on the machine slows a probe without
moving its points. Each segment's wall time is logged beside it. The choice
rule, :func:`extrapolate`, was fixed before the probe ran: fit
``bpd(t) = a + b / sqrt(t)`` to each size's best-of(EMA, raw) validation bits/dim
and pick the size with the lowest prediction at the target budget. It is a crude
law (the exponent is fixed, not fitted, because a few points per size cannot pin
it), so the table says how far each size was actually seen.

Background: capacity is the lever for generation quality in Salimans et al.
(2017, PixelCNN++); the 88 % CPEN455 peer used 1/160/5.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from pcnn.text import cell, pipe_table
from pcnn.data.dataset import read_csv
from pcnn.model.network import PixelCNNpp
from pcnn.model.precision import cpu_name
from pcnn.train import TrainConfig, train


def parse_size(size: str) -> tuple:
    """``"1/80/5"`` -> ``(nr_resnet, nr_filters, nr_logistic_mix)`` = ``(1, 80, 5)``."""
    parts = size.split("/")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"size {size!r} is not nr_resnet/nr_filters/nr_logistic_mix, e.g. 1/80/5")
    return tuple(int(p) for p in parts)


def size_config(base: dict, size: str) -> dict:
    """``base`` (a TrainConfig dict) with the model size of ``size`` set."""
    r, f, k = parse_size(size)
    out = json.loads(json.dumps(base))
    out.setdefault("model", {}).update(nr_resnet=r, nr_filters=f, nr_logistic_mix=k)
    return out


def count_parameters(cfg: dict) -> int:
    """Trainable parameters of the model a TrainConfig dict describes."""
    return sum(p.numel() for p in PixelCNNpp(TrainConfig.from_dict(cfg).model).parameters())


def read_log(path) -> list:
    """Records of a probe log (JSON lines; empty if absent), with ``cpu_hours`` the
    cumulative ``cpu_seconds`` of each size in log order."""
    p = Path(path)
    if not p.is_file():
        return []
    recs = [json.loads(s) for s in p.read_text().splitlines() if s.strip()]
    total: dict = {}
    for r in recs:
        total[r["size"]] = total.get(r["size"], 0.0) + r["cpu_seconds"]
        r["cpu_hours"] = round(total[r["size"]] / 3600, 5)
    return recs


def _slug(size: str) -> str:
    return size.replace("/", "-")


def run_probe(base: dict, sizes: Sequence[str], workroot, log_path, segments: int,
              segment_minutes: Optional[float] = None, segment_steps: Optional[int] = None,
              train_data=None, val_data=None, progress: bool = True) -> list:
    """Train every size for ``segments`` segments and log one record per segment.

    A segment is ``segment_minutes`` of training (the trainer's ``max_minutes``)
    or, for tests, ``segment_steps`` optimizer steps. Segments already in
    ``log_path`` are skipped, so calling it again continues a probe. Returns the
    records of ``sizes``. Each record: ``size``, ``parameters``, ``segment``,
    ``cpu_seconds`` (process CPU time of this segment, evaluation included;
    :func:`read_log` adds the cumulative ``cpu_hours``), ``wall_seconds``,
    ``step``, ``images``, ``epochs`` (images / training-set size), ``val_bpd``,
    ``val_bpd_raw``, ``val_acc``, ``val_acc_raw``, ``best_bpd``, ``threads``, ``cpu``.
    """
    if (segment_minutes is None) == (segment_steps is None):
        raise ValueError("give exactly one of segment_minutes and segment_steps")
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    done = {(r["size"], r["segment"]) for r in read_log(log_path)}
    for size in sizes:
        cfg = size_config(base, size)
        params = count_parameters(cfg)
        workdir = Path(workroot) / _slug(size)
        for seg in range(segments):
            if (size, seg) in done:
                continue
            seg_cfg = dict(cfg)
            if segment_minutes is not None:
                seg_cfg["max_minutes"] = segment_minutes
            else:
                seg_cfg["max_steps"] = segment_steps * (seg + 1)
            wall, cpu = time.monotonic(), time.process_time()
            hist = train(seg_cfg, workdir, train_data=train_data, val_data=val_data,
                         resume=(workdir / "last.pt").is_file(), progress=progress)
            wall, cpu = time.monotonic() - wall, time.process_time() - cpu
            row = hist[-1]
            if row.get("val_bpd_raw") is None:
                raise RuntimeError(f"{size} segment {seg}: the run's last row has no validation figures; "
                                   "use val_every=1 in the probe recipe")
            batch = seg_cfg["batch_size"]
            n_train = len(train_data[1]) if isinstance(train_data, tuple) else (
                len(train_data.labels) if train_data is not None else len(read_csv("train", seg_cfg.get("data_dir"))))
            best = min(v for v in (row.get("val_bpd"), row.get("val_bpd_raw")) if v is not None)
            rec = {"size": size, "parameters": params, "segment": seg,
                   "cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 1), "step": row["step"],
                   "images": row["step"] * batch, "epochs": round(row["step"] * batch / n_train, 3),
                   "val_bpd": row.get("val_bpd"), "val_bpd_raw": row.get("val_bpd_raw"),
                   "val_acc": row.get("val_acc"), "val_acc_raw": row.get("val_acc_raw"),
                   "best_bpd": best, "threads": threads, "cpu": cpu_name()}
            with log_path.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
    return [r for r in read_log(log_path) if r["size"] in sizes]


def extrapolate(records: Sequence[dict], budget_hours: float) -> dict:
    """Per size, the least-squares fit ``best_bpd = a + b / sqrt(cpu_hours)`` and its value
    at ``budget_hours``: ``{size: {"a", "b", "predicted", "seen_hours", "points"}}``.
    A size with one point gets ``b = 0`` (its last value)."""
    out = {}
    for size in dict.fromkeys(r["size"] for r in records):
        pts = [(r["cpu_hours"], r["best_bpd"]) for r in records if r["size"] == size and r["cpu_hours"] > 0]
        if not pts:
            continue
        xs = [1 / math.sqrt(h) for h, _ in pts]
        ys = [v for _, v in pts]
        n = len(pts)
        mx, my = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if n > 1 and sxx > 0 else 0.0
        a = my - b * mx
        out[size] = {"a": a, "b": b, "predicted": a + b / math.sqrt(budget_hours),
                     "seen_hours": max(h for h, _ in pts), "points": n}
    return out


def choose(records: Sequence[dict], budget_hours: float) -> str:
    """The size whose fitted curve (:func:`extrapolate`) is lowest at ``budget_hours``."""
    fits = extrapolate(records, budget_hours)
    if not fits:
        raise ValueError("no probe records to choose from")
    return min(fits, key=lambda s: fits[s]["predicted"])


def markdown(records: Sequence[dict], budget_hours: float) -> str:
    """The probe table (last segment of each size) with the fitted prediction and the choice."""
    fits = extrapolate(records, budget_hours)
    rows = []
    for size, fit in fits.items():
        last = [r for r in records if r["size"] == size][-1]
        rows.append([size, f"{last['parameters'] / 1e6:.2f} M", f"{last['cpu_hours']:.2f}", f"{last['epochs']:.2f}",
                     last["images"], cell(last["val_bpd"], ".4f"), cell(last["val_bpd_raw"], ".4f"),
                     cell(last["val_acc"], ".3f"), cell(last["val_acc_raw"], ".3f"),
                     f"{fit['a']:.3f} + {fit['b']:.3f}/sqrt(h)", f"{fit['predicted']:.3f}"])
    lines = [pipe_table(["size", "parameters", "CPU-hours seen", "epochs", "images", "val bpd EMA", "val bpd raw",
                         "val acc EMA", "val acc raw", "fit a + b/sqrt(h)",
                         f"predicted bpd at {budget_hours:g} CPU-h"], rows), ""]
    lines.append(f"Choice (lowest predicted bits/dim at {budget_hours:g} CPU-hours): "
                 f"**{choose(records, budget_hours)}**")
    return "\n".join(lines)


def plot(records: Sequence[dict], path, budget_hours: Optional[float] = None):
    """Validation bits/dim (best of EMA and raw) and accuracy (EMA) against CPU-hours, one line per size,
    with the fitted curves dashed out to ``budget_hours``. Saves ``path``; returns the figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    fits = extrapolate(records, budget_hours) if budget_hours else {}
    for i, size in enumerate(dict.fromkeys(r["size"] for r in records)):
        rs = [r for r in records if r["size"] == size]
        h = [r["cpu_hours"] for r in rs]
        color = f"C{i}"
        ax1.plot(h, [r["best_bpd"] for r in rs], "o-", color=color,
                 label=f"{size} ({rs[0]['parameters'] / 1e6:.2f} M)")
        ax2.plot(h, [r["val_acc"] for r in rs], "o-", color=color, label=size)
        if size in fits:
            lo = min(h)
            grid = [lo * (budget_hours / lo) ** (j / 50) for j in range(51)]
            ax1.plot(grid, [fits[size]["a"] + fits[size]["b"] / math.sqrt(g) for g in grid], "--",
                     color=color, alpha=0.6)
    ax1.set_xscale("log")
    ax1.set_xlabel("CPU-hours (process CPU time, log scale)")
    ax1.set_ylabel("validation bits/dim (best of EMA, raw)")
    ax1.set_title("Likelihood per CPU-hour (dashed: a + b/sqrt(h))")
    ax1.legend(fontsize=9)
    ax2.set_xlabel("CPU-hours (process CPU time)")
    ax2.set_ylabel("validation accuracy (EMA weights)")
    ax2.set_title("Accuracy per CPU-hour")
    ax2.axhline(0.25, color="gray", lw=0.8, ls=":")
    ax2.legend(fontsize=9)
    cpu = records[0]["cpu"] if records else ""
    fig.suptitle(f"Scaling probe on {cpu}, {records[0]['threads'] if records else '?'} thread(s)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig
