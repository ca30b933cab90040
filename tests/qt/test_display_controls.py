"""The saliency display's boxes (filter, sign, clip) are a view of the ViewerState, both ways."""
from __future__ import annotations

from cnnvis_gui.qt.display_controls import SaliencyDisplayControls
from cnnvis_gui.qt.state import CLIP_CHOICES, ViewerState


def _make(qtbot):
    s = ViewerState()
    w = SaliencyDisplayControls(s)
    qtbot.addWidget(w)
    return s, w


def test_defaults_are_shown(qtbot):
    s, w = _make(qtbot)
    assert (s.sign, s.clip, s.percentile) == ("signed", "percentile", 98.0)
    assert (w.filter_box.currentText(), w.sign_box.currentText(), w.clip_box.currentText()) == \
        ("raw", "signed", "98th pct")
    assert [w.clip_box.itemText(i) for i in range(w.clip_box.count())] == [c[2] for c in CLIP_CHOICES]
    assert "the 98th (99.5th) percentile of |g|" in w.clip_box.toolTip() and "captum" in w.clip_box.toolTip()


def test_choosing_in_a_box_updates_the_state(qtbot):
    s, w = _make(qtbot)
    seen = []
    s.connect(seen.append)
    w.sign_box.setCurrentIndex(w.sign_box.findText("absolute"))
    w.clip_box.setCurrentIndex(w.clip_box.findText("98% mass"))
    w.filter_box.setCurrentIndex(w.filter_box.findText("gray"))
    assert (s.sign, s.clip, s.percentile, s.filter) == ("absolute", "mass", 98.0, "gray")
    w.clip_box.setCurrentIndex(w.clip_box.findText("max"))
    assert (s.clip, s.percentile) == ("max", 100.0)
    assert seen == [{"sign"}, {"clip"}, {"filter"}, {"clip", "percentile"}]


def test_the_state_shows_in_the_boxes(qtbot):
    s, w = _make(qtbot)
    s.cycle_sign()
    s.cycle_clip()
    assert (w.sign_box.currentText(), w.clip_box.currentText()) == ("positive", "99.5th pct")
    for _ in range(3):
        s.cycle_clip()
    assert (s.clip, s.percentile, w.clip_box.currentText()) == ("percentile", 98.0, "98th pct")   # round trip
    s.update(clip="percentile", percentile=95.0)         # a value from saved settings: shown as it is
    assert w.clip_box.currentText() == "95th pct"
    s.update(sign="negative", filter="raw")
    assert (w.sign_box.currentText(), w.filter_box.currentText()) == ("negative", "raw")


def test_the_window_draws_and_saves_what_the_boxes_say(qtbot, window, tmp_path):
    """Both panes, the saved PNGs and the .npz: the PNGs follow filter / sign / clip, the .npz stays raw."""
    import cv2
    import numpy as np

    from cnnvis_gui.core import saliency_to_image
    from cnnvis_gui.qt.saving import readable

    from .test_window_drawn import settle

    w = window.display_controls
    window.state.update(layer="conv2", unit=1, method="guided", backprop_on=True, compare=True, method2="gradient")
    w.filter_box.setCurrentIndex(w.filter_box.findText("gray"))
    w.sign_box.setCurrentIndex(w.sign_box.findText("negative"))
    w.clip_box.setCurrentIndex(w.clip_box.findText("max"))
    res = settle(qtbot, window)
    for pane, bp in zip((window.bp1, window.bp2), res.backprops):
        want = saliency_to_image(bp.raw, "gray", sign="negative", clip="max")
        np.testing.assert_array_equal(pane.item.image, want)
    assert "gray · negative · max" in window.status_text()
    saved = {p.name: p for p in window.saver.save_pngs(tmp_path)}
    png = cv2.imread(str(saved["conv2_u1_backprop.png"]))[..., ::-1]
    np.testing.assert_array_equal(png, readable(saliency_to_image(res.backprops[0].raw, "gray", sign="negative",
                                                                  clip="max")))
    npz = np.load(window.saver.save_npz(tmp_path / "raw.npz"))
    np.testing.assert_array_equal(npz["backprop_guided"], res.backprops[0].raw)
    assert npz["backprop_guided"].dtype == np.float32 and npz["backprop_guided"].min() < 0   # signed, unclipped
