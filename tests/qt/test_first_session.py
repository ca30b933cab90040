"""A first session on a network, in the window: the first layer, the tree, the labels a narrow pane keeps,
the note over a grid of own-layer gradients, a status line too long for the bar (issue 29)."""
from __future__ import annotations

import numpy as np
import torch
from PyQt5 import QtCore
from torch import nn

from cnnvis_gui.core import InputSpec
from cnnvis_gui.qt.panels import tree_label

from ..waits import idle, signal, until
from .conftest import StillSource, TinyNet, loaded


class Nested(nn.Module):
    """torchvision-style nesting: features.N blocks of conv -> BN -> ReLU6 inside Sequentials."""

    def __init__(self):
        super().__init__()

        def cna(cin, cout, stride=1):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())
        self.features = nn.Sequential(cna(3, 8, 2), nn.Sequential(nn.Sequential(cna(8, 8), cna(8, 16))),
                                      cna(16, 24, 2))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(24, 5))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def _open(qtbot, model, size=(1200, 800), **kw):
    from cnnvis_gui.qt.window import MainWindow
    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(*size)
    win.show()
    lm = loaded(model)
    lm.spec = InputSpec(3, 64, 64)
    lm.labels = ["a short one", "black-and-tan coonhound", "Greater Swiss Mountain dog",
                 "American Staffordshire terrier", "e"]
    with signal(qtbot, win.modelChanged):
        win.load_model(lm, **kw)
    win.set_source(StillSource())
    idle(qtbot, win)
    return win


def test_the_window_opens_on_the_first_view_and_o_u_walk_the_stops(qtbot):
    win = _open(qtbot, TinyNet())
    # TinyNet's stops: relu1, pool1, relu2, pool2, output; the first view is relu2 (conv2 after its ReLU)
    assert win.state.layer == "relu2"
    assert "relu2" in win.grid.title.text()
    for key, want in (("o", "pool2"), ("o", ""), ("o", ""), ("u", "pool2"), ("u", "relu2"), ("U", "conv2"),
                      ("U", "pool1"), ("o", "relu2"), ("O", "pool2")):
        qtbot.keyClick(win, key)
        assert win.state.layer == want, key
    win.close()


def test_tree_rows_say_where_they_are_and_units_stay_whole_at_laptop_size(qtbot):
    torch.manual_seed(0)
    win = _open(qtbot, Nested(), size=(1280, 720))
    tree = win.tree
    assert tree_label("features.1.0.1.2") == "1.0.1.2" and tree_label("layer1.0.downsample.0") == \
        "layer1.0.downsample.0" and tree_label("layer1.0.conv1") == "conv1"
    labels = {n: it.text(0) for n, it in tree.items.items()}
    assert labels["features"] == "features" and labels["features.1"] == "features.1"
    assert labels["features.1.0.1.2"] == "1.0.1.2" and labels["classifier.1"] == "classifier.1"
    assert tree.toolTip() == "" and "features.1.0.1.2" in tree.items["features.1.0.1.2"].toolTip(0)
    # the Units column ends inside the dock's visible width, at the default dock width and narrowed
    heads = [tree.headerItem().text(c) for c in range(tree.columnCount())]
    for width in (None, 260):
        if width is not None:
            win.resizeDocks([win.tree_dock], [width], QtCore.Qt.Horizontal)
            qtbot.wait(50)
        units = heads.index("Units")
        right = tree.header().sectionViewportPosition(units) + tree.columnWidth(units)
        assert right <= tree.viewport().width(), (width, right, tree.viewport().width())
        assert tree.columnWidth(units) >= tree.fontMetrics().horizontalAdvance("Units")
    win.close()


def test_narrow_panes_keep_their_words(qtbot):
    torch.manual_seed(0)
    win = _open(qtbot, Nested(), size=(1280, 720), layer="features.1.0.1")
    # the unit pane: "Unit N" and the layer's name beside it, cut at its start when narrow
    assert win.unit_pane.title.text() == f"Unit {win.state.unit}"
    assert win.unit_pane.info.text() == "of features.1.0.1"
    assert win.unit_pane.info.elide == QtCore.Qt.ElideLeft
    # predictions: long class names wrap instead of running off the pane
    rows = [("black-and-tan coonhound", 0.5), ("Greater Swiss Mountain dog", 0.3), ("a", 0.2)]
    win.predictions.set_predictions(rows)
    label = win.predictions.text
    assert label.wordWrap()
    width = 170
    assert label.heightForWidth(width) > label.heightForWidth(2000)        # wraps when narrow ...
    assert "coonhound" in label.text() and "coonhound" in label.toolTip()   # ... and keeps every word
    # the saliency display's boxes show every choice whole ("normblu" was cut at 1280 x 720)
    from PyQt5 import QtWidgets
    idle(qtbot, win)
    dc = win.display_controls
    for box in (dc.filter_box, dc.sign_box, dc.clip_box):
        opt = QtWidgets.QStyleOptionComboBox()
        box.initStyleOption(opt)
        field = box.style().subControlRect(QtWidgets.QStyle.CC_ComboBox, opt, QtWidgets.QStyle.SC_ComboBoxEditField,
                                           box)
        widest = max(box.fontMetrics().horizontalAdvance(box.itemText(i)) for i in range(box.count()))
        assert field.width() >= widest, (box.currentText(), field.width(), widest)
    win.close()


def test_gradients_at_the_units_own_layer_say_why_there_is_one_tile(qtbot, window):
    s = window.state
    with signal(qtbot, window.frameDrawn):
        qtbot.keyClick(window, "a")
    res = idle(qtbot, window)
    assert res.grid_mode == "gradients" and res.bp == (s.layer, s.unit)
    lit = [u for u in range(res.raw_grid.shape[0]) if np.any(res.raw_grid[u])]
    assert lit == [s.unit]                                   # what the user sees: one lit tile ...
    note = window.grid.note
    assert note.isVisible() and f"unit {s.unit} at its own layer" in note.text()   # ... and why
    unit_map = res.unit_rgb                                  # the unit pane: a flat map (d sum / d map = 1) ...
    assert (unit_map == unit_map[:1, :1]).all() and s.objective == "sum"
    unit_note = window.unit_pane.note                        # ... and why
    assert unit_note.isVisible() and "1 at every position" in unit_note.text() and "flat" in unit_note.text()
    qtbot.keyClick(window, "d")                              # freeze, go down: the gradient spreads
    with signal(qtbot, window.frameDrawn):
        qtbot.keyClick(window, "u")
    res = idle(qtbot, window)
    assert res.layer != res.bp[0] and not window.grid.note.isVisible() and not window.unit_pane.note.isVisible()
    assert sum(bool(np.any(res.raw_grid[u])) for u in range(res.raw_grid.shape[0])) > 1


def test_a_status_line_too_long_for_the_bar_opens_whole(qtbot, window):
    long = ("35 ReLU6 activation calls: generalized rule (guided relu(g)·f'(x) where x > 0, deconvnet relu(g); "
            "activations='relu-only' for the plain gradient) · deconvnet of 'features.13' is input-independent: "
            "no max-pool switch lies between it and the input <b>not bold</b>")
    window.resize(1280, 720)
    window.show_message(long, warn=True)
    msg = window.status.msg
    until(qtbot, lambda: msg.is_cut())
    tip = msg.toolTip()
    assert tip.count("<p") == 2 and "&lt;b&gt;not bold&lt;/b&gt;" in tip      # a paragraph per notice, escaped
    qtbot.mouseClick(msg, QtCore.Qt.LeftButton)
    box = window.status.message_box
    until(qtbot, lambda: box.isVisible())
    assert "input-independent" in box.text() and "&lt;b&gt;" in box.text()
    box.close()


def test_the_deconvnet_pane_says_input_independent_on_a_net_without_switches(qtbot):
    torch.manual_seed(0)
    win = _open(qtbot, Nested(), layer="features.2")
    with signal(qtbot, win.frameDrawn):
        win.state.update(method="deconvnet", backprop_on=True)
    res = idle(qtbot, win)
    notes = [n for n in res.notices if "input-independent" in n]
    assert len(notes) == 1 and notes[0].startswith("deconvnet of 'features.2' is input-independent")
    assert "input-independent" in win.status_text()
    with signal(qtbot, win.frameDrawn):
        win.state.update(method="guided")
    res = idle(qtbot, win)
    assert not any("input-independent" in n for n in res.notices)
    win.close()


def test_scorecam_shows_the_rest_first_its_progress_and_stops_for_a_newer_choice(qtbot, window, monkeypatch):
    """A slow Score-CAM: the other panes come first, the status bar shows how far it is and the time
    left, and choosing another unit stops it (the newest choice only) -- gated so it cannot finish first."""
    import threading
    from cnnvis_gui.core import cams
    monkeypatch.setattr(cams, "SCORECAM_BATCH", 1)            # conv1's 8 channels: 8 masked forwards
    gate, calls = threading.Event(), []
    scores = cams._scores

    def gated(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            assert gate.wait(60), "the test never opened the gate"
        return scores(*a, **k)
    monkeypatch.setattr(cams, "_scores", gated)
    reports, partial_info = [], []
    window.worker.progress.connect(reports.append)
    window.frameDrawn.connect(lambda r: partial_info.append(window.bp1.info.text()) if r.partial else None)
    s = window.state
    s.update(method="scorecam", cam_layer="conv1", backprop_on=True)
    until(qtbot, lambda: any(r.done >= 1 and not r.finished for r in reports) and bool(partial_info))
    assert window.status.task.isVisible() and "Score-CAM" in window.status.task.format()
    assert "left" in window.status.task.format() and "masked input" in window.status.task.toolTip()
    assert partial_info[-1].startswith("computing")          # the grid and unit are drawn, the pane waits
    first = reports[0]
    assert first.done == 0 and first.total == 8 and first.left_s is not None   # the estimate, before any forward
    s.select_unit(3)                                           # a newer choice while Score-CAM runs
    gate.set()
    res = idle(qtbot, window)
    assert res.bp == ("conv2", 3) and res.backprops[0].method == "scorecam" and not res.partial
    stopped = [r for r in reports if r.finished and r.done < r.total]
    assert len(stopped) == 1 and stopped[0].done <= 2          # unit 0's Score-CAM stopped after its 2nd batch
    assert reports[-1].finished and reports[-1].done == 8      # unit 3's ran to the end
    until(qtbot, lambda: not window.status.task.isVisible())


def test_tile_labels_fit_their_tiles_and_a_cut_word_ends_in_an_ellipsis(qtbot):
    """Class names (and dissection concepts) under the tiles: a name wider than its tile shrinks, then ends
    in "…" ("checkerboa" was cut mid-letter at 1280 x 720); the whole name is the label's tooltip."""
    from PyQt5 import QtGui
    torch.manual_seed(0)
    win = _open(qtbot, Nested(), size=(1280, 720), layer="")
    grid = win.grid
    until(qtbot, lambda: len(grid._label_items) == 5)
    idle(qtbot, win)

    def check():
        px = grid.vb.viewPixelSize()[0]
        cut = 0
        for t, name in zip(grid._label_items, ["a short one", "black-and-tan coonhound", "Greater Swiss Mountain dog",
                                               "American Staffordshire terrier", "e"]):
            shown = t.textItem.toPlainText()
            width = QtGui.QFontMetricsF(t.textItem.font()).horizontalAdvance(shown)
            assert width <= t.tile_width / px, (shown, width, t.tile_width / px)
            assert shown == name or (shown.endswith("…") and name.startswith(shown[:-1])), (shown, name)
            assert name in t.toolTip()
            cut += shown != name
        return cut
    wide = check()
    grid.vb.scaleBy((4, 4))                    # zoomed out: the tiles shrink on screen, the labels follow
    qtbot.wait(50)
    assert check() >= wide and grid._label_items[1].textItem.toPlainText() != "black-and-tan coonhound"
    win.close()


def test_a_line_cut_at_its_end_is_cut_between_words(qtbot):
    """A pane's info or the status line cut at its end ends at a word: "deconvnet …" was "deconvnet r…",
    "selected …" was "selecte…"; the whole text stays the tooltip."""
    from cnnvis_gui.qt.panels import ElidedLabel, elide_words
    label = ElidedLabel("35 ReLU6 activation calls: generalized rule (guided relu(g)·f'(x) where x > 0, deconvnet "
                        "relu(g))")
    qtbot.addWidget(label)
    fm = label.fontMetrics()
    words = label.text().split()
    for width in range(60, fm.horizontalAdvance(label.text()), 7):
        label.resize(width, 20)
        shown = label.shown_text()
        assert fm.horizontalAdvance(shown) <= width, (shown, width)
        assert shown.endswith("…")
        body = shown[:-1].split()
        assert body[:-1] == words[:len(body) - 1]
        # the last word shown is whole, but where ending at a word would keep under 60% of what fits
        if body[-1] != words[len(body) - 1].rstrip("·,;:—-("):
            fits = fm.elidedText(label.text(), QtCore.Qt.ElideRight, width)[:-1]
            assert shown[:-1] == fits.rstrip(" ·,;:—-(") and fits.rstrip().rfind(" ") < 0.6 * len(fits), shown
    label.resize(fm.horizontalAdvance(label.text()) + 4, 20)
    assert label.shown_text() == label.text() and label.toolTip()
    assert elide_words(fm, "features.13 · #0", fm.horizontalAdvance("features.13 · #")) == "features.13…"
    assert elide_words(fm, "selected unit 0", fm.horizontalAdvance("selected u…")) == "selected…"
    assert elide_words(fm, "checkerboard", fm.horizontalAdvance("checker…")).startswith("check")  # one word: cut inside
