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
        ("normblur", "signed", "98th pct")
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
