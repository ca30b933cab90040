"""A live camera in the window: each new frame is computed once, and the newest one is what is shown."""
from __future__ import annotations

import numpy as np

from cnnvis_gui.sources import CameraSource

from ..sources.fakes import FakeCamera
from ..waits import idle, until


def test_each_camera_frame_gets_one_forward_and_a_repeated_read_none(qtbot, window):
    cam = FakeCamera(gated=True, size=(48, 40))        # frame n: every pixel n
    src = CameraSource(0, capture_factory=cam, mirror=False)
    reads = [0]
    read = src.read

    def counted():                                     # what the window's capture timer calls
        reads[0] += 1
        return read()
    src.read = counted
    try:
        window.set_source(src, camera=True)
        f0 = window.worker.forwards
        for n in (1, 2, 3):
            cam.give()
            until(qtbot, lambda n=n: window.frame is not None and (window.frame == n).all())
            fid, seen = window.frame_id, reads[0]
            until(qtbot, lambda: reads[0] >= seen + 5)     # the timer read the same frame again, 5 times
            assert window.frame_id == fid, "the same camera frame was taken as a new one"
            res = idle(qtbot, window)
            assert res.forwarded and np.array_equal(res.raw_input, drawn_input(window))
            assert window.worker.forwards == f0 + n, "a frame read again was computed again"
    finally:
        window.close()
        cam.give(100)                                      # the stopped reader leaves its last read


def drawn_input(win):
    """The model input of the frame the window holds, as the worker builds it."""
    return win.loaded.spec.to_array(np.array(win.frame))
