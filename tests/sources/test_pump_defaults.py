"""The capture pump on its own, as a caller that builds one gets it: its documented defaults, its
refusals and the bounds on what it keeps (found by mutation runs of ``sources/pump.py``).

Time is the test's (:class:`SteppedClock`), frames come one by one from a gated fake camera, so
every number below is exact on a loaded machine too.
"""
from __future__ import annotations

import numpy as np
import pytest

from cnnvis_gui.sources.base import MAX_NOTICES
from cnnvis_gui.sources.pump import CapturePump

from ..waits import WAIT_S, poll
from .fakes import FakeCamera, SteppedClock, pump_threads


@pytest.fixture(autouse=True)
def _no_thread_left():
    yield
    assert poll(lambda: not pump_threads()), f"pump threads left: {pump_threads()}"


class Script:
    """A capture that returns the frames it was given, then fails every read (the end of a file)."""

    def __init__(self, frames):
        self.frames = list(frames)
        self.released = False

    def isOpened(self):
        return True

    def read(self):
        if self.frames:
            return True, self.frames.pop(0)
        return False, None

    def release(self):
        self.released = True


def test_a_camera_pump_with_its_defaults_backs_off_from_1_s_doubling_to_8_s_after_three_failed_reads():
    cam = FakeCamera(interval=0.002)
    clock = SteppedClock()
    pump = CapturePump(lambda: cam(0), label="cam", clock=clock)
    seen = []
    try:
        assert pump.state == "opening" and pump.status == "opening cam… (waiting for the first frame)"
        pump.start()
        assert pump.wait_new_frame(0, WAIT_S)
        assert clock.waits == []                          # no pace by default: a camera paces itself
        clock.on_wait = lambda s: seen.append((s, pump.status))
        cam.plugged = False
        assert poll(lambda: len(pump.retry_log) >= 6)
    finally:
        assert pump.stop(WAIT_S)
    # two failed reads are waited out briefly, the third one counts as lost (fail_threshold=3)
    assert [s for s, _ in seen[:8]] == [0.01, 0.01, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert [d for _, d in pump.retry_log[:6]] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert [text for _, text in seen[2:5]] == [f"cam stopped delivering frames; retrying in {d} s…"
                                               for d in ("1.0", "2.0", "4.0")]


def test_one_failed_read_is_a_lost_camera_with_a_threshold_of_one_and_zero_reads_as_one():
    for threshold in (1, 0):
        cam = FakeCamera(interval=0.002)
        clock = SteppedClock()
        pump = CapturePump(lambda: cam(0), label="cam", clock=clock, retry_delay=0.5,
                           fail_threshold=threshold).start()
        try:
            assert pump.wait_new_frame(0, WAIT_S)
            cam.plugged = False
            assert poll(lambda: len(pump.retry_log) >= 2)
        finally:
            assert pump.stop(WAIT_S)
        assert clock.waits[:2] == [0.5, 1.0], threshold        # straight to the back-off, no short wait


def test_the_stall_report_comes_after_2_s_by_default_and_never_with_stall_after_zero():
    for stall_after, after_2_5 in ((None, "cam: no new frame for 2.5 s"), (0.0, "cam live (40x30)")):
        cam = FakeCamera(gated=True)
        clock = SteppedClock()
        kw = {} if stall_after is None else {"stall_after": stall_after}
        pump = CapturePump(lambda: cam(0), label="cam", clock=clock, **kw).start()
        try:
            cam.give()
            assert pump.wait_new_frame(0, WAIT_S)
            clock.advance(1.9)
            assert pump.status == "cam live (40x30)"
            clock.advance(0.6)
            assert pump.status == after_2_5
        finally:
            pump.stop()
            cam.give(100)                                  # the reader, stopped, leaves its last read


def test_a_file_pump_with_its_defaults_stops_at_the_end_and_says_end_of_its_label():
    frames = [np.full((4, 6, 3), i, np.uint8) for i in (1, 2)]
    cap = Script(frames)
    clock = SteppedClock()
    opened = []
    pump = CapturePump(lambda: opened.append(Script([])) or opened[-1], label="clip", capture=cap,
                       first_frame=np.zeros((4, 6, 3), np.uint8), at_failure="end", clock=clock)
    assert (pump.state, pump.status, pump.frame_id) == ("live", "clip live (6x4)", 1)    # the caller's frame
    pump.start()
    try:
        assert poll(lambda: pump.state == "ended")
        assert pump.status == "end of clip" and pump.notices == ["end of clip"]
        assert opened == []                                      # no loop by default: not opened again
        fid, frame = pump.latest()
        assert fid == 3 and (frame == 2).all()                   # the last frame stays
        assert clock.waits == []                                 # and no pace: read as fast as it decodes
        assert cap.released
    finally:
        assert pump.stop(WAIT_S)


def test_an_unknown_failure_mode_is_refused():
    with pytest.raises(ValueError, match=r"^at_failure must be 'retry' or 'end'$"):
        CapturePump(lambda: None, label="cam", at_failure="retry ")
    assert not pump_threads()


def test_the_notices_keep_the_newest_fifty():
    """Frames it cannot convert are skipped with a notice each; the list keeps the newest ones."""
    bad = [np.zeros((4, 4, 3), np.complex64)] * (MAX_NOTICES + 5)
    pump = CapturePump(lambda: Script([]), label="clip", capture=Script(bad), at_failure="end",
                       clock=SteppedClock()).start()
    try:
        assert poll(lambda: pump.state == "ended")
    finally:
        assert pump.stop(WAIT_S)
    assert len(pump.notices) == MAX_NOTICES and pump.frame_id == 0
    assert pump.notices[-1] == "end of clip"
    assert pump.notices[0] == "clip: skipped a frame (unsupported image dtype complex64)"


def test_frozen_reads_as_a_bool_and_the_reader_never_keeps_the_program_alive():
    cam = FakeCamera(gated=True)
    pump = CapturePump(lambda: cam(0), label="cam", clock=SteppedClock()).start()
    try:
        assert pump.frozen is False
        pump.freeze()
        assert pump.frozen is True and pump.state == "frozen"
        pump.unfreeze()
        assert pump.frozen is False and pump.state == "opening"
        # a driver that hangs in read() must not keep the program from exiting: the reader is a daemon
        assert [t.daemon for t in pump_threads()] == [True]
    finally:
        pump.stop()
        cam.give(100)
