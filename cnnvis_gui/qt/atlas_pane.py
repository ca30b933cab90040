"""Atlas pane for the selected unit: its top-k images, their backprop crops, its optimized image.

Usage (main window)::

    pane = AtlasPane(model, spec)                      # a QWidget for a dock or splitter
    dialog.scanFinished.connect(pane.set_scan)         # an AtlasScan (see atlas_dialog.py)
    pane.show_unit(layer, unit)                        # whenever the selected unit changes
    pane.set_model(model, spec)                        # after loading another model (clears the scan)
    pane.close_worker()                                # on window close

All computation (crops: one forward + two backward per hit; optimization) runs in one
:class:`AtlasWorker` thread on a private copy of the model.  Like the render worker, it
keeps a single pending slot: selecting another unit replaces the waiting request and stops
a running optimization, so it always works on the newest choice.  Results arrive as
signals carrying fresh arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PyQt5 import QtCore, QtWidgets

from ..atlas import DEFAULT_PRESET, PRESET_WORDS, PRESETS, ActivationMaximizer, ReceptiveFields
from ..atlas.montage import grid
from .atlas_dialog import private_model
from .atlas_objective import ObjectiveField, one_line, optimize_written
from .image_view import ClickableImage, LargeImage, rgb_pixmap
from .plain import plain_label, plain_tooltip
from .worker import NewestRequestThread

__all__ = ["AtlasRequest", "AtlasCrops", "AtlasWorker", "AtlasPane"]


@dataclass(frozen=True)
class AtlasRequest:
    seq: int
    layer: str
    unit: int
    scan: object = None          # AtlasScan or None
    optimize: bool = False       # run the optimization (a cached optimized image is shown anyway)
    preset: str = DEFAULT_PRESET
    method: str = "guided"
    copies: int = 1              # > 1: that many different images in one run (Olah et al. 2017's diversity)
    objective: str | None = None  # an objective written out (the Objective field): optimized instead of the unit
    max_iter: int | None = None  # steps (None: the preset's)


@dataclass(frozen=True)
class AtlasCrops:
    seq: int
    layer: str
    unit: int
    images: tuple                # H x W x 3 uint8 RGB crops, best first
    deconvs: tuple
    captions: tuple              # "value @ (y, x)  file"


class AtlasWorker(NewestRequestThread):
    cropsReady = QtCore.pyqtSignal(object)       # AtlasCrops
    optimized = QtCore.pyqtSignal(object, object)  # (AtlasRequest, OptStep): image + activation
    status = QtCore.pyqtSignal(object, str)      # (AtlasRequest, text)
    failed = QtCore.pyqtSignal(object, str)

    def __init__(self, model, spec, parent=None, layouts=None):
        super().__init__(parent)
        self.spec, self.copy_error = spec, None
        self.layouts = dict(layouts or {})
        try:
            self.model = private_model(model)
        except Exception as e:  # never share the window's model: say so for every request instead
            self.model, self.copy_error = None, str(e)
        self._rf = {}
        self._cancelled = 0          # the newest request seq whose optimization Stop ended

    def stop(self):
        self.request_stop()

    def cancel(self, seq: int) -> None:
        """End the optimization of request ``seq`` (and older) after its current step, keeping its best image."""
        self._cancelled = max(self._cancelled, int(seq))

    def _stopped(self, req) -> bool:
        return self._newer() or self._cancelled >= req.seq

    def handle(self, req: AtlasRequest):
        self._work(req)

    def handle_error(self, req, e):
        self.failed.emit(req, f"{e}" or type(e).__name__)      # one line, never a traceback

    def finish(self):
        for rf in self._rf.values():
            rf.close()

    def _work(self, req: AtlasRequest):
        if self.model is None:
            self.failed.emit(req, self.copy_error)
            return
        if req.objective is not None:
            optimize_written(self, req, lambda: self._stopped(req))
            return
        scan = req.scan
        if scan is not None and req.layer in scan.layers:
            key = (id(scan), req.method)
            rf = self._rf.get(key)
            if rf is None:
                for old in self._rf.values():
                    old.close()
                self._rf = {key: ReceptiveFields(self.model, self.spec, method=req.method, fit=None,
                                                 layouts=self.layouts)}
                rf = self._rf[key]
            imgs, decs, caps = [], [], []
            for hit in scan.hits(req.layer, req.unit):
                if self._newer():
                    return
                c = rf.crops(req.layer, req.unit, hit)
                imgs.append(c.image)
                decs.append(c.deconv)
                caps.append(f"{hit.value:.3g} @ ({hit.y}, {hit.x})  {hit.path.name}")
            self.cropsReady.emit(AtlasCrops(req.seq, req.layer, req.unit, tuple(imgs), tuple(decs), tuple(caps)))
        if req.copies > 1:
            self._diverse(req)
            return
        opt = ActivationMaximizer(self.model, self.spec, req.layer, req.unit, preset=req.preset, layouts=self.layouts,
                                  max_iter=req.max_iter)
        cached = opt.cached()
        if cached is None and not req.optimize:
            self.status.emit(req, "not optimized yet")
            return
        for step in opt.run(every=10):
            self.optimized.emit(req, step)
            if self._stopped(req):
                opt.stop()
        res = opt.result
        if res is not None and not self._newer():
            image = res.description.split(";")[0]          # what was used: the parameterization and colour
            how = " (cached)" if res.from_cache else (" (stopped, not cached)" if self._cancelled >= req.seq else "")
            self.status.emit(req, f"activation {res.activation:.4g}{how}"
                                  f"{' · ' + image if image else ''}{'; ' + res.problem if res.problem else ''}")

    def _diverse(self, req: AtlasRequest):
        """``req.copies`` different images of the unit in one run, as ``cnnvis optimize --diversity N`` (the
        same cache: the command's images show here)."""
        from ..atlas.objective_run import DIVERSITY_WEIGHT, diversity_layer, optimize_objective
        from ..atlas.optimize import unit_activation
        from ..optvis.render import RenderStep
        opt = ActivationMaximizer(self.model, self.spec, req.layer, req.unit, preset=req.preset,
                                  layouts=self.layouts, use_cache=False, max_iter=req.max_iter)
        if opt.yosinski:
            self.status.emit(req, f"×{req.copies} needs the Fourier, MACO or pixels preset: the Yosinski presets "
                                  f"make one image")
            return
        objective = opt._objective()
        layer = diversity_layer(self.model, self.spec, objective, None, self.layouts)
        res = optimize_objective(self.model, self.spec, objective, req.copies, opt.params, DIVERSITY_WEIGHT, layer,
                                 opt.layer_layouts, progress=lambda st: self.optimized.emit(req, st),
                                 key=(opt.layer, opt.unit), stop=lambda: self._stopped(req), only_cached=not req.optimize)
        if res is None:
            self.status.emit(req, "not optimized yet")
            return
        if self._newer():
            return
        acts = unit_activation(self.model, self.spec, opt.layer, opt.unit, res.x, opt.target, opt.layout,
                               self.layouts).tolist()
        self.optimized.emit(req, RenderStep(res.iterations, opt.params.max_iter, acts, acts, res.images))
        self.status.emit(req, f"{req.copies} images, activation {min(acts):.4g} to {max(acts):.4g}, Gram similarity "
                              f"{res.similarity:.2f} at {res.diversity_layer or 'output'}"
                              f"{' (cached)' if res.from_cache else ''}{'; ' + res.problem if res.problem else ''}")


#: px: a pane narrower than this puts the Objective field under its title, not beside it
NARROW = 900
MIN_TILE = 40          # px: the smallest tile the pane draws (a crop is still recognisable)
#: how many different images of a unit the pane's ×N toggle asks for (diversity)
DIVERSE_COPIES = 4


def tile_layout(width: int, height: int, k: int, spacing: int = 2, min_tile: int = MIN_TILE,
                max_tile: int = 320) -> tuple:
    """(columns, tile px) that make the biggest tiles for ``k`` top images and ``k`` backprop crops side by
    side, plus the optimized image (two tiles wide), in ``width`` x ``height`` pixels.

    A tall column (the deep visualization toolbox's place) takes 3 x 3 grids; a wide, low dock takes
    fewer rows (a 1,300 x 260 dock: 5 columns of 2 rows, ~100 px tiles instead of 3 x 3 of ~62 px).
    """
    square = int(np.ceil(np.sqrt(k)))
    best, best_key = None, None
    for cols in range(1, k + 1):
        rows = -(-k // cols)
        opt = min(rows, 2)               # the optimized image: 2 tiles wide and tall, 1 beside a single row
        across = 2 * cols + opt          # two grids and the optimized image
        tile = min((width - spacing * (across + 4)) // across, (height - spacing * (rows + 1)) // rows)
        tile = int(max(min_tile, min(max_tile, tile)))
        overflow = max(0, across * tile - width) + max(0, rows * tile - height)
        key = (tile, -overflow, -abs(cols - square))   # biggest; then what spills least; then the squarer
        if best_key is None or key > best_key:
            best, best_key = (cols, tile), key
    return best


class AtlasPane(QtWidgets.QWidget):
    """Top-k crops (left), their backprop crops (middle) and the optimized image (right) of one unit.

    The tiles fill the pane (:func:`tile_layout`): as big as its width and height allow, in as many
    columns as make them biggest; the images are scaled from the crops kept, never recomputed.
    """

    #: an objective's outcome for the window's status bar (text, is an error): the dock may be too low to show
    #: the pane's own status line
    objectiveReported = QtCore.pyqtSignal(str, bool)

    def __init__(self, model, spec, k: int = 9, tile: int = 72, parent=None, layouts=None):
        super().__init__(parent)
        self.tile = tile
        self.k = k
        self.cols = -(-k // 2)       # two rows until the pane knows its size: a low dock fits a 720 px screen
        self._crops = None           # the AtlasCrops shown (re-scaled when the tiles change size)
        self._opt_rgb = None
        self.scan = None
        self.layer, self.unit, self.concept = None, None, ""
        self._seq = 0
        self.title = plain_label("No unit selected")      # layer names, file names, errors: as text
        self.image_grid, self.image_cells = self._grid(k)
        self.deconv_grid, self.deconv_cells = self._grid(k)
        self.opt_label = ClickableImage()              # a click: the image large, in a window of its own
        self.opt_label.clicked.connect(self.show_large)
        self.opt_label.setCursor(QtCore.Qt.PointingHandCursor)
        self.large = None                               # that window (LargeImage), once opened
        self.opt_label.setMinimumSize(MIN_TILE, MIN_TILE)           # fit_tiles sizes it: the dock may shrink
        self.opt_label.setMaximumSize(2 * tile, 2 * tile)
        self.opt_label.setAlignment(QtCore.Qt.AlignCenter)
        self.opt_label.setStyleSheet("background: #202020")
        self.preset = QtWidgets.QComboBox()
        for name in PRESETS:
            self.preset.addItem(PRESET_WORDS[name], name)
        self.preset.setCurrentIndex(self.preset.findData(DEFAULT_PRESET))
        self.preset.setToolTip("How the optimized image is made: Fourier (Lucid's Fourier image with decorrelated "
                               "colour and random transforms, the default), MACO (natural-image magnitude, phase "
                               "only), pixels, or the regularized ascent of Yosinski et al. 2015 (1-4)")
        self.copies = QtWidgets.QToolButton()           # a toggle, not a list: the pane must stay narrow
        self.copies.setText(f"×{DIVERSE_COPIES}")
        self.copies.setCheckable(True)
        self.copies.setFixedWidth(self.copies.fontMetrics().horizontalAdvance(self.copies.text()) + 12)
        self.copies.setToolTip(f"On: {DIVERSE_COPIES} different images of the unit in one run, pushed apart by the "
                               f"diversity penalty of Olah et al. 2017 (cnnvis optimize --diversity "
                               f"{DIVERSE_COPIES}); off: one image")
        self.optimize_button = QtWidgets.QPushButton("Optimize")
        self.optimize_button.clicked.connect(self.optimize)
        self.method = QtWidgets.QComboBox()
        self.method.addItems(["guided", "deconvnet"])
        self.method.currentTextChanged.connect(lambda _: self._submit(False))
        self.status = plain_label("")
        self.status.setWordWrap(True)
        self.objective = ObjectiveField()               # any objective written out, as cnnvis optimize --objective
        self.objective.submitted.connect(self.optimize_objective)
        self.objective.stopRequested.connect(self.stop_optimizing)
        self.max_iter = None                            # steps of an optimization (None: the preset's)

        right = QtWidgets.QVBoxLayout()               # its controls beside its heading: the tiles get the height
        opt_head = QtWidgets.QHBoxLayout()
        opt_head.addWidget(QtWidgets.QLabel("Optimized"))
        opt_head.addWidget(self.preset)
        opt_head.addWidget(self.copies)
        opt_head.addWidget(self.optimize_button)
        opt_head.addStretch(1)
        right.addLayout(opt_head)
        right.addWidget(self.opt_label)
        right.addStretch(1)
        grids = QtWidgets.QHBoxLayout()
        for title, g in (("Top images", self.image_grid), ("Backprop", self.deconv_grid)):
            col = QtWidgets.QVBoxLayout()
            head = QtWidgets.QHBoxLayout()
            head.addWidget(QtWidgets.QLabel(title))
            if title == "Backprop":
                head.addWidget(self.method)
            head.addStretch(1)
            col.addLayout(head)
            col.addLayout(g)
            col.addStretch(1)
            grids.addLayout(col)
        grids.addLayout(right)
        grids.addStretch(1)                          # the tiles keep together at the left
        # the field beside the title (a low dock keeps its tiles' height), under it in a narrow column (fit_tiles)
        self._top = top = QtWidgets.QBoxLayout(QtWidgets.QBoxLayout.LeftToRight)
        self.title.setSizePolicy(QtWidgets.QSizePolicy.Ignored, QtWidgets.QSizePolicy.Preferred)   # may clip
        top.addWidget(self.title, 2)
        top.addWidget(self.objective, 3)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(top)
        lay.addLayout(grids)
        lay.addWidget(self.status)
        self.worker = AtlasWorker(model, spec, self, layouts)
        self._connect(self.worker)
        self.worker.start()

    # ------------------------------------------------------------------ public API
    def set_model(self, model, spec, layouts=None):
        """A new model: restart the worker on it and forget the scan (it belongs to the old model)."""
        self.close_worker()
        self.scan = None
        self.worker = AtlasWorker(model, spec, self, layouts)
        self._connect(self.worker)
        self.worker.start()
        self._clear()

    def set_scan(self, scan):
        """Show hits from this :class:`~cnnvis_gui.atlas.AtlasScan` (or None)."""
        self.scan = scan
        if self.layer is not None:
            self._submit(False)

    def show_unit(self, layer: str, unit: int, concept: str = ""):
        """Select the unit to show (crops are computed in the worker; a cached optimized image is shown).

        ``concept``: what the unit detects (network dissection), shown in the title.
        """
        self.layer, self.unit, self.concept = layer, int(unit), concept
        self.objective.show_hint(layer, self.unit)
        self._submit(False)

    def optimize(self):
        """Run (or show the cached) optimized image of the current unit with the chosen preset."""
        if self.layer is not None:
            self._submit(True)

    def optimize_objective(self, text: str):
        """Optimize an objective written out (``features.10:5 - 0.5*features.10:7``, ``output:281 - output:285``)
        with the chosen preset (and ×4), as ``cnnvis optimize --objective`` does; a text that cannot be read
        (or names an unknown layer, a unit out of range) is one line in the status."""
        if self.worker is None:
            return
        self._seq += 1
        self._clear()
        self._set_title(f"Objective {text}")
        self.status.setText("optimizing the objective…")
        self.objective.stop_button.setEnabled(True)
        self.worker.submit(AtlasRequest(self._seq, self.layer or "", self.unit or 0, None, True,
                                        str(self.preset.currentData()), self.method.currentText(),
                                        DIVERSE_COPIES if self.copies.isChecked() else 1, str(text),
                                        self.max_iter))

    def show_large(self):
        """The optimized image (or montage) shown large in a window of its own, kept up to date."""
        if self._opt_rgb is None:
            return
        if self.large is None:
            self.large = LargeImage(self)
        self.large.show_image(self._opt_rgb, f"cnnvis-gui: optimized image: {self.title.text()}")
        self.large.show()
        self.large.raise_()

    def stop_optimizing(self):
        """End the running optimization (unit or objective) after its current step; its best image stays."""
        if self.worker is not None:
            self.worker.cancel(self._seq)
        self.objective.stop_button.setEnabled(False)

    def close_worker(self):
        if self.worker is not None:
            self.worker.stop()
            # no timeout: a running QThread must not be destroyed (that aborts the process); the
            # crops loop and the optimizer check for the stop between hits / every few steps
            self.worker.wait()
            self.worker = None

    def closeEvent(self, ev):
        self.close_worker()
        super().closeEvent(ev)

    # ------------------------------------------------------------------ internals
    def _grid(self, k):
        g = QtWidgets.QGridLayout()
        g.setSpacing(2)
        cols = self.cols
        cells = []
        for i in range(k):
            lab = QtWidgets.QLabel()
            lab.setMinimumSize(MIN_TILE, MIN_TILE)       # fit_tiles makes them as big as the pane allows
            lab.setMaximumSize(self.tile, self.tile)
            lab.setAlignment(QtCore.Qt.AlignCenter)
            lab.setStyleSheet("background: #202020")
            g.addWidget(lab, i // cols, i % cols)
            cells.append(lab)
        return g, cells

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        self.fit_tiles()

    def event(self, ev):
        if ev.type() == QtCore.QEvent.ParentChange:      # a scroll area's viewport: follow its size
            parent = self.parentWidget()
            if parent is not None and parent is not getattr(self, "_watched", None):
                parent.installEventFilter(self)
                self._watched = parent
        return super().event(ev)

    def eventFilter(self, obj, ev):
        if obj is getattr(self, "_watched", None) and ev.type() == QtCore.QEvent.Resize:
            self.fit_tiles()
        return False

    def fit_tiles(self) -> None:
        """Tiles as big as the pane's visible area allows (:func:`tile_layout`; in a scroll area, its
        viewport); the shown images are scaled again, not recomputed."""
        area = self.size()
        viewport = self.parentWidget()
        if viewport is not None and isinstance(viewport.parentWidget(), QtWidgets.QAbstractScrollArea):
            area = viewport.size()
        narrow = area.width() < NARROW
        direction = QtWidgets.QBoxLayout.TopToBottom if narrow else QtWidgets.QBoxLayout.LeftToRight
        if self._top.direction() != direction:
            self._top.setDirection(direction)
            for i, stretch in enumerate((0, 0) if narrow else (2, 3)):     # stacked: no gaps between them
                self._top.setStretch(i, stretch)
        tops = (self.title.sizeHint().height(), self.objective.sizeHint().height())
        head = (sum(tops) if narrow else max(tops)) + self.status.sizeHint().height() + \
            self.method.sizeHint().height() + 30
        cols, tile = tile_layout(area.width() - 24, area.height() - head, self.k)
        if (cols, tile) == (self.cols, self.tile):
            return
        if cols != self.cols:
            for grid, cells in ((self.image_grid, self.image_cells), (self.deconv_grid, self.deconv_cells)):
                for lab in cells:
                    grid.removeWidget(lab)
                for i, lab in enumerate(cells):
                    grid.addWidget(lab, i // cols, i % cols)
        self.cols, self.tile = cols, tile
        for lab in self.image_cells + self.deconv_cells:     # at most a tile; the pane may still shrink
            lab.setMinimumSize(MIN_TILE, MIN_TILE)
            lab.setMaximumSize(tile, tile)
            lab.resize(tile, tile)
        side = self.opt_side()
        self.opt_label.setMinimumSize(MIN_TILE, MIN_TILE)
        self.opt_label.setMaximumSize(side, side)
        if self._crops is not None:
            self._show_crops(self._crops)
        if self._opt_rgb is not None:
            self.opt_label.setPixmap(rgb_pixmap(self._opt_rgb, side))

    def opt_side(self) -> int:
        """The optimized image's side: two tiles, or one beside a single row of tiles."""
        return self.tile * min(2, -(-self.k // self.cols))

    def _connect(self, w: AtlasWorker):
        w.cropsReady.connect(self._on_crops)
        w.optimized.connect(self._on_step)
        w.status.connect(self._on_status)
        w.failed.connect(self._on_failed)

    def _clear(self):
        for lab in self.image_cells + self.deconv_cells:
            lab.clear()
            lab.setToolTip("")
        self.opt_label.clear()
        self._crops = self._opt_rgb = None

    def _submit(self, optimize: bool):
        if self.worker is None or self.layer is None:
            return
        self._seq += 1
        self._clear()
        name = self.layer or "output"
        has = self.scan is not None and self.layer in self.scan.layers
        self._set_title(f"{name} unit {self.unit}" + (f" — detects {self.concept}" if self.concept else "")
                        + ("" if has else "  (no scan for this layer: Atlas → Scan)"))
        self.status.setText("optimizing…" if optimize else ("computing crops…" if has else ""))
        self.objective.stop_button.setEnabled(optimize)
        self.worker.submit(AtlasRequest(self._seq, self.layer, self.unit, self.scan, optimize,
                                        str(self.preset.currentData()), self.method.currentText(),
                                        DIVERSE_COPIES if self.copies.isChecked() else 1, max_iter=self.max_iter))

    def _set_title(self, text: str):
        self.title.setText(text)
        self.title.setToolTip(plain_tooltip(text))      # the whole title, where a narrow pane clips it

    def _on_crops(self, c: AtlasCrops):
        if c.seq != self._seq:
            return
        self._crops = c
        self._show_crops(c)
        self.status.setText(f"{len(c.images)} top images")

    def _show_crops(self, c: AtlasCrops):
        for lab, img, cap in zip(self.image_cells, c.images, c.captions):
            lab.setPixmap(rgb_pixmap(img, self.tile))
            lab.setToolTip(plain_tooltip(cap))          # the image's file name
        for lab, img, cap in zip(self.deconv_cells, c.deconvs, c.captions):
            lab.setPixmap(rgb_pixmap(img, self.tile))
            lab.setToolTip(plain_tooltip(cap))

    def _on_step(self, req: AtlasRequest, step):
        if req.seq != self._seq:
            return
        self._opt_rgb = step.image if len(step.images) == 1 else \
            grid(step.images, tile=max(step.image.shape[:2]), background=32)      # ×N: their 2 x 2 (...) montage
        self.opt_label.setPixmap(rgb_pixmap(self._opt_rgb, self.opt_side()))
        value = f"{step.activation:.4g}" if len(step.values) == 1 else \
            f"{min(step.values):.4g} to {max(step.values):.4g}"
        word = "activation" if len(step.values) == 1 and req.objective is None else "objective"
        self.opt_label.setToolTip(f"{word} {value}; {PRESET_WORDS.get(req.preset, req.preset)} (click: large)")
        if self.large is not None and self.large.isVisible():
            self.large.show_image(self._opt_rgb, f"cnnvis-gui: optimized image: {self.title.text()}")
        self.status.setText(f"optimizing: step {step.iteration}/{step.max_iter}, {word} {value}")

    def _on_status(self, req: AtlasRequest, text: str):
        if req.seq == self._seq:
            self.status.setText(text)
            self.objective.stop_button.setEnabled(False)
            if req.objective is not None:
                self.objectiveReported.emit(f"objective {req.objective.strip()!r}: {text}", False)

    def _on_failed(self, req: AtlasRequest, text: str):
        if req.seq == self._seq:
            self.status.setText(f"failed: {one_line(text)}")        # never a traceback: the pane goes on
            self.objective.stop_button.setEnabled(False)
            if req.objective is not None:
                self.objectiveReported.emit(f"objective: {one_line(text)}", True)
