"""The window on a laptop screen, and the small things seen while using it (issue 12)."""
from __future__ import annotations

import cv2
import numpy as np
from PyQt5 import QtCore, QtGui

from ..waits import idle, settled, signal, until
from .conftest import StillSource


def shown(label) -> str:
    """The text a one-line label paints at its current width."""
    return label.fontMetrics().elidedText(label.text(), QtCore.Qt.ElideRight, label.width())


def select(qtbot, win, **kw):
    """Change the state as a control does; the result drawn for it."""
    win.state.update(**kw)
    return idle(qtbot, win)


def test_laptop_sizes_show_every_column_and_the_predictions(qtbot, window):
    for size in ((1280, 720), (1366, 768)):
        window.resize(*size)
        qtbot.wait(50)
        assert window.minimumSizeHint().width() <= size[0] and window.minimumSizeHint().height() <= size[1]
        central = window.centralWidget().geometry()
        for w in (window.bp1, window.predictions, window.grid, window.input_pane, window.unit_pane):
            g = w.geometry()
            top_left = w.mapTo(window, QtCore.QPoint(0, 0))
            assert w.isVisible() and g.width() >= 150 and g.height() >= 60, (size, w, g)
            assert top_left.x() + g.width() <= central.right() + 2, (size, w)
            assert top_left.y() + g.height() <= central.bottom() + 2, (size, w)
    assert window.tree.minimumWidth() <= 160                      # the module tree can be narrowed


def test_headers_say_the_layer_first_and_keep_it_visible(qtbot, window):
    res = select(qtbot, window, layer="conv2", unit=5)
    window.resize(1280, 720)
    qtbot.wait(50)
    assert window.bp1.info.text().startswith("conv2 · #5")
    assert shown(window.bp1.info).startswith("conv2")            # cut at the end, never "co…5"
    h, w = res.input_rgb.shape[:2]
    assert window.input_pane.info.text().startswith(f"{w}×{h}")
    assert window.bp1.title.text() == "guided backprop"


def test_backprop_off_shows_in_the_method_box(qtbot, window):
    box = window.bp1.method_box
    select(qtbot, window, backprop_on=False)
    assert box.currentText() == "off" and "off" in window.bp1.title.text()
    box.setCurrentIndex(box.findData("deconvnet"))                # what choosing it in the combo does
    assert window.state.backprop_on and window.state.method == "deconvnet"
    assert [b.method for b in idle(qtbot, window).backprops] == ["deconvnet"]
    box.setCurrentIndex(box.findData(None))
    assert not window.state.backprop_on and idle(qtbot, window).backprops == ()


def test_a_failed_render_error_goes_when_a_newer_result_is_drawn(qtbot, window, monkeypatch):
    from cnnvis_gui import core

    def broken(*a, **k):
        raise ValueError("cannot draw this gradient")
    monkeypatch.setattr(core, "saliency_to_image", broken)
    with signal(qtbot, window.renderFailed):
        window.state.select_unit(2)
    assert "⚠" in window.status_text()
    monkeypatch.undo()
    select(qtbot, window, layer="conv1")
    assert "⚠" not in window.status_text() and "conv1" in window.status_text()


def test_a_one_value_unit_shows_its_number(qtbot, window):
    res = select(qtbot, window, layer="fc", unit=2)
    pane = window.unit_pane
    assert res.unit_map.shape == (1, 1)
    assert pane.value.isVisible() and not pane.view.isVisible()
    assert f"{float(res.unit_map[0, 0]):.4g}" in pane.value.text()
    select(qtbot, window, layer="conv2")
    assert pane.view.isVisible() and not pane.value.isVisible()


def test_the_module_computing_the_output_gets_the_class_labels(qtbot, window):
    res = select(qtbot, window, layer="fc")                        # fc is the output of TinyNet
    assert list(res.mosaic.labels) == ["a", "b", "c", "d"]
    res = select(qtbot, window, layer="pool2")
    assert not getattr(res.mosaic, "labels", None)


def test_class_labels_stay_when_the_output_has_nan_and_in_the_gradient_grid(qtbot, window):
    import torch
    from .conftest import TinyNet, loaded
    net = TinyNet()
    with torch.no_grad():
        net.fc.bias[1] = float("nan")                             # class b's score is NaN on every input
    window.load_model(loaded(net))
    idle(qtbot, window)
    for mode in ("activations", "gradients"):
        for layer in ("", "fc"):                                  # the output, and the module computing it
            res = select(qtbot, window, layer=layer, grid_mode=mode)
            assert list(res.mosaic.labels or []) == ["a", "b", "c", "d"], (mode, layer)
        res = select(qtbot, window, layer="pool2", grid_mode=mode)
        assert not getattr(res.mosaic, "labels", None), mode


def test_a_still_image_is_processed_on_demand(qtbot, window):
    for u in (1, 2, 3):
        select(qtbot, window, unit=u)
    window.status.update_rates()
    assert window.status.proc.text() == "processing on demand"


def test_saved_panes_are_readable(qtbot, window, tmp_path):
    select(qtbot, window, layer="conv2", unit=1)
    paths = {p.name.split("_")[-1]: p for p in window.save_pngs(tmp_path)}
    unit = cv2.imread(str(paths["unit.png"]))
    native = window.unit_pane.last_image
    assert min(unit.shape[:2]) >= 256 and unit.shape[0] % native.shape[0] == 0
    k = unit.shape[0] // native.shape[0]
    assert np.array_equal(unit[::k, ::k, ::-1], native)           # whole-pixel enlargement, same values


def test_an_image_step_does_not_keep_an_old_input_error(qtbot, window):
    window.status.ERROR_HOLD_S = 1e9          # however long the new image takes on a loaded machine
    window.show_error("input: something went wrong")
    window.set_source(StillSource(2))
    idle(qtbot, window)
    assert "something went wrong" in window.status_text()          # a non-render error is held a moment


def test_the_backprop_objective_is_chosen_in_the_window(qtbot, window):
    import torch
    from cnnvis_gui.core import Visualizer
    box = window.objective_box
    select(qtbot, window, layer="conv2", unit=3)
    box.setCurrentIndex(box.findData("max"))
    assert window.state.objective == "max"
    box.setCurrentIndex(box.findData("position"))
    assert window.state.objective == (8, 8)                         # the centre of conv2's 16 x 16 maps
    window.unit_pane.item.clicked.emit(3.5, 4.2)                    # what a click on the unit map emits (x, y)
    res = idle(qtbot, window)
    assert window.state.objective == (4, 3) and "objective at y=4, x=3" in window.status_text()
    vis = Visualizer(window.loaded.model, window.loaded.spec)
    frame = vis.forward(torch.from_numpy(np.array(res.raw_input))[None])
    want = frame.saliency("conv2", 3, method="guided", objective=(4, 3))[0].numpy()
    assert np.allclose(res.backprops[0].raw, want, atol=1e-6)
    select(qtbot, window, layer="fc")                               # no 2-D maps there: back to the sum
    assert window.state.objective == "sum" and box.currentData() == "sum"


def test_prediction_percentages_come_before_their_bars(qtbot, window):
    window.resize(1280, 720)
    window.predictions.set_predictions([("Greater Swiss Mountain dog", 0.999), ("tench", 0.001)])
    html = window.predictions.text.text()
    assert html.index("99.9%") < html.index("Greater Swiss") < html.index("bgcolor")   # the number is never cut
    window.resize(1280, 720)
    window.predictions.set_predictions([("Welsh springer spaniel", 0.012), ("Greater Swiss Mountain dog", 0.011)])
    qtbot.wait(50)
    doc = QtGui.QTextDocument()
    doc.setHtml(window.predictions.text.text())
    doc.setDefaultFont(window.predictions.text.font())
    assert doc.toPlainText().split()[:4] == ["1.2%", "Welsh", "springer", "spaniel"]
    pct_width = window.predictions.text.fontMetrics().horizontalAdvance("1.2%")
    assert window.predictions.text.width() > pct_width + 20         # the percentage column is inside the pane
    assert window.bp1.method_box.minimumContentsLength() >= len("Grad-CAM")


def test_opening_a_demo_checkpoint_brings_its_own_sample_images(qtbot, tmp_path):
    import pytest
    from cnnvis_gui import models
    from cnnvis_gui.qt.window import MainWindow
    from .conftest import loaded
    if not all(models.demo_checkpoint(n).is_file() for n in ("shapes", "glyphs")):
        pytest.skip("the demo checkpoints are not built")
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    try:
        with signal(qtbot, win.sourceOpened):
            win.open_demo("shapes")
        assert win.session.samples_shown() == "shapes"
        with signal(qtbot, win.sourceOpened):                       # File → Open checkpoint… does this
            win.open_checkpoint(weights=str(models.demo_checkpoint("glyphs")))
        until(qtbot, lambda: win.session.samples_shown() == "glyphs")
        lm = loaded()
        with signal(qtbot, win.modelChanged):                       # another model on a demo's images: said
            win.session.load_model(lm)
            win.session.offer_samples(lm)
        assert "still the glyphs demo's sample images" in win.status_text()
        assert win.session.samples_shown() == "glyphs"
    finally:
        win.close()


def test_a_models_notice_outlasts_its_first_frames(qtbot, window):
    """A notice of the model just opened (here a loader's note; also "the input is still the glyphs demo's
    sample images") stays in the status bar over the first frames' description: it was drawn over within
    milliseconds.  The hold is lengthened here so that a slow machine cannot outlast it."""
    from .conftest import loaded
    window.status.ERROR_HOLD_S = 600.0
    lm = loaded(name="noted")
    lm.notes = ["a note from the loader"]
    with signal(qtbot, window.modelChanged):
        window.load_model(lm)
    res = idle(qtbot, window)                       # the new model's first frame is drawn
    assert res.gen == window.session.gen
    assert "a note from the loader" in window.status_text()
    window.status.ERROR_HOLD_S = 0.0                # once it has expired, the next frame describes itself
    unit = res.unit
    qtbot.keyClick(window, QtCore.Qt.Key_Right)      # the next unit: a new frame says its own line
    until(qtbot, lambda: settled(window) and window.last_result.unit != unit)
    assert "a note from the loader" not in window.status_text()


def test_the_unit_atlas_can_be_a_column_of_the_window(qtbot, window):
    action = window.atlas_layout_action
    action.trigger()                                               # View → Unit atlas in the main window
    pane = window.atlas.pane
    holder = window.atlas.holder
    assert window.atlas.in_layout and holder.parentWidget() is window.splitter and holder.widget() is pane
    assert pane.isVisible() and not window.atlas.dock.isVisible()
    sizes = window.splitter.sizes()
    assert sizes[3] >= 200 and sizes[1] >= 0.3 * sum(sizes)          # the grid keeps its share
    window.state.select_unit(7)
    assert (pane.layer, pane.unit) == (window.state.layer, 7)      # it follows the selection
    action.trigger()
    assert not window.atlas.in_layout and window.atlas.dock.isVisible() and window.atlas.dock.widget().widget() is pane
    assert not holder.isVisible()
    assert window.persistence.settings.value("atlas/in_layout") in (False, "false")


def test_the_colour_bar_follows_a_live_unit_at_a_bounded_rate(qtbot, window):
    pane, rgb = window.unit_pane, np.zeros((4, 4, 3), np.uint8)
    levels = []
    pane.bar.setLevels = lambda lv: levels.append(tuple(lv))       # what the bar is told to show
    now = [1000.0]
    pane.clock = lambda: now[0]                                     # the pane's clock stands still ...
    pane._bar_levels, pane._bar_time = None, 0.0
    for i in range(20):                                             # ... while 20 live frames arrive
        pane.set_unit(rgb, (0.0, 1.0 + i))
    assert levels == [(0.0, 1.0)]                                   # not a redraw of the axis per frame
    until(qtbot, lambda: levels[-1] == (0.0, 20.0))                 # the last range arrives without a frame
    assert len(levels) == 2
    pane.set_unit(rgb, (0.0, 20.1))                                 # within 2 %: no redraw
    now[0] += 10 * pane.BAR_INTERVAL
    pane.set_unit(rgb, (0.0, 20.3))                                 # within 2 %, however late: no redraw
    assert levels[-1] == (0.0, 20.0)
    pane.set_unit(rgb, (0.0, 30.0))                                 # past the interval: drawn with the frame
    assert levels[-1] == (0.0, 30.0) and len(levels) == 3


def test_the_module_tree_keeps_shapes_whole_and_lets_the_type_scroll_off(qtbot, window):
    tree = window.tree
    header = [tree.headerItem().text(c) for c in range(tree.columnCount())]
    assert header == ["Module", "Output", "Units", "Layout", "Type"]
    name = next(n for n in tree.items if n and tree.visualizable[n] and "conv" in n)
    item = tree.items[name]
    info = window.session.mm[name]
    shape = item.text(1)
    assert shape == "×".join(str(s) for s in info.shape) and item.text(2) == str(info.units)
    assert item.text(3) == info.layout_name == "nchw" and item.text(4) == info.type
    fm = tree.fontMetrics()
    assert tree.columnWidth(1) >= fm.horizontalAdvance(shape)      # never cut to "64×1…"
    assert tree.columnWidth(2) >= fm.horizontalAdvance(item.text(2))
