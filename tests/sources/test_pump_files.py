"""The capture pump playing a file as a user does: pause, rewind, loop, a file that cannot be
opened again, and a camera that fails from its first read (found by mutation runs of ``sources/pump.py``).

Frames come from a clip the test hands frames to one by one (frame n has every pixel n), time is
the test's (:class:`SteppedClock`): what the pump shows is exact on a loaded machine too.
"""
from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from cnnvis_gui.sources import pump as pump_module
from cnnvis_gui.sources.pump import CapturePump

from ..waits import WAIT_S, poll
from .fakes import FakeCamera, SteppedClock, pump_threads


@pytest.fixture(autouse=True)
def _no_thread_left():
    yield
    assert poll(lambda: not pump_threads()), f"pump threads left: {pump_threads()}"


class Clip:
    """A file of ``n`` frames (frame i has every pixel i); ``gated``: each read waits for :meth:`give`."""

    def __init__(self, n, gated=False):
        self.n, self.i = n, 0
        self.permits = threading.Semaphore(0) if gated else None
        self.released = False

    def give(self, k=1):
        self.permits.release(k)

    def isOpened(self):
        return True

    def read(self):
        if self.permits is not None:
            self.permits.acquire(timeout=WAIT_S)
        if self.i >= self.n:
            return False, None
        self.i += 1
        return True, np.full((4, 6, 3), self.i, np.uint8)

    def release(self):
        self.released = True


class Opener:
    """Opens the file again and again: each open a new :class:`Clip` (or None: the file is gone)."""

    def __init__(self, n, gone=False):
        self.n, self.gone = n, gone
        self.clips = []

    def __call__(self):
        if self.gone:
            return None
        self.clips.append(Clip(self.n))
        return self.clips[-1]


def value(pump):
    frame = pump.peek()[1]
    return None if frame is None else int(frame[0, 0, 0])


def test_a_paused_file_reads_nothing_and_goes_on_from_where_it_stopped():
    clip = Clip(9, gated=True)
    pump = CapturePump(Opener(9), label="clip", capture=clip, at_failure="end", clock=SteppedClock()).start()
    try:
        clip.give(2)
        assert poll(lambda: pump.frame_id == 2)
        pump.freeze()
        clip.give(3)               # the file pauses: at most the frame being decoded is lost
        pump.unfreeze()
        assert poll(lambda: value(pump) == 5)
        assert pump.frame_id in (4, 5)
    finally:
        pump.stop()
        clip.give(100)


def test_a_paused_camera_keeps_draining_the_device():
    """A camera keeps delivering while the picture is frozen; the frame after it is a fresh one."""
    cam = FakeCamera(gated=True)
    pump = CapturePump(lambda: cam(0), label="cam", clock=SteppedClock()).start()
    try:
        cam.give()
        assert pump.wait_new_frame(0, WAIT_S)
        pump.freeze()
        cam.give(3)
        assert poll(lambda: cam.count == 4)       # read while frozen, not shown
        assert pump.frame_id == 1 and value(pump) == 1
        pump.unfreeze()
        cam.give()
        assert poll(lambda: pump.frame_id == 2) and value(pump) == 5
    finally:
        pump.stop()
        cam.give(100)


@pytest.mark.parametrize("pace", [None, 10.0])
def test_rewind_plays_the_whole_file_again_at_its_pace(pace):
    clock = SteppedClock()
    opener = Opener(3)
    first = opener()
    pump = CapturePump(opener, label="clip", capture=first, at_failure="end", pace=pace, clock=clock).start()
    try:
        assert poll(lambda: pump.state == "ended") and pump.frame_id == 3 and value(pump) == 3
        assert first.released
        pump.rewind()
        assert poll(lambda: pump.frame_id == 6 and pump.state == "ended")
        assert value(pump) == 3 and len(opener.clips) == 2 and opener.clips[1].released
        assert pump.error is None
        assert clock.waits == ([] if pace is None else pytest.approx([0.1] * 4))   # the first frame of each play at once
    finally:
        assert pump.stop(WAIT_S)


def test_rewinding_a_paused_file_lets_the_old_capture_go_and_stays_paused():
    clip = Clip(9, gated=True)
    opener = Opener(9)
    pump = CapturePump(opener, label="clip", capture=clip, at_failure="end", clock=SteppedClock()).start()
    try:
        clip.give(2)
        assert poll(lambda: pump.frame_id == 2)
        pump.freeze()
        clip.give()                                   # a read under way when paused returns
        pump.rewind()
        assert poll(lambda: clip.released)
        assert pump.state == "frozen" and pump.status == "clip frozen" and not opener.clips
        pump.unfreeze()
        assert poll(lambda: pump.state == "ended") and pump.frame_id == 11 and value(pump) == 9
    finally:
        pump.stop()
        clip.give(100)


@pytest.mark.parametrize("n", [1, 2])
def test_a_short_file_loops(n):
    """The caller read frame 1 to check the file; the pump reads the rest and starts again."""
    opener = Opener(n)
    first = opener()
    ok, frame = first.read()
    pump = CapturePump(opener, label="clip", capture=first, first_frame=frame, at_failure="end", loop=True,
                       clock=SteppedClock()).start()
    try:
        assert poll(lambda: pump.frame_id >= 2 * n + 1)
        assert pump.state == "live" and len(opener.clips) >= 2
    finally:
        assert pump.stop(WAIT_S)


def test_a_looping_file_with_no_frames_ends_without_opening_it_again():
    opener = Opener(0)
    pump = CapturePump(opener, label="clip", capture=Clip(0), at_failure="end", loop=True,
                       clock=SteppedClock()).start()
    try:
        assert poll(lambda: pump.state == "ended")
        assert pump.status == "end of clip" and opener.clips == [] and pump.frame_id == 0
    finally:
        assert pump.stop(WAIT_S)
    pump = CapturePump(opener, label="clip", at_failure="end", loop=True, clock=SteppedClock()).start()
    try:                                              # opened by the pump: once, not again and again
        assert poll(lambda: pump.state == "ended")
        assert len(opener.clips) == 1 and pump.frame_id == 0
    finally:
        assert pump.stop(WAIT_S)


def test_a_file_that_cannot_be_opened_again_says_so():
    opener = Opener(2)
    first = opener()
    opener.gone = True                                # deleted while it played
    clock = SteppedClock()
    pump = CapturePump(opener, label="clip", capture=first, at_failure="end", loop=True, clock=clock).start()
    try:
        assert poll(lambda: not pump.running)
        assert pump.state == "error" and pump.status == "clip failed: could not re-open clip"
        assert clock.waits == [] and pump.retry_log == []    # said at once: a file is not a camera to wait for
        assert pump.frame_id == 2 and value(pump) == 2    # the last frame stays on screen
    finally:
        pump.stop()


class Broken:
    """A capture that opens but whose reads fail, or raise."""

    def __init__(self, raises):
        self.raises = raises

    def isOpened(self):
        return True

    def read(self):
        if self.raises:
            raise RuntimeError("driver error")
        return False, None

    def release(self):
        pass


@pytest.mark.parametrize("raises", [False, True])
def test_a_camera_that_fails_from_its_first_read_is_retried(raises):
    clock = SteppedClock()
    cam = FakeCamera(plug_at=3)
    cam.plugged = False
    seen = []
    pump = CapturePump(lambda: cam(0), label="cam", capture=Broken(raises), clock=clock)
    clock.on_wait = lambda s: seen.append((pump.state, pump.attempts))
    pump.start()
    try:
        assert poll(lambda: pump.frame_id >= 1)
        assert pump.state == "live" and pump.error is None and pump.reconnects == 1
    finally:
        assert pump.stop(WAIT_S)
    # three failed reads (two short waits), then 1 s, 2 s; the third open finds the camera back
    assert clock.waits[:4] == [0.01, 0.01, 1.0, 2.0] and cam.opens == 3
    assert seen[:4] == [("opening", 0), ("opening", 0), ("retrying", 1), ("retrying", 2)]


def test_a_camera_that_does_not_open_at_first_is_retried():
    clock = SteppedClock()
    cam = FakeCamera(plug_at=3)
    cam.plugged = False
    pump = CapturePump(lambda: cam(0), label="cam", clock=clock, retry_delay=0.5).start()
    try:
        assert poll(lambda: pump.frame_id >= 1)
        assert pump.state == "live" and pump.error is None
    finally:
        assert pump.stop(WAIT_S)
    assert clock.waits[:2] == [0.5, 1.0] and cam.opens == 3
    assert pump.notices == ["cam recovered after 0.0 s"]     # it was never lost: it had not come yet


class SteppedMonotonic:
    """The pump module's ``time`` in a test: each monotonic() reading is ``step`` s after the last."""

    def __init__(self, step):
        self.t, self.step, self.reads = 0.0, step, []

    def monotonic(self):
        self.reads.append(self.t)
        self.t += self.step
        return self.reads[-1]


def test_waiting_for_a_frame_by_default_takes_any_frame_and_gives_up_after_1_s(monkeypatch):
    cam = FakeCamera(gated=True)
    pump = CapturePump(lambda: cam(0), label="cam", clock=SteppedClock()).start()
    try:
        fake = SteppedMonotonic(0.5)
        monkeypatch.setattr(pump_module, "time", fake)
        assert pump.wait_new_frame() is False          # no frame: it gives up at its deadline, 1 s on
        assert fake.reads == [0.0, 0.5, 1.0]
        cam.give()
        assert poll(lambda: pump.frame_id == 1)
        assert pump.wait_new_frame() is True           # any frame is newer than none
    finally:
        pump.stop()
        cam.give(100)


def test_stop_waits_a_tenth_of_a_second_for_a_hung_reader_by_default():
    cam = FakeCamera()
    cam.block = threading.Event()
    pump = CapturePump(lambda: cam(0), label="cam", clock=SteppedClock()).start()
    thread = pump_threads()[0]
    joins = []
    real_join = thread.join
    thread.join = lambda timeout=None: (joins.append(timeout), real_join(timeout))
    try:
        assert cam.reading.wait(WAIT_S)
        assert pump.stop() is False and joins == [0.1]     # the window closing is not held up longer
    finally:
        cam.block.set()


def test_a_frame_nobody_took_is_counted_as_dropped_the_first_one_too():
    cam = FakeCamera(gated=True)
    pump = CapturePump(lambda: cam(0), label="cam", clock=SteppedClock()).start()
    try:
        cam.give(2)
        assert poll(lambda: pump.frame_id == 2)
        assert pump.dropped == 1 and pump.latest()[0] == 2
    finally:
        pump.stop()
        cam.give(100)


class Odd:
    """A capture whose reads say one thing and give another."""

    def __init__(self, result):
        self.result = result

    def isOpened(self):
        return True

    def read(self):
        return self.result

    def release(self):
        pass


@pytest.mark.parametrize("result", [(True, None), (True, np.zeros((0, 4, 3), np.uint8)),
                                    (False, np.ones((4, 4, 3), np.uint8))], ids=["none", "empty", "not-ok"])
def test_a_read_without_a_frame_is_a_failed_read(result):
    """Drivers return (True, None) or an empty array when unplugged: no frame, and no frame is shown
    when the driver said the read failed."""
    clock = SteppedClock()
    pump = CapturePump(lambda: Odd(result), label="cam", capture=Odd(result), clock=clock, retry_delay=0.5,
                       retry_max=0.5).start()
    try:
        assert poll(lambda: len(pump.retry_log) >= 2)
    finally:
        assert pump.stop(WAIT_S)
    assert pump.frame_id == 0 and pump.notices[:1] and pump.notices[0].startswith("cam stopped delivering")
    assert clock.waits[:6] == [0.01, 0.01, 0.5, 0.01, 0.01, 0.5]     # opened again, failing again: again 3 reads


def test_a_camera_lost_twice_says_when_each_time_and_for_how_long():
    cam = FakeCamera(interval=0.002)
    clock = SteppedClock()
    backoffs = []

    def plug_back(seconds):                  # in the pump's thread, at each wait: back after 1 s, then after 2 s
        backoffs.append(seconds)
        if len(backoffs) in (2, 6):
            cam.plugged = True
    clock.on_wait = plug_back
    pump = CapturePump(lambda: cam(0), label="cam", clock=clock, retry_delay=0.5, retry_max=0.5,
                       fail_threshold=1).start()
    try:
        for k in (1, 2):
            assert pump.wait_new_frame(pump.frame_id, WAIT_S)
            cam.plugged = False
            assert poll(lambda: pump.reconnects == k)
    finally:
        assert pump.stop(WAIT_S)
    assert backoffs == [0.5] * 6
    lost = [t for t in pump.notices if "stopped" in t]
    assert len(lost) == 2 and all(re.fullmatch(r"cam stopped delivering frames at \d\d:\d\d:\d\d", t) for t in lost)
    assert [t for t in pump.notices if "recovered" in t] == ["cam recovered after 1.0 s", "cam recovered after 2.0 s"]
    assert cam.released == cam.opens                  # every capture let go, the last one at stop


def test_a_frame_a_quarter_second_late_is_caught_up_by_the_next():
    """Paced at 4 fps, frame 3 takes 0.5 s to decode: it is 0.25 s late, still within the catch-up
    bound, so frame 4 follows at once and the pace goes on from the original schedule."""
    clock = SteppedClock()

    class SlowThird(Clip):
        def read(self):
            if self.i == 2:
                clock.advance(0.5)
            return super().read()
    pump = CapturePump(Opener(6), label="clip", capture=SlowThird(6), at_failure="end", pace=4.0,
                       clock=clock).start()
    try:
        assert poll(lambda: pump.state == "ended") and pump.frame_id == 6
    finally:
        assert pump.stop(WAIT_S)
    assert clock.waits == [0.25, 0.25, 0.25]         # before frames 2, 5 and 6


def test_a_reader_that_breaks_says_why_in_the_status():
    class BrokenClock(SteppedClock):
        def wait(self, event, seconds):
            raise RuntimeError("clock broke")
    pump = CapturePump(lambda: None, label="clip", capture=Clip(3), at_failure="end", pace=4.0,
                       clock=BrokenClock()).start()
    try:
        assert poll(lambda: not pump.running)
        assert (pump.state, pump.error) == ("error", "RuntimeError: clock broke")
        assert pump.status == "clip failed: RuntimeError: clock broke" and pump.frame_id == 1
    finally:
        pump.stop()
