"""The backprop panes offer every method (grouped), SmoothGrad / IG settings and any two side by side."""
from __future__ import annotations

import numpy as np
import torch

from cnnvis_gui.core import Visualizer
from cnnvis_gui.qt.state import ATTENTION_METHODS, BACKPROP_METHODS, CAM_LAYER_METHODS, CAM_METHODS, METHOD_GROUPS
from cnnvis_gui.qt.window import MainWindow

from ..waits import idle

CORE_NAME = {"input_x_gradient": "input-x-gradient", "integrated_gradients": "integrated-gradients"}


def _choose(qtbot, box, method):
    i = box.findData(method)
    assert i >= 0, method
    box.setCurrentIndex(i)


def test_chooser_lists_every_method_under_its_heading(window):
    box = window.bp1.method_box
    entries = [(box.itemText(i).strip(), box.itemData(i), box.model().item(i).isEnabled())
               for i in range(box.count())]
    assert entries[0] == ("off", None, True)                                  # b's "off", as before
    headings = [t for t, d, _ in entries if d == ""]
    assert headings == ["— gradients —", "— CAMs —"]
    assert all(not enabled for _, d, enabled in entries if d == "")         # headings cannot be chosen
    assert [d for _, d, _ in entries if d] == list(BACKPROP_METHODS)
    cams_at = [d for _, d, _ in entries].index("", 2)
    assert [d for _, d, _ in entries[cams_at + 1:]] == list(METHOD_GROUPS[1][1])


def test_every_method_renders_in_the_pane(qtbot, window):
    for method in BACKPROP_METHODS:
        _choose(qtbot, window.bp1.method_box, method)
        res = idle(qtbot, window)
        bp = res.backprops[0]
        assert bp.method == method
        assert bp.image.dtype == np.uint8 and bp.image.shape == (32, 32, 3)
        # a CNN: rollout and LeGrad say why over the input dimmed, no exception; other methods have no note
        assert window.bp1.note.isVisibleTo(window.bp1) == (method in ATTENTION_METHODS)
        if method in ATTENTION_METHODS:
            assert bp.unavailable and bp.raw.shape == (32, 32) and bp.cam_layer is None
            assert "needs attention layers" in bp.note and window.bp1.note.text() == bp.note
        elif method in CAM_METHODS and method != "guided_gradcam":
            assert bp.raw.shape == (32, 32) and bp.cam_layer == "conv2"
        else:
            assert bp.raw.shape == (3, 32, 32)
        assert window.bp1.cam_box.isVisibleTo(window.bp1) == (method in CAM_LAYER_METHODS)


def test_attention_methods_are_greyed_on_a_cnn_with_the_reason(window):
    for pane in (window.bp1, window.bp2):
        box = pane.method_box
        for m in BACKPROP_METHODS:
            item = box.model().item(box.findData(m))
            assert item.isEnabled() == (m not in ATTENTION_METHODS), m
            if m in ATTENTION_METHODS:
                assert item.text().endswith("(ViT only)")
                assert "needs attention layers that expose their queries and keys" in item.toolTip()
                assert "this network has none" in item.toolTip()


def test_any_two_side_by_side_and_smoothgrad_is_the_cores(qtbot, window):
    window.compare_box.setChecked(True)
    _choose(qtbot, window.bp1.method_box, "integrated_gradients")
    _choose(qtbot, window.bp2.method_box, "scorecam")
    window.bp1.settings.smooth.setValue(3)
    window.bp1.settings.noise.setValue(0.2)
    window.bp1.settings.steps.setValue(5)
    res = idle(qtbot, window)
    assert [b.method for b in res.backprops] == ["integrated_gradients", "scorecam"]
    s = window.state
    assert (s.smoothgrad, s.noise, s.ig_steps) == (3, 0.2, 5)
    assert window.bp2.settings.smooth.value() == 3              # one setting, shown in both panes
    # the same numbers as the core on the same input
    model = window.session.loaded.model
    x = torch.from_numpy(np.array(res.raw_input))[None]
    with Visualizer(model).forward(x) as frame:
        ref = frame.saliency(res.bp[0], res.bp[1], "integrated-gradients", smoothgrad=3, noise=0.2, steps=5,
                             seed=0)[0].numpy()
        cam = frame.cam(res.bp[0], res.bp[1], "conv2", method="scorecam")[0].numpy()
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(res.backprops[0].raw, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
    np.testing.assert_allclose(res.backprops[1].raw, cam, atol=1e-5)


def test_settings_row_shows_what_applies(qtbot, window):
    pane = window.bp1
    _choose(qtbot, pane.method_box, "guided")
    assert pane.settings.isVisibleTo(pane) and not pane.settings.steps.isVisibleTo(pane)
    assert not pane.settings.noise.isVisibleTo(pane)                 # SmoothGrad off: no noise box
    pane.settings.smooth.setValue(2)
    assert pane.settings.noise.isVisibleTo(pane)
    _choose(qtbot, pane.method_box, "integrated_gradients")
    assert pane.settings.steps.isVisibleTo(pane)
    _choose(qtbot, pane.method_box, "layercam")
    assert not pane.settings.isVisibleTo(pane) and not pane.settings.steps.isVisibleTo(pane)
    idle(qtbot, window)


def test_method_settings_persist_and_a_stale_method_is_ignored(qtbot, tmp_path):
    win = MainWindow()
    qtbot.addWidget(win)
    win.state.update(method="gradcam++", method2="integrated_gradients", smoothgrad=6, noise=0.3, ig_steps=12)
    win.close()
    win2 = MainWindow()
    qtbot.addWidget(win2)
    s = win2.state
    assert (s.method, s.method2, s.smoothgrad, s.noise, s.ig_steps) == (
        "gradcam++", "integrated_gradients", 6, 0.3, 12)
    win2.close()
    from cnnvis_gui.qt.settings import make_settings
    st = make_settings()
    st.setValue("view/method", "no-such-method")
    st.sync()
    win3 = MainWindow()
    qtbot.addWidget(win3)
    assert win3.state.method in BACKPROP_METHODS
    win3.close()
