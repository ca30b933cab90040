"""The window asks before running code a file names: the dialog shows it, defaults to No, No changes nothing."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PyQt5 import QtCore, QtWidgets  # noqa: E402

from cnnvis_gui.qt import dialogs  # noqa: E402
from cnnvis_gui.qt.trust_dialog import TrustCodeDialog  # noqa: E402

from ..waits import signal  # noqa: E402
from .helpers import pth_with_meta, py_beside, touch_meta  # noqa: E402


def answer_trust_dialog(qtbot, how: str, seen: list):
    """When the trust dialog is up: record it, then answer — "No"/"Yes" click, "Return"/"Escape" keys."""
    def act():
        w = QtWidgets.QApplication.activeModalWidget()
        if not isinstance(w, TrustCodeDialog):
            QtCore.QTimer.singleShot(20, act)
            return
        seen.append({"text": w.text() + w.informativeText(), "default": w.defaultButton() is w.button(w.No)})
        if how in ("Yes", "No"):
            w.button(getattr(w, how)).click()
        else:
            qtbot.keyClick(w, getattr(QtCore.Qt, f"Key_{how}"))
    QtCore.QTimer.singleShot(0, act)


def _open_via_menu(qtbot, window, monkeypatch, path, how):
    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    seen = []
    answer_trust_dialog(qtbot, how, seen)
    ok = dialogs.open_checkpoint_interactive(window)
    return ok, seen


@pytest.mark.parametrize("how", ["No", "Return", "Escape"])
def test_open_checkpoint_asks_and_no_keeps_the_previous_model(qtbot, window, tmp_path, monkeypatch, how):
    marker = tmp_path / "PWNED"
    p = pth_with_meta(tmp_path / "e.pth", touch_meta(marker))
    before = window.loaded
    ok, seen = _open_via_menu(qtbot, window, monkeypatch, p, how)
    assert not ok and len(seen) == 1
    assert "os:system" in seen[0]["text"] and str(p) in seen[0]["text"] and seen[0]["default"]
    assert window.loaded is before and not marker.exists()      # Enter/Escape answer No too
    assert "not opened: os:system was not run" in window.status_text()
    assert window.mm is not None                                 # the previous model still renders


def test_open_checkpoint_yes_runs_the_py_file_and_loads(qtbot, window, tmp_path, monkeypatch):
    marker = tmp_path / "RAN"
    p = py_beside(tmp_path, marker)
    with signal(qtbot, window.modelChanged):
        ok, seen = _open_via_menu(qtbot, window, monkeypatch, p, "Yes")
    assert ok and len(seen) == 1 and str(tmp_path / "evil.py") in seen[0]["text"]
    assert marker.exists() and type(window.loaded.model).__name__ == "ShapesNet"


def test_recent_entry_asks_too(qtbot, window, tmp_path):
    marker = tmp_path / "PWNED"
    p = pth_with_meta(tmp_path / "e.pth", touch_meta(marker, "subprocess:getoutput"))
    before = window.loaded
    seen = []
    answer_trust_dialog(qtbot, "No", seen)
    window.session.open_recent(str(p), "")
    assert len(seen) == 1 and "subprocess:getoutput" in seen[0]["text"]
    assert window.loaded is before and not marker.exists()
    assert "not opened" in window.status_text()


@pytest.mark.parametrize("arch_in", ["what", "arch"])
def test_recent_entry_whose_architecture_is_code_asks(qtbot, window, tmp_path, arch_in):
    """A Recent entry is read from the settings file: its .py architecture needs the user's Yes."""
    marker = tmp_path / "RAN"
    ckpt = py_beside(tmp_path, marker)
    evil = f"{tmp_path / 'evil.py'}:Net"
    what, arch = (evil, "") if arch_in == "what" else (str(ckpt), evil)
    before = window.loaded
    seen = []
    answer_trust_dialog(qtbot, "No", seen)
    window.session.open_recent(what, arch)
    assert len(seen) == 1 and str(tmp_path / "evil.py") in seen[0]["text"] and seen[0]["default"]
    assert window.loaded is before and not marker.exists()
    assert "not opened" in window.status_text()
    seen.clear()
    answer_trust_dialog(qtbot, "Yes", seen)
    with signal(qtbot, window.modelChanged):
        window.session.open_recent(what, arch)
    assert len(seen) == 1 and marker.exists() and type(window.loaded.model).__name__ == "ShapesNet"
