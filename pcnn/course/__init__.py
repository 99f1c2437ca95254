"""CPEN455 course hook: :mod:`.hook` (``get_label``, ``my_sample``, the course weight file),
:mod:`.grading` (runs the course's two grading scripts as a student would).

``from pcnn.course import get_label, my_sample, load_course_model`` is what students paste
into the course's grading scripts, so those names are this package's public API.
"""
from .hook import DEFAULT_PATH, FORMAT, PER_CLASS, export_for_course, get_label, load_course_model, my_sample

__all__ = ["DEFAULT_PATH", "FORMAT", "PER_CLASS", "export_for_course", "get_label", "load_course_model", "my_sample"]
