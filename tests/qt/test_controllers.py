"""Each controller of the window, built on its own: a ViewerState, the shared holders, stub widgets.

No MainWindow here (issue 28): a controller takes the state and the few widgets and services
it uses, so it can be built and checked alone.
"""
from __future__ import annotations

import types

import numpy as np
import pytest
from PyQt5 import QtCore, QtGui, QtWidgets

from cnnvis_gui.qt.state import InputFeed, ModelState, ViewerState

from .conftest import StillSource, loaded


class StubStatus:
    """The StatusLine's surface, recording what is shown."""

    def __init__(self):
        self.messages, self.errors, self.tasks, self.device = [], [], [], None
        self.last_error = ""

    def show_message(self, text, warn=False):
        self.messages.append(text)

    def show_error(self, text, seq=None):
        self.errors.append(text)
        self.last_error = text

    def error_is_fresh(self, seq=None):
        return False

    def show_task(self, text, done, total):
        self.tasks.append(text)

    def hide_task(self):
        self.tasks.append(None)

    def show_report(self, report):
        pass

    def set_device(self, device):
        self.device = device

    def set_times(self, forward_ms, backward_ms):
        pass


class StubPersistence:
    def __init__(self, settings=None):
        self.values, self.remembered = {}, []
        self.settings = settings if settings is not None else QtCore.QSettings()

    def set(self, key, value):
        self.values[key] = value

    def sync(self):
        pass

    def last_dir(self):
        return "."

    def remember_model(self, what, arch=None):
        self.remembered.append((what, arch))


def _model_map(lm):
    from cnnvis_gui.core.engine import model_map
    return model_map(lm.model, lm.spec)


def _frame():
    return np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- session
def test_model_session_loads_into_the_worker_and_sets_the_views_up_for_the_map(qtbot):
    from cnnvis_gui.qt.session import ModelSession

    state, model, status = ViewerState(), ModelState(), StubStatus()
    sent, titles, cams = [], [], []
    tree = types.SimpleNamespace(set_model_map=lambda mm: None, _select=lambda layer: None)
    pane = types.SimpleNamespace(set_cam_layers=cams.append)
    session = ModelSession(state, model, InputFeed(), StubPersistence(), status, tree, (pane,),
                           set_model=lambda *a: sent.append(a), open_input=lambda p: None, set_title=titles.append)
    lm = loaded()
    with qtbot.waitSignal(session.loading, timeout=1000):
        session.load_model(lm, layer="conv2", unit=3)
    assert model.gen == 1 and model.loaded is lm and model.mm is None
    assert sent[0][:3] == (1, lm.model, lm.spec) and titles == ["cnnvis-gui — tiny"]

    ready = types.SimpleNamespace(gen=1, model_map=_model_map(lm), device="cpu", unavailable=())
    with qtbot.waitSignal(session.shown, timeout=1000):
        session.on_model_ready(ready)
    assert (state.layer, state.unit, state.n_units) == ("conv2", 3, 12)
    assert model.mm is ready.model_map and status.device == "cpu" and cams == [["conv1", "conv2"]]
    stale = types.SimpleNamespace(gen=0, model_map=None, device="x", unavailable=())
    session.on_model_ready(stale)                     # an older model's map: dropped
    assert model.device == "cpu"


# ---------------------------------------------------------------------------------------------- inputs
def test_input_controller_freezes_each_frame_into_the_feed_and_asks_for_a_render(qtbot):
    from cnnvis_gui.qt.inputs import InputController

    state, feed, asked = ViewerState(), InputFeed(), []
    inputs = InputController(state, feed, StubPersistence(), StubStatus(), request_render=lambda: asked.append(1))
    src = StillSource()
    inputs.set_source(src)
    assert feed.source is src and feed.frame_id == 1 and asked == [1]
    assert not feed.frame.flags.writeable and np.array_equal(feed.frame, src.frames[0])
    assert feed.frame is not src.frames[0]                  # a private copy: the source may reuse its buffer
    inputs.poll()                                           # the same frame object again: nothing new
    assert feed.frame_id == 1
    inputs.shutdown()
    inputs.close_sources()
    assert src.closed and feed.source is None


# ---------------------------------------------------------------------------------------------- render
def _views():
    grid_view = types.SimpleNamespace(width=lambda: 400, height=lambda: 200)
    return types.SimpleNamespace(grid=types.SimpleNamespace(view=grid_view))


def test_render_loop_snapshots_the_state_and_feed_into_a_request(qtbot):
    from cnnvis_gui.qt.render import RenderLoop

    state, model, feed = ViewerState(layer="conv2", unit=4, method="gradient"), ModelState(), InputFeed()
    render = RenderLoop(state, model, feed, StubStatus(), _views())
    submitted = []
    render.worker.submit = submitted.append
    assert not render.request_render()                 # no model, no frame yet
    lm = loaded()
    model.gen, model.loaded, model.mm = 3, lm, _model_map(lm)
    feed.frame, feed.frame_id = _frame(), 7
    assert render.request_render()
    req = submitted[-1]
    assert (req.gen, req.frame_id, req.layer, req.unit, req.methods) == (3, 7, "conv2", 4, ("gradient",))
    assert req.frame is feed.frame and req.aspect == 2.0 and req.labels == ("a", "b", "c", "d")
    state.update(compare=True, method2="gradcam")
    render.request_render()
    assert submitted[-1].methods == ("gradient", "gradcam") and submitted[-1].seq == req.seq + 1


# ---------------------------------------------------------------------------------------------- status
def test_status_line_reports_errors_and_the_feed_rates(qtbot):
    from cnnvis_gui.qt.status import StatusLine

    state, feed = ViewerState(), InputFeed()
    bar = QtWidgets.QStatusBar()
    qtbot.addWidget(bar)
    status = StatusLine(state, feed, bar, process_rate=lambda: 12.5)
    with qtbot.waitSignal(status.errorShown, timeout=1000) as sig:
        status.show_error("bad input")
    assert sig.args == ["bad input"] and status.text() == "⚠ bad input" and status.error_is_fresh()
    feed.source = types.SimpleNamespace(is_live=True)
    status.update_rates()
    assert status.proc.text() == "processing 12.5 fps"
    state.update(frozen_frame=True)
    status.update_rates()
    assert status.capture.text() == "capture frozen" and status.proc.text() == "processing on demand"
    status.timer.stop()


# ---------------------------------------------------------------------------------------------- navigation
def test_navigator_runs_key_actions_on_the_state_and_its_callables():
    from cnnvis_gui.qt.navigation import Navigator

    state, model = ViewerState(), ModelState()
    calls = []
    nav = Navigator(state, model, step_image=lambda d: calls.append(("image", d)),
                    toggle_patterns=lambda: calls.append("patterns"), show_message=lambda t: calls.append("msg"),
                    close=lambda: calls.append("close"))
    for action in ("next_image", "prev_image", "toggle_patterns", "quit"):
        nav.run_action(action)
    assert calls == [("image", 1), ("image", -1), "patterns", "close"]
    lm = loaded()
    model.mm = _model_map(lm)
    state.update(layer="conv1", n_units=8)
    nav.step_layer(1)                          # the next stop in forward order: conv1 after its ReLU
    assert state.layer == "relu1"
    nav.run_action("move_down")                # one column (no grid drawn yet): down is the next unit
    assert state.unit == 1


def test_key_filter_hands_the_root_widgets_keys_to_its_handler(qtbot):
    from cnnvis_gui.qt.navigation import KeyFilter

    root, other = QtWidgets.QWidget(), QtWidgets.QWidget()
    child = QtWidgets.QLabel(root)
    qtbot.addWidget(root)
    qtbot.addWidget(other)
    seen = []
    keys = KeyFilter(root=root, handle_key_event=lambda ev: seen.append(ev.text()) or True)
    ev = QtGui.QKeyEvent(QtCore.QEvent.KeyPress, QtCore.Qt.Key_N, QtCore.Qt.NoModifier, "n")
    assert keys.eventFilter(child, ev) and seen == ["n"]
    assert not keys.eventFilter(other, ev)      # another window's keys are its own
    assert not keys.eventFilter(QtWidgets.QLineEdit(root), ev)   # typing in a text box


# ---------------------------------------------------------------------------------------------- atlas
def test_atlas_controller_refuses_pattern_mode_without_a_scan(qtbot):
    from cnnvis_gui.qt.atlas_control import AtlasController

    state, status, redrawn = ViewerState(layer="conv2"), StubStatus(), []
    splitter = QtWidgets.QSplitter()
    qtbot.addWidget(splitter)
    atlas = AtlasController(state, ModelState(), InputFeed(), StubPersistence(), status, grid=None,
                            splitter=splitter, add_dock=lambda dock, area: None, update_grid_title=lambda: None,
                            redraw_grid=lambda: redrawn.append(1))
    atlas.toggle_patterns()
    assert not state.patterns and "no atlas for layer conv2" in status.errors[-1]
    res = types.SimpleNamespace(mosaic="the activations", layer="conv2")
    assert atlas.grid_mosaic(res) == "the activations"
    assert atlas.show_atlas() is None and status.errors[-1] == "open a model first"
    state.update(patterns=True)                 # e.g. set before the model changed
    atlas.apply_patterns()
    assert not state.patterns
    atlas.shutdown(1000)


# ---------------------------------------------------------------------------------------------- dissection
def test_dissect_controller_shows_a_reopened_dissection_through_the_state(qtbot):
    from cnnvis_gui.qt.dissect_control import DissectController

    state, model, status = ViewerState(layer="conv2"), ModelState(gen=2), StubStatus()
    dissect = DissectController(state, model, StubPersistence(), status, add_dock=lambda dock: None)
    assert dissect.dialog() is None and status.errors == ["open a model first"]
    res = types.SimpleNamespace(layers={}, from_cache=True)
    dissect._on_looked_up(1, res)               # an older model's lookup: dropped
    assert state.dissection is None
    dissect._on_looked_up(2, res)
    assert state.dissection is res and "this layer was not dissected" in status.messages[-1]
    dissect.shutdown()


# ---------------------------------------------------------------------------------------------- saving
def test_saver_writes_the_panes_it_was_given(qtbot, tmp_path):
    from cnnvis_gui.core import CnnvisError
    from cnnvis_gui.qt.saving import MIN_SAVED_SIDE, Saver

    img = np.zeros((16, 16, 3), np.uint8)
    pane = types.SimpleNamespace(last_image=img)
    views = types.SimpleNamespace(input_pane=pane, grid=pane, unit_pane=pane, bp1=types.SimpleNamespace(last_image=None),
                                  bp2=pane)
    pixmap = QtGui.QPixmap(20, 10)
    pixmap.fill(QtCore.Qt.black)
    saver = Saver(ViewerState(layer="features.3", unit=2), ModelState(), views, last_result=lambda: None,
                  grab=lambda: pixmap, persistence=StubPersistence(), status=StubStatus())
    paths = saver.save_pngs(tmp_path)
    assert sorted(p.name for p in paths) == ["features_3_u2_grid.png", "features_3_u2_input.png",
                                             "features_3_u2_unit.png", "features_3_u2_window.png"]
    saved = QtGui.QImage(str(tmp_path / "features_3_u2_unit.png"))
    assert saved.width() == MIN_SAVED_SIDE                 # a 16 x 16 map enlarged to a readable size
    with pytest.raises(CnnvisError, match="nothing computed yet"):
        saver.save_npz(tmp_path / "raw")


# ---------------------------------------------------------------------------------------------- settings
def test_persistence_restores_the_view_into_the_state_and_fills_the_recent_menu(qtbot, tmp_path):
    from cnnvis_gui.qt.settings import Persistence

    st = QtCore.QSettings(str(tmp_path / "s.ini"), QtCore.QSettings.IniFormat)
    st.setValue("view/method", "gradcam")
    st.setValue("view/compare", "true")
    st.setValue("view/filter", "no-such-filter")
    state = ViewerState()
    p = Persistence(state, st)
    p.recent_menu, opened = QtWidgets.QMenu(), []
    p.open_recent = lambda what, arch: opened.append((what, arch))
    main = QtWidgets.QMainWindow()
    qtbot.addWidget(main)
    p.restore(main)
    assert state.method == "gradcam" and state.compare and state.filter == ViewerState().filter
    p.remember_model("demo:shapes")
    p.remember_model("/tmp/net.pth", arch="resnet18")
    actions = p.recent_menu.actions()
    assert [a.text() for a in actions] == ["/tmp/net.pth  (resnet18)", "demo:shapes"]
    actions[1].trigger()
    assert opened == [("demo:shapes", "")]
