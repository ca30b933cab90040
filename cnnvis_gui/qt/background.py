"""The window's background threads: one that computes only the newest request, and how they stop.

:class:`NewestRequestThread` is superqt's ``GeneratorWorker`` idea reduced to what the window needs:
one pending slot, a newer request replaces it, long handlers check :meth:`~NewestRequestThread._newer`
between steps.  :func:`stop_thread` waits a bounded time and keeps a thread stuck in the model's own
code referenced until it ends (:func:`stuck_threads`), so no running QThread is ever destroyed.
"""
from __future__ import annotations

import atexit
import threading

from PyQt5 import QtCore

__all__ = ["NewestRequestThread", "stop_thread", "stuck_threads"]

#: threads given up on while still running: referenced here until they end, so that neither
#: Python nor Qt destroys a running QThread ("QThread: Destroyed while thread is still running"
#: aborts the process)
_LINGERING: set = set()


def stop_thread(thread: QtCore.QThread, timeout_ms: int = 10000) -> bool:
    """Wait up to ``timeout_ms`` for ``thread`` (already asked to stop) to end.

    Each step of our workers ends in bounded time -- unless the model's own code never returns
    (a research model that loops, a deadlocked extension), and Python cannot stop a running
    thread.  Past ``timeout_ms`` the thread is given up on: ``thread.stuck`` (and ``overran``)
    are set, it is taken from its Qt parent and kept referenced (:func:`stuck_threads`), so it is
    never destroyed while it runs; it ends by itself if its step ever returns.  The application
    then leaves the process rather than wait forever (``qt/app.py``).
    Returns True once the thread has ended.
    """
    if not thread.isRunning() or thread.wait(max(0, int(timeout_ms))):
        return True
    thread.overran = True
    thread.stuck = True
    _LINGERING.add(thread)
    if thread.parent() is not None:
        thread.setParent(None)          # its window may be deleted now: the thread object must live on
    return not thread.isRunning()


def stuck_threads() -> list:
    """The threads :func:`stop_thread` gave up on that are still running (the ended ones are let go)."""
    for t in list(_LINGERING):
        if not t.isRunning():
            _LINGERING.discard(t)
    return list(_LINGERING)


def _wait_for_lingering_threads() -> None:
    """At interpreter exit: a stuck step that has since returned ends its thread; wait for that."""
    for t in list(_LINGERING):
        t.wait()


atexit.register(_wait_for_lingering_threads)


class NewestRequestThread(QtCore.QThread):
    """A thread that computes only the newest submitted request; superseded ones are dropped.

    Subclasses implement :meth:`handle` (and may override :meth:`handle_error` and
    :meth:`finish`); long handlers poll :meth:`_newer` between steps and return early.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self._cond = threading.Condition()
        self._pending = None
        self._quit = False

    def submit(self, req) -> None:
        with self._cond:
            self._pending = req
            self._cond.notify()

    def request_stop(self) -> None:
        with self._cond:
            self._quit = True
            self._cond.notify()

    def _newer(self) -> bool:
        with self._cond:
            return self._pending is not None or self._quit

    def run(self):
        while True:
            with self._cond:
                while self._pending is None and not self._quit:
                    self._cond.wait()
                if self._quit:
                    break
                req, self._pending = self._pending, None
            try:
                self.handle(req)
            except Exception as e:  # reported through the subclass's signal, never raised in the thread
                self.handle_error(req, e)
        self.finish()

    def handle(self, req) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def handle_error(self, req, e: Exception) -> None:
        pass

    def finish(self) -> None:
        pass
