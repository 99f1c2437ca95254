"""What a run writes as it goes: one row per epoch in ``metrics.jsonl`` and ``metrics.csv``
(columns :data:`METRIC_COLUMNS`), appended whole or not at all, plus optional TensorBoard
and W&B sinks; :func:`read_metrics` reads the rows back."""
from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import warnings
from pathlib import Path
from typing import Optional

from pcnn.model.checkpoint import DiskFullError, atomic_write

#: Columns of metrics.csv (metrics.jsonl rows carry the same keys, plus ``partial``).
METRIC_COLUMNS = ("epoch", "step", "train_bpd", "val_bpd", "val_acc", "val_f1", "val_bpd_raw",
                  "val_acc_raw", "val_f1_raw", "val_ce", "val_objective", "lr", "seconds", "images_per_s",
                  "bad_steps")


def read_metrics(workdir) -> list:
    """Rows of ``workdir/metrics.jsonl`` (one dict per epoch; empty if absent)."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _fmt(v):
    return "" if v is None else v


def _json_safe(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _json_row(row: dict) -> str:
    """One metrics.jsonl line: valid JSON, a non-finite number (NaN, inf) becomes null."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
    return json.dumps(clean, allow_nan=False)


def _append_lines(path: Path, text: str) -> None:
    """Append ``text`` whole or not at all: a failed write (full disk) is cut back to the old end."""
    with open(path, "a", newline="") as f:
        end = f.tell()
        try:
            f.write(text)
            f.flush()
        except OSError as e:
            f.truncate(end)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(path) from e
            raise


def write_metric_files(workdir: Path, history: list, append_row: Optional[dict] = None) -> None:
    """Append one row to metrics.jsonl/csv, or (append_row None) rewrite both from ``history``."""
    jl, cs = workdir / "metrics.jsonl", workdir / "metrics.csv"
    if append_row is not None and jl.exists() and cs.exists():
        _append_lines(jl, _json_row(append_row) + "\n")
        line = io.StringIO()
        csv.writer(line).writerow([_fmt(_json_safe(append_row.get(c))) for c in METRIC_COLUMNS])
        _append_lines(cs, line.getvalue())
        return
    rows = history

    def write_jsonl(tmp):
        with open(tmp, "w") as f:
            f.writelines(_json_row(r) + "\n" for r in rows)

    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(METRIC_COLUMNS)
            w.writerows([[_fmt(_json_safe(r.get(c))) for c in METRIC_COLUMNS] for r in rows])
    atomic_write(jl, write_jsonl)
    atomic_write(cs, write_csv)


class MetricLoggers:
    """Optional TensorBoard / W&B sinks: used only when asked for AND installed."""

    def __init__(self, cfg, workdir: Path, enabled: bool):
        self.tb = self.wandb = None
        if not enabled:
            return
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(workdir / "tensorboard"))
            except ImportError as e:
                warnings.warn(f"tensorboard=true but TensorBoard is not usable ({e}); not logging to it")
        if cfg.wandb:
            try:
                import wandb
                self.wandb = wandb
                # One W&B run per workdir: its id is kept beside the run, so a resume (the CLI's
                # --resume, or notebook 02, which calls train() once per epoch) continues it
                # instead of starting a new W&B run each time.
                id_file = workdir / "wandb_id.txt"
                run_id = id_file.read_text().strip() if id_file.is_file() else ""
                if not run_id:
                    run_id = wandb.util.generate_id()
                    id_file.write_text(run_id + "\n")
                wandb.init(project=os.environ.get("WANDB_PROJECT", "pcnn"), name=workdir.name, id=run_id,
                           dir=str(workdir), config=cfg.to_dict(), resume="allow")
            except ImportError as e:
                warnings.warn(f"wandb=true but wandb is not installed ({e}); not logging to it")

    def step(self, step: int, bpd: float, lr: float):
        if self.tb is not None:
            self.tb.add_scalar("train/bpd_step", bpd, step)
            self.tb.add_scalar("train/lr", lr, step)

    def epoch(self, row: dict):
        logs = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k not in ("epoch", "step")}
        if self.tb is not None:
            for k, v in logs.items():
                self.tb.add_scalar(f"epoch/{k}", v, row["step"])
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log({**logs, "epoch": row["epoch"]}, step=row["step"])

    def close(self):
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
