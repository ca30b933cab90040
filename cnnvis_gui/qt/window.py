"""The cnnvis-gui main window: module tree, input, activation grid, unit, backprop, predictions.

The window owns the Qt-free :class:`ViewerState`, one :class:`RenderWorker` thread and
the input source.  Every state change or new frame is snapshotted into a
:class:`RenderRequest` and submitted; the worker coalesces them.  Finished
:class:`RenderResult` arrays come back through a signal and are only *drawn* here.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets

from ..core import CnnvisError
from . import keys as keytable
from .panels import ActivationGrid, BackpropPane, ImagePane, ModuleTree, Predictions, UnitPane
from .state import METHOD_LABELS, ViewerState
from .worker import RenderRequest, RenderWorker

ORG, APP = "cnnvis-gui", "cnnvis-gui"
SETTINGS_ENV = "CNNVIS_GUI_SETTINGS"
RENDER_FIELDS = {"layer", "unit", "method", "backprop_on", "compare", "method2", "filter", "overlay",
                 "cam_layer", "objective", "gamma", "per_unit", "grid_mode", "frozen_unit"}
PERSISTED = ("method", "compare", "method2", "filter", "overlay")


def make_settings() -> QtCore.QSettings:
    """QSettings of the app; ``$CNNVIS_GUI_SETTINGS`` (an .ini path) redirects them (tests)."""
    path = os.environ.get(SETTINGS_ENV)
    if path:
        return QtCore.QSettings(path, QtCore.QSettings.IniFormat)
    return QtCore.QSettings(ORG, APP)


def calm_gc() -> None:
    """Move everything alive now (torch, Qt, the model) out of the cyclic GC's sight.

    A full collection over torch's and pyqtgraph's millions of objects took 80-200 ms on the
    GUI thread during live runs -- the longest stall by far.  ``gc.freeze`` after a collect
    makes later full collections scan only objects created since.
    """
    import gc
    gc.collect()
    gc.freeze()


class Rate:
    """Events per second over the last couple of seconds."""

    def __init__(self, window=2.0):
        self.window = window
        self.times = collections.deque()

    def tick(self, t=None):
        t = time.perf_counter() if t is None else t
        self.times.append(t)
        while self.times and t - self.times[0] > self.window:
            self.times.popleft()

    def rate(self) -> float:
        if len(self.times) < 2:
            return 0.0
        span = time.perf_counter() - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else 0.0


class _KeyFilter(QtCore.QObject):
    """Application-wide key filter: the viewer's keys work whichever panel has focus."""

    SPECIAL = {QtCore.Qt.Key_Left: "Left", QtCore.Qt.Key_Right: "Right", QtCore.Qt.Key_Up: "Up",
               QtCore.Qt.Key_Down: "Down", QtCore.Qt.Key_PageUp: "PgUp", QtCore.Qt.Key_PageDown: "PgDown",
               QtCore.Qt.Key_F1: "F1", QtCore.Qt.Key_Escape: "Esc"}

    def __init__(self, window):
        super().__init__(window)
        self.window = window

    def eventFilter(self, obj, ev):
        if ev.type() != QtCore.QEvent.KeyPress:
            return False
        w = obj if isinstance(obj, QtWidgets.QWidget) else None
        if w is None or w.window() is not self.window:
            return False
        if isinstance(w, (QtWidgets.QLineEdit, QtWidgets.QAbstractSpinBox, QtWidgets.QPlainTextEdit,
                          QtWidgets.QTextEdit)) or isinstance(QtWidgets.QApplication.activePopupWidget(),
                                                              QtWidgets.QWidget):
            return False
        return self.window.handle_key_event(ev)


class _Loaded:
    """What an input thread hands back: an opened source, or the image a folder stepped to."""

    __slots__ = ("kind", "token", "source", "raw", "frame", "error", "what", "camera")

    def __init__(self, kind, token, source=None, raw=None, frame=None, error=None, what=None, camera=False):
        self.kind, self.token, self.source, self.raw, self.frame = kind, token, source, raw, frame
        self.error, self.what, self.camera = error, what, camera


def _still_frame(src):
    """(frame object as read, a frozen copy) of a still source, or (None, None) for a live one."""
    if getattr(src, "is_live", False):
        return None, None
    raw = src.read()
    if raw is None:
        return None, None
    frame = np.array(raw, copy=True)
    frame.setflags(write=False)
    return raw, frame


class MainWindow(QtWidgets.QMainWindow):
    """The viewer.  ``frameDrawn`` fires after each finished render is on screen."""

    frameDrawn = QtCore.pyqtSignal(object)
    renderFailed = QtCore.pyqtSignal(str)
    modelChanged = QtCore.pyqtSignal()
    atlasRestored = QtCore.pyqtSignal(object)          # the AtlasScan reopened from the cache at model load
    patternsReady = QtCore.pyqtSignal(object)          # PatternTiles of a layer, computed (s: pattern mode)
    _cameraOpened = QtCore.pyqtSignal(object, str)     # from the camera-opening thread
    _inputLoaded = QtCore.pyqtSignal(object)           # _Loaded, from an input-opening / image-decoding thread
    sourceOpened = QtCore.pyqtSignal(object)           # a source opened by open_path is in use
    _atlasLookedUp = QtCore.pyqtSignal(int, object)    # (model gen, AtlasScan or None) from the cache lookup

    def __init__(self, state: ViewerState | None = None, settings: QtCore.QSettings | None = None,
                 parent=None):
        super().__init__(parent)
        self.state = state or ViewerState()
        self.settings = settings if settings is not None else make_settings()
        self.setWindowTitle("cnnvis-gui")
        self.gen = 0
        self.frame_id = 0
        self.seq = 0
        self.loaded = None
        self.mm = None
        self.device = "—"
        self.frame = None
        self.source = None          # files: image / folder / video
        self.camera = None
        self._last_raw = None
        self._source_status = ""
        self._initial = {}
        self._model_notices = []
        self.last_result = None
        self.last_error = ""
        self.atlas_pane = None          # created on first use (Atlas menu): its own worker thread
        self.atlas_dock = None
        self.atlas_scan = None          # the AtlasScan shown (dialog or reopened from the cache)
        self._atlas_dock_restored = False
        self._pattern_worker = None     # PatternWorker, created on the first s with a scan
        self._pattern_tiles = {}        # (scan key, layer, preset) -> PatternTiles
        self._pattern_pending = None    # key being computed
        self._pattern_progress = (0, 0)
        self._pattern_mosaic = None     # (tiles key, rows, cols, n) , ActivationMosaic
        self.capture_rate = Rate()
        self.process_rate = Rate()
        self._closed = False
        self._last_forward_ms = 0.0
        self.last_draw_ms = 0.0
        self._last_draw_t = 0.0
        self._last_drawn_key = None
        self._held_result = None
        # input threads (opening a source, decoding the next image of a folder): see open_path, step_image
        self._io_token = 0              # bumped by every open / new source; older results are dropped
        self._io_lock = threading.Lock()
        self._nav_steps = 0             # image steps asked for and not yet decoded (coalesced)
        self._nav_thread = None
        self._nav_undelivered = 0       # decoded images whose signal has not reached the GUI thread yet
        self._io_threads = set()

        from ..core import colormap_lut
        self._lut = colormap_lut("inferno")
        self._build_panels()
        self._build_menus()
        self._build_status()
        self._restore_settings()

        # The worker runs Python-heavy hook code: hand the GIL over more often (default 5 ms)
        # so the GUI thread never waits long for it.
        if sys.getswitchinterval() > 0.001:
            sys.setswitchinterval(0.001)
        self.worker = RenderWorker()
        self.worker.rendered.connect(self._on_rendered)
        self.worker.failed.connect(self._on_failed)
        self.worker.modelReady.connect(self._on_model_ready)
        self.worker.start()

        self.state.connect(self._on_state)
        self._cameraOpened.connect(self._on_camera_opened)
        self._inputLoaded.connect(self._on_input_loaded)
        self._atlasLookedUp.connect(self._on_atlas_looked_up)
        self.capture_timer = QtCore.QTimer(self)
        self.capture_timer.setInterval(8)
        self.capture_timer.timeout.connect(self._poll_source)
        self.status_timer = QtCore.QTimer(self)
        self.status_timer.setInterval(500)
        self.status_timer.timeout.connect(self._update_rates)
        self.status_timer.start()
        self._draw_timer = QtCore.QTimer(self)
        self._draw_timer.setSingleShot(True)
        self._draw_timer.timeout.connect(self._draw_held)
        self._resize_timer = QtCore.QTimer(self)     # re-tile the grid to the new shape, once settled
        self._resize_timer.setSingleShot(True)
        self._resize_timer.setInterval(200)
        self._resize_timer.timeout.connect(self._on_resized)
        self._keys = _KeyFilter(self)
        QtWidgets.QApplication.instance().installEventFilter(self._keys)
        self._apply_zoom()
        self._apply_compare()
        calm_gc()

    # ================================================================== layout
    def _build_panels(self):
        s = self.state
        self.tree = ModuleTree(s)
        dock = QtWidgets.QDockWidget("Modules", self)
        dock.setObjectName("modules_dock")
        dock.setWidget(self.tree)
        dock.setFeatures(QtWidgets.QDockWidget.DockWidgetMovable | QtWidgets.QDockWidget.DockWidgetFloatable)
        self.addDockWidget(QtCore.Qt.LeftDockWidgetArea, dock)
        self.resizeDocks([dock], [340], QtCore.Qt.Horizontal)
        self.tree.setMinimumWidth(320)
        self.tree_dock = dock

        self.input_pane = ImagePane("Model input")
        self.input_pane.title.setToolTip("the frame as the model sees it: after crop / stretch / letterbox to the input spec")
        self.unit_pane = UnitPane(lut=self._lut)
        self.predictions = Predictions()
        self.grid = ActivationGrid(s)
        self.grid.unitClicked.connect(self.state.select_unit)
        self.zoom_unit = UnitPane(lut=self._lut)
        self.zoom_unit.title.setText("Unit (zoom, z)")
        self.zoom_bp = ImagePane("Backprop (zoom, z)")
        self.center = QtWidgets.QStackedWidget()
        for w in (self.grid, self.zoom_unit, self.zoom_bp):
            self.center.addWidget(w)
        self.bp1 = BackpropPane(s, "method")
        self.bp2 = BackpropPane(s, "method2")
        self.compare_box = QtWidgets.QCheckBox("compare two methods")
        self.compare_box.toggled.connect(lambda on: self.state.update(compare=on))
        self.filter_box = QtWidgets.QComboBox()
        for f in ("raw", "gray", "norm", "normblur"):
            self.filter_box.addItem(f, f)
        self.filter_box.setToolTip("display filter for gradients (m cycles)")
        self.filter_box.currentIndexChanged.connect(lambda i: self.state.update(filter=self.filter_box.itemData(i)))
        self.overlay_box = QtWidgets.QCheckBox("overlay on input")
        self.overlay_box.setToolTip("show gradient magnitude over the input (Grad-CAM is always overlaid)")
        self.overlay_box.toggled.connect(lambda on: self.state.update(overlay=on))

        left = QtWidgets.QSplitter(QtCore.Qt.Vertical)
        left.addWidget(self.input_pane)
        left.addWidget(self.unit_pane)
        left.addWidget(self.predictions)
        left.setStretchFactor(0, 3)
        left.setStretchFactor(1, 3)
        left.setStretchFactor(2, 1)

        right = QtWidgets.QWidget()
        rl = QtWidgets.QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.setSpacing(3)
        opts = QtWidgets.QHBoxLayout()
        opts.addWidget(QtWidgets.QLabel("filter"))
        opts.addWidget(self.filter_box)
        opts.addWidget(self.overlay_box)
        opts.addStretch(1)
        rl.addLayout(opts)
        rl.addWidget(self.compare_box)
        self.bp_split = QtWidgets.QSplitter(QtCore.Qt.Vertical)
        self.bp_split.addWidget(self.bp1)
        self.bp_split.addWidget(self.bp2)
        rl.addWidget(self.bp_split, 1)

        self.splitter = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.center)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 5)
        self.splitter.setStretchFactor(2, 2)
        self.splitter.setSizes([300, 700, 320])
        for w in (left, self.center, right):
            w.setMinimumWidth(200)
        self.setCentralWidget(self.splitter)

        self.help_overlay = QtWidgets.QLabel(self)
        self.help_overlay.setTextFormat(QtCore.Qt.RichText)
        self.help_overlay.setText(keytable.html_table())
        self.help_overlay.setAlignment(QtCore.Qt.AlignTop | QtCore.Qt.AlignLeft)
        self.help_overlay.setStyleSheet("QLabel { background: rgba(10,10,20,225); color: #eee; padding: 24px;"
                                        " font-size: 13px; border: 1px solid #555; }")
        self.help_overlay.hide()
        self._sync_controls()

    def _build_menus(self):
        mb = self.menuBar()
        fm = mb.addMenu("&File")
        self._act(fm, "Open &checkpoint…", self.open_checkpoint_dialog, "Ctrl+O")
        self.recent_menu = fm.addMenu("&Recent models")
        demo = fm.addMenu("&Demo models")
        for name in ("shapes", "glyphs"):
            self._act(demo, name, lambda _=False, n=name: self.open_demo(n))
        fm.addSeparator()
        self._act(fm, "Open &image…", self.open_image_dialog, "Ctrl+I")
        self._act(fm, "Open &folder…", self.open_folder_dialog, "Ctrl+D")
        self._act(fm, "Open &video…", self.open_video_dialog)
        self._act(fm, "Choose c&amera…", self.choose_camera_dialog)
        fm.addSeparator()
        self._act(fm, "&Save panes as PNG…", self.save_pngs_dialog, "Ctrl+S")
        self._act(fm, "Save raw arrays (.&npz)…", self.save_npz_dialog, "Ctrl+Shift+S")
        fm.addSeparator()
        self._act(fm, "&Quit", self.close, "Ctrl+Q")
        mm = mb.addMenu("&Model")
        self._act(mm, "Edit input &spec…", self.edit_spec_dialog)
        self._act(mm, "Edit &labels…", self.edit_labels_dialog)
        am = mb.addMenu("&Atlas")
        self._act(am, "&Scan a folder for each unit's top images…", self.atlas_scan_dialog)
        self._act(am, "Show the unit &atlas pane", self.show_atlas)
        vm = mb.addMenu("&View")
        vm.addAction(self.tree_dock.toggleViewAction())
        for _names, shown, action, desc in keytable.KEYS:
            if action.startswith("move") or action in ("quit",):
                continue
            a = vm.addAction(f"{desc}\t{shown}")
            a.triggered.connect(lambda _=False, act=action: self.run_action(act))
        hm = mb.addMenu("&Help")
        self._act(hm, "&Keys (h, F1)", lambda: self.run_action("toggle_help"))
        self._act(hm, "&About", self._about)
        self._fill_recent()

    def _act(self, menu, text, slot, shortcut=None):
        a = menu.addAction(text)
        a.triggered.connect(lambda _=False: slot())
        if shortcut:
            a.setShortcut(QtGui.QKeySequence(shortcut))
        return a

    def _build_status(self):
        sb = self.statusBar()
        from .panels import ElidedLabel
        self.sb_msg = ElidedLabel("starting…")
        self.sb_capture = QtWidgets.QLabel("capture — fps")
        self.sb_proc = QtWidgets.QLabel("processing — fps")
        self.sb_times = QtWidgets.QLabel("fwd — ms  bwd — ms")
        self.sb_device = QtWidgets.QLabel("device —")
        sb.addWidget(self.sb_msg, 1)
        for w in (self.sb_capture, self.sb_proc, self.sb_times, self.sb_device):
            w.setStyleSheet("QLabel { padding: 0 6px; }")
            sb.addPermanentWidget(w)

    # ================================================================== model
    def load_model(self, loaded, layer=None, unit=None, method=None) -> None:
        """Show ``loaded`` (models.LoadedModel-like: .model, .spec, .labels, .name, .notes)."""
        self.loaded = loaded
        self.gen += 1
        self.mm = None
        self._reset_atlas()
        self._initial = {k: v for k, v in (("layer", layer), ("unit", unit), ("method", method)) if v is not None}
        self._model_notices = [str(n) for n in (getattr(loaded, "notes", None) or [])]
        name = getattr(loaded, "name", "model")
        self.setWindowTitle(f"cnnvis-gui — {name}")
        self.show_message(f"loading {name} …")
        self.worker.set_model(self.gen, loaded.model, loaded.spec)

    def _on_model_ready(self, ready):
        if ready.gen != self.gen or self._closed:
            return
        self.mm = ready.model_map
        self.device = ready.device
        self.sb_device.setText(f"device {ready.device}")
        names = list(self.mm.visualizable_names())
        init = self._initial
        layer = init.get("layer")
        if layer is not None:
            from ..core import CnnvisError
            try:
                info = self.mm[layer]            # the core's message: nearest names, valid choices
            except CnnvisError as e:
                self.show_error(str(e))
                layer = None
            else:
                layer = info.name
                if layer not in names:
                    self.show_error(f"layer {info.name or 'output'!r} cannot be shown: {info.reason}")
                    layer = None
        if layer is None:
            layer = self.mm.default_layer if self.mm.default_layer in names else (names[-1] if names else "")
        self.tree.set_model_map(self.mm)
        cams = [i.name for i in self.mm if getattr(i, "is_conv", False)]
        self.bp1.set_cam_layers(cams)
        self.bp2.set_cam_layers(cams)
        upd = dict(layer=layer, frozen_unit=None, cam_layer=None)
        if "method" in init:
            upd.update(method=init["method"], backprop_on=True)
        n = self._units(layer)
        upd["n_units"] = n
        upd["unit"] = max(0, min(int(init.get("unit", 0)), n - 1)) if n else 0
        if "unit" in init and n and not (0 <= int(init["unit"]) < n):
            self.show_error(f"unit {init['unit']} is out of range for layer {layer!r} (0..{n - 1})")
        self.state.update(**upd)
        self.tree._select(layer)
        self._update_grid_title()
        msg = f"model {getattr(self.loaded, 'name', '')}: {len(names)} visualizable layers"
        if self._model_notices:
            msg += " — " + "; ".join(self._model_notices)
        self.show_message(msg)
        if self.atlas_pane is not None:
            self.atlas_pane.set_model(self.loaded.model, self.loaded.spec)
        self._restore_atlas()
        calm_gc()
        self.modelChanged.emit()
        self.request_render()

    def _units(self, layer) -> int:
        if self.mm is None:
            return 0
        try:
            u = self.mm[layer].units
        except Exception:  # noqa: BLE001
            return 0
        return int(u or 0)

    # ================================================================== input
    def set_source(self, source, camera=False, first=None) -> None:
        """Take a sources.Source-like object (.read(), .status, .close()); closes the old one.

        ``first``: (frame as read, frozen copy) already decoded off the GUI thread, or None.
        """
        if not camera:
            with self._io_lock:
                self._io_token += 1         # image steps still decoding belong to the old source
                self._nav_steps = 0
        if camera:
            old, self.camera = self.camera, source
            if source is not None:
                self.state.update(use_camera=True)
        else:
            old, self.source = self.source, source
            if source is not None:
                self.state.update(use_camera=False)
        if old is not None and old is not source:
            try:
                old.close()
            except Exception:  # noqa: BLE001
                pass
        self._last_raw = None
        self._source_status = ""
        if first is not None and first[1] is not None and self.active_source() is source:
            self._last_raw = first[0]
            self._use_frame(first[1])
        if self.active_source() is not None:
            self.capture_timer.start()
            self._poll_source()

    def active_source(self):
        return self.camera if self.state.use_camera else self.source

    def _poll_source(self):
        src = self.active_source()
        if src is None or self.state.frozen_frame:
            return
        if src is self.source and (self._nav_thread is not None or self._nav_undelivered):
            return          # the next image is being decoded in its thread: it arrives as a signal
        try:
            f = src.read()
        except Exception as e:  # noqa: BLE001
            self.show_error(f"input: {e}")
            return
        status = str(getattr(src, "status", "") or "")
        if status != self._source_status:
            self._source_status = status
            low = status.lower()
            if getattr(src, "state", "") in ("error", "retrying") or any(
                    w in low for w in ("lost", "error", "cannot", "can't", "fail", "unreadable")):
                self.show_error(f"input: {status}")
        if f is None or f is self._last_raw:
            return
        self._last_raw = f
        self.set_frame(f)

    def set_frame(self, bgr: np.ndarray) -> None:
        """Use a new H x W x 3 uint8 BGR frame (copied and frozen before it leaves this thread)."""
        a = np.array(bgr, copy=True)
        a.setflags(write=False)
        self._use_frame(a)

    def _use_frame(self, frozen: np.ndarray) -> None:
        """Use a frame that is already a private read-only copy (made off the GUI thread)."""
        self.frame = frozen
        self.frame_id += 1
        self.capture_rate.tick()
        self.request_render()

    # ================================================================== render loop
    def _on_state(self, names):
        if "layer" in names:
            n = self._units(self.state.layer)
            upd = {"n_units": n}
            if self.state.unit >= n:
                upd["unit"] = max(0, n - 1)
            self.state.update(**upd)
        if names & {"patterns", "layer"}:
            self._apply_patterns()
        if names & {"grid_mode", "layer", "patterns"}:
            self._update_grid_title()
        if "zoom" in names:
            self._apply_zoom()
        if "compare" in names:
            self._apply_compare()
        if "show_help" in names:
            self._apply_help()
        if "use_camera" in names:
            self._switch_source()
        if names & {"filter", "overlay", "compare"}:
            self._sync_controls()
        if "frozen_frame" in names:
            self.show_message("frame frozen (f to resume)" if self.state.frozen_frame else "live input")
        if names & RENDER_FIELDS:
            self.request_render()
        self._atlas_follow(names)

    def _update_grid_title(self):
        s = self.state
        info = self.mm[s.layer] if self.mm is not None and s.layer in self.mm.names() else None
        what = "Gradients" if s.grid_mode == "gradients" else "Activations"
        if info is None:
            self.grid.title.setText(what)
            return
        name = info.name or "output"
        if s.patterns and self._atlas_has(s.layer):
            tiles = self._pattern_tiles.get(self._pattern_key(s.layer))
            if tiles is not None:
                self.grid.title.setText(f"Patterns — <b>{name}</b> <span style='color:#888'>({tiles.describe()})"
                                        f"</span>")
                self.grid.title.setToolTip("each unit's optimized image where one is cached (atlas pane: Optimize),"
                                           " else the crop of its best image in the atlas scan; s: activations")
                return
            done, n = self._pattern_progress
            self.grid.title.setText(f"{what} — <b>{name}</b> <span style='color:#888'>(patterns: computing top-1"
                                    f" crops {done}/{n or '?'}…)</span>")
            return
        self.grid.title.setToolTip("")
        shape = "×".join(str(x) for x in info.shape) if info.shape else ""
        self.grid.title.setText(f"{what} — <b>{name}</b> "
                                f"<span style='color:#888'>({info.type}, {shape})</span>")

    def request_render(self) -> bool:
        """Snapshot the state into a request and hand it to the worker (which keeps only the newest)."""
        if self._closed or self.mm is None or self.frame is None or self.loaded is None:
            return False
        s = self.state
        methods = ()
        if s.backprop_on:
            methods = (s.method,) + ((s.method2,) if s.compare else ())
        bp_layer, bp_unit = s.backprop_unit
        labels = getattr(self.loaded, "labels", None)
        self.seq += 1
        req = RenderRequest(
            seq=self.seq, gen=self.gen, frame_id=self.frame_id, frame=self.frame,
            layer=s.layer, unit=s.unit, grid_mode=s.grid_mode, methods=methods,
            bp_layer=bp_layer, bp_unit=bp_unit, filter=s.filter, overlay=s.overlay,
            cam_layer=s.cam_layer, objective=s.objective,
            normalize="unit" if s.per_unit else "layer", gamma=s.gamma, aspect=self._grid_aspect(),
            labels=tuple(labels) if labels else None, output_layer=getattr(self.mm, "output_name", ""))
        self.worker.submit(req)
        return True

    def _on_resized(self):
        res = self.last_result
        if res is not None and abs(self._grid_aspect() / max(res.mosaic.image.shape[1] / res.mosaic.image.shape[0],
                                                           1e-3) - 1) > 0.25:
            self.request_render()

    def _grid_aspect(self) -> float:
        v = self.grid.view
        w, h = v.width(), v.height()
        return float(min(4.0, max(0.25, w / h))) if w > 10 and h > 10 else 1.0

    #: live frames are drawn at most this often (s); answers to the user's own changes at once
    MIN_DRAW_INTERVAL = 0.025

    def _on_rendered(self, res):
        if res.gen != self.gen or self._closed:
            return
        self.process_rate.tick()
        key = (res.layer, res.unit, res.bp, res.grid_mode, tuple(b.method for b in res.backprops))
        wait = self._last_draw_t + self.MIN_DRAW_INTERVAL - time.perf_counter()
        if key == self._last_drawn_key and wait > 0:
            self._held_result = res           # a newer frame of the same view: draw it a bit later
            if not self._draw_timer.isActive():
                self._draw_timer.start(max(1, int(wait * 1000)))
            return
        self._draw(res)

    def _draw_held(self):
        res, self._held_result = self._held_result, None
        if res is not None and res.gen == self.gen and not self._closed:
            self._draw(res)

    def _draw(self, res):
        t0 = time.perf_counter()
        self._draw_timer.stop()
        self._held_result = None
        self._last_draw_t = t0
        self._last_drawn_key = (res.layer, res.unit, res.bp, res.grid_mode, tuple(b.method for b in res.backprops))
        self.last_result = res
        src = self.active_source()
        path = getattr(src, "current_path", None)
        if path is not None and getattr(src, "count", None):
            desc = f"{Path(path).name} ({getattr(src, 'index', 0) + 1}/{src.count})"
        else:
            desc = (getattr(src, "description", None) or getattr(src, "status", None)
                    or ("still frame" if src is None else type(src).__name__))
        desc = str(desc)
        if getattr(src, "is_live", False):
            desc += f" · {self.capture_rate.rate():.0f} fps"
        elif self.state.frozen_frame:
            desc += " · frozen"
        self.input_pane.set_rgb(res.input_rgb)
        h, w = res.input_rgb.shape[:2]
        self.input_pane.info.setText(f"{desc} · {w}×{h}")
        self.grid.set_mosaic(self._grid_mosaic(res), res.unit_max, res.unit_mean)
        self.state.update(grid_cols=int(res.mosaic.cols))
        self.unit_pane.set_unit(res.unit_rgb, res.unit_levels)
        lo, hi = res.unit_levels
        what = "gradient at " if res.grid_mode == "gradients" else "of "
        self.unit_pane.title.setText(f"Unit {res.unit} <span style='color:#888'>{what}{res.layer or 'output'}</span>")
        self.unit_pane.info.setText(f"{lo:.3g} … {hi:.3g}")
        panes = (self.bp1, self.bp2)
        for i, pane in enumerate(panes):
            if i < len(res.backprops):
                bp = res.backprops[i]
                pane.set_rgb(bp.image)
                where = f"{res.bp[0] or 'output'} #{res.bp[1]}"
                if bp.cam_layer:
                    where += f" · CAM {bp.cam_layer}"
                pane.info.setText(where)
                pane.info.setToolTip(where)
            elif i == 0:
                pane.clear()
                pane.info.setText("off")
        self._draw_zoom(res)
        self.predictions.set_predictions(res.predictions)
        if res.forwarded:
            self._last_forward_ms = res.forward_ms
        self.sb_times.setText(f"fwd {self._last_forward_ms:.1f} ms  bwd {res.backward_ms:.1f} ms")
        notices = list(res.notices)
        if notices:
            self.show_message(" · ".join(notices), warn=True)
        elif self.last_error and time.perf_counter() - self._error_time < 4:
            pass
        else:
            self.show_message(self._describe(res))
            self.last_error = ""
        self.last_draw_ms = (time.perf_counter() - t0) * 1000
        self.frameDrawn.emit(res)

    def _describe(self, res):
        s = self.state
        bp = "backprop off" if not s.backprop_on else METHOD_LABELS.get(s.method, s.method)
        extra = []
        if s.frozen_unit:
            extra.append(f"backprop frozen on unit {s.frozen_unit[1]} of {s.frozen_unit[0] or 'output'}")
        if s.frozen_frame:
            extra.append("frame frozen")
        if s.gamma != 1.0:
            extra.append(f"gamma {s.gamma}")
        if s.per_unit:
            extra.append("per-unit scaling")
        return " · ".join([f"layer {res.layer or 'output'}, unit {res.unit}", bp, s.filter] + extra) + \
            "   (h: keys)"

    def _on_failed(self, f):
        if f.gen != self.gen or self._closed:
            return
        self.show_error(f.message)
        if f.seq == -1:
            self.mm = None

    # ================================================================== messages
    _error_time = 0.0

    def show_message(self, text, warn=False):
        self.sb_msg.setStyleSheet("QLabel { color: #d08000; }" if warn else "")
        self.sb_msg.setText(text)
        self.sb_msg.setToolTip(text)

    def show_error(self, text):
        self.last_error = text
        self._error_time = time.perf_counter()
        self.sb_msg.setStyleSheet("QLabel { color: #e03030; font-weight: 600; }")
        self.sb_msg.setText("⚠ " + text)
        self.sb_msg.setToolTip(text)
        self.renderFailed.emit(text)

    def status_text(self) -> str:
        return self.sb_msg.text()

    def _update_rates(self):
        src = self.active_source()
        live = bool(getattr(src, "is_live", False))
        cap = f"capture {self.capture_rate.rate():.1f} fps" if live else "capture still"
        if self.state.frozen_frame:
            cap = "capture frozen"
        self.sb_capture.setText(cap)
        if live or self.process_rate.rate() >= 0.5:
            self.sb_proc.setText(f"processing {self.process_rate.rate():.1f} fps")
        else:  # a still image is processed once: a rate near 0 would read as a stall
            self.sb_proc.setText("processing on demand")

    # ================================================================== view modes
    def _apply_zoom(self):
        z = self.state.zoom
        self.center.setCurrentIndex({"normal": 0, "unit": 1, "backprop": 2}[z])
        if self.last_result is not None:
            self._draw_zoom(self.last_result)

    def _draw_zoom(self, res):
        z = self.state.zoom
        if z == "unit":
            self.zoom_unit.set_unit(res.unit_rgb, res.unit_levels)
            self.zoom_unit.title.setText(f"Unit {res.unit} <span style='color:#888'>of {res.layer or 'output'}"
                                         f" — zoom (z: next, Esc: back)</span>")
        elif z == "backprop" and res.backprops:
            bp = res.backprops[0]
            self.zoom_bp.set_rgb(bp.image)
            self.zoom_bp.title.setText(f"Backprop — {METHOD_LABELS.get(bp.method, bp.method)} "
                                       f"<span style='color:#888'>of {res.bp[0] or 'output'} #{res.bp[1]}"
                                       f" — zoom (z: next, Esc: back)</span>")

    def _apply_compare(self):
        self.bp2.setVisible(self.state.compare)

    def _apply_help(self):
        if self.state.show_help:
            self.help_overlay.setGeometry(self.centralWidget().geometry())
            self.help_overlay.raise_()
            self.help_overlay.show()
        else:
            self.help_overlay.hide()

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        if hasattr(self, "_resize_timer"):
            self._resize_timer.start()
        if self.help_overlay.isVisible():
            self.help_overlay.setGeometry(self.centralWidget().geometry())

    def _sync_controls(self):
        s = self.state
        for w, fn in ((self.compare_box, lambda: self.compare_box.setChecked(s.compare)),
                      (self.overlay_box, lambda: self.overlay_box.setChecked(s.overlay)),
                      (self.filter_box, lambda: self.filter_box.setCurrentIndex(
                          max(0, self.filter_box.findData(s.filter))))):
            w.blockSignals(True)
            fn()
            w.blockSignals(False)

    # ================================================================== keys
    def handle_key_event(self, ev) -> bool:
        mods = ev.modifiers() & ~QtCore.Qt.KeypadModifier
        if mods & (QtCore.Qt.ControlModifier | QtCore.Qt.AltModifier | QtCore.Qt.MetaModifier):
            return False
        name = _KeyFilter.SPECIAL.get(ev.key())
        if name is not None:
            if mods & QtCore.Qt.ShiftModifier and name in ("Left", "Right", "Up", "Down"):
                name = "shift+" + name
        else:
            name = ev.text()
            if len(name) != 1 or not name.isprintable():
                return False
        action = keytable.action_for(name)
        if action is None:
            return False
        self.run_action(action, name)
        return True

    _MOVES = {"Left": (-1, 0), "Right": (1, 0), "Up": (0, -1), "Down": (0, 1),
              "j": (-1, 0), "l": (1, 0), "i": (0, -1), "k": (0, 1)}

    def run_action(self, action: str, key: str = "") -> None:
        s = self.state
        if action.startswith("move"):
            if action == "move3":
                k = key.replace("shift+", "")
                dx, dy = self._MOVES.get(k.lower() if len(k) == 1 else k, (0, 0))
                s.move(dx * 3, dy * 3)
            else:
                s.move(*{"move_left": (-1, 0), "move_right": (1, 0), "move_up": (0, -1),
                         "move_down": (0, 1)}[action])
        elif action in ("prev_layer", "next_layer"):
            self.step_layer(-1 if action == "prev_layer" else 1)
        elif action in ("prev_image", "next_image"):
            self.step_image(-1 if action == "prev_image" else 1)
        elif action == "toggle_camera":
            s.toggle("use_camera")
        elif action == "freeze_frame":
            s.toggle("frozen_frame")
        elif action == "freeze_unit":
            s.toggle_frozen_unit()
        elif action == "cycle_backprop":
            s.cycle_backprop()
        elif action == "cycle_method":
            s.cycle_method()
        elif action == "cycle_filter":
            s.cycle_filter()
        elif action == "cycle_zoom":
            s.cycle_zoom()
        elif action == "cycle_gamma":
            s.cycle_gamma()
        elif action == "toggle_per_unit":
            s.toggle("per_unit")
        elif action == "toggle_grid_mode":
            s.toggle_grid_mode()
            if s.grid_mode == "gradients" and s.frozen_unit is None:
                self.show_message("gradients of the selected unit at its own layer are zero except its own tile: "
                                  "press d to freeze the unit, then u to look at gradients in lower layers")
        elif action == "toggle_patterns":
            self.toggle_patterns()
        elif action == "toggle_help":
            s.toggle("show_help")
        elif action == "reset":
            s.reset()
        elif action == "quit":
            self.close()

    def step_layer(self, d: int) -> None:
        if self.mm is None:
            return
        names = list(self.mm.visualizable_names())
        if not names:
            return
        i = names.index(self.state.layer) if self.state.layer in names else 0
        self.state.update(layer=names[max(0, min(len(names) - 1, i + d))])

    def step_image(self, d: int) -> None:
        """Go ``d`` images on in the folder; the decode runs in a thread, rapid steps coalesce.

        A 12 MP JPEG takes ~180 ms to decode: on the GUI thread that would freeze the window.
        Steps asked for while one decodes add up, and only the newest image is decoded next.
        """
        src = self.source
        if src is None or not hasattr(src, "next"):
            self.show_message("the current input has no previous/next image")
            return
        if self.state.use_camera:
            self.state.update(use_camera=False)
        if self.state.frozen_frame:
            self.state.update(frozen_frame=False)
        with self._io_lock:
            self._nav_steps += int(d)
            token = self._io_token
            start = self._nav_thread is None
            if start:
                t = threading.Thread(target=self._nav_work, args=(src, token), name="cnnvis-image-load",
                                     daemon=True)
                self._nav_thread = t
        if start:
            self._io_threads.add(t)
            t.start()
        self.show_message("loading…")

    @staticmethod
    def _step_source(src, steps: int) -> None:
        if abs(steps) == 1 or not (hasattr(src, "seek") and getattr(src, "count", 0)):
            for _ in range(abs(steps)):
                src.next() if steps > 0 else src.prev()
            return
        n, t = int(src.count), int(src.index) + steps
        t = t % n if getattr(src, "wrap", True) else min(max(t, 0), n - 1)
        src.seek(t)

    def _nav_work(self, src, token):
        """Image-step thread: decode the newest asked-for image, hand it over as a signal."""
        while True:
            with self._io_lock:
                steps, self._nav_steps = self._nav_steps, 0
                if steps == 0 or token != self._io_token or self._closed:
                    self._nav_thread = None
                    return
            raw = frame = error = None
            try:
                self._step_source(src, steps)
                raw, frame = _still_frame(src)
            except Exception as e:  # noqa: BLE001 - shown in the status bar
                error = str(e) or type(e).__name__
            with self._io_lock:
                newer = self._nav_steps != 0
                if not newer:
                    self._nav_undelivered += 1
            if not newer:
                self._emit_loaded(_Loaded("step", token, src, raw, frame, error))

    def _emit_loaded(self, loaded):
        try:
            self._inputLoaded.emit(loaded)
        except RuntimeError:        # the window is gone (deleted while this thread worked)
            if loaded.kind == "open" and loaded.source is not None:
                loaded.source.close()

    def _on_input_loaded(self, ld):
        if ld.kind == "open":
            self._io_threads = {t for t in self._io_threads if t.is_alive()}
            if self._closed or ld.token != self._io_token:
                if ld.source is not None:
                    ld.source.close()       # superseded by a newer open, or the window closed
                return
            if ld.error is not None:
                self.show_error(f"cannot open {ld.what}: {ld.error}")
                return
            self.set_source(ld.source, camera=ld.camera, first=(ld.raw, ld.frame))
            self.sourceOpened.emit(ld.source)
            return
        # an image step
        with self._io_lock:
            self._nav_undelivered = max(0, self._nav_undelivered - 1)
        if self._closed or ld.token != self._io_token or ld.source is not self.source:
            return
        if ld.error is not None:
            self.show_error(f"input: {ld.error}")
            return
        if ld.frame is not None and not self.state.use_camera:
            self._last_raw = ld.raw
            self._use_frame(ld.frame)
        path = getattr(ld.source, "current_path", None)
        if path:
            self.show_message(f"image {getattr(ld.source, 'index', 0) + 1}/{getattr(ld.source, 'count', '?')}:"
                              f" {path}")

    def _switch_source(self):
        if self.state.use_camera and self.camera is None:
            self.open_camera_async()
            return
        self._last_raw = None
        self._source_status = ""
        if self.active_source() is not None:
            self.capture_timer.start()
        self.show_message("camera" if self.state.use_camera else "files")

    def open_camera_async(self, index=None) -> None:
        """Find and open a camera off the GUI thread (probing can take seconds)."""
        self.show_message("looking for a camera…")

        def work():
            try:
                from .. import sources
                idx = index
                if idx is None:
                    cams = sources.cameras()
                    if not cams:
                        raise RuntimeError("no camera found on this computer")
                    idx = cams[0]
                self._cameraOpened.emit(sources.open(idx), "")
            except Exception as e:  # noqa: BLE001
                self._cameraOpened.emit(None, str(e))
        threading.Thread(target=work, name="cnnvis-camera-open", daemon=True).start()

    def _on_camera_opened(self, src, error):
        if self._closed:
            if src is not None:
                src.close()
            return
        if src is None:
            self.state.update(use_camera=False)
            self.show_error(f"camera: {error}")
            return
        self.set_source(src, camera=True)
        self.show_message(f"camera: {getattr(src, 'status', '')}")

    # ================================================================== dialogs (see dialogs.py)
    def open_path(self, path, **options) -> bool:
        """Open an image, a folder, a video, a stream URL or a camera index as the input.

        Opening runs in a thread (decoding a big image, OpenCV's network timeouts): this
        returns at once; the source is used when :attr:`sourceOpened` fires, a failure shows
        in the status bar (:attr:`renderFailed`).  A newer open supersedes an older one.
        """
        is_cam = isinstance(path, int) or (isinstance(path, str) and path.isdigit())
        with self._io_lock:
            self._io_token += 1
            self._nav_steps = 0
            token = self._io_token
        name = path if isinstance(path, (int, str)) else (f"{len(path)} images" if isinstance(path, (list, tuple))
                                                           else str(path))

        def work():
            from .. import sources
            src = raw = frame = error = None
            try:
                src = sources.open(path, **options)
                if not is_cam:
                    raw, frame = _still_frame(src)
            except Exception as e:  # noqa: BLE001 - shown in the status bar
                error = str(e) or type(e).__name__
            if src is not None and (self._closed or token != self._io_token):
                src.close()
                return
            self._emit_loaded(_Loaded("open", token, src, raw, frame, error, what=path, camera=is_cam))
        t = threading.Thread(target=work, name="cnnvis-input-open", daemon=True)
        self._io_threads = {x for x in self._io_threads if x.is_alive()} | {t}
        t.start()
        self.show_message(f"loading {Path(name).name if isinstance(name, str) and '://' not in name else name}…")
        return True

    def open_demo(self, name="shapes", images=True) -> bool:
        from .. import models
        try:
            lm = models.demo(name)
        except Exception as e:  # noqa: BLE001
            self.show_error(f"demo model {name}: {e}")
            return False
        self.load_model(lm)
        self._remember_model(f"demo:{name}")
        if images:
            try:
                paths = [str(p) for p in models.demo_samples(name)]
                if paths:
                    self.open_path(paths if len(paths) > 1 else paths[0])
            except Exception as e:  # noqa: BLE001
                self.show_error(f"demo images: {e}")
        return True

    def open_checkpoint(self, weights=None, arch=None, spec=None, trust_pickle=False, labels=None):
        from .. import models
        lm = models.load(weights=weights, arch=arch, spec=spec, trust_pickle=trust_pickle, labels=labels)
        self.load_model(lm)
        self._remember_model(weights or arch, arch=arch if weights else None)
        return lm

    def open_checkpoint_dialog(self):
        from .dialogs import open_checkpoint_interactive
        open_checkpoint_interactive(self)

    def open_image_dialog(self):
        p, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open image", self._last_dir(),
                                                     "Images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff *.webp);;All (*)")
        if p:
            self._set_last_dir(p)
            self.open_path(p)

    def open_folder_dialog(self):
        p = QtWidgets.QFileDialog.getExistingDirectory(self, "Open folder of images", self._last_dir())
        if p:
            self._set_last_dir(p + "/x")
            self.open_path(p)

    def open_video_dialog(self):
        p, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open video", self._last_dir(),
                                                     "Videos (*.mp4 *.avi *.mov *.mkv *.webm);;All (*)")
        if p:
            self._set_last_dir(p)
            self.open_path(p)

    def choose_camera_dialog(self):
        from .. import sources
        try:
            cams = sources.cameras()
        except Exception as e:  # noqa: BLE001
            self.show_error(f"cameras: {e}")
            return
        if not cams:
            QtWidgets.QMessageBox.information(self, "Cameras", "No camera was found.")
            return
        item, ok = QtWidgets.QInputDialog.getItem(self, "Choose camera", "Camera:",
                                                  [f"camera {c}" for c in cams], 0, False)
        if ok:
            self.open_path(int(item.split()[-1]))

    def edit_spec_dialog(self):
        if self.loaded is None:
            return
        from .dialogs import SpecDialog
        d = SpecDialog(self.loaded.spec, self)
        if d.exec_() == QtWidgets.QDialog.Accepted:
            try:
                spec = d.spec()
            except Exception as e:  # noqa: BLE001
                self.show_error(str(e))
                return
            self._replace_loaded(spec=spec)

    def edit_labels_dialog(self):
        if self.loaded is None:
            return
        from .dialogs import LabelsDialog
        d = LabelsDialog(getattr(self.loaded, "labels", None), self)
        if d.exec_() == QtWidgets.QDialog.Accepted:
            self._replace_loaded(labels=d.labels())

    def _replace_loaded(self, **kw):
        import copy
        lm = copy.copy(self.loaded)
        for k, v in kw.items():
            try:
                setattr(lm, k, v)
            except Exception:  # noqa: BLE001 - frozen dataclass
                import dataclasses
                lm = dataclasses.replace(lm, **{k: v})
        s = self.state
        self.load_model(lm, layer=s.layer, unit=s.unit)

    # ================================================================== unit atlas (cnnvis_gui.atlas)
    def show_atlas(self):
        """Open the atlas pane (top images, their backprop crops, optimized image of the unit) as a dock."""
        if self.loaded is None:
            self.show_error("open a model first")
            return None
        if self.atlas_pane is None:
            from .atlas_pane import AtlasPane
            self.atlas_pane = AtlasPane(self.loaded.model, self.loaded.spec)
            self.atlas_dock = QtWidgets.QDockWidget("Unit atlas", self)
            self.atlas_dock.setObjectName("atlas_dock")
            self.atlas_dock.setWidget(self.atlas_pane)
            if not self.restoreDockWidget(self.atlas_dock):      # where it was last time, if anywhere
                self.addDockWidget(QtCore.Qt.BottomDockWidgetArea, self.atlas_dock)
            if self.atlas_scan is not None:
                self.atlas_pane.set_scan(self.atlas_scan)
        self.atlas_dock.show()
        self.atlas_pane.show_unit(self.state.layer, self.state.unit)
        return self.atlas_pane

    def atlas_scan_dialog(self):
        """Open the scan dialog (last folder and k of this model filled in); returns it."""
        pane = self.show_atlas()
        if pane is None or self.mm is None:
            return None
        from .atlas_dialog import AtlasScanDialog
        last = self._atlas_remembered() or {}
        selected = set(last.get("layers", [])) | {self.state.layer}
        d = AtlasScanDialog(self.loaded.model, self.loaded.spec, layers=self.mm.visualizable_names(),
                            folder=last.get("folder"), k=last.get("k", 9), selected=selected, parent=self)
        d.scanFinished.connect(self._on_atlas_scan)
        d.setAttribute(QtCore.Qt.WA_DeleteOnClose)
        d.show()
        return d

    def _on_atlas_scan(self, scan):
        """A scan finished (or came from the cache) in the dialog: show it, remember it for next time."""
        self._set_atlas_scan(scan)
        self._remember_atlas(scan)

    def _set_atlas_scan(self, scan):
        self.atlas_scan = scan
        self._pattern_tiles.clear()
        self._pattern_mosaic = None
        self._pattern_pending = None
        if self.atlas_pane is not None:
            self.atlas_pane.set_scan(scan)
        self._apply_patterns()
        self._update_grid_title()

    def _reset_atlas(self):
        """Another model: its scan, patterns and pattern worker belong to the old one."""
        self.atlas_scan = None
        self._pattern_tiles.clear()
        self._pattern_mosaic = None
        self._pattern_pending = None
        if self._pattern_worker is not None:
            self._pattern_worker.stop()
            self._pattern_worker = None
        if self.state.patterns:
            self.state.update(patterns=False)

    # ---- reopening: the last scan of this model comes back from the cache at once
    def _atlas_settings_key(self) -> str:
        lm = self.loaded
        ident = str(getattr(lm, "source", None) or getattr(lm, "name", None) or type(lm.model).__name__)
        return "atlas/model_" + hashlib.blake2b(ident.encode("utf-8"), digest_size=8).hexdigest()

    def _remember_atlas(self, scan):
        base = self._atlas_settings_key()
        self.settings.setValue(base + "/folder", str(scan.folder))
        self.settings.setValue(base + "/k", int(scan.k))
        self.settings.setValue(base + "/layers", json.dumps(list(scan.layers)))
        self.settings.sync()

    def _atlas_remembered(self) -> dict | None:
        """{folder, k, layers} of this model's last scan from the settings, or None."""
        if self.loaded is None:
            return None
        base = self._atlas_settings_key()
        folder = self.settings.value(base + "/folder")
        if not folder:
            return None
        try:
            layers = [str(x) for x in json.loads(self.settings.value(base + "/layers", "[]"))]
            return {"folder": str(folder), "k": int(self.settings.value(base + "/k", 9)), "layers": layers}
        except (TypeError, ValueError):
            return None

    def _restore_atlas(self):
        """Show the dock if it was open last time; look the last scan of this model up in the cache.

        The lookup (folder listing, weights hash, reading the result) runs in a thread; it never
        scans: a changed folder or other weights give another cache key, i.e. nothing is shown.
        """
        if not self._atlas_dock_restored:
            self._atlas_dock_restored = True
            if self.settings.value("atlas/dock_visible") in (True, "true", "1", 1):
                self.show_atlas()
        last = self._atlas_remembered()
        if last is None or not last["layers"] or not Path(last["folder"]).is_dir():
            return
        model, spec, gen = self.loaded.model, self.loaded.spec, self.gen
        modules = dict(model.named_modules())
        if any(name not in modules for name in last["layers"]):
            return      # another architecture under the same name: nothing to reopen

        def work():
            try:
                from ..atlas import TopKScan
                scan = TopKScan(model, spec, last["folder"], last["layers"], k=last["k"]).cached()
            except Exception:  # noqa: BLE001 - an unreadable cache is no cache
                scan = None
            self._atlasLookedUp.emit(gen, scan)
        threading.Thread(target=work, name="cnnvis-atlas-reopen", daemon=True).start()

    def _on_atlas_looked_up(self, gen, scan):
        if gen != self.gen or self._closed or scan is None:
            return
        self._set_atlas_scan(scan)
        layers = ", ".join(n or "output" for n in scan.layers)
        self.show_message(f"unit atlas reopened from the cache: {len(scan.paths)} images of {scan.folder},"
                          f" layers {layers}, top {scan.k}")
        self.atlasRestored.emit(scan)

    # ---- pattern mode (s): the grid shows each unit's optimized image or best top-1 crop
    def _atlas_has(self, layer) -> bool:
        return self.atlas_scan is not None and layer in self.atlas_scan.layers

    def _pattern_key(self, layer) -> tuple:
        from ..atlas.optimize import DEFAULT_PRESET
        pane = self.atlas_pane
        preset = int(pane.preset.currentData()) if pane is not None else int(DEFAULT_PRESET)
        return (self.atlas_scan.key or str(id(self.atlas_scan)), layer, preset)

    def toggle_patterns(self) -> None:
        """s: activations <-> patterns; needs an atlas scan of the current layer (else a message)."""
        s = self.state
        if s.patterns:
            s.update(patterns=False)
        elif not self._atlas_has(s.layer):
            self.show_error(f"no atlas for layer {s.layer or 'output'} yet: Atlas → Scan a folder… "
                            f"(the grid stays on activations)")
        else:
            s.update(patterns=True)

    def _apply_patterns(self):
        s = self.state
        if s.patterns and not self._atlas_has(s.layer):
            self.show_error(f"no atlas for layer {s.layer or 'output'} yet: Atlas → Scan a folder… "
                            f"(back to activations)")
            s.update(patterns=False)
            return
        if s.patterns:
            key = self._pattern_key(s.layer)
            if key not in self._pattern_tiles and key != self._pattern_pending:
                self._request_patterns(key)
        self._redraw_grid()

    def _request_patterns(self, key):
        from .patterns import PatternRequest, PatternWorker
        if self._pattern_worker is None:
            try:
                self._pattern_worker = PatternWorker(self.loaded.model, self.loaded.spec, self)
            except CnnvisError as e:  # the model could not be copied for the background thread
                self.show_error(f"pattern mode is not available: {e}")
                self.state.update(patterns=False)
                return
            self._pattern_worker.ready.connect(self._on_pattern_tiles)
            self._pattern_worker.progress.connect(self._on_pattern_progress)
            self._pattern_worker.failed.connect(self._on_pattern_failed)
            self._pattern_worker.start()
        self._pattern_pending = key
        self._pattern_progress = (0, self.atlas_scan.layer(key[1]).units)
        self._pattern_worker.submit(PatternRequest(key, self.atlas_scan, key[1], key[2]))
        self.show_message(f"computing the patterns of layer {key[1] or 'output'} (top-1 crops) in the background…")

    def _on_pattern_tiles(self, tiles):
        if self._closed or self.atlas_scan is None or tiles.key[0] != self._pattern_key(tiles.layer)[0]:
            return
        self._pattern_tiles[tiles.key] = tiles
        while len(self._pattern_tiles) > 16:
            self._pattern_tiles.pop(next(iter(self._pattern_tiles)))
        if self._pattern_pending == tiles.key:
            self._pattern_pending = None
        if self.state.patterns and self._pattern_key(self.state.layer) == tiles.key:
            self._update_grid_title()
            self._redraw_grid()
            self.show_message(f"patterns of layer {tiles.layer or 'output'}: {tiles.describe()} "
                              f"(s: back to activations)")
        self.patternsReady.emit(tiles)

    def _on_pattern_progress(self, key, done, n):
        if key == self._pattern_pending:
            self._pattern_progress = (done, n)
            self._update_grid_title()

    def _on_pattern_failed(self, key, message):
        if key != self._pattern_pending:
            return
        self._pattern_pending = None
        self.show_error(f"patterns of layer {key[1] or 'output'}: {message}")
        self.state.update(patterns=False)

    def _grid_mosaic(self, res):
        """What the grid shows for a render result: its mosaic, or the patterns in the same grid."""
        if not self.state.patterns or not self._atlas_has(res.layer):
            return res.mosaic
        tiles = self._pattern_tiles.get(self._pattern_key(res.layer))
        if tiles is None:
            return res.mosaic
        m = res.mosaic
        ck = (tiles.key, m.rows, m.cols, m.n_units)
        if self._pattern_mosaic is None or self._pattern_mosaic[0] != ck:
            self._pattern_mosaic = (ck, tiles.mosaic(m))
        return self._pattern_mosaic[1]

    def _redraw_grid(self):
        res = self.last_result
        if res is not None and res.gen == self.gen and not self._closed:
            self.grid.set_mosaic(self._grid_mosaic(res), res.unit_max, res.unit_mean)

    def _atlas_follow(self, names):
        if self.atlas_pane is not None and self.atlas_dock.isVisible() and names & {"layer", "unit"}:
            self.atlas_pane.show_unit(self.state.layer, self.state.unit)

    # ================================================================== saving
    def save_pngs(self, folder) -> list:
        """Save each pane (and the whole window) as PNG into ``folder``; returns the paths."""
        import cv2
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        stem = f"{(self.state.layer or 'output').replace('.', '_')}_u{self.state.unit}"
        for tag, pane in (("input", self.input_pane), ("grid", self.grid), ("unit", self.unit_pane),
                          ("backprop", self.bp1), ("backprop2", self.bp2)):
            img = pane.last_image
            if img is None or (tag == "backprop2" and not self.state.compare):
                continue
            p = folder / f"{stem}_{tag}.png"
            cv2.imwrite(str(p), np.ascontiguousarray(img[..., ::-1]))
            out.append(p)
        p = folder / f"{stem}_window.png"
        self.grab().save(str(p))
        out.append(p)
        return out

    def save_npz(self, path) -> Path:
        res = self.last_result
        if res is None:
            raise RuntimeError("nothing computed yet")
        arrays = {"input": res.raw_input, "grid": res.raw_grid, "unit_map": res.unit_map,
                  "unit_max": res.unit_max, "unit_mean": res.unit_mean,
                  "layer": np.array(res.layer), "unit": np.array(res.unit),
                  "grid_mode": np.array(res.grid_mode)}
        for bp in res.backprops:
            arrays[f"backprop_{bp.method}"] = bp.raw
        path = Path(path)
        np.savez_compressed(path, **arrays)
        return path

    def save_pngs_dialog(self):
        d = QtWidgets.QFileDialog.getExistingDirectory(self, "Save panes as PNG into…", self._last_dir())
        if d:
            try:
                paths = self.save_pngs(d)
                self.show_message(f"saved {len(paths)} PNGs in {d}")
            except Exception as e:  # noqa: BLE001
                self.show_error(f"save: {e}")

    def save_npz_dialog(self):
        p, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save raw arrays", self._last_dir(), "NumPy (*.npz)")
        if p:
            try:
                self.save_npz(p)
                self.show_message(f"saved {p}")
            except Exception as e:  # noqa: BLE001
                self.show_error(f"save: {e}")

    # ================================================================== settings
    def _last_dir(self):
        return str(self.settings.value("last_dir", str(Path.home())))

    def _set_last_dir(self, p):
        self.settings.setValue("last_dir", str(Path(p).parent))

    def _remember_model(self, what, arch=None):
        if not what:
            return
        entry = f"{what}|{arch or ''}"
        recent = [r for r in self._recent() if r != entry]
        recent.insert(0, entry)
        self.settings.setValue("recent_models", recent[:8])
        self.settings.setValue("last_model", entry)
        self._fill_recent()

    def _recent(self):
        v = self.settings.value("recent_models", [])
        if isinstance(v, str):
            v = [v]
        return list(v or [])

    def _fill_recent(self):
        self.recent_menu.clear()
        for entry in self._recent():
            what, _, arch = entry.partition("|")
            a = self.recent_menu.addAction(what + (f"  ({arch})" if arch else ""))
            a.triggered.connect(lambda _=False, w=what, ar=arch: self._open_recent(w, ar))
        self.recent_menu.setEnabled(bool(self._recent()))

    def _open_recent(self, what, arch):
        if what.startswith("demo:"):
            self.open_demo(what[5:], images=self.source is None)
            return
        from .app import model_from_entry
        try:
            lm = model_from_entry(what, arch)       # as `cnnvis --model/--weights` would read it
        except Exception as e:  # noqa: BLE001
            self.show_error(f"cannot open {what}: {e}")
            return
        self.load_model(lm)
        self._remember_model(what, arch=arch or None)

    def _restore_settings(self):
        st = self.settings
        g = st.value("geometry")
        if g is not None:
            self.restoreGeometry(g)
        else:
            self.resize(1500, 920)
        ws = st.value("window_state")
        if ws is not None:
            self.restoreState(ws)
        upd = {}
        for k in PERSISTED:
            v = st.value(f"view/{k}")
            if v is None:
                continue
            cur = getattr(self.state, k)
            if isinstance(cur, bool):
                v = v in (True, "true", "1", 1)
            upd[k] = v
        try:
            self.state.update(**upd)
        except Exception:  # noqa: BLE001
            pass
        self._sync_controls()

    def _save_settings(self):
        st = self.settings
        st.setValue("geometry", self.saveGeometry())
        st.setValue("window_state", self.saveState())
        for k in PERSISTED:
            st.setValue(f"view/{k}", getattr(self.state, k))
        if self.atlas_dock is not None:
            st.setValue("atlas/dock_visible", not self.atlas_dock.isHidden())
        st.sync()

    def _about(self):
        QtWidgets.QMessageBox.about(self, "cnnvis-gui",
                                    "cnnvis-gui — see inside PyTorch CNNs: activations, deconvnet, guided "
                                    "backprop, Grad-CAM, live.\nPress h for the keys.")

    # ================================================================== shutdown
    #: how long close waits for the render worker's step before it says so (it still waits it out)
    STOP_TIMEOUT_MS = 10000
    #: how long close waits for an input thread (a stream open may hang in OpenCV: it is a daemon)
    IO_JOIN_TIMEOUT_S = 2.0

    def shutdown(self) -> None:
        """Stop the worker and the capture cleanly (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._save_settings()
        except Exception:  # noqa: BLE001
            pass
        self.capture_timer.stop()
        self.status_timer.stop()
        self._draw_timer.stop()
        app = QtWidgets.QApplication.instance()
        if app is not None:
            app.removeEventFilter(self._keys)
        with self._io_lock:
            self._io_token += 1
            self._nav_steps = 0
        for t in list(self._io_threads):        # an image decode ends soon; an open closes what it got
            t.join(self.IO_JOIN_TIMEOUT_S)
        self.worker.stop(self.STOP_TIMEOUT_MS)
        if self.atlas_pane is not None:
            self.atlas_pane.close_worker()
        if self._pattern_worker is not None:
            self._pattern_worker.stop(self.STOP_TIMEOUT_MS)
            self._pattern_worker = None
        for src in (self.source, self.camera):
            if src is not None:
                try:
                    src.close()
                except Exception:  # noqa: BLE001
                    pass
        self.source = self.camera = None

    def closeEvent(self, ev):
        self.shutdown()
        super().closeEvent(ev)
