"""Sources without a camera: real video files through the pump, fake captures for faults, folders."""
import re
import struct
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from cnnvis_gui import sources
from cnnvis_gui.core import CnnvisError, InputSpec
from cnnvis_gui.sources import (CameraSource, ImageFolderSource, ImageSource, SourceError, VideoSource,
                                natural_key)
from cnnvis_gui.sources.pump import PUMP_THREAD_PREFIX


# ------------------------------------------------------------------ helpers
def pump_threads():
    return [t for t in threading.enumerate() if t.name.startswith(PUMP_THREAD_PREFIX)]


def wait_until(cond, timeout=3.0, step=0.005):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(step)
    return cond()


def write_video(path, n=12, fps=20.0, size=(64, 48)):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert w.isOpened(), "this OpenCV cannot write MJPG .avi"
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), (10 + i * 20) % 256, np.uint8))
    w.release()
    return path


class FakeCamera:
    """A device that can be unplugged/plugged; makes captures like cv2.VideoCapture(index)."""

    def __init__(self, interval=0.0, size=(40, 30)):
        self.plugged = True
        self.interval = interval
        self.size = size
        self.opens = []          # monotonic time of every open attempt
        self.block = None        # threading.Event: reads block until it is set
        self.count = 0

    def __call__(self, index):
        self.opens.append(time.monotonic())
        return _FakeCapture(self, self.plugged)


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
        if cam.block is not None:
            cam.block.wait()
        if cam.interval:
            time.sleep(cam.interval)
        if not (self.opened and cam.plugged):
            return False, None
        cam.count += 1
        w, h = cam.size
        return True, np.full((h, w, 3), cam.count % 256, np.uint8)

    def release(self):
        self.opened = False


@pytest.fixture(autouse=True)
def _no_thread_left():
    yield
    assert wait_until(lambda: not pump_threads(), 1.0), f"pump threads left: {pump_threads()}"


# ------------------------------------------------------------------ video files through the pump
def test_video_plays_through_pump_and_stops_at_end(tmp_path):
    path = write_video(tmp_path / "clip.avi", n=12)
    with sources.open(path, loop=False, pace=False) as src:
        assert isinstance(src, VideoSource) and src.is_live
        assert src.fps == pytest.approx(20.0) and src.frame_count == 12
        first = src.read()
        assert first.shape == (48, 64, 3) and first.dtype == np.uint8 and first.flags.c_contiguous
        assert wait_until(lambda: src.state == "ended")
        assert src.status == "end of video clip.avi"
        assert src.frame_id == 12
        last = src.read()
        assert abs(int(last.mean()) - (10 + 11 * 20)) <= 6   # the last frame stays on screen
        src.rewind()
        assert wait_until(lambda: src.frame_id > 12)
    assert not pump_threads()


def test_video_loops(tmp_path):
    path = write_video(tmp_path / "clip.avi", n=6)
    with sources.open(path, pace=False) as src:   # loop is the default
        assert src.loop
        assert wait_until(lambda: src.frame_id > 20)
        assert src.state == "live" and "end of video" not in src.status


def test_video_pacing_real_time(tmp_path):
    path = write_video(tmp_path / "clip.avi", n=200, fps=50.0)
    with sources.open(path) as src:
        t0, id0 = time.monotonic(), src.frame_id
        time.sleep(0.6)
        n = src.frame_id - id0
        rate = n / (time.monotonic() - t0)
        assert 25 < rate < 60, rate                       # ~50 fps, not as fast as decoding goes
        assert 30 < src.fps_measured < 70
        assert re.match(r"video clip\.avi live \(64x48, \d+\.\d fps\)", src.status), src.status


def test_video_freeze_pauses(tmp_path):
    path = write_video(tmp_path / "clip.avi", n=200, fps=50.0)
    with sources.open(path) as src:
        assert wait_until(lambda: src.frame_id >= 3)
        src.freeze()
        fid, frame = src.read_with_id()
        time.sleep(0.15)
        fid2, frame2 = src.read_with_id()
        assert fid2 == fid and frame2 is frame and src.state == "frozen" and "frozen" in src.status
        src.unfreeze()
        assert wait_until(lambda: src.frame_id > fid)


# ------------------------------------------------------------------ the pump under a slow consumer
def test_pump_keeps_only_newest_frame_and_stops_cleanly():
    cam = FakeCamera(interval=0.002)
    src = CameraSource(0, capture_factory=cam)
    assert src.wait_new_frame(0, 2.0)
    ids = []
    for _ in range(6):
        fid, frame = src.read_with_id()
        ids.append(fid)
        time.sleep(0.04)                      # a slow model
    assert all(b > a for a, b in zip(ids, ids[1:]))
    assert max(b - a for a, b in zip(ids, ids[1:])) > 2   # stale frames were skipped
    assert src.dropped > 0
    assert src.fps_measured and src.fps_measured > 50
    assert pump_threads()
    t0 = time.monotonic()
    src.close()
    assert time.monotonic() - t0 < 0.2
    assert not pump_threads()
    assert src.state == "closed" and "closed" in src.status


def test_camera_mirror_and_spec_fit_raw_available():
    cam = FakeCamera(size=(80, 40))
    spec = InputSpec(channels=3, height=16, width=16)
    with CameraSource(0, capture_factory=cam, spec=spec, fit="letterbox") as src:
        assert src.mirror is True                      # cameras mirror by default
        assert src.wait_new_frame(0, 2.0)
        assert src.read().shape == (16, 16, 3)
        assert src.read_full().shape == (40, 80, 3)
        assert src.read_raw().shape == (40, 80, 3)
        src.spec = None
        assert src.read().shape == (40, 80, 3)


def test_camera_freeze_keeps_frame():
    cam = FakeCamera(interval=0.002)
    with CameraSource(0, capture_factory=cam) as src:
        assert src.wait_new_frame(0, 2.0)
        src.freeze()
        fid, frame = src.read_with_id()
        time.sleep(0.05)
        assert src.read_with_id()[0] == fid and src.read() is frame
        src.unfreeze()
        assert wait_until(lambda: src.read_with_id()[0] > fid)


# ------------------------------------------------------------------ faults
def test_camera_lost_mid_stream_retries_with_backoff_and_recovers():
    cam = FakeCamera(interval=0.002)
    src = CameraSource(0, capture_factory=cam, retry_delay=0.05, retry_max=0.2, fail_threshold=2)
    try:
        assert src.wait_new_frame(0, 2.0)
        assert src.state == "live" and src.status.startswith("camera 0 live")
        cam.plugged = False
        assert wait_until(lambda: src.state == "retrying")
        assert re.fullmatch(r"camera 0 stopped delivering frames; (retrying in \d+\.\d s|reconnecting)…",
                            src.status), src.status
        before = src.frame_id
        assert wait_until(lambda: len(src.pump.retry_log) >= 4, 3.0)
        delays = [d for _, d in src.pump.retry_log]
        assert delays[:4] == [0.05, 0.1, 0.2, 0.2]                 # doubled, capped
        gaps = np.diff(cam.opens[-4:])
        assert gaps[-1] >= 0.15                                      # waits really grew
        assert src.read() is not None and src.frame_id == before     # last frame still shown
        cam.plugged = True
        assert wait_until(lambda: src.state == "live" and src.frame_id > before, 3.0)
        assert src.pump.reconnects == 1
        assert any("stopped delivering" in n for n in src.notices)
        assert any("recovered" in n for n in src.notices)
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


def test_blocked_read_never_blocks_the_caller():
    cam = FakeCamera()
    cam.block = threading.Event()
    src = CameraSource(0, capture_factory=cam)
    try:
        time.sleep(0.05)                     # the reader is now stuck inside read()
        t0 = time.monotonic()
        assert src.read() is None and src.frame_id == 0
        assert "opening camera 0" in src.status
        assert time.monotonic() - t0 < 0.05
        t0 = time.monotonic()
        src.close(timeout=0.05)
        assert time.monotonic() - t0 < 0.2
        assert src.state == "closed"
    finally:
        cam.block.set()                      # the driver returns: the thread ends by itself
    assert wait_until(lambda: not pump_threads(), 1.0)


def test_cameras_is_fast_and_quiet():
    t0 = time.monotonic()
    found = sources.cameras()
    assert isinstance(found, list) and all(isinstance(i, int) for i in found)
    t0b = time.monotonic()
    # without the /dev shortcut, asking OpenCV itself about every index
    sources.cameras(max_index=8, capture_factory=cv2.VideoCapture)
    assert t0b - t0 < 2.0 and time.monotonic() - t0b < 2.5
    assert cv2.utils.logging.getLogLevel() != cv2.utils.logging.LOG_LEVEL_SILENT  # restored


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
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_forgotten_source_stops_its_thread():
    src = CameraSource(0, capture_factory=FakeCamera(interval=0.002))
    assert src.wait_new_frame(0, 2.0) and pump_threads()
    del src                                   # never closed: garbage collection stops the pump
    assert wait_until(lambda: not pump_threads(), 1.0)
