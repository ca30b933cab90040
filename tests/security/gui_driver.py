"""Run ``cnnvis-gui``'s interactive start in this process and act as the user would.

:func:`run_interactive` calls :func:`cnnvis_gui.qt.app.main` (no ``--screenshot``: the real
interactive start, with its message boxes and prompts) and drives it from a timer: every
modal message box is recorded (its class, texts and the text format of its labels) and
answered; once ``ready(window)`` returns a snapshot, the window is closed and ``main``
returns.  Nothing waits on wall-clock times except the generous overall bound.
"""
from __future__ import annotations

import time

import torch
from PyQt5 import QtCore, QtWidgets

from ..waits import WAIT_S


def describe_box(box: QtWidgets.QMessageBox) -> dict:
    labels = {lab.objectName(): lab for lab in box.findChildren(QtWidgets.QLabel)}
    shown = [lab for name, lab in labels.items() if name in ("qt_msgbox_label", "qt_msgbox_informativelabel")]
    return {"cls": type(box).__name__, "title": box.windowTitle(), "text": box.text(),
            "informative": box.informativeText(),
            "formats": [lab.textFormat() for lab in shown],
            "default_no": box.defaultButton() is box.button(QtWidgets.QMessageBox.No)}


class _Driver(QtCore.QObject):
    def __init__(self, answer, ready, timeout_s, exclude):
        super().__init__()
        self.answer, self.ready, self.exclude = answer, ready, exclude
        self.deadline = time.monotonic() + timeout_s
        self.seen, self.snapshot, self.error = [], None, None
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(50)
        self.timer.timeout.connect(self.tick)
        self.timer.start()

    def window(self):
        from cnnvis_gui.qt.window import MainWindow
        wins = [w for w in QtWidgets.QApplication.topLevelWidgets()
                if isinstance(w, MainWindow) and w not in self.exclude and not w.closed]
        return wins[0] if wins else None

    def stop(self):
        self.timer.stop()
        win = self.window()
        if win is not None:
            win.close()
        QtWidgets.QApplication.instance().quit()

    def tick(self):
        try:
            box = QtWidgets.QApplication.activeModalWidget()
            if isinstance(box, QtWidgets.QMessageBox):
                self.seen.append(describe_box(box))
                box.button(self.answer(box)).click()
                return
            win = self.window()
            if win is not None and win.isVisible():
                snap = self.ready(win)
                if snap is not None:
                    self.snapshot = snap
                    self.stop()
                    return
            if time.monotonic() > self.deadline:
                self.error = "timed out waiting for the window"
                self.stop()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = repr(e)
            self.stop()


def shown_model(win):
    """A snapshot once the window renders a model (None before)."""
    if win.loaded is None or win.mm is None or win.last_result is None or win.worker.busy():
        return None
    from cnnvis_gui.models.demos import demo_name_of
    return {"name": str(win.loaded.name), "model": type(win.loaded.model).__name__, "demo": demo_name_of(win.loaded),
            "status": win.status_text(), "errors": [win.last_error]}


def answer_no(box):
    return QtWidgets.QMessageBox.No if box.button(QtWidgets.QMessageBox.No) else QtWidgets.QMessageBox.Ok


def answer_yes(box):
    return QtWidgets.QMessageBox.Yes if box.button(QtWidgets.QMessageBox.Yes) else QtWidgets.QMessageBox.Ok


def run_interactive(argv, answer=answer_no, ready=shown_model, timeout_s=WAIT_S):
    """``main(argv)`` as a user's interactive start -> (exit code, message boxes seen, snapshot)."""
    from cnnvis_gui.qt import app
    from cnnvis_gui.qt.window import MainWindow
    qapp = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["test"])
    before = {w for w in qapp.topLevelWidgets() if isinstance(w, MainWindow)}
    threads = torch.get_num_threads()
    driver = _Driver(answer, ready, timeout_s, before)
    try:
        rc = app.main(list(argv))
    finally:
        driver.timer.stop()
        torch.set_num_threads(threads)
        # main's teardown processed the Quit that closing the last window posts: Qt's "quit now" flag is
        # left set, and every later event loop (the next test's dialogs) would return at once. A run of
        # the application's own loop clears it.
        QtCore.QTimer.singleShot(0, qapp.quit)
        qapp.exec_()
    assert driver.error is None, (driver.error, driver.seen)
    return rc, driver.seen, driver.snapshot
