"""What the window draws, checked against the core computed here, outside the window.

The user sees pixels, not state fields: each test reads the images the panes' pyqtgraph
ImageItems hold (``pane.item.image``) and the text of the predictions panel, and compares
them with the same input pushed through ``cnnvis_gui.core`` (Visualizer, saliency_to_image,
the mosaic formula written out) by the test itself.  A window that builds its render request
from the wrong field (the selection instead of the frozen unit, a fixed filter, no gamma,
no per-unit scaling) draws other pixels and fails here.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PyQt5 import QtCore, QtGui

from cnnvis_gui.core import Visualizer, heatmap, saliency_to_image

from ..waits import drawn as drawn_result, idle as settle


def press(qtbot, win, key, modifier=QtCore.Qt.NoModifier):
    qtbot.keyClick(win, key, modifier)
    return settle(qtbot, win)


def drawn(pane) -> np.ndarray:
    """The image the pane's ImageItem holds (what pyqtgraph paints)."""
    img = pane.item.image
    assert img is not None, "the pane draws nothing"
    return np.asarray(img)


def core_frame(win):
    """The window's current input through the core, here: a fresh Visualizer, a fresh forward."""
    spec = win.loaded.spec
    vis = Visualizer(win.loaded.model, spec=spec)
    return vis.forward(spec.to_tensor(np.array(win.frame)))


def saliency_image(frame, layer, unit, method, filt):
    raw = frame.saliency(layer, unit, method=method).detach().float()[0].numpy()
    return saliency_to_image(raw, filter=filt)


def assert_image_close(got, want, tol=1, what=""):
    assert got.shape == want.shape, (what, got.shape, want.shape)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= tol, f"{what}: {int((diff > tol).sum())} pixels differ by up to {diff.max()}"


def test_backprop_pane_shows_the_core_saliency_of_the_frozen_unit_with_the_chosen_filter(qtbot, window):
    s = window.state
    settle(qtbot, window)
    fr = core_frame(window)
    # the window's default filter is the command line's and the core's: raw (every channel, unblurred)
    assert (s.layer, s.unit, s.method, s.filter) == ("conv2", 0, "guided", "raw")
    assert_image_close(drawn(window.bp1), saliency_image(fr, "conv2", 0, "guided", "raw"), what="default")
    assert "raw · signed · clip 98th pct" in window.status_text()    # the pane's filter, named

    press(qtbot, window, "m")                                    # raw -> gray
    assert_image_close(drawn(window.bp1), saliency_image(fr, "conv2", 0, "guided", "gray"), what="gray")

    press(qtbot, window, QtCore.Qt.Key_Right)                    # unit 1 of conv2
    want_u1 = saliency_image(fr, "conv2", 1, "guided", "gray")
    assert_image_close(drawn(window.bp1), want_u1, what="unit 1")
    press(qtbot, window, "d")                                    # freeze conv2 #1
    press(qtbot, window, QtCore.Qt.Key_Right)                    # browse: unit 2 ...
    press(qtbot, window, "u")                                    # ... and a lower layer
    assert s.layer != "conv2" and s.frozen_unit == ("conv2", 1)
    assert_image_close(drawn(window.bp1), want_u1, what="frozen conv2 #1 while browsing")
    # (and that is not what the current selection would show)
    other = saliency_image(fr, s.layer, s.unit, "guided", "gray")
    assert np.abs(other.astype(int) - want_u1.astype(int)).max() > 10
    press(qtbot, window, "d")                                    # unfreeze: the selection again
    assert_image_close(drawn(window.bp1), saliency_image(fr, s.layer, s.unit, "guided", "gray"),
                       what="after unfreezing")

    press(qtbot, window, "n")                                    # guided -> Grad-CAM: another picture
    press(qtbot, window, "b")                                    # Grad-CAM -> gradient (b's cycle)
    assert s.method == "gradient"
    assert_image_close(drawn(window.bp1), saliency_image(fr, s.layer, s.unit, "gradient", "gray"),
                       what="gradient")


def expected_tiles(acts: np.ndarray, gamma: float, per_unit: bool) -> np.ndarray:
    """The mosaic's documented mapping, written out: 0 black, the layer's (or tile's) max white, then gamma."""
    a = np.maximum(acts.astype(np.float64), 0)
    hi = a.reshape(len(a), -1).max(1)[:, None, None] if per_unit else a.max()
    v = np.where(hi > 0, a / np.where(hi > 0, hi, 1), 0)
    return np.round(255 * np.clip(v, 0, 1) ** gamma).astype(np.uint8)


def tiles_drawn(win, n):
    m = win.grid.mosaic
    img = drawn(win.grid)
    assert img.shape == m.image.shape
    out = []
    for u in range(n):
        x0, y0, w, h = m.tile_rect(u)
        t = img[y0:y0 + h:m.scale, x0:x0 + w:m.scale]           # one pixel per activation
        assert (t[..., 0] == t[..., 1]).all() and (t[..., 1] == t[..., 2]).all()
        out.append(t[..., 0])
    return np.stack(out)


def test_grid_shows_the_layer_with_gamma_and_per_unit_scaling(qtbot, window):
    s = window.state
    settle(qtbot, window)
    acts = core_frame(window).activations("conv2").detach().float()[0].numpy()
    n = acts.shape[0]
    assert window.grid.mosaic.n_units == n
    assert_image_close(tiles_drawn(window, n), expected_tiles(acts, 1.0, False), what="plain")
    press(qtbot, window, "t")
    assert s.gamma == 0.7
    assert_image_close(tiles_drawn(window, n), expected_tiles(acts, 0.7, False), what="gamma 0.7")
    press(qtbot, window, "t")
    assert_image_close(tiles_drawn(window, n), expected_tiles(acts, 0.5, False), what="gamma 0.5")
    press(qtbot, window, "T")
    assert s.per_unit
    assert_image_close(tiles_drawn(window, n), expected_tiles(acts, 0.5, True), what="per unit, gamma 0.5")
    press(qtbot, window, QtCore.Qt.Key_Escape)
    assert_image_close(tiles_drawn(window, n), expected_tiles(acts, 1.0, False), what="after Esc")
    # the per-unit picture really differs from the per-layer one here (the check has teeth)
    assert np.abs(expected_tiles(acts, 1.0, True).astype(int) - expected_tiles(acts, 1.0, False)).max() > 30


def test_unit_pane_and_zoom_show_the_selected_unit(qtbot, window):
    settle(qtbot, window)
    press(qtbot, window, QtCore.Qt.Key_Right)
    press(qtbot, window, QtCore.Qt.Key_Right)
    fr = core_frame(window)
    u = window.state.unit
    umap = fr.activations("conv2").detach().float()[0, u].numpy()
    lo, hi = float(umap.min()), float(umap.max())
    want = heatmap((umap - lo) / (hi - lo), cmap="inferno")
    assert_image_close(drawn(window.unit_pane), want, what=f"unit pane, unit {u}")
    press(qtbot, window, "z")                                   # zoom: the selected unit fills the centre
    assert window.center.currentWidget() is window.zoom_unit
    assert_image_close(drawn(window.zoom_unit), want, what="unit zoom")
    press(qtbot, window, "z")                                   # zoom: the backprop fills the centre
    assert window.center.currentWidget() is window.zoom_bp
    assert_image_close(drawn(window.zoom_bp), saliency_image(fr, "conv2", u, "guided", "raw"),
                       what="backprop zoom")


def shown_predictions(win):
    """(label, percent) rows as the predictions panel shows them (its text, tags stripped)."""
    doc = QtGui.QTextDocument()
    doc.setHtml(win.predictions.text.text())
    text = doc.toPlainText()
    return [(lab, float(p)) for p, lab in re.findall(r"(\d+(?:\.\d+)?)%\s+(\S+)", text)]


def test_predictions_panel_is_the_softmax_of_the_model_output(qtbot, window):
    settle(qtbot, window)
    for _ in range(2):
        spec, model = window.loaded.spec, window.loaded.model
        with torch.no_grad():
            logits = model(spec.to_tensor(np.array(window.frame)))[0].double()
        p = torch.exp(logits - logits.max())
        p = (p / p.sum()).numpy()
        order = np.argsort(-p, kind="stable")
        labels = window.loaded.labels
        want = [(labels[i], round(100 * float(p[i]), 1)) for i in order]
        got = shown_predictions(window)
        assert [g[0] for g in got] == [w[0] for w in want], (got, want)
        assert [g[1] for g in got] == pytest.approx([w[1] for w in want], abs=0.051)
        assert sum(g[1] for g in got) == pytest.approx(100, abs=0.3)
        fid = window.last_result.frame_id
        qtbot.keyClick(window, "e")                                 # the next image: new numbers
        assert drawn_result(qtbot, window, lambda r: r.frame_id > fid).forwarded
