"""Input sources of the window: files, folders, videos, streams and cameras.

:class:`InputController` owns the file source and the camera, polls the active one on a
timer and hands every new frame, copied and frozen, to the render loop.  Opening a source
and decoding the next image of a folder run in threads (a 12 MP JPEG takes ~180 ms to
decode, OpenCV's stream timeouts take seconds); they come back as signals and a newer open
supersedes an older one (``_io_token``).  A new kind of input (a dialog, a source) lives here.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PyQt5 import QtCore, QtWidgets

from .state import shared



class _Loaded:
    """What an input thread hands back: an opened source, or the image a folder stepped to."""

    __slots__ = ("kind", "token", "source", "raw", "frame", "error", "what", "camera")

    def __init__(self, kind, token, source=None, raw=None, frame=None, error=None, what=None, camera=False):
        self.kind, self.token, self.source, self.raw, self.frame = kind, token, source, raw, frame
        self.error, self.what, self.camera = error, what, camera


def _still_frame(src):
    """(frame object as read, a frozen copy) of a still source, or (None, None) for a live one."""
    if getattr(src, "is_live", False):
        return None, None
    raw = src.read()
    if raw is None:
        return None, None
    frame = np.array(raw, copy=True)
    frame.setflags(write=False)
    return raw, frame


class InputController(QtCore.QObject):
    """The window's input: the active source, its frames, opening and stepping in threads."""

    _cameraOpened = QtCore.pyqtSignal(object, str)     # from the camera-opening thread
    _inputLoaded = QtCore.pyqtSignal(object)           # _Loaded, from an input-opening / image-decoding thread
    sourceOpened = QtCore.pyqtSignal(object)           # a source opened by open_path is in use

    def __init__(self, state, feed, persistence, status, request_render, closed=lambda: False, parent=None):
        """``feed``: the InputFeed written here (frames, sources); ``status``: the StatusLine;
        ``request_render()``: called on every new frame; ``closed()``: the window is closing;
        ``parent``: the widget the file dialogs open over."""
        super().__init__(parent)
        self.state, self.feed = state, feed
        self.persistence, self.status = persistence, status
        self._request_render, self._closed, self._parent = request_render, closed, parent
        self._last_raw = None
        self._source_status = ""
        self._hold_next = False         # hold_after_first_frame: stop reading once a frame is in use
        self.held = False
        # input threads (opening a source, decoding the next image of a folder): see open_path, step_image
        self._io_token = 0              # bumped by every open / new source; older results are dropped
        self._io_lock = threading.Lock()
        self._nav_steps = 0             # image steps asked for and not yet decoded (coalesced)
        self._nav_thread = None
        self._nav_undelivered = 0       # decoded images whose signal has not reached the GUI thread yet
        self._io_threads = set()
        self._cameraOpened.connect(self._on_camera_opened)
        self._inputLoaded.connect(self._on_input_loaded)
        self.capture_timer = QtCore.QTimer(self)
        self.capture_timer.setInterval(8)
        self.capture_timer.timeout.connect(self.poll)

    # the shared InputFeed under the names the window and the tests know
    frame, frame_id, source, camera, capture_rate = (shared("feed", n) for n in
                                                     ("frame", "frame_id", "source", "camera", "capture_rate"))

    def show_message(self, text) -> None:
        self.status.show_message(text)

    def show_error(self, text) -> None:
        self.status.show_error(text)

    # ------------------------------------------------------------------ the active source
    def set_source(self, source, camera=False, first=None) -> None:
        """Take a sources.Source-like object (.read(), .status, .close()); closes the old one.

        ``first``: (frame as read, frozen copy) already decoded off the GUI thread, or None.
        """
        if not camera:
            with self._io_lock:
                self._io_token += 1         # image steps still decoding belong to the old source
                self._nav_steps = 0
        if camera:
            old, self.feed.camera = self.feed.camera, source
            if source is not None:
                self.state.update(use_camera=True)
        else:
            old, self.feed.source = self.feed.source, source
            if source is not None:
                self.state.update(use_camera=False)
        if old is not None and old is not source:
            try:
                old.close()
            except Exception:  # noqa: BLE001
                pass
        self._last_raw = None
        self._source_status = ""
        if first is not None and first[1] is not None and self.active_source() is source:
            self._last_raw = first[0]
            self.use_frame(first[1])
        if self.active_source() is not None:
            self.capture_timer.start()
            self.poll()

    def active_source(self):
        return self.feed.active(self.state.use_camera)

    def nav_busy(self) -> bool:
        """True while a folder step is decoding or its image has not been delivered yet."""
        return self._nav_thread is not None or bool(self._nav_undelivered)

    def poll(self) -> None:
        """Capture timer: read the active source, use the frame when it is a new one."""
        src = self.active_source()
        if src is None or self.state.frozen_frame or self.held:
            return
        if src is self.source and self.nav_busy():
            return          # the next image is being decoded in its thread: it arrives as a signal
        try:
            f = src.read()
        except Exception as e:  # noqa: BLE001
            self.show_error(f"input: {e}")
            return
        status = str(getattr(src, "status", "") or "")
        if status != self._source_status:
            self._source_status = status
            low = status.lower()
            if getattr(src, "state", "") in ("error", "retrying") or any(
                    w in low for w in ("lost", "error", "cannot", "can't", "fail", "unreadable")):
                self.show_error(f"input: {status}")
        if f is None or f is self._last_raw:
            return
        self._last_raw = f
        self.set_frame(f)

    def set_frame(self, bgr: np.ndarray) -> None:
        """Use a new H x W x 3 uint8 BGR frame (copied and frozen before it leaves this thread)."""
        a = np.array(bgr, copy=True)
        a.setflags(write=False)
        self.use_frame(a)

    def use_frame(self, frozen: np.ndarray) -> None:
        """Use a frame that is already a private read-only copy (made off the GUI thread)."""
        feed = self.feed
        feed.frame = frozen
        feed.frame_id += 1
        feed.capture_rate.tick()
        if self._hold_next:
            self._hold_next, self.held = False, True
        self._request_render()

    def hold_after_first_frame(self, hold: bool = True) -> None:
        """Keep the next frame that arrives (a live source is not read again) until called with False.

        ``--screenshot`` of a video or a camera: without it every new frame supersedes the
        render being waited for, and the first complete render never comes.  Unlike ``f``
        (freeze) this changes nothing the user sees.
        """
        if hold:
            self._hold_next = self.frame is None
            self.held = self.frame is not None
        else:
            self._hold_next = self.held = False

    def switch_source(self) -> None:
        """``c``: the camera <-> the files (opens a camera the first time)."""
        if self.state.use_camera and self.camera is None:
            self.open_camera_async()
            return
        self._last_raw = None
        self._source_status = ""
        if self.active_source() is not None:
            self.capture_timer.start()
        self.show_message("camera" if self.state.use_camera else "files")

    # ------------------------------------------------------------------ folder steps (threaded)
    def step_image(self, d: int) -> None:
        """Go ``d`` images on in the folder; the decode runs in a thread, rapid steps coalesce.

        A 12 MP JPEG takes ~180 ms to decode: on the GUI thread that would freeze the window.
        Steps asked for while one decodes add up, and only the newest image is decoded next.
        """
        src = self.source
        if src is None or not hasattr(src, "next"):
            self.show_message("the current input has no previous/next image")
            return
        if self.state.use_camera:
            self.state.update(use_camera=False)
        if self.state.frozen_frame:
            self.state.update(frozen_frame=False)
        with self._io_lock:
            self._nav_steps += int(d)
            token = self._io_token
            start = self._nav_thread is None
            if start:
                t = threading.Thread(target=self._nav_work, args=(src, token), name="cnnvis-image-load",
                                     daemon=True)
                self._nav_thread = t
        if start:
            self._io_threads.add(t)
            t.start()
        self.show_message("loading…")

    @staticmethod
    def _step_source(src, steps: int) -> None:
        if abs(steps) == 1 or not (hasattr(src, "seek") and getattr(src, "count", 0)):
            for _ in range(abs(steps)):
                src.next() if steps > 0 else src.prev()
            return
        n, t = int(src.count), int(src.index) + steps
        t = t % n if getattr(src, "wrap", True) else min(max(t, 0), n - 1)
        src.seek(t)

    def _nav_work(self, src, token):
        """Image-step thread: decode the newest asked-for image, hand it over as a signal."""
        while True:
            with self._io_lock:
                steps, self._nav_steps = self._nav_steps, 0
                if steps == 0 or token != self._io_token or self._closed():
                    self._nav_thread = None
                    return
            raw = frame = error = None
            try:
                self._step_source(src, steps)
                raw, frame = _still_frame(src)
            except Exception as e:  # noqa: BLE001 - shown in the status bar
                error = str(e) or type(e).__name__
            with self._io_lock:
                newer = self._nav_steps != 0
                if not newer:
                    self._nav_undelivered += 1
            if not newer:
                self._emit_loaded(_Loaded("step", token, src, raw, frame, error))

    def _emit_loaded(self, loaded):
        try:
            self._inputLoaded.emit(loaded)
        except RuntimeError:        # the window is gone (deleted while this thread worked)
            if loaded.kind == "open" and loaded.source is not None:
                loaded.source.close()

    def _on_input_loaded(self, ld):
        if ld.kind == "open":
            self._io_threads = {t for t in self._io_threads if t.is_alive()}
            if self._closed() or ld.token != self._io_token:
                if ld.source is not None:
                    ld.source.close()       # superseded by a newer open, or the window closed
                return
            if ld.error is not None:
                self.show_error(f"cannot open {ld.what}: {ld.error}")
                return
            self.set_source(ld.source, camera=ld.camera, first=(ld.raw, ld.frame))
            self.sourceOpened.emit(ld.source)
            return
        # an image step
        with self._io_lock:
            self._nav_undelivered = max(0, self._nav_undelivered - 1)
        if self._closed() or ld.token != self._io_token or ld.source is not self.source:
            return
        if ld.error is not None:
            self.show_error(f"input: {ld.error}")
            return
        if ld.frame is not None and not self.state.use_camera:
            self._last_raw = ld.raw
            self.use_frame(ld.frame)
        path = getattr(ld.source, "current_path", None)
        if path:
            self.show_message(f"image {getattr(ld.source, 'index', 0) + 1}/{getattr(ld.source, 'count', '?')}:"
                             f" {path}")

    # ------------------------------------------------------------------ opening (threaded)
    def open_path(self, path, **options) -> bool:
        """Open an image, a folder, a video, a stream URL or a camera index as the input.

        Opening runs in a thread (decoding a big image, OpenCV's network timeouts): this
        returns at once; the source is used when the window's ``sourceOpened`` fires, a
        failure shows in the status bar (``renderFailed``).  A newer open supersedes an older one.
        """
        is_cam = isinstance(path, int) or (isinstance(path, str) and path.isdigit())
        with self._io_lock:
            self._io_token += 1
            self._nav_steps = 0
            token = self._io_token
        name = path if isinstance(path, (int, str)) else (f"{len(path)} images" if isinstance(path, (list, tuple))
                                                           else str(path))

        def work():
            from .. import sources
            src = raw = frame = error = None
            try:
                src = sources.open(path, **options)
                if not is_cam:
                    raw, frame = _still_frame(src)
            except Exception as e:  # noqa: BLE001 - shown in the status bar
                error = str(e) or type(e).__name__
            if src is not None and (self._closed() or token != self._io_token):
                src.close()
                return
            self._emit_loaded(_Loaded("open", token, src, raw, frame, error, what=path, camera=is_cam))
        t = threading.Thread(target=work, name="cnnvis-input-open", daemon=True)
        self._io_threads = {x for x in self._io_threads if x.is_alive()} | {t}
        t.start()
        self.show_message(f"loading {Path(name).name if isinstance(name, str) and '://' not in name else name}…")
        return True

    def open_camera_async(self, index=None) -> None:
        """Find and open a camera off the GUI thread (probing can take seconds)."""
        self.show_message("looking for a camera…")

        def work():
            try:
                from .. import sources
                idx = index
                if idx is None:
                    cams = sources.cameras()
                    if not cams:
                        raise RuntimeError("no camera found on this computer")
                    idx = cams[0]
                self._cameraOpened.emit(sources.open(idx), "")
            except Exception as e:  # noqa: BLE001
                self._cameraOpened.emit(None, str(e))
        threading.Thread(target=work, name="cnnvis-camera-open", daemon=True).start()

    def _on_camera_opened(self, src, error):
        if self._closed():
            if src is not None:
                src.close()
            return
        if src is None:
            self.state.update(use_camera=False)
            self.show_error(f"camera: {error}")
            return
        self.set_source(src, camera=True)
        self.show_message(f"camera: {getattr(src, 'status', '')}")

    # ------------------------------------------------------------------ dialogs
    def open_image_dialog(self):
        p, _ = QtWidgets.QFileDialog.getOpenFileName(self._parent, "Open image", self.persistence.last_dir(),
                                                     "Images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff *.webp);;All (*)")
        if p:
            self.persistence.set_last_dir(p)
            self.open_path(p)

    def open_folder_dialog(self):
        p = QtWidgets.QFileDialog.getExistingDirectory(self._parent, "Open folder of images",
                                                       self.persistence.last_dir())
        if p:
            self.persistence.set_last_dir(p + "/x")
            self.open_path(p)

    def open_video_dialog(self):
        p, _ = QtWidgets.QFileDialog.getOpenFileName(self._parent, "Open video", self.persistence.last_dir(),
                                                     "Videos (*.mp4 *.avi *.mov *.mkv *.webm);;All (*)")
        if p:
            self.persistence.set_last_dir(p)
            self.open_path(p)

    def choose_camera_dialog(self):
        from .. import sources
        try:
            cams = sources.cameras()
        except Exception as e:  # noqa: BLE001
            self.show_error(f"cameras: {e}")
            return
        if not cams:
            QtWidgets.QMessageBox.information(self._parent, "Cameras", "No camera was found.")
            return
        item, ok = QtWidgets.QInputDialog.getItem(self._parent, "Choose camera", "Camera:",
                                                  [f"camera {c}" for c in cams], 0, False)
        if ok:
            self.open_path(int(item.split()[-1]))

    # ------------------------------------------------------------------ shutdown
    #: how long close waits for an input thread (a stream open may hang in OpenCV: it is a daemon)
    IO_JOIN_TIMEOUT_S = 2.0

    def shutdown(self) -> None:
        """Stop the capture, let the input threads end, close the sources."""
        self.capture_timer.stop()
        with self._io_lock:
            self._io_token += 1
            self._nav_steps = 0
        for t in list(self._io_threads):        # an image decode ends soon; an open closes what it got
            t.join(self.IO_JOIN_TIMEOUT_S)

    def close_sources(self) -> None:
        for src in (self.source, self.camera):
            if src is not None:
                try:
                    src.close()
                except Exception:  # noqa: BLE001
                    pass
        self.feed.source = self.feed.camera = None
