"""Sources without a camera: real video files through the pump, fake captures for faults, folders.

Time in the pump (pacing, back-off, the capture rate, stall reports) is checked with a clock the
test controls (:class:`SteppedClock`), and a capture the test hands frames to one by one
(``FakeCamera(gated=True)``): what the pump does is then exact on a loaded machine too.
"""
import re
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from cnnvis_gui import sources
from cnnvis_gui.core import CnnvisError, InputSpec
from cnnvis_gui.sources import (CameraSource, ImageFolderSource, ImageSource, SourceError, VideoSource,
                                natural_key)

from ..waits import CHILD_S, WAIT_S, poll
from .fakes import FakeCamera, SteppedClock, pump_threads, write_video


@pytest.fixture(autouse=True)
def _no_thread_left():
    yield
    assert poll(lambda: not pump_threads()), f"pump threads left: {pump_threads()}"


# ------------------------------------------------------------------ video files through the pump
def test_video_plays_through_pump_and_stops_at_end(tmp_path):
    path = write_video(tmp_path / "clip.avi", n=12)
    with sources.open(path, loop=False, pace=False) as src:
        assert isinstance(src, VideoSource) and src.is_live
        assert src.fps == pytest.approx(20.0) and src.frame_count == 12
        first = src.read()
        assert first.shape == (48, 64, 3) and first.dtype == np.uint8 and first.flags.c_contiguous
        assert poll(lambda: src.state == "ended")
        assert src.status == "end of video clip.avi"
        assert src.frame_id == 12
        last = src.read()
        assert abs(int(last.mean()) - (10 + 11 * 20)) <= 6   # the last frame stays on screen
        src.rewind()
        assert poll(lambda: src.frame_id > 12)
    assert not pump_threads()


def test_video_loops(tmp_path):
    path = write_video(tmp_path / "clip.avi", n=6)
    with sources.open(path, pace=False) as src:   # loop is the default
        assert src.loop
        assert poll(lambda: src.frame_id > 20)
        assert src.state == "live" and "end of video" not in src.status


def test_video_plays_at_its_own_frame_rate(tmp_path):
    """A 50 fps file is delivered 1/50 s apart, not as fast as it decodes, and its rate reads 50."""
    path = write_video(tmp_path / "clip.avi", n=30, fps=50.0)
    clock = SteppedClock()
    with sources.open(path, loop=False, clock=clock) as src:
        assert poll(lambda: src.state == "ended") and src.frame_id == 30
        assert clock.waits == pytest.approx([0.02] * 29)            # one wait before each frame after the first
        assert src.fps_measured == pytest.approx(50.0)
    clock = SteppedClock()
    with sources.open(path, pace=25.0, clock=clock) as src:        # a rate of the user's own, looping
        assert poll(lambda: src.frame_id > 40)
        assert src.status == "video clip.avi live (64x48, 25.0 fps)"
        assert clock.waits[:40] == pytest.approx([0.04] * 40)     # the loop back to the start keeps the pace


def test_a_video_that_decodes_too_slowly_does_not_rush_to_catch_up():
    """A frame that took longer than the pace allows is shown at once, and the next one a frame
    period after it (not at once, to make up for lost time)."""
    clock = SteppedClock()

    class SlowSecond:                                           # frame 3 takes 0.5 s to decode
        def __init__(self):
            self.n = 0

        def isOpened(self):
            return True

        def get(self, prop):
            return {cv2.CAP_PROP_FPS: 10.0, cv2.CAP_PROP_FRAME_COUNT: 6}.get(prop, 0.0)

        def read(self):
            self.n += 1
            if self.n > 6:
                return False, None
            if self.n == 3:
                clock.advance(0.5)
            return True, np.full((8, 8, 3), self.n, np.uint8)

        def release(self):
            pass
    cap = SlowSecond()
    path = Path(__file__)                                        # any existing file: the factory decodes
    with VideoSource(path, loop=False, capture_factory=lambda target: cap, clock=clock) as src:
        assert poll(lambda: src.state == "ended") and src.frame_id == 6
    # frame 2 waited 0.1 s; frame 3 came 0.4 s late: shown at once; frames 4-6 each 0.1 s after the last
    assert clock.waits == pytest.approx([0.1, 0.1, 0.1, 0.1])


def test_video_freeze_pauses(tmp_path):
    path = write_video(tmp_path / "clip.avi", n=200, fps=50.0)
    with sources.open(path) as src:
        assert poll(lambda: src.frame_id >= 3)
        src.freeze()
        fid, frame = src.read_with_id()
        time.sleep(0.15)
        fid2, frame2 = src.read_with_id()
        assert fid2 == fid and frame2 is frame and src.state == "frozen" and "frozen" in src.status
        src.unfreeze()
        assert poll(lambda: src.frame_id > fid)


# ------------------------------------------------------------------ the pump under a slow consumer
def _deliver(src, cam, clock, n, dt=1 / 30):
    """``n`` frames from a gated camera, ``dt`` s apart on the pump's clock; the last one's id."""
    for _ in range(n):
        fid = src.pump.frame_id
        clock.advance(dt)
        cam.give()
        assert src.wait_new_frame(fid, WAIT_S)
    return src.pump.frame_id


def test_a_slow_consumer_gets_the_newest_frame_and_the_skipped_ones_are_counted():
    cam = FakeCamera(gated=True)
    clock = SteppedClock()
    src = CameraSource(0, capture_factory=cam, mirror=False, clock=clock)
    try:
        assert src.read() is None and src.frame_id == 0 and src.state == "opening"
        _deliver(src, cam, clock, 1)
        fid, frame = src.read_with_id()
        assert fid == 1 and (frame == 1).all() and src.dropped == 0
        assert src.read_with_id()[0] == 1 and src.dropped == 0     # read again: the same frame, still not dropped
        assert _deliver(src, cam, clock, 3) == 4                    # frames 2, 3, 4 while the model was busy
        fid, frame = src.read_with_id()
        assert fid == 4 and (frame == 4).all()                      # the newest, never a stale one
        assert src.dropped == 2                                      # 2 and 3 were replaced before anyone took them
        _deliver(src, cam, clock, 1)                                 # frame 4 was taken: replacing it drops nothing
        assert src.read_with_id()[0] == 5 and src.dropped == 2
        assert src.pump.frames_captured == 5
        assert src.fps_measured == pytest.approx(30.0)               # on the pump's clock: 1/30 s apart
        assert src.status == "camera 0 live (40x30, 30.0 fps)"
        _deliver(src, cam, clock, 1, dt=0.1)                         # one late frame moves the average a tenth:
        assert src.fps_measured == pytest.approx(1 / (0.9 / 30 + 0.1 * 0.1))   # 25 fps, not 10
        assert src.status == "camera 0 live (40x30, 25.0 fps)"
        clock.advance(2.5)                                           # no frame for longer than stall_after (2 s)
        assert src.status == "camera 0: no new frame for 2.5 s"
        assert pump_threads()
        src.close()
        assert src.state == "closed" and src.status == "camera 0 closed"
    finally:
        src.close()
        cam.give(100)                         # the reader, stopped, leaves its last read
    assert poll(lambda: not pump_threads())


def test_camera_mirror_and_spec_fit_raw_available():
    cam = FakeCamera(size=(80, 40))
    spec = InputSpec(channels=3, height=16, width=16)
    with CameraSource(0, capture_factory=cam, spec=spec, fit="letterbox") as src:
        assert src.mirror is True                      # cameras mirror by default
        assert src.wait_new_frame(0, WAIT_S)
        assert src.read().shape == (16, 16, 3)
        assert src.read_full().shape == (40, 80, 3)
        assert src.read_raw().shape == (40, 80, 3)
        src.spec = None
        assert src.read().shape == (40, 80, 3)


def test_camera_freeze_keeps_frame():
    cam = FakeCamera(interval=0.002)
    with CameraSource(0, capture_factory=cam) as src:
        assert src.wait_new_frame(0, WAIT_S)
        src.freeze()
        fid, frame = src.read_with_id()
        time.sleep(0.05)
        assert src.read_with_id()[0] == fid and src.read() is frame
        src.unfreeze()
        assert poll(lambda: src.read_with_id()[0] > fid)


# ------------------------------------------------------------------ faults
def test_camera_lost_mid_stream_retries_with_backoff_and_recovers():
    cam = FakeCamera(interval=0.002, plug_at=5)     # open 1: the start; 2-4 fail (unplugged); 5: back
    clock = SteppedClock()
    src = CameraSource(0, capture_factory=cam, retry_delay=0.1, retry_max=0.4, fail_threshold=2, clock=clock)
    seen = []                                      # what the user sees while each wait goes on
    try:
        assert src.wait_new_frame(0, WAIT_S)
        assert src.state == "live" and src.status.startswith("camera 0 live")
        clock.on_wait = lambda s: seen.append((s, src.state, src.status, src.frame_id, src.read() is not None,
                                               src.pump.attempts))
        reopening = []                             # the status while the driver is asked to open again
        cam.on_open = lambda: reopening.append(src.status)
        cam.plugged = False
        assert poll(lambda: cam.opens == 5 and src.frame_id > seen[0][3])    # back: a frame after the gap
        assert src.pump.reconnects == 1 and src.state == "live"
        before = seen[0][3]
        assert [s for s, *_ in seen] == [0.01, 0.1, 0.2, 0.4, 0.4]     # one failed read waited out, then the
        assert [d for _, d in src.pump.retry_log] == [0.1, 0.2, 0.4, 0.4]    # back-off: doubled, capped
        assert np.diff([t for t, _ in src.pump.retry_log]) == pytest.approx([0.1, 0.2, 0.4])
        assert seen[0][1:3] == ("live", seen[0][2]) and seen[0][2].startswith("camera 0 live")
        assert [st for _, st, *_ in seen[1:]] == ["retrying"] * 4
        assert [text for _, _, text, *_ in seen[1:]] == [
            f"camera 0 stopped delivering frames; retrying in {d} s…" for d in ("0.1", "0.2", "0.4", "0.4")]
        assert all(fid == before and shown for *_, fid, shown, _ in seen)   # the last frame stays meanwhile
        assert [n for *_, n in seen] == [0, 1, 2, 3, 4] and src.pump.attempts == 0    # re-open attempts, reset
        assert reopening == ["camera 0 stopped delivering frames; reconnecting…"] * 4
        assert cam.opens == 5 and cam.released == 4      # the lost capture and the 3 that did not open
        assert any(n.startswith("camera 0 stopped delivering frames at ") for n in src.notices)
        assert "camera 0 recovered after 1.1 s" in src.notices
    finally:
        src.close()


def test_waiting_for_a_frame_gives_up_after_its_timeout_and_when_closed():
    cam = FakeCamera(gated=True)
    src = CameraSource(0, capture_factory=cam)
    try:
        out = []
        t = threading.Thread(target=lambda: out.append(src.wait_new_frame(0, 0.05)), daemon=True)
        t.start()
        t.join(WAIT_S)
        assert not t.is_alive() and out == [False]              # no frame came: False, after its timeout
        cam.give()
        assert src.wait_new_frame(0, WAIT_S) and src.frame_id == 1
        src.close()
        assert src.wait_new_frame(1, WAIT_S) is False              # closed: no newer frame will come
    finally:
        src.close()
        cam.give(100)


def test_a_camera_gone_for_good_keeps_its_last_100_waits():
    cam = FakeCamera(interval=0.002)
    clock = SteppedClock()
    src = CameraSource(0, capture_factory=cam, retry_delay=0.5, retry_max=4.0, fail_threshold=1, clock=clock)
    try:
        assert src.wait_new_frame(0, WAIT_S)
        cam.plugged = False
        assert poll(lambda: src.pump.attempts >= 103)
        log = list(src.pump.retry_log)
        assert len(log) == 100 and [d for _, d in log[-3:]] == [4.0] * 3        # the newest, capped at 4 s
        assert src.state == "retrying" and src.read() is not None
    finally:
        src.close()


def test_camera_that_does_not_open():
    class Never:
        def __init__(self, i): pass
        def isOpened(self): return False
        def release(self): pass
    with pytest.raises(SourceError, match=r"camera 3 could not be opened; is it connected"):
        CameraSource(3, capture_factory=Never)
    assert issubclass(SourceError, CnnvisError)


def test_real_missing_camera_message():
    if sources.cameras():
        pytest.skip("this machine has a camera")
    with pytest.raises(SourceError, match=r"camera 7 could not be opened.*No camera found"):
        sources.open(7)


def _returns_while_the_driver_hangs(cam, call):
    """Run ``call()`` in a thread; True when it returned while the capture was still stuck in read()."""
    out = []
    t = threading.Thread(target=lambda: out.append(call()), daemon=True)
    t.start()
    t.join(WAIT_S)
    return not t.is_alive() and not cam.block.is_set() and len(out) == 1


def test_blocked_read_never_blocks_the_caller():
    cam = FakeCamera()
    cam.block = threading.Event()
    src = CameraSource(0, capture_factory=cam)
    try:
        assert cam.reading.wait(WAIT_S)      # the reader is now stuck inside read()
        assert _returns_while_the_driver_hangs(cam, src.read)
        assert src.read() is None and src.frame_id == 0
        assert "opening camera 0" in src.status
        assert _returns_while_the_driver_hangs(cam, lambda: src.close(timeout=0.05))
        assert src.state == "closed" and pump_threads()            # the hung reader is left to its driver
        pump = src.pump
        assert pump.stop(0.01) is False                            # the pump says its reader has not ended
        assert (pump.state, pump.status) == ("closed", "camera 0 closed")
    finally:
        cam.block.set()                      # the driver returns: the thread ends by itself
    assert poll(lambda: not pump_threads())
    assert src.pump.stop(0) is True


def test_a_source_stopped_from_its_own_reader_thread_stops_cleanly():
    """The last reference to a source can go in its reader thread: stopping there must not join itself."""
    cam = FakeCamera(interval=0.002)
    src = CameraSource(0, capture_factory=cam)
    out = []

    def stop_here():
        if not out:
            try:
                out.append(src.pump.stop(0))
            except Exception as e:  # noqa: BLE001 - what the test checks
                out.append(e)
    cam.on_read = stop_here
    assert poll(lambda: bool(out)) and out == [False]             # asked to end; it ends after this read
    assert poll(lambda: not pump_threads()) and src.pump.state == "closed"
    src.close()


def test_cameras_probes_within_its_time_budget_and_quietly(monkeypatch):
    from cnnvis_gui.sources import live
    found = sources.cameras()                                      # this machine: no camera, no noise
    assert isinstance(found, list) and all(isinstance(i, int) for i in found)
    # without the /dev shortcut, asking OpenCV itself about every index
    assert sources.cameras(max_index=8, capture_factory=cv2.VideoCapture) == found
    assert cv2.utils.logging.getLogLevel() != cv2.utils.logging.LOG_LEVEL_SILENT  # restored
    # a backend that takes 0.5 s per index: probing stops once the time budget is spent
    now, asked = [0.0], []

    class Slow:
        def __init__(self, i):
            asked.append(i)
            now[0] += 0.5

        def isOpened(self):
            return asked[-1] == 1

        def release(self):
            pass
    monkeypatch.setattr(live, "time", type("Clock", (), {"monotonic": staticmethod(lambda: now[0])}))
    assert sources.cameras(max_index=8, timeout=1.4, capture_factory=Slow) == [1]
    assert asked == [0, 1, 2]                # at 0, 0.5 and 1 s; at 1.5 s the budget is spent
    now[0], asked[:] = 0.0, []
    assert sources.cameras(max_index=8, timeout=1.5, capture_factory=Slow) == [1]
    assert asked == [0, 1, 2, 3]             # 1.5 s is still within a 1.5 s budget


def test_missing_file_and_bad_inputs(tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        sources.open(tmp_path / "nope.avi")
    with pytest.raises(SourceError, match="video file .* does not exist"):
        VideoSource(tmp_path / "nope.avi")
    (tmp_path / "junk.avi").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(SourceError, match="junk.avi"):
        sources.open(tmp_path / "junk.avi")
    with pytest.raises(SourceError, match="does not take option"):
        sources.open(tmp_path, loop=True)
    with pytest.raises(SourceError):
        sources.open(True)


# ------------------------------------------------------------------ folders and images
def _exif_jpeg(path, orientation):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :10] = 255                               # white band on the left
    ok, buf = cv2.imencode(".jpg", img)
    tiff = (b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
            + struct.pack(">HHI", 0x0112, 3, 1) + struct.pack(">HH", orientation, 0) + struct.pack(">I", 0))
    app1 = b"Exif\x00\x00" + tiff
    data = buf.tobytes()
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])
    return path


@pytest.fixture
def mixed_folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in ("img10.png", "img2.png", "img1.jpg"):
        cv2.imwrite(str(d / name), rng.integers(0, 255, (30, 40, 3), np.uint8))
    g16 = np.full((12, 16), 32768, np.uint16)
    g16[0, 0] = 65535
    cv2.imwrite(str(d / "deep16.png"), g16)
    cv2.imwrite(str(d / "gray.png"), np.full((10, 14), 77, np.uint8))
    (d / "corrupt.jpg").write_bytes(rng.bytes(400))                  # header is not an image
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    (d / "img3.png").write_bytes(png.tobytes()[:40] + rng.bytes(60))  # PNG header, broken body
    (d / "notes.txt").write_text("not an image")
    sub = d / "sub"
    sub.mkdir()
    cv2.imwrite(str(sub / "inner.png"), np.zeros((5, 5, 3), np.uint8))
    return d


def test_folder_mixed_files(mixed_folder):
    src = sources.open(mixed_folder)
    assert isinstance(src, ImageFolderSource) and not src.is_live
    assert src.ignored == 1                                       # notes.txt
    names = [p.name for p in src.paths]
    assert names == ["deep16.png", "gray.png", "img1.jpg", "img2.png", "img3.png", "img10.png"]
    assert any("corrupt.jpg" in n for n in src.notices)
    frames = {}
    for _ in range(src.count + 1):
        f = src.read()
        assert f.ndim == 3 and f.shape[2] == 3 and f.dtype == np.uint8 and f.flags.c_contiguous
        frames[src.current_path.name] = f
        src.next()
    # img3.png decoded badly when reached: skipped with a notice, not a crash
    assert src.count == 5 and "img3.png" not in [p.name for p in src.paths]
    assert any("img3.png" in n and "could not be decoded" in n for n in src.notices)
    assert "2 skipped" in src.status
    deep = frames["deep16.png"]
    assert deep[1, 1, 0] == 128 and deep[0, 0, 0] == 255            # scaled, not truncated
    gray = frames["gray.png"]
    assert gray.shape == (10, 14, 3) and (gray == 77).all()
    assert frames["img1.jpg"].shape == (30, 40, 3)


def test_folder_navigation(mixed_folder):
    src = ImageFolderSource(mixed_folder)
    assert src.index == 0 and src.current_path.name == "deep16.png"
    assert re.match(r"image 1 of 6: deep16\.png \(16x12\)", src.status)
    id0 = src.frame_id
    src.prev()                                            # wraps to the end
    assert src.current_path.name == "img10.png" and src.frame_id > id0
    src.seek(2)
    assert src.index == 2 and src.current_path.name == "img1.jpg"
    src.seek(-1)
    assert src.current_path.name == "img10.png"
    with pytest.raises(SourceError, match="out of range"):
        src.seek(99)
    src.wrap = False
    src.next()
    assert src.current_path.name == "img10.png"


def test_folder_recursive_and_list(mixed_folder):
    src = ImageFolderSource(mixed_folder, recursive=True)
    assert "sub/inner.png" in [p.relative_to(mixed_folder).as_posix() for p in src.paths]
    lst = sources.open([mixed_folder / "img2.png", mixed_folder / "gray.png", mixed_folder / "gone.png"])
    assert isinstance(lst, ImageFolderSource) and lst.count == 2
    assert [p.name for p in lst.paths] == ["img2.png", "gray.png"]   # list order kept
    assert any("gone.png" in n for n in lst.notices)


def test_empty_folder_error(tmp_path):
    with pytest.raises(SourceError, match=r"no images in folder"):
        sources.open(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "deeper").mkdir()
    with pytest.raises(SourceError, match=r"found 1 other file, sub-folders: pass recursive=True"):
        sources.open(tmp_path)


def test_natural_sort():
    names = ["img10.png", "img2.png", "IMG1.png", "img1b.png", "a.png"]
    assert sorted(names, key=natural_key) == ["a.png", "IMG1.png", "img1b.png", "img2.png", "img10.png"]


def test_exif_orientation_respected(tmp_path):
    src = sources.open(_exif_jpeg(tmp_path / "photo.jpg", 6))      # 6 = rotate 90° clockwise
    assert isinstance(src, ImageSource)
    f = src.read()
    assert f.shape == (40, 20, 3)
    assert f[:10].mean() > 200 and f[-10:].mean() < 50              # left band is now on top


def test_image_source_mirror_fit_and_arrays(tmp_path):
    img = np.zeros((20, 40, 4), np.uint8)
    img[:, :10, :3] = 255
    img[..., 3] = 255
    src = sources.open(img, mirror=True, spec=InputSpec(height=8, width=8), fit="stretch")
    assert src.read().shape == (8, 8, 3)
    full = src.read_full()
    assert full.shape == (20, 40, 3) and full[:, -10:].mean() > 250 and full[:, :10].mean() < 5
    assert src.read_raw()[:, :10].mean() > 250
    assert src.fps is None and "40x20" in src.status
    with pytest.raises(SourceError, match="does not exist"):
        ImageSource(tmp_path / "missing.png")


def test_open_dispatch(tmp_path, mixed_folder):
    cam = FakeCamera()
    with sources.open("0", capture_factory=cam) as c:
        assert isinstance(c, CameraSource) and c.index == 0
    assert isinstance(sources.open(mixed_folder / "gray.png"), ImageSource)
    weird = tmp_path / "clip.data"
    write_video(tmp_path / "c.avi", n=3).rename(weird)               # video found by probing
    with sources.open(weird, pace=False) as v:
        assert isinstance(v, VideoSource)


def test_sources_do_not_import_qt():
    code = ("import sys, cnnvis_gui.sources; "
            "bad = [m for m in sys.modules if m.startswith(('PyQt5', 'pyqtgraph'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=CHILD_S)


def test_forgotten_source_stops_its_thread():
    src = CameraSource(0, capture_factory=FakeCamera(interval=0.002))
    assert src.wait_new_frame(0, WAIT_S) and pump_threads()
    del src                                   # never closed: garbage collection stops the pump
    assert poll(lambda: not pump_threads())


def test_a_16_bit_image_is_scaled_to_8_bits_not_truncated(tmp_path):
    """Every 16-bit level v of a PNG shows as round(v * 255 / 65535): white stays white, and the
    levels just below a multiple of 256 are not shifted down by one as ``v >> 8`` would."""
    levels = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    assert cv2.imwrite(str(tmp_path / "deep.png"), levels)
    for src in (sources.open(tmp_path / "deep.png"), sources.open(tmp_path)):       # an image, a folder
        got = src.read()
        want = np.floor(levels.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
        assert got.shape == (256, 256, 3) and (got == want[..., None]).all()
    assert (want != levels >> 8).sum() > 100 and want[255, 255] == 255 and want[255, 0] == 254
