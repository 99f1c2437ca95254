"""A graceful stop: SIGINT and SIGTERM end a training run at the next batch, nothing lost.

Without it a Ctrl-C, Jupyter's "interrupt kernel" or a runtime's SIGTERM (Kaggle's and
Colab's session end, a batch scheduler's time limit, ``kill``) lose everything since the
last ``last.pt`` (up to ``checkpoint_minutes`` of training). With it the first signal makes
the loop stop after the batch in flight, exactly as ``max_minutes`` does: the partial epoch
is logged, evaluated and exported, ``last.pt`` is saved, and ``resume=True`` continues
bit-exactly. A second signal interrupts at once (``KeyboardInterrupt``), for when the
evaluation itself is too slow to wait for. SIGKILL cannot be caught: ``last.pt`` covers it.
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Optional

log = logging.getLogger(__name__)

SIGNALS = ("SIGINT", "SIGTERM")


class StopOnSignal:
    """Context manager: while inside, SIGINT/SIGTERM set :attr:`received` (the signal's name)
    instead of killing the process; the previous handlers come back on exit.

    Handlers can only be installed from the main thread; elsewhere (a training thread
    started by a notebook helper) it does nothing and :attr:`received` stays None.
    """

    def __init__(self, announce: bool = True):
        self.announce = announce  # log a one-line note on the first signal
        self.received: Optional[str] = None
        self._previous: dict = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for name in SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopped at once")
        self.received = signal.Signals(signum).name
        if self.announce:
            log.warning(f"{self.received}: the run stops after this batch (the partial epoch is evaluated and "
                        f"exported, last.pt saved; resume with --resume / resume=True). Send it again to stop at "
                        f"once.")

    def __exit__(self, *exc) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous = {}
