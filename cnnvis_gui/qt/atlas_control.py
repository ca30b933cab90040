"""The unit atlas in the window: the atlas dock, scans, and pattern mode (``s``).

:class:`AtlasController` owns the atlas pane (top images, their backprop crops, the
optimized image of the selected unit), the scan shown, the reopening of the last scan of a
model from the cache, the demo models' atlas built in the background at first start
(:mod:`cnnvis_gui.atlas.demo`; ``CNNVIS_DEMO_ATLAS=0`` turns it off), and the pattern tiles
the grid shows in pattern mode.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import torch
from PyQt5 import QtCore, QtWidgets

from ..core import CnnvisError
from .plain import html_text


class AtlasController(QtCore.QObject):
    """The atlas dock and pattern mode of one window."""

    _atlasLookedUp = QtCore.pyqtSignal(int, object)    # (model gen, AtlasScan or None) from the cache lookup
    restored = QtCore.pyqtSignal(object)           # an AtlasScan reopened from the cache (or the demo's, built)
    patternsReady = QtCore.pyqtSignal(object)      # PatternTiles of a layer, computed (s: pattern mode)

    def __init__(self, state, model, feed, persistence, status, grid, splitter, add_dock, update_grid_title,
                 redraw_grid, closed=lambda: False, parent=None):
        """``model``: the ModelState (the model scanned); ``feed``: the InputFeed (the folder looked at);
        ``status``: the StatusLine; ``grid``: the activation grid (its title in pattern mode);
        ``splitter``: the main window's columns (the atlas as a column); ``add_dock(dock, area)``: puts
        a dock where it was last time, else in ``area``; ``update_grid_title()`` / ``redraw_grid()``:
        the render loop's, when the patterns come or go; ``closed()``: the window is closing;
        ``parent``: the widget docks and dialogs belong to."""
        super().__init__(parent)
        self.state, self.model, self.feed = state, model, feed
        self.persistence, self.status, self.grid, self.splitter = persistence, status, grid, splitter
        self._add_dock, self._closed, self._parent = add_dock, closed, parent
        self._update_grid_title, self._redraw_grid = update_grid_title, redraw_grid
        self.layout_action = None   # View → Unit atlas in the main window (build_menus sets it)
        self.pane = None            # created on first use (Atlas menu): its own worker thread
        self.dock = None
        self.in_layout = False      # the pane is a column of the main window instead of a dock
        self.holder = None          # the scroll area holding it there
        self.scan = None            # the AtlasScan shown (dialog or reopened from the cache)
        self._dock_restored = False
        self._pattern_worker = None     # PatternWorker, created on the first s with a scan
        self._pattern_tiles = {}        # (scan key, layer, preset) -> PatternTiles
        self._pattern_pending = None    # key being computed
        self._pattern_progress = None       # the newest ProgressReport of the pending pattern tiles
        self._pattern_mosaic = None     # (tiles key, rows, cols, n) , ActivationMosaic
        self._atlasLookedUp.connect(self._on_looked_up)
        #: build the demo models' atlas at first start (off: CNNVIS_DEMO_ATLAS=0, or cnnvis-gui --screenshot)
        self.auto_demo = os.environ.get("CNNVIS_DEMO_ATLAS", "1").strip().lower() not in ("0", "false", "no", "off")
        self.demo_worker = None         # ScanWorker running a DemoAtlas

    # ------------------------------------------------------------------ the dock and scans
    def show_atlas(self):
        """Open the atlas pane (top images, their backprop crops, optimized image of the unit) as a dock."""
        loaded = self.model.loaded
        if loaded is None:
            self.status.show_error("open a model first")
            return None
        if self.pane is None:
            from .atlas_pane import AtlasPane
            self.pane = AtlasPane(loaded.model, loaded.spec, layouts=getattr(loaded, "layouts", None))
            self.pane.objectiveReported.connect(     # the Objective field's outcome, also where a low dock shows it
                lambda text, error: self.status.show_error(text) if error else self.status.show_message(text))
            self.dock = QtWidgets.QDockWidget("Unit atlas", self._parent)
            self.dock.setObjectName("atlas_dock")
            # in a scroll area: the dock can be as low as the screen needs (1280 x 720: the window had
            # grown past the screen), the tiles fill whatever it gets (AtlasPane.fit_tiles)
            self.dock_scroll = QtWidgets.QScrollArea()
            self.dock_scroll.setWidgetResizable(True)
            self.dock_scroll.setFrameShape(QtWidgets.QFrame.NoFrame)
            self.dock_scroll.setWidget(self.pane)
            self.dock.setWidget(self.dock_scroll)
            self._add_dock(self.dock, QtCore.Qt.BottomDockWidgetArea)      # where it was last time, if anywhere
            if self.scan is not None:
                self.pane.set_scan(self.scan)
        if self.in_layout:
            self.pane.show()
        else:
            self.dock.show()
        self._show_unit()
        return self.pane

    def set_in_layout(self, on: bool) -> None:
        """The atlas pane as a column of the main window (where the deep visualization toolbox had its
        top-9 / deconv / optimized images), or back in its dock (View menu)."""
        if self.pane is None and self.show_atlas() is None:
            self._sync_action()
            return
        self.in_layout = bool(on)
        if self.in_layout:
            self.dock.hide()
            self.dock_scroll.takeWidget()
            if self.holder is None:                      # scrolls: the pane is ~620 px wide at least
                self.holder = QtWidgets.QScrollArea()
                self.holder.setWidgetResizable(True)
                self.holder.setMinimumWidth(200)
            self.holder.setWidget(self.pane)             # taken out of the dock
            self.splitter.addWidget(self.holder)
            self.holder.show()
            self.pane.show()
            self._share_columns()
            QtCore.QTimer.singleShot(0, self._share_columns)    # again once the window is laid out
        else:
            if self.holder is not None and self.holder.widget() is self.pane:
                self.holder.takeWidget()
                self.holder.hide()
            self.dock_scroll.setWidget(self.pane)
            self.dock.show()
        self._show_unit()
        self.persistence.set("atlas/in_layout", self.in_layout)
        self._sync_action()

    def _share_columns(self) -> None:
        """Input 18 %, grid 38 %, backprop 21 %, atlas the rest of the window's width (it scrolls)."""
        sp = self.splitter
        if not self.in_layout or sp.count() < 4:
            return
        total = sum(sp.sizes()) or sp.width()
        shares = [int(total * f) for f in (0.18, 0.38, 0.21)]
        sp.setSizes(shares + [max(200, total - sum(shares))])

    def _sync_action(self) -> None:
        action = self.layout_action
        if action is not None:
            action.blockSignals(True)
            action.setChecked(self.in_layout)
            action.blockSignals(False)

    def scan_dialog(self):
        """Open the scan dialog (last folder and k of this model filled in); returns it."""
        pane = self.show_atlas()
        mm = self.model.mm
        if pane is None or mm is None:
            return None
        from ..core.stops import layer_stops
        from .atlas_dialog import AtlasScanDialog
        last = self.remembered() or {}
        selected = set(last.get("layers", [])) | {self.state.layer}
        loaded = self.model.loaded
        folder = last.get("folder")
        if not folder or not Path(folder).is_dir():     # the folder being looked at, when it is one
            folder = getattr(self.feed.active(self.state.use_camera), "folder", None) or folder
        d = AtlasScanDialog(loaded.model, loaded.spec, layers=mm.visualizable_names(),
                            folder=folder, k=last.get("k", 9), selected=selected, parent=self._parent,
                            layouts=getattr(loaded, "layouts", None), stops=layer_stops(mm),
                            current=self.state.layer)
        d.scanFinished.connect(self.on_scan)
        d.setAttribute(QtCore.Qt.WA_DeleteOnClose)
        d.show()
        return d

    def on_scan(self, scan) -> None:
        """A scan finished (or came from the cache) in the dialog: show it, remember it for next time."""
        self.set_scan(scan)
        self.remember(scan)

    def set_scan(self, scan) -> None:
        self.scan = scan
        self._pattern_tiles.clear()
        self._pattern_mosaic = None
        self._pattern_pending = None
        if self.pane is not None:
            self.pane.set_scan(scan)
        self.apply_patterns()
        self._update_grid_title()

    def reset(self) -> None:
        """Another model: its scan, patterns and pattern worker belong to the old one."""
        self.scan = None
        self._pattern_tiles.clear()
        self._pattern_mosaic = None
        self._pattern_pending = None
        if self._pattern_worker is not None:
            self._pattern_worker.stop()
            self._pattern_worker = None
        self._drop_demo_worker()
        if self.state.patterns:
            self.state.update(patterns=False)

    def on_model_ready(self) -> None:
        loaded = self.model.loaded
        if self.pane is not None:
            self.pane.set_model(loaded.model, loaded.spec, getattr(loaded, "layouts", None))
        self.restore()

    def follow(self, names) -> None:
        """The selection moved (or the dissection shown changed): the atlas pane shows the new unit."""
        if self.pane is not None and self.pane.isVisible() and names & {"layer", "unit", "dissection"}:
            self._show_unit()

    def _show_unit(self) -> None:
        lab = self.state.unit_label()
        self.pane.show_unit(self.state.layer, self.state.unit, lab.describe() if lab is not None else "")

    # ---- reopening: the last scan of this model comes back from the cache at once
    def _settings_key(self) -> str:
        lm = self.model.loaded
        ident = str(getattr(lm, "source", None) or getattr(lm, "name", None) or type(lm.model).__name__)
        return "atlas/model_" + hashlib.blake2b(ident.encode("utf-8"), digest_size=8).hexdigest()

    def remember(self, scan) -> None:
        p = self.persistence
        base = self._settings_key()
        p.set(base + "/folder", str(scan.folder))
        p.set(base + "/k", int(scan.k))
        p.set(base + "/layers", json.dumps(list(scan.layers)))
        p.sync()

    def remembered(self) -> dict | None:
        """{folder, k, layers} of this model's last scan from the settings, or None."""
        if self.model.loaded is None:
            return None
        st = self.persistence.settings
        base = self._settings_key()
        folder = st.value(base + "/folder")
        if not folder:
            return None
        try:
            layers = [str(x) for x in json.loads(st.value(base + "/layers", "[]"))]
            return {"folder": str(folder), "k": int(st.value(base + "/k", 9)), "layers": layers}
        except (TypeError, ValueError):
            return None

    def restore(self) -> None:
        """Show the dock if it was open last time; look the last scan of this model up in the cache.

        The lookup (folder listing, weights hash, reading the result) runs in a thread; it never
        scans: a changed folder or other weights give another cache key, i.e. nothing is shown.
        """
        if not self._dock_restored:
            self._dock_restored = True
            st = self.persistence.settings
            if st.value("atlas/in_layout") in (True, "true", "1", 1):
                self.set_in_layout(True)
            elif st.value("atlas/dock_visible") in (True, "true", "1", 1):
                self.show_atlas()
        last = self.remembered()
        if last is None or not last["layers"] or not Path(last["folder"]).is_dir():
            self.start_demo_atlas()
            return
        loaded = self.model.loaded
        model, spec, gen = loaded.model, loaded.spec, self.model.gen
        layouts = getattr(loaded, "layouts", None)
        modules = dict(model.named_modules())
        if any(name not in modules for name in last["layers"]):
            return      # another architecture under the same name: nothing to reopen

        def work():
            try:
                from ..atlas import TopKScan
                scan = TopKScan(model, spec, last["folder"], last["layers"], k=last["k"], layouts=layouts).cached()
            except Exception:  # noqa: BLE001 - an unreadable cache is no cache
                scan = None
            self._atlasLookedUp.emit(gen, scan)
        threading.Thread(target=work, name="cnnvis-atlas-reopen", daemon=True).start()

    def _on_looked_up(self, gen, scan):
        if gen != self.model.gen or self._closed():
            return
        if scan is None:              # the remembered scan is no longer cached: a demo builds its own again
            self.start_demo_atlas()
            return
        self.set_scan(scan)
        layers = ", ".join(n or "output" for n in scan.layers)
        self.status.show_message(f"unit atlas reopened from the cache: {len(scan.paths)} images of {scan.folder},"
                                 f" layers {layers}, top {scan.k}")
        self.restored.emit(scan)

    # ---- the demo models' atlas: drawn by their generator and scanned in the background at first start
    def start_demo_atlas(self) -> bool:
        """For a shipped demo model, build (or read from the cache) its atlas in a thread; False otherwise.

        The window stays usable meanwhile (the scan runs on a private copy of the model); the
        status bar shows the progress, and the finished scan is shown and remembered like a
        scan from the dialog, so the next start reopens it from the cache.
        """
        from ..models.demos import demo_name_of
        loaded = self.model.loaded
        name = demo_name_of(loaded) if loaded is not None else None
        if not self.auto_demo or name is None or self._closed() or self.demo_worker is not None:
            return False
        from ..atlas.demo import DemoAtlas
        from .atlas_dialog import ScanWorker, private_model
        try:
            # channels-last: the same weights (and cache key), ~30 % less CPU per forward of the demo nets
            model = private_model(loaded.model).to(memory_format=torch.channels_last)
        except CnnvisError as e:
            self.status.show_error(f"demo atlas: {e}")
            return False
        w = ScanWorker(DemoAtlas(model, loaded.spec, name))
        w.progress.connect(self._on_demo_progress)
        w.finished_scan.connect(self._on_demo_done)
        w.failed.connect(self._on_demo_failed)
        self.demo_worker = w
        self.status.show_task(f"demo atlas: drawing {name} images…", 0, 1)
        w.start()
        return True

    def _drop_demo_worker(self, wait: bool = False) -> None:
        w, self.demo_worker = self.demo_worker, None
        if w is None:
            return
        w.cancel()              # stops between images / batches; the worker keeps itself alive until then
        if wait:
            from .atlas_dialog import stop_worker
            stop_worker(w)
        if not self._closed():
            self.status.hide_task()

    def _on_demo_progress(self, p) -> None:
        if self.sender() is self.demo_worker and not self._closed():
            self.status.show_task(p.describe(), p.done, p.total)

    def _on_demo_done(self, scan) -> None:
        if self.sender() is not self.demo_worker or self._closed():
            return
        self.demo_worker = None
        self.status.hide_task()
        if scan is None:
            return
        self.set_scan(scan)
        self.remember(scan)
        how = "reopened from the cache" if getattr(scan, "from_cache", False) else "built"
        self.status.show_message(f"demo atlas {how}: top {scan.k} of {len(scan.paths)} generated images for every "
                                 f"layer (Atlas → Show the unit atlas pane; s: patterns)")
        self.restored.emit(scan)

    def _on_demo_failed(self, message) -> None:
        if self.sender() is not self.demo_worker or self._closed():
            return
        self.demo_worker = None
        self.status.hide_task()
        self.status.show_error(f"demo atlas: {message}")

    # ------------------------------------------------------------------ pattern mode (s)
    def has(self, layer) -> bool:
        return self.scan is not None and layer in self.scan.layers

    def _pattern_key(self, layer) -> tuple:
        from ..atlas.optimize import DEFAULT_PRESET
        preset = str(self.pane.preset.currentData()) if self.pane is not None else DEFAULT_PRESET
        return (self.scan.key or str(id(self.scan)), layer, preset)

    def toggle_patterns(self) -> None:
        """s: activations <-> patterns; needs an atlas scan of the current layer (else a message)."""
        s = self.state
        if s.patterns:
            s.update(patterns=False)
        elif not self.has(s.layer):
            self.status.show_error(f"no atlas for layer {s.layer or 'output'} yet: Atlas → Scan a folder… "
                                   f"(the grid stays on activations)")
        else:
            s.update(patterns=True)

    def apply_patterns(self) -> None:
        s = self.state
        if s.patterns and not self.has(s.layer):
            self.status.show_error(f"no atlas for layer {s.layer or 'output'} yet: Atlas → Scan a folder… "
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
                loaded = self.model.loaded
                self._pattern_worker = PatternWorker(loaded.model, loaded.spec, self._parent,
                                                     getattr(loaded, "layouts", None))
            except CnnvisError as e:  # the model could not be copied for the background thread
                self.status.show_error(f"pattern mode is not available: {e}")
                self.state.update(patterns=False)
                return
            self._pattern_worker.ready.connect(self._on_pattern_tiles)
            self._pattern_worker.progress.connect(self._on_pattern_progress)
            self._pattern_worker.failed.connect(self._on_pattern_failed)
            self._pattern_worker.start()
        self._pattern_pending = key
        self._pattern_progress = None
        self._pattern_worker.submit(PatternRequest(key, self.scan, key[1], key[2]))
        self.status.show_message(f"computing the patterns of layer {key[1] or 'output'} (top-1 crops) in the "
                                 f"background…")

    def _on_pattern_tiles(self, tiles):
        if self._closed() or self.scan is None or tiles.key[0] != self._pattern_key(tiles.layer)[0]:
            return
        self._pattern_tiles[tiles.key] = tiles
        while len(self._pattern_tiles) > 16:
            self._pattern_tiles.pop(next(iter(self._pattern_tiles)))
        if self._pattern_pending == tiles.key:
            self._pattern_pending = None
        if self.state.patterns and self._pattern_key(self.state.layer) == tiles.key:
            self._update_grid_title()
            self._redraw_grid()
            self.status.show_message(f"patterns of layer {tiles.layer or 'output'}: {tiles.describe()} "
                                     f"(s: back to activations)")
        self.patternsReady.emit(tiles)

    def _on_pattern_progress(self, key, report):
        if key == self._pattern_pending or report.finished:
            self._pattern_progress = None if report.finished else report
            self.status.show_report(report)              # how far, and the time left
            self._update_grid_title()

    def _on_pattern_failed(self, key, message):
        if key != self._pattern_pending:
            return
        self._pattern_pending = None
        self.status.show_error(f"patterns of layer {key[1] or 'output'}: {message}")
        self.state.update(patterns=False)

    def pattern_title(self, what, name) -> bool:
        """Set the grid's title for pattern mode; False when the grid shows activations."""
        s, grid = self.state, self.grid
        if not (s.patterns and self.has(s.layer)):
            return False
        tiles = self._pattern_tiles.get(self._pattern_key(s.layer))
        if tiles is not None:
            grid.title.setText(f"Patterns — <b>{html_text(name)}</b> <span style='color:#888'>({tiles.describe()})"
                               f"</span>")
            grid.title.setToolTip("each unit's optimized image where one is cached (atlas pane: Optimize),"
                                  " else the crop of its best image in the atlas scan; s: activations")
            return True
        r = self._pattern_progress
        how = (f"{int(r.done)}/{r.total}" + (f", {r.left_text()}" if r.left_s is not None else "")) if r else "…"
        grid.title.setText(f"{what} — <b>{html_text(name)}</b> <span style='color:#888'>(patterns: computing top-1"
                           f" crops {how})</span>")
        return True

    def grid_mosaic(self, res):
        """What the grid shows for a render result: its mosaic, or the patterns in the same grid."""
        if not self.state.patterns or not self.has(res.layer):
            return res.mosaic
        tiles = self._pattern_tiles.get(self._pattern_key(res.layer))
        if tiles is None:
            return res.mosaic
        m = res.mosaic
        ck = (tiles.key, m.rows, m.cols, m.n_units)
        if self._pattern_mosaic is None or self._pattern_mosaic[0] != ck:
            self._pattern_mosaic = (ck, tiles.mosaic(m))
        return self._pattern_mosaic[1]

    def shutdown(self, timeout_ms) -> None:
        self._drop_demo_worker(wait=True)
        if self.pane is not None:
            self.pane.close_worker()
        if self._pattern_worker is not None:
            self._pattern_worker.stop(timeout_ms)
            self._pattern_worker = None
