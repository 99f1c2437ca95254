"""Where the library's messages go: every module logs to ``logging.getLogger(__name__)`` (under
the ``pcnn`` logger) and never prints; a face shows them by attaching one console handler.

The CLI shows them on stderr, the notebooks on stdout (a notebook paints stderr as an error
box). :func:`show` attaches the handler once however often it is called (a notebook cell run
twice, ``train_live`` called per cell), so each line appears once. Without it, Python's
default (warnings and errors only) applies, as for any library. The lines also propagate to the
root logger (so ``caplog`` and a program's own logging see them): a program that configures the
root logger with a console handler itself should not also call :func:`show`.
"""
from __future__ import annotations

import logging
import sys

ROOT = "pcnn"


class _Console(logging.StreamHandler):
    """A handler that writes plain lines to the *current* ``sys.stdout`` / ``sys.stderr``
    (looked up at each line: Jupyter and pytest replace them after the handler is made)."""

    def __init__(self, which: str):
        super().__init__()
        self.which = which
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stdout if self.which == "stdout" else sys.stderr

    @stream.setter
    def stream(self, _value):  # StreamHandler.__init__ assigns it; the property decides
        pass


def show(where: str = "stderr", level: int = logging.INFO) -> logging.Handler:
    """Show the ``pcnn`` loggers' lines of ``level`` and above on ``where`` (``"stdout"`` or
    ``"stderr"``), replacing the console handler an earlier call attached. Returns the handler."""
    if where not in ("stdout", "stderr"):
        raise ValueError(f"where must be 'stdout' or 'stderr', got {where!r}")
    logger = logging.getLogger(ROOT)
    for h in list(logger.handlers):
        if isinstance(h, _Console):
            logger.removeHandler(h)
    handler = _Console(where)
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
