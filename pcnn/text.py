"""Text output shared by every report: Markdown pipe tables and the cells in them.

One owner, so the model card, the generation table, the trade-off reports and the results
tables of the studies all lay out tables and missing values alike.
"""
from __future__ import annotations

from typing import Optional, Sequence

MISSING = "-"


def cell(value, spec: str = "", scale: float = 1.0, suffix: str = "") -> str:
    """``value`` formatted with ``spec`` after multiplying by ``scale`` (e.g. 100 for percent),
    plus ``suffix``; :data:`MISSING` (``-``) when the value is None."""
    if value is None:
        return MISSING
    return format(value * scale if scale != 1.0 else value, spec) + suffix


def pipe_table(headers: Sequence[str], rows: Sequence[Sequence], align: Optional[Sequence[str]] = None) -> str:
    """A Markdown pipe table: ``| h1 | h2 |``, ``|---|---|``, then one line per row (cells as
    ``str``). A row must have as many cells as there are headers. ``align`` (optional, one of
    ``"l"``, ``"r"``, ``"c"`` per column) sets the separator's alignment marks."""
    n = len(headers)
    for k, r in enumerate(rows):
        if len(r) != n:
            raise ValueError(f"row {k} has {len(r)} cells for {n} headers")
    marks = {"l": ":---", "r": "---:", "c": ":---:", None: "---"}
    sep = [marks[a] for a in (align or [None] * n)]
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)
