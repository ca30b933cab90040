"""Automation runs of the window: ``--screenshot`` and ``--quit-after`` / ``--stats``.

A :class:`AutomationRun` watches one window and ends the application with an exit code:

* ``--screenshot PNG``: the input is held at its first frame (a video or a camera would
  otherwise supersede the render being waited for), the first *complete* render (grid,
  unit, every backprop pane of that frame) is drawn, and the whole window is saved.
* ``--quit-after S [--stats FILE.json]``: runs live for ``S`` seconds from the first drawn
  frame, then writes the measured rates (:class:`LiveStats`) and exits 0.

Either way the user's saved settings are neither read nor written (``MainWindow(remember=False)``).
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time

from PyQt5 import QtCore

from ..core.files import WriteError, atomic_write_bytes
from .saving import pixmap_bytes

from .timing import StallMeter

#: keys every --stats file has (medians where it applies)
STATS_KEYS = ("processed_fps", "capture_fps", "forward_ms", "backward_ms", "gui_stall_max_ms", "dropped_frames")


class LiveStats:
    """What a live run measured: processed and captured frames, pass times, GUI stalls."""

    def __init__(self, win):
        self.win = win
        self.meter = StallMeter(5)
        self.forward, self.backward, self.draw = [], [], []
        self.processed = 0
        self.t0 = self.frame0 = self.cpu0 = None
        self.dropped0 = 0

    def start(self) -> None:
        win = self.win
        self.t0, self.cpu0 = time.perf_counter(), time.process_time()
        self.frame0 = win.frame_id
        self.dropped0 = win.worker.dropped
        win.worker.rendered.connect(self._on_rendered)
        win.frameDrawn.connect(self._on_drawn)
        self.meter.start()

    def _on_rendered(self, res):
        if res.partial:                 # the rest of this result comes with the complete one
            return
        if res.forwarded and res.frame_id > self.frame0:      # a frame captured inside the measured time
            self.processed += 1
            self.forward.append(res.forward_ms)
        self.backward.append(res.backward_ms)

    def _on_drawn(self, _res):
        self.draw.append(self.win.last_draw_ms)

    def result(self) -> dict:
        from ..core.threads import current_policy
        win = self.win
        stall, stall_cpu = self.meter.stop()
        dt = max(1e-9, time.perf_counter() - self.t0)
        captured = win.frame_id - self.frame0
        med = (lambda xs: round(statistics.median(xs), 2) if xs else None)
        return {
            "seconds": round(dt, 3),
            "processed_fps": round(self.processed / dt, 3),
            "capture_fps": round(captured / dt, 3),
            "forward_ms": med(self.forward),
            "backward_ms": med(self.backward),
            "gui_stall_max_ms": round(stall, 1) if stall == stall else None,
            "gui_stall_cpu_ms": round(stall_cpu, 1) if stall_cpu == stall_cpu else None,
            "gui_stall_p99_ms": round(self.meter.p99, 1),
            "draw_max_ms": round(max(self.draw), 2) if self.draw else None,
            "dropped_frames": max(0, captured - self.processed),
            "frames_captured": captured,
            "frames_processed": self.processed,
            "requests_dropped": win.worker.dropped - self.dropped0,
            "process_cpu_cores": round((time.process_time() - self.cpu0) / dt, 3),
            "torch_threads": current_policy().threads,
            "model": str(getattr(win.loaded, "name", "")),
            "layer": win.state.layer,
            "unit": win.state.unit,
            "methods": [win.state.method] + ([win.state.method2] if win.state.compare else [])
            if win.state.backprop_on else [],
            "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        }


class AutomationRun(QtCore.QObject):
    """Ends the app with an exit code after a screenshot and/or a timed live run."""

    #: how long an automated run's close waits for the render thread (then it is given up on)
    STOP_TIMEOUT_MS = 2000

    def __init__(self, win, app, screenshot=None, quit_after=None, stats=None, timeout=120.0, watchdog=None):
        super().__init__(win)
        self.win, self.app = win, app
        self.watchdog = watchdog            # ends the process if the run overstays (.watchdog)
        self.timeout = float(timeout)
        self.screenshot = screenshot
        self.quit_after = quit_after
        self.stats_path = stats
        self.rc = None
        self.errors = []
        self.live = None
        self._shot_pending = bool(screenshot)
        win.renderFailed.connect(self._on_error)
        win.frameDrawn.connect(self._on_drawn)
        if screenshot:
            win.hold_after_first_frame()
        self._timeout = QtCore.QTimer(self)
        self._timeout.setSingleShot(True)
        self._work = None                 # the newest progress report of slow work (Score-CAM)
        win.worker.progress.connect(self._on_progress)
        self._timeout.timeout.connect(self._timed_out)
        self._timeout.start(int(timeout * 1000))

    def _on_progress(self, report) -> None:
        self._work = None if report.finished else report

    def _timed_out(self) -> None:
        why = f" ({self.errors[-1]})" if self.errors else ""
        if self._work is not None:      # say what it was doing, and how far it got
            why = f" (still computing: {self._work.line()}; raise --timeout)"
        self.finish(1, "timed out waiting for the first frame" + why)

    def finish(self, rc, msg=None) -> None:
        if self.rc is not None:
            return
        self.rc = rc
        if msg:
            print(f"cnnvis-gui: {msg}", file=sys.stderr)
        self._timeout.stop()
        self._rearm(self.STOP_TIMEOUT_MS / 1000, "the run ended but the model's computation has not returned "
                                                 "(a running thread cannot be stopped); exiting")
        self.win.STOP_TIMEOUT_MS = self.STOP_TIMEOUT_MS
        self.win.close()
        self.app.quit()

    def _on_error(self, msg):
        self.errors.append(msg)
        win = self.win
        if win.mm is None or win.frame is None or "layer" in msg or "unit" in msg:
            if self.live is None:           # before the first frame: nothing can be shown
                self.finish(1, msg)

    def _complete(self, res) -> bool:
        """``res`` is the newest render of the current frame, with every backprop pane asked for."""
        win = self.win
        if win.worker.busy() or res.seq != win.seq or res.frame_id != win.frame_id or res.partial:
            return False        # a newer request is on its way, or Score-CAM still runs: wait for it
        if win.state.backprop_on:
            want = 1 + int(win.state.compare)
            if len(res.backprops) < want:
                return False
        return True

    def _on_drawn(self, res):
        if self.rc is not None:
            return
        if self._shot_pending:
            if self._complete(res):
                self._shot_pending = False
                QtCore.QTimer.singleShot(150, self._save)
            return
        if self.quit_after is not None and self.live is None:
            self._start_live()

    def _save(self):
        if self.rc is not None:
            return
        self.app.processEvents()
        try:      # the one atomic writer: a failed shot leaves an earlier file whole, and says why
            atomic_write_bytes(self.screenshot, pixmap_bytes(self.win.grab(), self.screenshot), durable=False)
        except WriteError as e:
            self.finish(1, str(e))
            return
        if self.quit_after is None:
            self.finish(0)
        else:
            self.win.hold_after_first_frame(False)
            self._start_live()

    def _rearm(self, seconds: float, message: str) -> None:
        if self.watchdog is not None:
            from .watchdog import GRACE_S
            self.watchdog.rearm(seconds + GRACE_S, message)

    def _start_live(self):
        self._timeout.stop()
        self._rearm(self.quit_after + self.timeout, f"--quit-after {self.quit_after:g} s (and --timeout "
                                                    f"{self.timeout:g} s) passed and the run did not end; exiting")
        self.live = LiveStats(self.win)
        self.live.start()
        QtCore.QTimer.singleShot(int(self.quit_after * 1000), self._end_live)

    def _end_live(self):
        if self.rc is not None:
            return
        result = self.live.result()
        if self.stats_path:
            try:
                atomic_write_bytes(self.stats_path, (json.dumps(result, indent=2) + "\n").encode("utf-8"), durable=False)
            except WriteError as e:
                self.finish(1, str(e))
                return
        self.finish(0)
