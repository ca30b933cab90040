"""Every key of the documented key table, pressed once in the window, with what the user then sees.

The table (``cnnvis_gui.qt.keys.KEYS``) drives the help overlay and the README; this test
walks all of its key names, so a key added to the table without a check here fails
``test_every_documented_key_is_checked``.
"""
from __future__ import annotations

import numpy as np
import pytest
from PyQt5 import QtCore

from cnnvis_gui.qt import keys as keytable

from ..waits import idle as settle, until

QT_KEYS = {"Left": QtCore.Qt.Key_Left, "Right": QtCore.Qt.Key_Right, "Up": QtCore.Qt.Key_Up,
           "Down": QtCore.Qt.Key_Down, "PgUp": QtCore.Qt.Key_PageUp, "PgDown": QtCore.Qt.Key_PageDown,
           "F1": QtCore.Qt.Key_F1, "Esc": QtCore.Qt.Key_Escape}

ALL_NAMES = [n for names, _shown, _action, _desc in keytable.KEYS for n in names]

MOVES = {"Left": (-1, 0), "j": (-1, 0), "Right": (1, 0), "l": (1, 0), "Up": (0, -1), "i": (0, -1),
         "Down": (0, 1), "k": (0, 1),
         "shift+Left": (-3, 0), "J": (-3, 0), "shift+Right": (3, 0), "L": (3, 0),
         "shift+Up": (0, -3), "I": (0, -3), "shift+Down": (0, 3), "K": (0, 3)}


def press(qtbot, win, name):
    """Press a key as the table names it ("K" is Shift+k, "shift+Left" is Shift+←)."""
    if name.startswith("shift+"):
        qtbot.keyClick(win, QT_KEYS[name[6:]], QtCore.Qt.ShiftModifier)
    elif name in QT_KEYS:
        qtbot.keyClick(win, QT_KEYS[name])
    else:
        assert len(name) == 1
        qtbot.keyClick(win, name)


def expected_move(unit, dx, dy, n, cols):
    """The grid move a user expects: columns and rows clipped to the grid; a move down onto an
    empty cell of a partial last row lands on the lowest unit of that column."""
    rows = -(-n // cols)
    r, c = divmod(unit, cols)
    c = min(max(c + dx, 0), cols - 1)
    r = min(max(r + dy, 0), rows - 1)
    u = r * cols + c
    while u >= n:
        u = u - cols if dy > 0 else n - 1
    return u


def move_start(dx, dy, n, cols):
    """A unit from which the move really goes somewhere."""
    rows = -(-n // cols)
    r = 0 if dy > 0 else (rows - 1 if dy < 0 else min(1, rows - 1))
    c = cols - 1 if dx < 0 else 0
    return min(r * cols + c, (n - 1) if dy <= 0 else n - 1)


def test_every_documented_key_is_checked():
    checked = set(MOVES) | set(OTHER_KEYS) | {"q"}
    assert set(ALL_NAMES) == checked, set(ALL_NAMES) ^ checked


def test_move_keys(qtbot, window):
    """One window, each move key from a unit where that move goes somewhere."""
    s = window.state
    settle(qtbot, window)
    n, cols = window.grid.mosaic.n_units, window.grid.mosaic.cols
    assert n == 12 and cols == s.grid_cols and 2 <= cols < n
    for name, (dx, dy) in MOVES.items():
        start = move_start(dx, dy, n, cols)
        s.select_unit(start)
        settle(qtbot, window)
        press(qtbot, window, name)
        want = expected_move(start, dx, dy, n, cols)
        assert want != start
        assert s.unit == want, (name, start, s.unit, want)
        res = settle(qtbot, window)
        assert res.unit == want and res.bp == ("conv2", want), name          # what is drawn follows
        x0, y0, w, h = window.grid.mosaic.tile_rect(want)
        r = window.grid.sel_rect.rect()
        assert (r.x(), r.y(), r.width(), r.height()) == (x0, y0, w, h) and window.grid.sel_rect.isVisible(), name


# ---------------------------------------------------------------------------- the other keys
def _layer_step(d, want):
    """u / o: the layers a researcher means (core.stops): TinyNet's are relu1, pool1, relu2, pool2, output."""
    def check(qtbot, win, before):
        from cnnvis_gui.core.stops import layer_stops
        assert layer_stops(win.mm) == ["relu1", "pool1", "relu2", "pool2", ""]
        assert win.state.layer == want, (before["layer"], d)
        res = settle(qtbot, win)
        assert res.layer == want and win.grid.mosaic.n_units == win.last_result.raw_grid.shape[0]
        assert (want or "output") in win.grid.title.text()
    return check


def _module_step(d):
    """U / O: every module, in the tree's order."""
    def check(qtbot, win, before):
        names = list(win.mm.visualizable_names())
        want = names[names.index(before["layer"]) + d]
        assert win.state.layer == want
        res = settle(qtbot, win)
        assert res.layer == want and win.grid.mosaic.n_units == win.last_result.raw_grid.shape[0]
        assert (want or "output") in win.grid.title.text()
    return check


def _image_step(d):
    def check(qtbot, win, before):
        src = win.test_source
        want = (before["index"] + d) % src.count
        until(qtbot, lambda: src.index == want and win.frame is not None
              and np.array_equal(win.frame, src.frames[want]))
        res = settle(qtbot, win)
        assert res.forwarded or win.worker.forwards > before["forwards"]
        assert win.worker.forwards > before["forwards"]
        assert not np.array_equal(win.input_pane.item.image, before["input"])
    return check


def _camera(qtbot, win, before):
    until(qtbot, lambda: "no camera" in win.status_text())
    assert not win.state.use_camera and win.active_source() is win.test_source


def _freeze_frame(qtbot, win, before):
    assert win.state.frozen_frame and "frame frozen" in win.status_text()


def _freeze_unit(qtbot, win, before):
    s = win.state
    assert s.frozen_unit == (before["layer"], before["unit"])
    settle(qtbot, win)
    assert win.grid.frozen_rect.isVisible()
    assert "frozen" in win.grid.info.text()


def _backprop_off(qtbot, win, before):
    assert not win.state.backprop_on
    res = settle(qtbot, win)
    assert res.backprops == () and win.bp1.item.image is None and "off" in win.bp1.title.text()


def _next_method(qtbot, win, before):
    assert win.state.method == "gradcam"
    res = settle(qtbot, win)
    assert res.backprops[0].method == "gradcam" and "Grad-CAM" in win.bp1.title.text()


def _next_filter(qtbot, win, before):
    from cnnvis_gui.core import saliency_to_image
    assert win.state.filter == "raw"
    res = settle(qtbot, win)
    np.testing.assert_array_equal(win.bp1.item.image, saliency_to_image(res.backprops[0].raw, "raw"))


def _next_sign(qtbot, win, before):
    from cnnvis_gui.core import saliency_to_image
    assert win.state.sign == "positive" and win.display_controls.sign_box.currentText() == "positive"
    res = settle(qtbot, win)
    np.testing.assert_array_equal(win.bp1.item.image, saliency_to_image(res.backprops[0].raw, "normblur",
                                                                        sign="positive"))
    assert "normblur · positive · clip 98th pct" in win.status_text()


def _next_clip(qtbot, win, before):
    from cnnvis_gui.core import saliency_to_image
    assert (win.state.clip, win.state.percentile) == ("percentile", 99.5)
    assert win.display_controls.clip_box.currentText() == "99.5th pct"
    res = settle(qtbot, win)
    np.testing.assert_array_equal(win.bp1.item.image, saliency_to_image(res.backprops[0].raw, "normblur",
                                                                        percentile=99.5))
    assert "clip 99.5th pct" in win.status_text()


def _zoom(qtbot, win, before):
    assert win.state.zoom == "unit" and win.center.currentWidget() is win.zoom_unit
    settle(qtbot, win)
    np.testing.assert_array_equal(win.zoom_unit.item.image, win.last_result.unit_rgb)


def _gamma(qtbot, win, before):
    assert win.state.gamma == 0.7
    settle(qtbot, win)
    assert "gamma 0.7" in win.status_text()
    assert not np.array_equal(win.grid.item.image, before["grid"])


def _per_unit(qtbot, win, before):
    assert win.state.per_unit
    settle(qtbot, win)
    assert "per-unit" in win.status_text()
    assert not np.array_equal(win.grid.item.image, before["grid"])


def _grid_mode(qtbot, win, before):
    assert win.state.grid_mode == "gradients"
    res = settle(qtbot, win)
    assert res.grid_mode == "gradients" and win.grid.title.text().startswith("Gradients")
    # at the unit's own layer: one lit tile, and a sentence over the grid saying why
    assert res.bp[0] == res.layer and win.grid.note.isVisible() and "its own layer" in win.grid.note.text()


def _patterns_without_atlas(qtbot, win, before):
    assert not win.state.patterns and "no atlas for layer conv2" in win.status_text()


def _help(qtbot, win, before):
    assert win.state.show_help and win.help_overlay.isVisible()


def _reset(qtbot, win, before):
    s = win.state
    assert (s.zoom, s.gamma, s.per_unit, s.frozen_unit, s.show_help) == ("normal", 1.0, False, None, False)
    assert win.center.currentWidget() is win.grid and not win.help_overlay.isVisible()


def _prepare_reset(win):
    win.state.update(zoom="backprop", gamma=0.5, per_unit=True, frozen_unit=("conv2", 3), show_help=True)


#: key name -> (setup or None, check(qtbot, window, before))
OTHER_KEYS = {
    # from conv2 (not a stop) u goes to the stop before it; from conv1, o to the stop after it
    "u": (None, _layer_step(-1, "pool1")), "o": (lambda w: w.state.update(layer="conv1"), _layer_step(1, "relu1")),
    "U": (None, _module_step(-1)), "O": (lambda w: w.state.update(layer="conv1"), _module_step(1)),
    "PgUp": (None, _image_step(-1)), "w": (None, _image_step(-1)),
    "PgDown": (None, _image_step(1)), "e": (None, _image_step(1)),
    "f": (None, _freeze_frame), "d": (lambda w: w.state.select_unit(5), _freeze_unit),
    "b": (None, _backprop_off), "n": (None, _next_method), "m": (None, _next_filter), "z": (None, _zoom),
    "M": (None, _next_sign), "r": (None, _next_clip),
    "t": (None, _gamma), "T": (None, _per_unit), "a": (None, _grid_mode),
    "h": (None, _help), "F1": (None, _help), "Esc": (_prepare_reset, _reset),
    # last: their red messages stay in the status bar a few seconds
    "c": (None, _camera), "s": (None, _patterns_without_atlas),
}


def test_other_keys(qtbot, window, monkeypatch):
    """One window; before each key the view goes back to conv2 #0, guided, normblur, plain."""
    from cnnvis_gui import sources
    monkeypatch.setattr(sources, "cameras", lambda *a, **k: [])
    s = window.state
    for name, (setup, check) in OTHER_KEYS.items():
        s.reset()
        s.update(layer="conv2", unit=0, method="guided", backprop_on=True, filter="normblur", use_camera=False,
                 sign="signed", clip="percentile", percentile=98.0)
        window.show_message("")
        if setup is not None:
            setup(window)
        res = settle(qtbot, window)
        before = {"layer": s.layer, "unit": s.unit, "index": window.test_source.index,
                  "forwards": window.worker.forwards, "input": np.array(window.input_pane.item.image),
                  "grid": np.array(window.grid.item.image), "seq": res.seq}
        press(qtbot, window, name)
        try:
            check(qtbot, window, before)
        except AssertionError as e:
            raise AssertionError(f"key {name!r}: {e}") from e


def test_q_closes_the_window(qtbot, window):
    worker = window.worker
    press(qtbot, window, "q")
    assert not window.isVisible() and not worker.isRunning() and window.test_source.closed
