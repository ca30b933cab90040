"""The capture pump: reads frames on its own thread and keeps only the newest.

A slow consumer (a model at 5 fps behind a 30 fps camera) must never make the
picture lag behind reality, so frames are *replaced*, not queued: the consumer
always gets the newest one, and the ones it never saw are counted in
``dropped``.  The same pattern as napari's layer slicer: superseded work is
dropped, never queued.

The reader thread owns the capture object: it opens (re-opens), reads and
releases it.  It never holds a lock while blocked in ``cap.read()``, so
``latest()``, ``status`` and ``stop()`` answer within microseconds even when a
driver hangs; ``stop()`` joins with a timeout and leaves a hung daemon thread
to release the device when its read returns.
"""
from __future__ import annotations

import itertools
import threading
import time

import numpy as np

from .base import to_bgr8, quiet_opencv, MAX_NOTICES

_pump_ids = itertools.count(1)

PUMP_THREAD_PREFIX = "cnnvis-capture"


class Clock:
    """The pump's time: ``now()`` in seconds on a monotonic clock, and ``wait(event, seconds)``,
    which sleeps up to ``seconds`` and returns True at once when ``event`` is set.

    Pacing, back-off, the capture rate and stall reports all read this clock, so a test can give
    the pump one whose time it controls (no test then depends on how loaded the machine is).
    """

    @staticmethod
    def now() -> float:
        return time.monotonic()

    @staticmethod
    def wait(event: threading.Event, seconds: float) -> bool:
        return event.wait(seconds)


class CapturePump:
    """Background reader for a ``cv2.VideoCapture``-like object.

    Parameters
    ----------
    open_capture : callable () -> capture
        Opens (or re-opens) the capture.  The capture needs ``read() -> (ok, frame)``,
        ``release()`` and ``isOpened()``, as ``cv2.VideoCapture`` has.
    label : str
        How the status names the source: "camera 0", "video clip.avi".
    capture : optional
        An already-open capture (opened by the caller to report failures synchronously).
    first_frame : ndarray, optional
        A frame already read from ``capture``; published as frame 1.
    at_failure : {"retry", "end"}
        What failing reads mean: a lost device/stream ("retry": release, re-open with
        exponential back-off, recover automatically) or the end of a file ("end").
    loop : bool
        With ``at_failure="end"``: start again from the beginning, else stop at the end
        (keeping the last frame) until :meth:`rewind`.
    pace : float or None
        Deliver at most this many frames per second (real-time playback of a file);
        None reads as fast as the capture delivers (cameras pace themselves).
    retry_delay : float
        First back-off delay in seconds, doubled after each failed attempt up to ``retry_max``.
    retry_max : float
        The longest back-off delay in seconds.
    fail_threshold : int
        Consecutive failed reads that count as "stopped delivering frames".
    stall_after : float
        Seconds without a new frame after which ``status`` reports a stall.
    clock : Clock, optional
        Where time comes from (default: the monotonic clock; tests give their own).
    """

    def __init__(self, open_capture, *, label: str, capture=None, first_frame=None,
                 at_failure: str = "retry", loop: bool = False, pace: float | None = None,
                 retry_delay: float = 1.0, retry_max: float = 8.0, fail_threshold: int = 3,
                 stall_after: float = 2.0, end_text: str | None = None, clock: Clock | None = None):
        if at_failure not in ("retry", "end"):
            raise ValueError("at_failure must be 'retry' or 'end'")
        self._clock = clock if clock is not None else Clock()
        self._open_capture = open_capture
        self.label = label
        self.at_failure = at_failure
        self.loop = bool(loop)
        self.pace = float(pace) if pace else None
        self.retry_delay = float(retry_delay)
        self.retry_max = max(float(retry_max), self.retry_delay)
        self.fail_threshold = max(1, int(fail_threshold))
        self.stall_after = float(stall_after)
        self.end_text = end_text or f"end of {label}"

        self._cap = capture
        self._lock = threading.Lock()
        self._new_frame = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._frame = None
        self._frame_id = 0
        self._taken_id = 0
        self._last_frame_t = None
        self._ema_dt = None
        self._frozen = False
        self._rewind_requested = False

        self.dropped = 0            #: frames replaced before any consumer took them
        self.frames_captured = 0    #: frames read from the capture (published or not)
        self.attempts = 0           #: re-open attempts since the last good frame
        self.reconnects = 0         #: successful recoveries
        self.retry_log: list[tuple[float, float]] = []  #: (monotonic time, delay) per back-off wait
        self.notices: list[str] = []
        self._state = "opening"
        self._retry_in = None
        self.error = None           #: exception that ended the thread, if any

        if first_frame is not None:
            self._publish(first_frame)
            self._state = "live"
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"{PUMP_THREAD_PREFIX}-{next(_pump_ids)} {label}")

    # ------------------------------------------------------------------ control
    def start(self) -> "CapturePump":
        self._thread.start()
        return self

    def stop(self, timeout: float = 0.1) -> bool:
        """Ask the thread to stop and wait at most ``timeout`` s.  True when it has ended."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            self._new_frame.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        alive = self._thread.is_alive()
        self._state = "closed"
        return not alive

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def freeze(self):
        """Keep handing out the current frame.  Files pause; cameras keep draining the device."""
        self._frozen = True

    def unfreeze(self):
        self._frozen = False
        self._wake.set()

    @property
    def frozen(self) -> bool:
        return self._frozen

    def rewind(self):
        """Files: play again from the start (also after the end was reached without loop)."""
        self._rewind_requested = True
        self._wake.set()

    # ------------------------------------------------------------------ consumer side
    def latest(self):
        """(frame id, newest frame) or (0, None); marks the frame as taken (not dropped)."""
        with self._lock:
            self._taken_id = self._frame_id
            return self._frame_id, self._frame

    def peek(self):
        """Like :meth:`latest` without marking the frame as taken."""
        return self._frame_id, self._frame

    def wait_new_frame(self, after_id: int = 0, timeout: float = 1.0) -> bool:
        """Block up to ``timeout`` s until a frame newer than ``after_id`` exists."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._frame_id <= after_id and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._new_frame.wait(left)
            return self._frame_id > after_id

    @property
    def frame_id(self) -> int:
        return self._frame_id

    @property
    def fps_measured(self) -> float | None:
        """Capture rate: exponential moving average of the intervals between frames."""
        dt = self._ema_dt
        return (1.0 / dt) if dt else None

    @property
    def state(self) -> str:
        """opening, live, retrying, ended, frozen, closed or error."""
        if self._state in ("live", "opening") and self._frozen:
            return "frozen"
        return self._state

    @property
    def status(self) -> str:
        st = self._state
        if st == "closed":
            return f"{self.label} closed"
        if st == "error":
            return f"{self.label} failed: {self.error}"
        if st == "ended":
            return self.end_text
        if st == "retrying":
            d = self._retry_in
            if d is None:
                return f"{self.label} stopped delivering frames; reconnecting…"
            return f"{self.label} stopped delivering frames; retrying in {d:.1f} s…"
        if self._frozen:
            return f"{self.label} frozen"
        if st == "opening":
            return f"opening {self.label}… (waiting for the first frame)"
        frame = self._frame
        parts = []
        if frame is not None:
            parts.append(f"{frame.shape[1]}x{frame.shape[0]}")
        fps = self.fps_measured
        if fps:
            parts.append(f"{fps:.1f} fps")
        text = f"{self.label} live" + (f" ({', '.join(parts)})" if parts else "")
        t = self._last_frame_t
        if t is not None and self.stall_after > 0:
            idle = self._clock.now() - t
            if idle > self.stall_after:
                text = f"{self.label}: no new frame for {idle:.1f} s"
        return text

    # ------------------------------------------------------------------ reader thread
    def _notice(self, text):
        self.notices.append(text)
        del self.notices[:-MAX_NOTICES]

    def _publish(self, frame):
        img = to_bgr8(frame)  # conversion outside the lock
        now = self._clock.now()
        with self._lock:
            if self._frame_id and self._taken_id != self._frame_id:
                self.dropped += 1
            self._frame = img
            self._frame_id += 1
            prev = self._last_frame_t
            self._last_frame_t = now
            if prev is not None:
                dt = max(now - prev, 1e-6)
                self._ema_dt = dt if self._ema_dt is None else 0.9 * self._ema_dt + 0.1 * dt
            self._new_frame.notify_all()

    def _release(self, cap):
        if cap is None:
            return
        try:
            cap.release()
        except Exception:
            pass

    def _try_open(self):
        try:
            with quiet_opencv():
                cap = self._open_capture()
            if cap is not None and cap.isOpened():
                return cap
            self._release(cap)
        except Exception:
            pass
        return None

    def _run(self):
        cap = self._cap
        self._cap = None
        fails = 0
        delay = self.retry_delay
        next_due = None
        lost_since = None
        since_open = 1 if self._frame_id else 0  # frames read since the capture was (re)opened
        if self.pace and self._last_frame_t is not None:
            next_due = self._last_frame_t + 1.0 / self.pace
        try:
            while not self._stop.is_set():
                # ---- pause (files) / end / rewind
                if self._rewind_requested:
                    self._rewind_requested = False
                    self._release(cap)
                    cap = None
                    self._state = "opening"
                    next_due = None
                if self._state == "ended" and cap is None:
                    self._wake.wait(0.25)
                    self._wake.clear()
                    continue
                if self._frozen and self.at_failure == "end":
                    self._wake.wait(0.05)
                    self._wake.clear()
                    next_due = None
                    continue
                # ---- (re)open
                if cap is None:
                    cap = self._try_open()
                    since_open = 0
                    if cap is None:
                        if self.at_failure == "end" and self._state != "retrying":
                            self._state = "error"
                            self.error = f"could not re-open {self.label}"
                            return
                        self._backoff(delay)
                        delay = min(delay * 2.0, self.retry_max)
                        continue
                # ---- read: no lock held here, the driver may block
                try:
                    ok, frame = cap.read()
                except Exception:
                    ok, frame = False, None
                if self._stop.is_set():
                    break
                if ok and isinstance(frame, np.ndarray) and frame.size:
                    fails = 0
                    since_open += 1
                    self.frames_captured += 1
                    if self._state == "retrying":
                        self.reconnects += 1
                        gone = self._clock.now() - lost_since if lost_since else 0.0
                        self._notice(f"{self.label} recovered after {gone:.1f} s")
                        lost_since = None
                    self.attempts = 0
                    delay = self.retry_delay
                    if self._state != "live":
                        self._state = "live"
                        self._retry_in = None
                    if self.pace and not self._frozen:
                        now = self._clock.now()
                        due = next_due if next_due is not None else now
                        if due < now - 0.25:  # fell far behind (slow decode): don't rush to catch up
                            due = now
                        if due > now and self._clock.wait(self._stop, due - now):
                            break
                        next_due = due + 1.0 / self.pace
                    if not self._frozen:
                        try:
                            self._publish(frame)
                        except Exception as e:  # a frame we cannot convert: skip it
                            self._notice(f"{self.label}: skipped a frame ({e})")
                    continue
                # ---- a failed read
                if self.at_failure == "end":
                    self._release(cap)
                    cap = None
                    if self.loop and since_open:
                        continue  # re-open at the start, keeping the pace; the state stays "live"
                    next_due = None
                    self._state = "ended"
                    self._notice(self.end_text)
                    continue
                fails += 1
                if fails < self.fail_threshold:
                    if self._clock.wait(self._stop, 0.01):
                        break
                    continue
                fails = 0
                self._release(cap)
                cap = None
                if lost_since is None:
                    lost_since = self._clock.now()
                    self._notice(f"{self.label} stopped delivering frames at {time.strftime('%H:%M:%S')}")
                self._backoff(delay)
                delay = min(delay * 2.0, self.retry_max)
        except Exception as e:  # never die silently: the status says it
            self.error = f"{type(e).__name__}: {e}"
            self._state = "error"
        finally:
            self._release(cap)
            if self._state not in ("error",):
                self._state = "closed" if self._stop.is_set() else self._state
            with self._lock:
                self._new_frame.notify_all()

    def _backoff(self, delay):
        self._retry_in = delay      # before the state: a status read between the two never sees a stale delay
        self._state = "retrying"
        self.attempts += 1
        self.retry_log.append((self._clock.now(), delay))
        del self.retry_log[:-100]
        self._clock.wait(self._stop, delay)
        self._retry_in = None
