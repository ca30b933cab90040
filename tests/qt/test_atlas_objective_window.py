"""The atlas pane's Objective field in the window: its outcome reaches the status bar (a low dock may hide the
pane's own status line), a bad text as one red line, and the window goes on."""
import pytest

pytest.importorskip("pytestqt")

from ..waits import until  # noqa: E402


def test_the_objective_reaches_the_status_bar_and_a_bad_one_is_one_red_line(qtbot, window, monkeypatch, tmp_path):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))
    pane = window.atlas.show_atlas()
    pane.max_iter = 3
    pane.objective.edit.setText("conv9:1")
    pane.objective.run_button.click()
    until(qtbot, lambda: pane.status.text().startswith("failed:"))
    assert window.status.last_error.startswith("objective: unknown layer 'conv9'")
    assert "\n" not in window.status.last_error and window.status.msg.text().startswith("⚠ objective:")
    pane.objective.edit.setText("conv2:1 - 0.5*conv2:0")
    pane.objective.run_button.click()
    until(qtbot, lambda: pane.status.text().startswith("1 image, objective "))
    assert window.status.msg.text().startswith("objective 'conv2:1 - 0.5*conv2:0': 1 image, objective ")


def test_alt_o_puts_the_cursor_in_the_objective_field(qtbot, window):
    from PyQt5 import QtCore
    pane = window.atlas.show_atlas()
    window.activateWindow()
    window.grid.setFocus()
    until(qtbot, lambda: not pane.objective.edit.hasFocus())
    qtbot.keyClick(window.grid, QtCore.Qt.Key_O, QtCore.Qt.AltModifier)
    until(qtbot, lambda: pane.objective.edit.hasFocus())
