"""A deadline for automated runs that holds whatever the model's code is doing.

``--screenshot`` and ``--quit-after`` runs end on a Qt timer (:mod:`.automation`), which needs
the GUI thread, and the window's close waits a bounded time for the render thread.  A model
whose forward never returns can still hold the process: in the GUI thread (loading probes the
model before any window exists) or in a C extension that never releases the GIL.  Python
cannot stop a running thread, so the only honest end is to leave the process: the
:class:`Watchdog` is a plain daemon thread that, past its deadline, says why on stderr and
calls ``os._exit``.  The orderly path (the timer, then close) normally ends the run first.
No Qt here: it is armed before Qt is imported.
"""
from __future__ import annotations

import os
import sys
import threading
import time

__all__ = ["Watchdog", "GRACE_S"]

#: how long past a run's own deadline the orderly end (timer, then close) is given before the process exits
GRACE_S = 5.0


class Watchdog:
    """Exit the process with code ``rc`` and ``message`` unless cancelled or re-armed within ``seconds``."""

    def __init__(self, seconds: float, message: str, rc: int = 1):
        self.message, self.rc = message, rc
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + float(seconds)
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="cnnvis-watchdog", daemon=True)
        self._thread.start()

    def rearm(self, seconds: float, message: str | None = None) -> None:
        """A new deadline ``seconds`` from now (the run moved on to its next phase)."""
        with self._lock:
            self._deadline = time.monotonic() + float(seconds)
            if message is not None:
                self.message = message

    def cancel(self) -> None:
        self._cancelled.set()

    def remaining(self) -> float:
        with self._lock:
            return self._deadline - time.monotonic()

    def _watch(self) -> None:
        while not self._cancelled.wait(max(0.05, min(1.0, self.remaining()))):
            if self.remaining() <= 0:
                try:
                    sys.stderr.write(f"cnnvis-gui: {self.message}\n")
                    sys.stderr.flush()
                    sys.stdout.flush()
                finally:
                    os._exit(self.rc)
