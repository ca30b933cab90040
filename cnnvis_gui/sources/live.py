"""Live sources: a camera by index, a video file or a stream URL, all through the capture pump."""
from __future__ import annotations

import sys
import time
import weakref
from pathlib import Path

import cv2

from ..core.bounds import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE
from .base import Source, SourceError, check_readable, opencv_name, quiet_opencv
from .pump import CapturePump


def _default_capture(target, backend=None):
    if backend is None:
        return cv2.VideoCapture(target)
    return cv2.VideoCapture(target, backend)


def oversized_frames(cap) -> str | None:
    """Why the frames a capture declares (``CAP_PROP_FRAME_WIDTH`` x ``HEIGHT``) are past the bounds
    an image has here (:data:`~cnnvis_gui.core.bounds.MAX_IMAGE_PIXELS`), or None.

    FFmpeg bounds a frame itself only at about 268 megapixels (a gigabyte a frame); a crafted file
    that declares 15000 x 15000 frames is refused here with one line, before its frames are read.
    """
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    except Exception:         # noqa: BLE001  (a capture that cannot say: its frames are checked as they come)
        return None
    if w * h > MAX_IMAGE_PIXELS or max(w, h) > MAX_IMAGE_SIDE:
        return (f"declares {w}x{h} frames ({w * h / 1e6:,.0f} megapixels), more than the {MAX_IMAGE_PIXELS / 1e6:.0f} "
                f"megapixels (at most {MAX_IMAGE_SIDE} a side) a frame may have here; it was not read (scale it "
                f"down first).")
    return None


def cameras(max_index: int = 8, timeout: float = 2.0, capture_factory=None) -> list[int]:
    """Camera indices (0 .. max_index-1) that open, found quickly.

    OpenCV's warnings are silenced while probing.  On Linux an index whose
    ``/dev/videoN`` does not exist is skipped without asking OpenCV.  Probing stops
    after ``timeout`` seconds in all (some backends take ~1 s per missing device).
    """
    factory = capture_factory or _default_capture
    found = []
    t0 = time.monotonic()
    linux_dev = capture_factory is None and sys.platform.startswith("linux") and Path("/dev").is_dir()
    with quiet_opencv():
        for i in range(int(max_index)):
            if time.monotonic() - t0 > timeout:
                break
            if linux_dev and not Path(f"/dev/video{i}").exists():
                continue
            cap = None
            try:
                cap = factory(i)
                if cap is not None and cap.isOpened():
                    found.append(i)
            except Exception:
                pass
            finally:
                if cap is not None:
                    try:
                        cap.release()
                    except Exception:
                        pass
    return found


def _weak_opener(source):
    """``source._open`` without keeping the source alive from its own reader thread."""
    ref = weakref.ref(source)

    def open_again():
        src = ref()
        return None if src is None else src._open()
    return open_again


class _PumpSource(Source):
    """A source whose frames come from a :class:`CapturePump`."""

    _pump: CapturePump

    _frozen_frame = None  # (id, raw) held while frozen

    def _latest(self):
        held = self._frozen_frame
        if held is not None:
            return held
        return self._pump.latest()

    @property
    def is_live(self) -> bool:
        return True

    @property
    def state(self) -> str:
        if self._closed:
            return "closed"
        return self._pump.state

    @property
    def status(self) -> str:
        if self._closed:
            return f"{self._pump.label} closed"
        return self._pump.status

    @property
    def notices(self) -> list[str]:
        return list(self._notices) + list(self._pump.notices)

    @property
    def fps_measured(self) -> float | None:
        """Measured capture rate (EMA of the intervals between captured frames)."""
        return self._pump.fps_measured

    @property
    def dropped(self) -> int:
        """Frames replaced by newer ones before anybody read them."""
        return self._pump.dropped

    @property
    def pump(self) -> CapturePump:
        return self._pump

    def wait_new_frame(self, after_id: int = 0, timeout: float = 1.0) -> bool:
        """Block up to ``timeout`` s until a frame newer than ``after_id`` exists (for workers/tests)."""
        return self._pump.wait_new_frame(after_id, timeout)

    def freeze(self):
        """Keep returning the current frame (cameras keep capturing, files pause)."""
        self._frozen = True
        self._pump.freeze()
        fid, raw = self._pump.latest()
        self._frozen_frame = (fid, raw) if raw is not None else None

    def unfreeze(self):
        self._frozen = False
        self._frozen_frame = None
        self._pump.unfreeze()

    def __del__(self):  # a forgotten source must not keep the camera busy
        pump = self.__dict__.get("_pump")
        if pump is not None:
            try:
                pump.stop(0)
            except Exception:
                pass

    def close(self, timeout: float = 0.1):
        """Stop the reader thread (waiting at most ``timeout`` s) and release the device."""
        if not self._closed:
            self._closed = True
            self._pump.stop(timeout)


class CameraSource(_PumpSource):
    """A camera by index, read on a background thread; OpenCV picks the backend.

    Parameters
    ----------
    index : int
        Camera index as ``cv2.VideoCapture`` takes it (0 = the first camera).
    mirror : bool
        Selfie view; default True.
    width, height : int, optional
        Ask the driver for this resolution (it may pick the nearest it supports).
    backend : int, optional
        A ``cv2.CAP_*`` constant; default: OpenCV chooses.
    capture_factory : callable (index) -> capture, optional
        Makes the capture object (tests inject fakes); default ``cv2.VideoCapture``.
    retry_delay : float
        Back-off when the camera stops delivering frames: the first delay in seconds.
    retry_max : float
        Back-off cap: the longest delay in seconds.
    clock : pump.Clock, optional
        The reader's clock (tests give one whose time they control).

    Raises
    ------
    SourceError
        When the camera does not open.
    """

    kind = "camera"

    def __init__(self, index: int = 0, *, mirror: bool = True, spec=None, fit=None,
                 width: int | None = None, height: int | None = None, backend: int | None = None,
                 capture_factory=None, retry_delay: float = 1.0, retry_max: float = 8.0,
                 fail_threshold: int = 5, stall_after: float = 2.0, clock=None):
        super().__init__(mirror=mirror, spec=spec, fit=fit)
        self.index = int(index)
        if self.index < 0:   # OpenCV's "any camera" index -1 (and below) crashes some builds
            raise SourceError(f"camera index {self.index} is not valid: camera indices start at 0 "
                              f"(0 = the first camera).")
        self.description = f"camera {self.index}"
        self._factory = capture_factory
        self._backend = backend
        self._size = (width, height)

        with quiet_opencv():
            cap = self._open()
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            avail = cameras() if capture_factory is None else []
            hint = (f"Available cameras: {avail}" if avail else "No camera found on this computer")
            raise SourceError(f"camera {self.index} could not be opened; is it connected, or used by "
                              f"another program? {hint}.")
        fps = 0.0
        try:
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        except Exception:
            pass
        self.fps = fps if 0 < fps < 1000 else None
        self._pump = CapturePump(_weak_opener(self), label=self.description, capture=cap, at_failure="retry",
                                 retry_delay=retry_delay, retry_max=retry_max,
                                 fail_threshold=fail_threshold, stall_after=stall_after, clock=clock).start()

    def _open(self):
        if self._factory is not None:
            cap = self._factory(self.index)
        else:
            cap = _default_capture(self.index, self._backend)
        w, h = self._size
        if cap is not None and cap.isOpened() and (w or h):
            try:
                if w:
                    cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(w))
                if h:
                    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(h))
            except Exception:
                pass
        return cap


class VideoSource(_PumpSource):
    """A video file or a stream URL, read on a background thread.

    Parameters
    ----------
    path : str or Path
        A file OpenCV (FFmpeg) can decode, or a URL such as ``rtsp://...`` / ``http://...``.
    loop : bool
        Files: start again at the end (default) or stop there, showing the last frame with
        status "end of video <name>" (then :meth:`rewind` plays it again).
    pace : bool or float
        Files: True (default) plays in real time at the file's frame rate (30 fps when
        unknown); a number plays at that rate; False reads as fast as decoding allows.
    capture_factory : callable (path) -> capture, optional
        Makes the capture object (tests inject fakes); default ``cv2.VideoCapture``.
    clock : pump.Clock, optional
        The reader's clock: pacing and back-off (tests give one whose time they control).

    Notes
    -----
    Streams are treated like cameras: failing reads mean a lost connection, which is
    retried with back-off.
    """

    kind = "video"

    def __init__(self, path, *, loop: bool = True, pace=True, mirror: bool = False, spec=None, fit=None,
                 capture_factory=None, retry_delay: float = 1.0, retry_max: float = 8.0,
                 stall_after: float | None = None, clock=None):
        super().__init__(mirror=mirror, spec=spec, fit=fit)
        text = str(path)
        self.is_stream = "://" in text
        self._factory = capture_factory
        if self.is_stream:
            self.target = text
            self.name = text
            self.description = f"stream {text}"
        else:
            p = Path(text).expanduser()
            if not p.is_file():
                raise SourceError(f"video file '{p}' does not exist" if not p.exists()
                                  else f"'{p}' is not a file")
            if capture_factory is None and opencv_name(p) is None:
                shown = str(p).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                raise SourceError(f"cannot open the video '{shown}': its file name is not valid UTF-8, which OpenCV "
                                  f"cannot open; rename the file.")
            check_readable(p)
            self.target = str(p)
            self.name = p.name
            self.description = f"video {p.name}"

        with quiet_opencv():
            cap = self._open()
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            what = "stream" if self.is_stream else "video file"
            raise SourceError(f"could not open {what} '{self.target}': OpenCV cannot read it "
                              f"(unsupported format or codec{', or unreachable' if self.is_stream else ''}).")
        try:
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        except Exception:
            fps, count = 0.0, 0
        too_big = oversized_frames(cap)
        if too_big:                                     # refused before a frame is read
            cap.release()
            raise SourceError(f"{'stream' if self.is_stream else 'video'} '{self.name}' {too_big}")
        self.fps = fps if 0 < fps < 1000 else None
        self.frame_count = count if count > 0 else None

        first = None
        if not self.is_stream:
            ok, first = cap.read()
            if not ok or first is None:
                cap.release()
                raise SourceError(f"video file '{self.target}' has no frames OpenCV can decode.")
        if pace is True:
            rate = self.fps or 30.0
        elif pace:
            rate = float(pace)
        else:
            rate = None
        if self.is_stream:
            rate = None  # a stream delivers in real time by itself
        self._pump = CapturePump(
            _weak_opener(self), label=self.description, capture=cap, first_frame=first,
            at_failure="retry" if self.is_stream else "end", loop=loop, pace=rate,
            retry_delay=retry_delay, retry_max=retry_max,
            stall_after=(stall_after if stall_after is not None else (5.0 if self.is_stream else 0.0)),
            end_text=f"end of video {self.name}", clock=clock).start()

    def _open(self):
        if self._factory is not None:
            return self._factory(self.target)
        return _default_capture(self.target)

    @property
    def loop(self) -> bool:
        return self._pump.loop

    @loop.setter
    def loop(self, value: bool):
        self._pump.loop = bool(value)

    def rewind(self):
        """Play again from the first frame (also after the end was reached)."""
        self._pump.rewind()
