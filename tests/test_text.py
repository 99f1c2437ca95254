"""pcnn.text: the one owner of Markdown tables and missing cells."""
import pytest

from pcnn.text import MISSING, cell, pipe_table


def test_cell_formats_scales_and_marks_missing():
    assert cell(0.12345, ".1f", 100, " %") == "12.3 %"
    assert cell(3, "d") == "3"
    assert cell(None, ".3f", 100) == MISSING == "-"
    assert cell(0.5) == "0.5"


def test_pipe_table_layout():
    t = pipe_table(["a", "b"], [[1, "x"], ["-", 2.5]])
    assert t.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |", "| - | 2.5 |"]
    assert pipe_table(["n"], [], align=["r"]).splitlines() == ["| n |", "|---:|"]


def test_pipe_table_rejects_ragged_rows():
    with pytest.raises(ValueError, match="row 1 has 1 cells for 2 headers"):
        pipe_table(["a", "b"], [[1, 2], [3]])
