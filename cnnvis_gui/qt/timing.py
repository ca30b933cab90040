"""Measuring and pacing in the window: event rates and a calm garbage collector."""
from __future__ import annotations

import collections
import time


def calm_gc() -> None:
    """Move everything alive now (torch, Qt, the model) out of the cyclic GC's sight.

    A full collection over torch's and pyqtgraph's millions of objects took 80-200 ms on the
    GUI thread during live runs -- the longest stall by far.  ``gc.freeze`` after a collect
    makes later full collections scan only objects created since.
    """
    import gc
    gc.collect()
    gc.freeze()


class Rate:
    """Events per second over the last couple of seconds."""

    def __init__(self, window=2.0):
        self.window = window
        self.times = collections.deque()

    def tick(self, t=None):
        t = time.perf_counter() if t is None else t
        self.times.append(t)
        while self.times and t - self.times[0] > self.window:
            self.times.popleft()

    def rate(self) -> float:
        if len(self.times) < 2:
            return 0.0
        span = time.perf_counter() - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else 0.0


class StallMeter:
    """A short GUI timer; the largest gap between its ticks is the longest GUI-thread stall.

    :meth:`stop` returns (longest stall ms, GUI-thread CPU ms during it): a stall with little
    CPU in it was the thread waiting (for a core, or for the GIL), not working.
    """

    def __init__(self, period_ms=2):
        from PyQt5 import QtCore
        self.period = period_ms / 1000
        self.gaps = []
        self.last = None
        self.p99 = self.over30 = 0
        self.timer = QtCore.QTimer()
        self.timer.setTimerType(QtCore.Qt.PreciseTimer)
        self.timer.setInterval(period_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self):
        t, c = time.perf_counter(), time.thread_time()
        if self.last is not None:
            self.gaps.append((t - self.last[0], c - self.last[1]))
        self.last = (t, c)

    def start(self):
        self.gaps, self.last = [], None
        self.timer.start()

    def stop(self):
        self.timer.stop()
        if not self.gaps:
            return float("nan"), float("nan")
        wall, cpu = max(self.gaps)
        walls = sorted(g[0] for g in self.gaps)
        self.p99 = max(0.0, (walls[min(len(walls) - 1, int(0.99 * len(walls)))] - self.period) * 1000)
        self.over30 = sum(1 for w in walls if w - self.period > 0.030)
        return max(0.0, (wall - self.period) * 1000), cpu * 1000
