"""The cnnvis-gui main window: a thin shell that wires one controller per concern.

The window owns the Qt-free :class:`ViewerState` (what the user looks at) and the widgets
(:mod:`.layout`); the work is done by its controllers, each in its own module:

=================  =========================================================================
``session``        :class:`~.session.ModelSession` -- the model: loading, its map, model dialogs
``inputs``         :class:`~.inputs.InputController` -- sources, frames, opening in threads
``render``         :class:`~.render.RenderLoop` -- requests to the worker, drawing the results
``atlas``          :class:`~.atlas_control.AtlasController` -- the atlas dock, pattern mode
``dissect``        :class:`~.dissect_control.DissectController` -- network dissection: labels, summary
``saver``          :class:`~.saving.Saver` -- panes as PNG, raw arrays as .npz
``navigator``      :class:`~.navigation.Navigator` -- keys and layer / image steps
``persistence``    :class:`~.settings.Persistence` -- the user's saved settings
``status``         :class:`~.status.StatusLine` -- the status bar
=================  =========================================================================

No controller gets the window or reaches another through it.  Each takes the state it reads
(:class:`ViewerState`, the :class:`ModelState` the session writes, the :class:`InputFeed` the
input controller writes), the widgets it draws into and a few services (the status line, the
settings); what one needs done by another is a signal or a callable wired once, here.

Every state change or new frame is snapshotted into a request and submitted; the worker
coalesces them; results come back through a signal and are only *drawn* on this thread.
"""
from __future__ import annotations

import sys
from functools import partial

from PyQt5 import QtCore, QtWidgets

from .atlas_control import AtlasController
from .dissect_control import DissectController
from .inputs import InputController
from .layout import add_dock, add_dock_below_tree, build_menus, build_panels, fit_tree_dock
from .navigation import KeyFilter, Navigator
from .render import RenderLoop, RenderViews
from .saving import Saver
from .session import ModelSession
from .settings import Persistence, make_settings
from .state import InputFeed, ModelState, ViewerState
from .status import StatusLine
from .timing import calm_gc

__all__ = ["MainWindow", "make_settings", "RENDER_FIELDS"]

#: state fields whose change needs a new render
RENDER_FIELDS = {"layer", "unit", "method", "backprop_on", "compare", "method2", "filter", "sign", "clip",
                 "percentile", "overlay",
                 "cam_layer", "objective", "gamma", "per_unit", "grid_mode", "frozen_unit", "smoothgrad", "noise",
                 "ig_steps"}


class MainWindow(QtWidgets.QMainWindow):
    """The viewer.  ``frameDrawn`` fires after each finished render is on screen."""

    frameDrawn = QtCore.pyqtSignal(object)
    renderFailed = QtCore.pyqtSignal(str)
    modelChanged = QtCore.pyqtSignal()
    atlasRestored = QtCore.pyqtSignal(object)          # the AtlasScan reopened from the cache at model load
    patternsReady = QtCore.pyqtSignal(object)          # PatternTiles of a layer, computed (s: pattern mode)
    sourceOpened = QtCore.pyqtSignal(object)           # a source opened by open_path is in use

    #: how long close waits for the render worker's step; a step still running then is given up on
    #: (worker.stop_thread: the thread is kept referenced; the app then exits the process)
    STOP_TIMEOUT_MS = 10000

    def __init__(self, state: ViewerState | None = None, settings: QtCore.QSettings | None = None,
                 parent=None, remember: bool = True):
        super().__init__(parent)
        self.state = state or ViewerState()
        self.settings = settings if settings is not None else make_settings()
        self.setWindowTitle("cnnvis-gui")
        self.closed = False
        from ..core import colormap_lut
        self.lut = colormap_lut("inferno")

        # the controllers: each gets the state, its widgets and services; what one needs of another is wired here
        self.model_state, self.feed = ModelState(), InputFeed()    # written by the session / the inputs alone
        st, model, feed, closed = self.state, self.model_state, self.feed, (lambda: self.closed)
        self.persistence = p = Persistence(st, self.settings, remember=remember)
        self.status = status = StatusLine(st, feed, self.statusBar(), parent=self,
                                          process_rate=lambda: self.render.process_rate.rate())
        self.inputs = InputController(st, feed, p, status, lambda: self.render.request_render(), closed, parent=self)
        self.navigator = Navigator(st, model, self.inputs.step_image, lambda: self.atlas.toggle_patterns(),
                                   self.show_message, self.sync_controls, self.close)
        build_panels(self)
        self.session = ModelSession(st, model, feed, p, status, self.tree, (self.bp1, self.bp2),
                                    lambda *a: self.render.worker.set_model(*a), self.inputs.open_path,
                                    self.setWindowTitle, closed, parent=self)
        p.open_recent = self.session.open_recent
        views = RenderViews(self.input_pane, self.grid, self.unit_pane, self.bp1, self.bp2, self.zoom_unit,
                            self.zoom_bp, self.predictions)
        self.atlas = AtlasController(st, model, feed, p, status, self.grid, self.splitter, partial(add_dock, self),
                                     lambda: self.render.update_grid_title(), lambda: self.render.redraw_grid(),
                                     closed, parent=self)
        self.render = RenderLoop(st, model, feed, status, views, self.atlas.grid_mosaic, self.atlas.pattern_title,
                                 closed, parent=self)
        self.dissect = DissectController(st, model, p, status, partial(add_dock_below_tree, self),
                                         lambda: self.atlas.demo_worker is not None, closed, parent=self)
        self.saver = Saver(st, model, views, lambda: self.render.last_result, self.grab, p, status, parent=self)
        for signal, slot in ((status.errorShown, self.renderFailed), (self.inputs.sourceOpened, self.sourceOpened),
                             (self.atlas.restored, self.atlasRestored), (self.atlas.patternsReady, self.patternsReady),
                             (self.render.drawn, self.frameDrawn),
                             # a model: what belonged to the old one goes; the new one's map sets the views up
                             (self.render.worker.modelReady, self.session.on_model_ready),
                             (self.session.loading, self.atlas.reset),
                             (self.session.shown, partial(fit_tree_dock, self)),
                             (self.session.shown, self.render.update_grid_title),
                             (self.session.shown, self.atlas.on_model_ready), (self.session.shown, self.modelChanged),
                             (self.modelChanged, self.dissect.on_model_ready),
                             (self.session.shown, self.render.request_render)):
            signal.connect(slot)
        build_menus(self)
        p.restore(self)
        self.sync_controls()
        if p.refused:
            self.show_error(p.refused)

        # The worker runs Python-heavy hook code: hand the GIL over more often (default 5 ms)
        # so the GUI thread never waits long for it.
        if sys.getswitchinterval() > 0.001:
            sys.setswitchinterval(0.001)
        self.render.start()
        self.state.connect(self._on_state)
        self._resize_timer = QtCore.QTimer(self)     # re-tile the grid to the new shape, once settled
        self._resize_timer.setSingleShot(True)
        self._resize_timer.setInterval(200)
        self._resize_timer.timeout.connect(self.render.on_resized)
        self._keys = KeyFilter(root=self, handle_key_event=self.navigator.handle_key_event)
        QtWidgets.QApplication.instance().installEventFilter(self._keys)
        self._apply_zoom()
        self._apply_compare()
        calm_gc()

    # ================================================================== the state drives the views
    def _on_state(self, names):
        if "layer" in names:
            n = self.session.units(self.state.layer)
            upd = {"n_units": n}
            if self.state.unit >= n:
                upd["unit"] = max(0, n - 1)
            self.state.update(**upd)
        if names & {"layer", "frozen_unit"}:
            self.navigator.fit_objective()
        if names & {"patterns", "layer"}:
            self.atlas.apply_patterns()
        if names & {"grid_mode", "layer", "patterns"}:
            self.render.update_grid_title()
        if "dissection" in names:
            self.render.update_unit_title()
        if "zoom" in names:
            self._apply_zoom()
        if "compare" in names:
            self._apply_compare()
        if "show_help" in names:
            self._apply_help()
        if "use_camera" in names:
            self.inputs.switch_source()
        if names & {"filter", "overlay", "compare", "objective"}:
            self.sync_controls()
        if "frozen_frame" in names:
            self.show_message("frame frozen (f to resume)" if self.state.frozen_frame else "live input")
        if names & RENDER_FIELDS:
            self.render.request_render()
        self.atlas.follow(names)

    def _apply_zoom(self):
        z = self.state.zoom
        self.center.setCurrentIndex({"normal": 0, "unit": 1, "backprop": 2}[z])
        if self.render.last_result is not None:
            self.render.draw_zoom(self.render.last_result)

    def _apply_compare(self):
        self.bp2.setVisible(self.state.compare)

    def _apply_help(self):
        if self.state.show_help:
            self.help_overlay.setGeometry(self.centralWidget().geometry())
            self.help_overlay.raise_()
            self.help_overlay.show()
        else:
            self.help_overlay.hide()

    def showEvent(self, ev):
        super().showEvent(ev)
        if not getattr(self, "_fitted", False):
            self._fitted = True
            from .settings import fit_on_screen
            fit_on_screen(self)             # a laptop screen: nothing outside the screen
            # the window manager adds its title bar and frame after the window is shown: fit the
            # frame again once they are known (1280x720 under openbox: the status bar fell off-screen)
            for ms in (150, 600, 1500):
                QtCore.QTimer.singleShot(ms, self._fit_frame)

    def _fit_frame(self):
        from .settings import fit_on_screen
        if self.isVisible() and not (self.isMaximized() or self.isFullScreen()):
            fit_on_screen(self)

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        if hasattr(self, "_resize_timer"):
            self._resize_timer.start()
        if self.help_overlay.isVisible():
            self.help_overlay.setGeometry(self.centralWidget().geometry())

    def sync_controls(self):
        """Show the state's filter / overlay / compare in their controls (without echoing back)."""
        s = self.state
        for w, fn in ((self.compare_box, lambda: self.compare_box.setChecked(s.compare)),
                      (self.overlay_box, lambda: self.overlay_box.setChecked(s.overlay)),
                      (self.filter_box, lambda: self.filter_box.setCurrentIndex(
                          max(0, self.filter_box.findData(s.filter)))),
                      (self.objective_box, lambda: self.objective_box.setCurrentIndex(
                          max(0, self.objective_box.findData(
                              "position" if isinstance(s.objective, tuple) else s.objective))))):
            w.blockSignals(True)
            fn()
            w.blockSignals(False)

    # ================================================================== the window's API (controllers do the work)
    def load_model(self, loaded, layer=None, unit=None, method=None) -> None:
        """Show ``loaded`` (models.LoadedModel-like: .model, .spec, .labels, .name, .notes)."""
        self.session.load_model(loaded, layer=layer, unit=unit, method=method)

    def open_demo(self, name="shapes", images=True) -> bool:
        return self.session.open_demo(name, images=images)

    def open_checkpoint(self, weights=None, arch=None, spec=None, trust_pickle=False, labels=None,
                        trust_code=False):
        return self.session.open_checkpoint(weights=weights, arch=arch, spec=spec, trust_pickle=trust_pickle,
                                            labels=labels, trust_code=trust_code)

    def open_path(self, path, **options) -> bool:
        """Open an image, folder, video, stream URL or camera index as the input (in a thread)."""
        return self.inputs.open_path(path, **options)

    def set_source(self, source, camera=False, first=None) -> None:
        self.inputs.set_source(source, camera=camera, first=first)

    def set_frame(self, bgr) -> None:
        self.inputs.set_frame(bgr)

    def active_source(self):
        return self.inputs.active_source()

    def open_camera_async(self, index=None) -> None:
        self.inputs.open_camera_async(index)

    def request_render(self) -> bool:
        return self.render.request_render()

    def set_demo_atlas(self, on: bool) -> None:
        """Build the demo models' atlas in the background at first start (automation turns it off)."""
        self.atlas.auto_demo = bool(on)

    # ---- services of the controllers (app, automation, the checkpoint dialog)
    hold_after_first_frame = property(lambda self: self.inputs.hold_after_first_frame)
    open_samples = property(lambda self: self.session.open_samples)
    replace_loaded = property(lambda self: self.session.replace_loaded)
    remember_model = property(lambda self: self.persistence.remember_model)
    last_dir = property(lambda self: self.persistence.last_dir)
    set_last_dir = property(lambda self: self.persistence.set_last_dir)

    def handle_key_event(self, ev) -> bool:
        return self.navigator.handle_key_event(ev)

    def run_action(self, action: str, key: str = "") -> None:
        self.navigator.run_action(action, key)

    def step_layer(self, d: int) -> None:
        self.navigator.step_layer(d)

    def step_image(self, d: int) -> None:
        self.inputs.step_image(d)

    def show_atlas(self):
        return self.atlas.show_atlas()

    def atlas_scan_dialog(self):
        return self.atlas.scan_dialog()

    def toggle_patterns(self) -> None:
        self.atlas.toggle_patterns()

    def save_pngs(self, folder) -> list:
        return self.saver.save_pngs(folder)

    def save_npz(self, path):
        return self.saver.save_npz(path)

    def show_message(self, text, warn=False) -> None:
        self.status.show_message(text, warn=warn)

    def show_error(self, text) -> None:
        """Red in the status bar (kept over routine messages a few seconds); emits ``renderFailed``."""
        self.status.show_error(text)

    def status_text(self) -> str:
        return self.status.text()

    # ---- read-only views of the controllers' state (tests, automation)
    worker = property(lambda self: self.render.worker)
    seq = property(lambda self: self.render.seq)
    last_result = property(lambda self: self.render.last_result)
    last_draw_ms = property(lambda self: self.render.last_draw_ms)
    gen = property(lambda self: self.session.gen)
    loaded = property(lambda self: self.session.loaded)
    mm = property(lambda self: self.session.mm)
    device = property(lambda self: self.session.device)
    frame = property(lambda self: self.inputs.frame)
    frame_id = property(lambda self: self.inputs.frame_id)
    source = property(lambda self: self.inputs.source)
    camera = property(lambda self: self.inputs.camera)
    capture_rate = property(lambda self: self.inputs.capture_rate)
    capture_timer = property(lambda self: self.inputs.capture_timer)
    atlas_pane = property(lambda self: self.atlas.pane)
    atlas_dock = property(lambda self: self.atlas.dock)
    atlas_scan = property(lambda self: self.atlas.scan)
    last_error = property(lambda self: self.status.last_error)

    # ================================================================== shutdown
    def shutdown(self) -> None:
        """Stop the worker and the capture cleanly (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.persistence.save(self, atlas_dock=self.atlas.dock)
        except Exception:  # noqa: BLE001
            pass
        self.status.timer.stop()
        app = QtWidgets.QApplication.instance()
        if app is not None:
            app.removeEventFilter(self._keys)
        self.inputs.shutdown()
        self.render.shutdown(self.STOP_TIMEOUT_MS)
        self.atlas.shutdown(self.STOP_TIMEOUT_MS)
        self.dissect.shutdown()
        self.inputs.close_sources()

    def closeEvent(self, ev):
        self.shutdown()
        super().closeEvent(ev)
