"""Pane headers in a narrow window show a shorter wording, not a cut one (screenshots at 1280 x 720).

The grid's "selected unit 5" read "se…" beside a ViT block's title; the unit pane of DeiT showed the class
token's value and left the distillation token's to the tooltip.  Every variant painted fits its label.
"""
from __future__ import annotations

import numpy as np
import pytest

from cnnvis_gui.qt.panels import ElidedLabel


def _fits(label) -> bool:
    return label.fontMetrics().horizontalAdvance(label.shown_text()) <= label.width()


def test_an_elided_label_paints_the_first_variant_that_fits(qtbot):
    lab = ElidedLabel()
    qtbot.addWidget(lab)
    lab.set_variants(["selected unit 5   frozen 3", "unit 5 · frozen 3", "#5"])
    fm = lab.fontMetrics()
    assert lab.text() == "selected unit 5   frozen 3" and "selected unit 5" in lab.toolTip()
    for text in ("selected unit 5   frozen 3", "unit 5 · frozen 3", "#5"):
        lab.resize(fm.horizontalAdvance(text), 20)
        assert lab.shown_text() == text
    lab.set_variants(["selected unit 12345", "unit 12345"])
    lab.resize(fm.horizontalAdvance("unit 12345") - 1, 20)              # narrower than the last: it is cut
    assert lab.shown_text().endswith("…") and _fits(lab)
    lab.setText("one text")                                              # setText: no shorter variants left
    lab.resize(fm.horizontalAdvance("one") + 2, 20)
    assert lab.shown_text().endswith("…") and lab.text() == "one text"


def test_the_grid_names_the_selected_unit_in_a_narrow_header(qtbot):
    from cnnvis_gui.qt.activation_grid import ActivationGrid
    from cnnvis_gui.qt.state import ViewerState
    from cnnvis_gui.core import ActivationMosaic
    state = ViewerState()
    grid = ActivationGrid(state)
    qtbot.addWidget(grid)
    acts = np.random.default_rng(0).random((8, 4, 4), dtype=np.float32)
    grid.set_mosaic(ActivationMosaic(acts), acts.max(axis=(1, 2)), acts.mean(axis=(1, 2)))
    state.update(unit=5)
    info, fm = grid.info, grid.info.fontMetrics()
    assert info.text() == "selected unit 5" and "yellow outline" in info.toolTip()
    for width, shown in ((200, "selected unit 5"), (fm.horizontalAdvance("unit 5") + 1, "unit 5"), (30, "#5")):
        info.resize(width, 20)
        assert info.shown_text() == shown and _fits(info), width
    state.update(frozen_unit=("", 3))
    info.resize(fm.horizontalAdvance("unit 5 · frozen 3"), 20)
    assert info.text() == "selected unit 5   frozen 3" and info.shown_text() == "unit 5 · frozen 3"
    assert "magenta" in info.toolTip()


@pytest.mark.parametrize("width", [400, 260, 200, 150, 120, 90, 60])
def test_the_unit_pane_shows_both_prefix_tokens_while_they_fit(qtbot, width):
    """DeiT's two prefix tokens: 'CLS 0.357 · dist 0.12' (with the layer when there is room), the class
    token alone only when both do not fit; the tooltip has both values whole."""
    from cnnvis_gui.qt.readouts import UnitPane
    pane = UnitPane()
    qtbot.addWidget(pane)
    pane.set_info("of blocks.5", (0.35712, -0.1203), "unit 0 of blocks.5")
    info, fm = pane.info, pane.info.fontMetrics()
    assert info.text() == "CLS 0.357 · dist -0.12 · of blocks.5"
    assert "CLS 0.35712, dist -0.1203" in info.toolTip() and "distillation" in info.toolTip()
    info.resize(width, 20)
    shown = info.shown_text()
    assert _fits(info), (shown, width)
    if width >= fm.horizontalAdvance("CLS 0.36 · dist -0.12"):
        assert "CLS 0.3" in shown and "dist -0.12" in shown and "…" not in shown, (shown, width)
    elif width >= fm.horizontalAdvance("CLS 0.357"):
        assert shown == "CLS 0.357"


def test_the_unit_pane_without_prefix_cuts_the_layer_at_its_start(qtbot):
    from PyQt5 import QtCore

    from cnnvis_gui.qt.readouts import UnitPane, prefix_names
    pane = UnitPane()
    qtbot.addWidget(pane)
    pane.set_info("of features.1.0.1", (), "unit 0 of features.1.0.1")
    assert pane.info.text() == "of features.1.0.1" and pane.info.elide == QtCore.Qt.ElideLeft
    pane.info.resize(60, 20)
    assert pane.info.shown_text().startswith("…") and _fits(pane.info)
    assert prefix_names(1) == ["CLS"] and prefix_names(2) == ["CLS", "dist"]
    assert prefix_names(5) == ["CLS", "reg1", "reg2", "reg3", "reg4"]
