"""When the window asks its worker for a picture, and for which methods (from a mutation run of
qt/render.py's request path: these changes passed every window test)."""
from __future__ import annotations

import numpy as np

from cnnvis_gui.core import ActivationMosaic, overlay, saliency_to_image

from ..waits import idle as settle, signal, until
from .test_window_drawn import assert_image_close, core_frame, drawn, saliency_image


def test_one_backprop_method_unless_compare_is_on(qtbot, window):
    win = window
    res = settle(qtbot, win)
    assert win.state.backprop_on and not win.state.compare
    assert [b.method for b in res.backprops] == [win.state.method]      # no second, hidden backward
    win.state.update(compare=True)
    assert win.request_render() is True            # sent
    res = settle(qtbot, win)
    assert [b.method for b in res.backprops] == [win.state.method, win.state.method2]


def test_no_request_while_the_model_or_its_map_is_missing_nor_after_close(qtbot, window):
    """A key pressed while a model is loading (no model, or no map yet) or after the window
    closed sends nothing to the worker."""
    win = window
    session = win.session
    seq = win.render.seq
    loaded, mm = session.loaded, session.mm
    session.loaded = None                   # a new model is being loaded
    assert win.request_render() is False
    session.loaded, session.mm = loaded, None       # loaded, its map not built yet
    assert win.request_render() is False
    session.mm = mm
    assert win.render.seq == seq                    # nothing was submitted
    win.close()
    assert win.request_render() is False
    assert win.render.seq == seq


def _render(qtbot, win, **changes):
    win.state.update(**changes)
    win.request_render()
    return settle(qtbot, win)


def _differs(a, b, by=10):
    return np.abs(a.astype(int) - b.astype(int)).max() > by


def test_smoothgrad_noise_overlay_and_cam_layer_reach_the_backprop_pane(qtbot, window):
    """Each of these settings changes the picture, exactly as the core computes it here."""
    win = window
    settle(qtbot, win)
    fr = core_frame(win)
    layer, unit = win.state.layer, win.state.unit
    rgb = win.loaded.spec.to_image(fr.input)

    def smooth(noise):
        s = fr.saliency(layer, unit, "guided", smoothgrad=4, noise=noise, seed=0)   # the window's fixed seed
        return saliency_to_image(s.float()[0].numpy(), filter="raw")

    _render(qtbot, win, filter="raw", smoothgrad=4, noise=0.3)
    assert_image_close(drawn(win.bp1), smooth(0.3), what="SmoothGrad x4 at noise 0.3")
    assert _differs(smooth(0.3), saliency_image(fr, layer, unit, "guided", "raw"))
    assert _differs(smooth(0.3), smooth(0.05))
    _render(qtbot, win, noise=0.05)
    assert_image_close(drawn(win.bp1), smooth(0.05), what="SmoothGrad x4 at noise 0.05")

    _render(qtbot, win, smoothgrad=0, overlay=True)     # |saliency| summed over channels, on the input
    mag = fr.saliency(layer, unit, "guided").abs().sum(1)[0].numpy()
    assert_image_close(drawn(win.bp1), overlay(rgb, mag / mag.max(), alpha=0.6), what="overlay")

    _render(qtbot, win, overlay=False, method="gradcam", cam_layer="conv1")
    cam = fr.cam(layer, unit, cam_layer="conv1", method="gradcam")[0].numpy()
    assert_image_close(drawn(win.bp1), overlay(rgb, cam, alpha=0.5), what="Grad-CAM at conv1")
    default = overlay(rgb, fr.cam(layer, unit, method="gradcam")[0].numpy(), alpha=0.5)
    assert _differs(drawn(win.bp1), default)


def test_objective_and_integrated_gradients_steps_reach_the_backprop_pane(qtbot, window):
    win = window
    settle(qtbot, win)
    fr = core_frame(win)
    layer, unit = win.state.layer, win.state.unit

    def core(method, **kw):
        return saliency_to_image(fr.saliency(layer, unit, method, **kw).float()[0].numpy(), filter="raw")

    _render(qtbot, win, filter="raw", objective="max")
    assert_image_close(drawn(win.bp1), core("guided", objective="max"), what="objective max")
    assert _differs(core("guided", objective="max"), core("guided"))
    _render(qtbot, win, objective="sum", method="integrated_gradients", ig_steps=2)
    assert_image_close(drawn(win.bp1), core("integrated-gradients", steps=2), what="IG, 2 steps")
    assert _differs(core("integrated-gradients", steps=2), core("integrated-gradients", steps=32), by=3)


def test_the_grid_is_tiled_for_the_shape_of_its_view(qtbot, window):
    win = window
    win.resize(2400, 300)                       # a wide, low grid view
    until(qtbot, lambda: win._resize_timer.isActive() or win.render.grid_aspect() >= 2)
    res = settle(qtbot, win)                    # (the re-tile the resize asks for, once it settles)
    aspect = win.render.grid_aspect()
    acts = core_frame(win).activations(win.state.layer)[0].numpy()
    want = ActivationMosaic(acts, aspect=aspect, min_tile=8)
    square = ActivationMosaic(acts, aspect=1.0, min_tile=8)
    assert aspect >= 2 or aspect <= 0.5, aspect
    assert (res.mosaic.rows, res.mosaic.cols) == (want.rows, want.cols)
    assert (want.rows, want.cols) != (square.rows, square.cols)


def test_a_failed_render_s_error_clears_as_soon_as_a_newer_request_draws(qtbot, window):
    """The error of a failed request stays only until a newer request's picture is drawn
    (well before the 4 s an error is otherwise held)."""
    win = window
    settle(qtbot, win)
    win.status.ERROR_HOLD_S = 1e9               # held "forever": only the newer request can clear it
    with signal(qtbot, win.renderFailed):
        win.state.update(method="gradcam", cam_layer="no_such_layer")
        win.request_render()
    assert win.status.text().startswith("⚠") and "no_such_layer" in win.status.text()
    _render(qtbot, win, cam_layer=None)
    assert not win.status.text().startswith("⚠"), win.status.text()
    assert "layer conv2, unit 0" in win.status.text()
