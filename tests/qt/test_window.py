"""The main window, driven the way a user drives it (pytest-qt, offscreen)."""
from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
from PyQt5 import QtCore

from cnnvis_gui.qt import keys as keytable
from cnnvis_gui.qt.window import MainWindow

from ..waits import drawn, idle, signal, until
from .conftest import StillSource, TinyNet, loaded

ROOT = Path(__file__).resolve().parents[2]


def test_first_frame_shows_everything(qtbot, window):
    res = idle(qtbot, window)
    assert res.layer == "conv2"                          # the last conv layer is the default
    assert window.grid.mosaic.n_units == 12
    assert window.input_pane.last_image.shape == (32, 32, 3)
    assert window.bp1.last_image is not None and window.bp1.last_image.dtype == np.uint8
    assert len(window.predictions.rows) == 4 and window.predictions.rows[0][0] in "abcd"
    assert window.unit_pane.last_image.shape == (16, 16, 3)


def test_tree_selection_updates_grid(qtbot, window):
    item = window.tree.items["conv1"]
    window.tree.setCurrentItem(item)
    drawn(qtbot, window, lambda r: r.layer == "conv1")
    assert window.state.layer == "conv1"
    assert window.grid.mosaic.n_units == 8
    assert "conv1" in window.grid.title.text()
    # greyed modules cannot become the layer; the linear layer shows its features as a grid
    window.tree.setCurrentItem(window.tree.items["fc"])
    drawn(qtbot, window, lambda r: r.layer == "fc")
    assert window.grid.mosaic.n_units == 4


def _tile_center_in_view(win, unit):
    x0, y0, w, h = win.grid.mosaic.tile_rect(unit)
    scene_pt = win.grid.item.mapToScene(QtCore.QPointF(x0 + w / 2, y0 + h / 2))
    return win.grid.view.mapFromScene(scene_pt)


def test_click_on_grid_tile_selects_unit(qtbot, window):
    pos = _tile_center_in_view(window, 5)
    qtbot.mouseClick(window.grid.view.viewport(), QtCore.Qt.LeftButton, pos=pos)
    drawn(qtbot, window, lambda r: r.unit == 5)
    assert window.state.unit == 5
    assert window.last_result.bp == ("conv2", 5)
    # the selected outline sits on that tile
    x0, y0, w, h = window.grid.mosaic.tile_rect(5)
    r = window.grid.sel_rect.rect()
    assert (r.x(), r.y(), r.width(), r.height()) == (x0, y0, w, h) and window.grid.sel_rect.isVisible()


def test_click_handler_maps_through_scene(qtbot, window):
    x0, y0, w, h = window.grid.mosaic.tile_rect(7)
    scene_pt = window.grid.item.mapToScene(QtCore.QPointF(x0 + 1.5, y0 + h - 1.5))
    ev = types.SimpleNamespace(button=lambda: QtCore.Qt.LeftButton, scenePos=lambda: scene_pt,
                               accept=lambda: None)
    window.grid.item.mouseClickEvent(ev)
    assert window.state.unit == 7
    # a click on a separator or outside the image selects nothing
    window.grid.item.clicked.emit(-5.0, -5.0)
    assert window.state.unit == 7


def test_hover_shows_unit_stats(qtbot, window):
    import re
    import torch
    res = idle(qtbot, window)
    x0, y0, w, h = window.grid.mosaic.tile_rect(3)
    window.grid.item.hovered.emit(x0 + 1.0, y0 + 1.0)
    text = window.grid.info.text()
    assert "unit 3" in text and "max" in text and "mean" in text
    shown = dict((k, float(v)) for k, v in re.findall(r"(max|mean)\s+(\S+)", text))
    # the numbers are the activation's own: conv2 of the input the model saw, unit 3
    seen = {}
    model = window.loaded.model
    h = model.conv2.register_forward_hook(lambda m, i, o: seen.setdefault("a", o.detach()))
    try:
        with torch.no_grad():
            model(torch.from_numpy(np.array(res.raw_input))[None])
    finally:
        h.remove()
    act = seen["a"][0, 3]
    assert shown["max"] == pytest.approx(float(act.max()), rel=2e-3, abs=1e-4)
    assert shown["mean"] == pytest.approx(float(act.mean()), rel=2e-3, abs=1e-4)


def test_keys_move_selection_and_change_modes(qtbot, window):
    s = window.state
    cols = s.grid_cols
    assert cols > 1
    qtbot.keyClick(window, QtCore.Qt.Key_Right)
    assert s.unit == 1
    qtbot.keyClick(window, "l")
    assert s.unit == 2
    qtbot.keyClick(window, "j")
    assert s.unit == 1
    qtbot.keyClick(window, QtCore.Qt.Key_Down)
    assert s.unit == 1 + cols
    qtbot.keyClick(window, "i")
    assert s.unit == 1
    qtbot.keyClick(window, "L")                     # capitals move 3 at a time (clipped to the row)
    assert s.unit == min(1 + 3, cols - 1)
    qtbot.keyClick(window, QtCore.Qt.Key_Left, QtCore.Qt.ShiftModifier)
    assert s.unit == max(0, min(1 + 3, cols - 1) - 3)
    names = list(window.mm.visualizable_names())
    qtbot.keyClick(window, "u")                     # the stop before conv2 (core.stops) ...
    assert s.layer == "pool1"
    qtbot.keyClick(window, "o")                     # ... the stop after it: conv2 after its ReLU
    assert s.layer == "relu2"
    qtbot.keyClick(window, "U")                     # every module: the one before relu2
    assert s.layer == names[names.index("relu2") - 1] == "conv2"
    qtbot.keyClick(window, "b")                     # guided -> off
    assert not s.backprop_on
    qtbot.keyClick(window, "b")
    assert s.backprop_on and s.method == "gradient"
    qtbot.keyClick(window, "n")
    assert s.method == "deconvnet"
    f0 = s.filter
    qtbot.keyClick(window, "m")
    assert s.filter != f0
    qtbot.keyClick(window, "z")
    assert s.zoom == "unit" and window.center.currentWidget() is window.zoom_unit
    qtbot.keyClick(window, "z")
    assert s.zoom == "backprop" and window.center.currentWidget() is window.zoom_bp
    qtbot.keyClick(window, "t")
    assert s.gamma < 1.0
    qtbot.keyClick(window, "T")
    assert s.per_unit
    qtbot.keyClick(window, "d")
    assert s.frozen_unit == (s.layer, s.unit)
    qtbot.keyClick(window, "a")
    assert s.grid_mode == "gradients"
    res = idle(qtbot, window)
    assert res.grid_mode == "gradients"
    qtbot.keyClick(window, "f")
    assert s.frozen_frame
    qtbot.keyClick(window, "h")
    assert s.show_help and window.help_overlay.isVisible()
    qtbot.keyClick(window, QtCore.Qt.Key_Escape)
    assert not s.show_help and not window.help_overlay.isVisible()
    assert s.zoom == "normal" and s.gamma == 1.0 and not s.per_unit and s.frozen_unit is None
    assert s.grid_mode == "activations" and not s.frozen_frame
    qtbot.keyClick(window, QtCore.Qt.Key_F1)
    assert s.show_help
    qtbot.keyClick(window, QtCore.Qt.Key_F1)
    assert not s.show_help


def test_keys_reach_the_viewer_while_the_tree_has_focus(qtbot, window):
    window.tree.setFocus()
    u = window.state.unit
    qtbot.keyClick(window.tree, QtCore.Qt.Key_Right)
    assert window.state.unit == u + 1


def test_next_previous_image_runs_a_new_forward(qtbot, window):
    src = window.test_source
    res = idle(qtbot, window)
    f0, fid = window.worker.forwards, res.frame_id
    qtbot.keyClick(window, "e")             # the image is read in a thread: wait for it
    res = drawn(qtbot, window, lambda r: r.frame_id > fid)
    assert src.index == 1
    assert res.forwarded and window.worker.forwards == f0 + 1
    qtbot.keyClick(window, QtCore.Qt.Key_PageUp)
    until(qtbot, lambda: src.index == 0 and window.frame is not None and np.array_equal(window.frame, src.frames[0]))
    # unit / method / filter changes on the same frame: backward only, no new forward
    idle(qtbot, window)
    f1 = window.worker.forwards
    window.state.select_unit(3)
    window.state.cycle_filter()
    window.state.update(method="gradcam")
    res = idle(qtbot, window)
    assert window.worker.forwards == f1 and not res.forwarded
    assert res.backprops[0].method == "gradcam" and res.backprops[0].cam_layer == "conv2"


def test_worker_drops_stale_requests_under_rapid_clicking(qtbot, window):
    idle(qtbot, window)
    computed0, submitted0 = window.worker.computed, window.worker.submitted
    for i in range(40):
        window.state.select_unit(i % 12)
        window.state.update(method=("guided", "gradcam", "gradient")[i % 3])
    res = idle(qtbot, window)
    n_req = window.worker.submitted - submitted0
    n_done = window.worker.computed - computed0
    assert n_req >= 40
    assert n_done < n_req and window.worker.dropped > 0
    assert res.unit == window.state.unit and res.backprops[0].method == window.state.method


def test_model_error_shows_in_status_bar_and_window_keeps_working(qtbot, window):
    good = idle(qtbot, window)
    window.loaded.model.fail = True                 # the model now raises on every forward
    with signal(qtbot, window.renderFailed):
        qtbot.keyClick(window, "e")                 # a new image -> forward -> error
    assert "boom" in window.status_text()
    assert window.input_pane.last_image is good.input_rgb     # last good images stay
    window.loaded.model.fail = False
    qtbot.keyClick(window, "e")
    assert drawn(qtbot, window, lambda r: r.frame_id > good.frame_id + 1).forwarded
    # a model that fails from the start (model check) is reported too
    with signal(qtbot, window.renderFailed):
        window.load_model(loaded(TinyNet(fail=True), name="broken"))
    assert "boom" in window.status_text()
    window.load_model(loaded())
    assert idle(qtbot, window).layer == "relu2"        # the first view (core.stops): conv2 after its ReLU


def test_bad_input_and_nan_activations_are_reported(qtbot, window):
    class Broken(StillSource):
        def read(self):
            raise OSError("cannot read image 'x.png'")
    window.set_source(Broken())
    assert "cannot read image" in window.status_text()

    class NaNNet(TinyNet):
        def forward(self, x):
            return super().forward(x * float("nan"))
    window.set_source(StillSource())
    window.load_model(loaded(NaNNet()))
    idle(qtbot, window)
    until(qtbot, lambda: "NaN" in window.status_text())


def test_compare_shows_two_methods(qtbot, window):
    window.compare_box.setChecked(True)
    res = idle(qtbot, window)
    assert [b.method for b in res.backprops] == [window.state.method, window.state.method2]
    assert window.bp2.isVisible()


def test_save_png_and_npz(qtbot, window, tmp_path):
    idle(qtbot, window)
    paths = window.save_pngs(tmp_path / "png")
    names = {p.name.split("_")[-1] for p in paths}
    assert {"input.png", "grid.png", "unit.png", "backprop.png", "window.png"} <= names
    p = window.save_npz(tmp_path / "a.npz")
    with np.load(p) as z:
        assert z["input"].shape == (3, 32, 32) and z["grid"].shape[0] == 12
        assert any(k.startswith("backprop_") for k in z.files)


def test_closing_leaves_no_thread_running(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.load_model(loaded())
    src = StillSource()
    with signal(qtbot, win.frameDrawn):
        win.set_source(src)
    worker = win.worker
    win.close()
    assert not worker.isRunning()
    assert src.closed
    assert not win.capture_timer.isActive()


def test_settings_persist(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.state.update(filter="gray", compare=True, method2="deconvnet")
    win.close()
    win2 = MainWindow()
    qtbot.addWidget(win2)
    assert win2.state.filter == "gray" and win2.state.compare and win2.state.method2 == "deconvnet"
    win2.close()


def test_help_overlay_and_readme_list_the_same_keys():
    md = (ROOT / "docs" / "sections" / "50-gui.md").read_text(encoding="utf-8")
    assert keytable.markdown_table() in md
    html = keytable.html_table()
    for _names, shown, _action, desc in keytable.KEYS:
        assert shown in html and desc in html


def test_output_layer_grid_shows_class_labels(qtbot, window):
    window.tree.setCurrentItem(window.tree.items[""])
    drawn(qtbot, window, lambda r: r.layer == "")
    assert [t.toPlainText() for t in window.grid._label_items] == ["a", "b", "c", "d"]
    x0, y0, w, h = window.grid.mosaic.tile_rect(2)
    window.grid.item.hovered.emit(x0 + 1.0, y0 + 1.0)
    assert "unit 2 (c)" in window.grid.info.text()


def test_camera_key_without_a_camera_reports_and_keeps_files(qtbot, window, monkeypatch):
    from cnnvis_gui import sources
    monkeypatch.setattr(sources, "cameras", lambda *a, **k: [])
    with signal(qtbot, window.renderFailed):
        qtbot.keyClick(window, "c")
    assert "no camera" in window.status_text()
    assert not window.state.use_camera and window.active_source() is window.test_source


def test_lost_camera_shows_in_status_bar(qtbot, window):
    class Lost(StillSource):
        state = "live"

        def read(self):
            return None
    cam = Lost()
    window.set_source(cam, camera=True)
    assert window.state.use_camera
    cam.state, cam.status = "retrying", "camera 0 lost; retrying in 2 s"
    until(qtbot, lambda: "lost" in window.status_text())
    assert window.input_pane.last_image is not None      # the last good image stays


def test_open_checkpoint_dialog_asks_for_architecture_and_spec(qtbot, window, tmp_path, monkeypatch):
    import torch
    from PyQt5 import QtWidgets
    from cnnvis_gui.qt import dialogs
    models = pytest.importorskip("cnnvis_gui.models")
    if not hasattr(models, "load"):
        pytest.skip("model loading not available")
    path = tmp_path / "tiny.pt"
    torch.save(TinyNet().state_dict(), path)
    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    asked = []

    def fill_checkpoint(self):
        asked.append(self.findChild(QtWidgets.QLabel).text())
        self.arch.setText(f"{Path(__file__).with_name('conftest.py')}:TinyNet")
        return QtWidgets.QDialog.Accepted

    def fill_spec(self):
        self.height_.setValue(32)
        self.width_.setValue(32)
        return QtWidgets.QDialog.Accepted
    monkeypatch.setattr(dialogs.CheckpointDialog, "exec_", fill_checkpoint)
    monkeypatch.setattr(dialogs.SpecDialog, "exec_", fill_spec)
    gen = window.session.gen
    assert dialogs.open_checkpoint_interactive(window)
    drawn(qtbot, window, lambda r: r.gen > gen)
    assert asked and "architecture" in asked[0]
    assert window.loaded.spec.height == 32 and window.mm is not None


def test_q_quits_cleanly(qtbot, window):
    worker = window.worker
    qtbot.keyClick(window, "q")
    assert not window.isVisible() and not worker.isRunning()
    assert window.test_source.closed


def test_atlas_pane_follows_the_selection_and_stops_on_close(qtbot, window):
    pytest.importorskip("cnnvis_gui.qt.atlas_pane")
    pane = window.show_atlas()
    assert pane is not None and window.atlas_dock.isVisible()
    window.state.select_unit(4)
    assert (pane.layer, pane.unit) == (window.state.layer, 4)
    worker = pane.worker
    window.close()
    assert worker is not None and not worker.isRunning()


def test_a_without_a_frozen_unit_explains_what_to_do(qtbot, window):
    qtbot.keyClick(window, "a")
    assert window.state.grid_mode == "gradients"
    assert "press d to freeze" in window.status_text()
    qtbot.keyClick(window, "a")
    qtbot.keyClick(window, "d")
    window.show_message("")
    qtbot.keyClick(window, "a")     # a frozen unit: gradients at other layers are the point, no hint
    assert window.state.grid_mode == "gradients" and "press d to freeze" not in window.status_text()


def test_a_new_frame_records_only_what_the_window_shows_then_the_whole_model_once(qtbot, window):
    """Issue 15: a live frame's forward records the grid layer, the backprop layer and the CAM
    layer only (every other module call keeps PyTorch's hook-free path); the first look at
    another layer of the same frame runs that input once more recording every module, and
    later looks cost no forward.  What is drawn equals the core's answer from a full frame."""
    import torch

    from cnnvis_gui.core import Visualizer

    res = idle(qtbot, window)
    worker = window.worker
    s = window.state
    assert worker._frame.recorded_layers == {res.layer, res.bp[0]}
    model, x = window.session.loaded.model, worker._frame.input.detach()
    full = Visualizer(model).forward(x)
    assert np.array_equal(res.raw_grid, full.activations(res.layer)[0].numpy())
    assert np.array_equal(res.backprops[0].raw, full.saliency(res.bp[0], res.bp[1], "guided")[0].numpy())
    # a CAM reads its own layer: on this frame that layer is recorded by one more forward of the whole model
    f0 = worker.forwards
    s.update(method="gradcam", layer="conv1")
    res = drawn(qtbot, window, lambda r: r.backprops[0].method == "gradcam")
    assert worker.forwards == f0 + 1 and worker._frame.recorded_layers is None
    assert res.backprops[0].cam_layer == full.default_cam_layer(res.bp[0])
    assert np.array_equal(res.raw_grid, full.activations("conv1")[0].numpy())
    cam = full.cam(res.bp[0], res.bp[1], cam_layer=res.backprops[0].cam_layer, method="gradcam")
    assert np.array_equal(res.backprops[0].raw, cam[0].numpy())
    # exploring the frame further: backward only
    for layer in ("relu1", "pool1", "fc"):
        s.update(layer=layer)
        assert not drawn(qtbot, window, lambda r, l=layer: r.layer == l).forwarded
    assert worker.forwards == f0 + 1
    assert np.array_equal(window.last_result.raw_grid, full.activations("fc")[0].numpy())
    # the next frame records what is shown now, nothing more
    fid = window.last_result.frame_id
    qtbot.keyClick(window, "e")
    res = drawn(qtbot, window, lambda r: r.frame_id > fid)
    assert res.forwarded and worker._frame.recorded_layers == {"fc", res.bp[0], res.backprops[0].cam_layer}
    assert torch.is_tensor(worker._frame.input)


def test_a_smaller_layer_keeps_the_selected_unit_inside_it(qtbot, window):
    """conv2 has 12 units, conv1 8: a selected unit 7 stays 7; 8 (one past conv1's last) and 11
    become 7, and every pane shows unit 7 of conv1."""
    s = window.state
    for start, want in ((7, 7), (8, 7), (11, 7)):
        s.update(layer="conv2")
        s.select_unit(start)
        drawn(qtbot, window, lambda r, u=start: (r.layer, r.unit) == ("conv2", u))
        window.tree.setCurrentItem(window.tree.items["conv1"])        # the user picks the smaller layer
        res = drawn(qtbot, window, lambda r: r.layer == "conv1")
        assert (s.unit, s.n_units) == (want, 8), start
        assert res.unit == want and res.bp == ("conv1", want), start
        assert window.unit_pane.title.text() == f"Unit {want}", start
        assert window.unit_pane.info.text() == "of conv1", start
        x0, y0, w, h = window.grid.mosaic.tile_rect(want)
        r = window.grid.sel_rect.rect()
        assert (r.x(), r.y(), r.width(), r.height()) == (x0, y0, w, h), start
        window.tree.setCurrentItem(window.tree.items["conv2"])
        idle(qtbot, window)
