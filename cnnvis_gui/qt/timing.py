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
