"""The status bar: one message line (notes in orange, errors in red) and the live rates.

A line too long for the bar is cut with "…"; hovering shows it whole (a paragraph per notice), and a
click opens it in a box.
"""
from __future__ import annotations

import time

from PyQt5 import QtCore, QtWidgets

from ..core.progress import format_duration
from .panels import ElidedLabel
from .plain import plain_tooltip


def _tip(text: str) -> str:
    """A status text as rich text: one paragraph per notice (" · " joins them on the line), wrapped."""
    from html import escape
    return "".join(f"<p style='margin:0 0 6px 0'>{escape(part)}</p>" for part in text.split(" · ") if part)


class StatusLine(QtCore.QObject):
    """The window's status bar; an error, or a model's notice, stays visible for ``ERROR_HOLD_S`` over
    the per-frame description."""

    #: seconds an error (or a notice of the model just opened) is kept over the per-frame description
    ERROR_HOLD_S = 4.0

    errorShown = QtCore.pyqtSignal(str)     # every error shown (the window's renderFailed)

    def __init__(self, state, feed, status_bar, process_rate=lambda: 0.0, parent=None):
        """``feed``: the InputFeed (its capture rate, whether it is live); ``status_bar``: the
        QStatusBar the line and the rates go into; ``process_rate()``: finished renders per
        second; ``parent``: the widget the whole-message box opens over."""
        super().__init__(parent)
        self.state, self.feed, self._process_rate, self._parent = state, feed, process_rate, parent
        self.last_error = ""
        self._error_time = 0.0
        self._error_seq = None
        self._notice_time = float("-inf")
        sb = status_bar
        self.msg = ElidedLabel("starting…")
        self.msg.setCursor(QtCore.Qt.PointingHandCursor)
        self.msg.installEventFilter(self)           # a click shows the whole message (a cut notice)
        self.capture = QtWidgets.QLabel("capture — fps")
        self.proc = QtWidgets.QLabel("processing — fps")
        self.times = QtWidgets.QLabel("fwd — ms  bwd — ms")
        self.device = QtWidgets.QLabel("device —")
        sb.addWidget(self.msg, 1)
        self.task = QtWidgets.QProgressBar()       # a background job (the demo atlas): hidden when none runs
        self.task.setMinimumWidth(230)
        self.task.setMaximumWidth(300)
        self.task.setTextVisible(True)
        self.task.hide()
        sb.addPermanentWidget(self.task)
        for w in (self.capture, self.proc, self.times, self.device):
            w.setStyleSheet("QLabel { padding: 0 6px; }")
            sb.addPermanentWidget(w)
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(500)
        self.timer.timeout.connect(self.update_rates)
        self.timer.start()

    def show_message(self, text, warn=False) -> None:
        self.msg.setStyleSheet("QLabel { color: #d08000; }" if warn else "")
        self.msg.setText(text)
        self.msg.setToolTip(_tip(text))

    def eventFilter(self, obj, ev):
        if obj is self.msg and ev.type() == QtCore.QEvent.MouseButtonRelease:
            self.show_whole_message()
            return True
        return False

    def show_whole_message(self) -> None:
        """The status line's whole text in a box (its notices one per paragraph): what a cut line hides."""
        text = self.msg.text()
        if not text:
            return
        box = QtWidgets.QMessageBox(self._parent)
        box.setWindowTitle("cnnvis-gui: status")
        box.setTextFormat(QtCore.Qt.RichText)
        box.setText(_tip(text))
        box.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        box.setStandardButtons(QtWidgets.QMessageBox.Close)
        box.setModal(False)
        box.setAttribute(QtCore.Qt.WA_DeleteOnClose)
        box.show()
        self.message_box = box

    def show_notice(self, text) -> None:
        """A notice of the model just opened (the input is still another demo's images, a note of the
        loader): orange, and kept over the first frames' description for ``ERROR_HOLD_S``, which drew over
        it within milliseconds."""
        self.show_message(text, warn=True)
        self._notice_time = time.perf_counter()

    def notice_is_fresh(self) -> bool:
        return time.perf_counter() - self._notice_time < self.ERROR_HOLD_S

    def show_error(self, text, seq=None) -> None:
        """Red, with the ⚠; ``seq``: the render request that failed (a newer drawn result clears it)."""
        self.last_error = text
        self._error_seq = seq
        self._error_time = time.perf_counter()
        self.msg.setStyleSheet("QLabel { color: #e03030; font-weight: 600; }")
        self.msg.setText("⚠ " + text)
        self.msg.setToolTip(_tip(text))
        self.errorShown.emit(text)

    def error_is_fresh(self, seq=None) -> bool:
        """The error still applies to a result of request ``seq``: routine messages wait.

        A failed render's error stops applying once a newer request's result is drawn (the
        user moved to a layer or unit where it does not occur); any other error is held for
        ``ERROR_HOLD_S``.
        """
        if not self.last_error:
            return False
        if self._error_seq is not None and seq is not None and seq > self._error_seq:
            return False
        return time.perf_counter() - self._error_time < self.ERROR_HOLD_S

    def show_task(self, text: str, done: int, total: int) -> None:
        """Show a background job's progress (``done`` of ``total``) beside the message line."""
        self.task.setRange(0, max(1, int(total)))
        self.task.setValue(max(0, min(int(done), int(total))))
        self.task.setFormat(text)
        self.task.setToolTip(plain_tooltip(text))
        self.task.show()

    def show_report(self, report) -> None:
        """Slow work's progress (a :class:`~cnnvis_gui.core.progress.ProgressReport`) beside the message
        line: the percentage and the time left on the bar, the whole report in its tooltip; hidden
        when the work finished (or was stopped)."""
        if report.finished:
            self.hide_task()
            return
        total = report.total or 0
        pct = f" {100 * (report.fraction or 0):.0f}%" if total else ""
        left = f"{format_duration(report.left_s)} left" if report.left_s is not None else "estimating…"
        self.show_task(f"{report.what}{pct} · {left}", int(report.done), max(1, total))
        self.task.setToolTip(plain_tooltip(report.line()))

    def hide_task(self) -> None:
        self.task.hide()

    def text(self) -> str:
        return self.msg.text()

    def set_device(self, device) -> None:
        """The device, and on a CPU the torch thread count in use (the policy in the tooltip)."""
        text = f"device {device}"
        tip = ""
        if str(device).startswith("cpu"):
            from ..core.threads import current_policy
            policy = current_policy()
            text += f" · {policy.threads} thread{'s' if policy.threads != 1 else ''}"
            tip = policy.describe()
        self.device.setText(text)
        self.device.setToolTip(plain_tooltip(tip))

    def set_times(self, forward_ms, backward_ms) -> None:
        self.times.setText(f"fwd {forward_ms:.1f} ms  bwd {backward_ms:.1f} ms")

    def update_rates(self) -> None:
        s = self.state
        src = self.feed.active(s.use_camera)
        live = bool(getattr(src, "is_live", False))
        cap = f"capture {self.feed.capture_rate.rate():.1f} fps" if live else "capture still"
        if s.frozen_frame:
            cap = "capture frozen"
        self.capture.setText(cap)
        rate = self._process_rate()
        if live and not s.frozen_frame:
            self.proc.setText(f"processing {rate:.1f} fps")
        else:  # a still image is processed once per change: a rate would read as a stall, or as a loop
            self.proc.setText("processing on demand")
