"""Stand-ins for the tests of live sources: a camera that can be unplugged or gated, the pump's
clock under the test's control, a video file written on the spot."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from cnnvis_gui.sources.pump import PUMP_THREAD_PREFIX

from ..waits import WAIT_S


def pump_threads():
    return [t for t in threading.enumerate() if t.name.startswith(PUMP_THREAD_PREFIX)]


class SteppedClock:
    """The pump's clock in a test: time moves only when the pump waits (a wait of s seconds moves
    it by s at once, after a real pause of at most 1 ms so a retry loop cannot spin) or when the
    test calls :meth:`advance`.  ``waits`` lists every wait the pump asked for."""

    def __init__(self, t0: float = 1000.0):
        self.t = t0
        self.waits = []
        self.on_wait = None      # called (in the pump's thread) with each wait's seconds, before time moves
        self._lock = threading.Lock()

    def now(self) -> float:
        return self.t

    def wait(self, event, seconds) -> bool:
        if self.on_wait is not None:
            self.on_wait(seconds)
        with self._lock:
            self.waits.append(seconds)
            self.t += max(0.0, seconds)
        return event.wait(0.001)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += seconds


def write_video(path, n=12, fps=20.0, size=(64, 48)):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert w.isOpened(), "this OpenCV cannot write MJPG .avi"
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), (10 + i * 20) % 256, np.uint8))
    w.release()
    return path


class FakeCamera:
    """A device that can be unplugged/plugged; makes captures like cv2.VideoCapture(index).

    ``gated=True``: each read waits for a frame the test hands over with :meth:`give` (frame n has
    every pixel n % 256).  ``plug_at=n``: the camera is plugged in again at its n-th open.
    """

    def __init__(self, interval=0.0, size=(40, 30), gated=False, plug_at=None):
        self.plugged = True
        self.interval = interval
        self.size = size
        self.opens = 0           # open attempts
        self.block = None        # threading.Event: reads block until it is set
        self.reading = threading.Event()     # a read is under way (set by the first read)
        self.permits = threading.Semaphore(0) if gated else None
        self.plug_at = plug_at
        self.on_open = None      # called at each open attempt (before it succeeds or fails)
        self.released = 0        # captures released (each one opened must be)
        self.on_read = None      # called in the reader's thread at each read
        self.count = 0

    def __call__(self, index):
        self.opens += 1
        if self.on_open is not None:
            self.on_open()
        if self.plug_at is not None and self.opens >= self.plug_at:
            self.plugged = True
        return _FakeCapture(self, self.plugged)

    def give(self, n=1):
        """Let ``n`` more reads deliver a frame (gated cameras)."""
        self.permits.release(n)


class _FakeCapture:
    def __init__(self, cam, opened):
        self.cam, self.opened = cam, opened

    def isOpened(self):
        return self.opened

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def set(self, prop, value):
        return True

    def read(self):
        cam = self.cam
        cam.reading.set()
        if cam.on_read is not None:
            cam.on_read()
        if cam.block is not None:
            cam.block.wait()
        if cam.permits is not None:
            cam.permits.acquire(timeout=WAIT_S)
        if cam.interval:
            time.sleep(cam.interval)
        if not (self.opened and cam.plugged):
            return False, None
        cam.count += 1
        w, h = cam.size
        return True, np.full((h, w, 3), cam.count % 256, np.uint8)

    def release(self):
        self.opened = False
        self.cam.released += 1
