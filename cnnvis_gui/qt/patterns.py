"""Pattern mode (``s``): every unit of a layer shown by a picture of what it likes, not its activation.

Usage (main window)::

    worker = PatternWorker(model, spec)                 # a thread with a private copy of the model
    worker.ready.connect(on_tiles)                      # PatternTiles, computed once per (scan, layer, preset)
    worker.submit(PatternRequest(key, scan, layer, preset))
    mosaic = tiles.mosaic(activation_mosaic)            # same rows / cols: a click selects the same unit

Each unit's tile is its **optimized image when one is cached** (the atlas pane's
*Optimize*, or ``cnnvis optimize``, with the pane's preset) and otherwise the **best top-1
crop** of the current atlas scan (the receptive-field crop of the unit's best image), each
fitted into a square tile.  Nothing is optimized here: optimization takes seconds per unit,
a crop one forward and backward.  The worker keeps one pending request (the newest wins)
and stops a running one when a newer request arrives; finished tiles are cached by the
window per (scan, layer, preset), so toggling ``s`` again is instant.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass

import numpy as np
from PyQt5 import QtCore

from ..atlas import DEFAULT_PRESET, ActivationMaximizer, ReceptiveFields, cache_dir, fit_tile
from ..core import ActivationMosaic
from ..core.progress import Progress
from .atlas_dialog import private_model
from .worker import NewestRequestThread, stop_thread

__all__ = ["PATTERN_TILE", "PatternRequest", "PatternTiles", "PatternWorker"]

#: side of one pattern tile in pixels (crops and optimized images are fitted into it, aspect kept)
PATTERN_TILE = 64
#: seconds between two progress reports of the crops (the status bar's time left)
PATTERN_REPORT_S = 0.5


@dataclass(frozen=True)
class PatternRequest:
    key: tuple                   # (scan key, layer, preset): the cache key of the result
    scan: object                 # AtlasScan
    layer: str
    preset: str = DEFAULT_PRESET
    tile: int = PATTERN_TILE


@dataclass(frozen=True)
class PatternTiles:
    """One picture per unit of a layer (n x tile x tile x 3 uint8 RGB, read-only)."""

    key: tuple
    layer: str
    tiles: np.ndarray
    kinds: tuple                 # per unit: "optimized", "crop" or "" (no hit)

    @property
    def n_optimized(self) -> int:
        return sum(k == "optimized" for k in self.kinds)

    @property
    def n_crops(self) -> int:
        return sum(k == "crop" for k in self.kinds)

    def describe(self) -> str:
        """"top-1 crops", "optimized images" or "3 optimized images, 61 top-1 crops"."""
        o, c = self.n_optimized, self.n_crops
        if o and c:
            return f"{o} optimized image{'s' * (o != 1)}, {c} top-1 crop{'s' * (c != 1)}"
        return "optimized images" if o else "top-1 crops"

    def mosaic(self, like: ActivationMosaic | None = None) -> ActivationMosaic:
        """The tiles laid out in ``like``'s grid (rows, cols, labels), or a grid of their own."""
        if like is not None and like.n_units == len(self.kinds):
            return ActivationMosaic.from_tiles(self.tiles, grid=(like.rows, like.cols), separator=like.separator,
                                               labels=like.labels)
        return ActivationMosaic.from_tiles(self.tiles)


class PatternWorker(NewestRequestThread):
    """Builds :class:`PatternTiles` off the GUI thread, on a private copy of the model."""

    ready = QtCore.pyqtSignal(object)               # PatternTiles
    progress = QtCore.pyqtSignal(object, object)    # (key, core.progress.ProgressReport: units, time left)
    failed = QtCore.pyqtSignal(object, str)         # (key, message)

    def __init__(self, model, spec, parent=None, layouts=None):
        super().__init__(parent)
        self.model, self.spec = private_model(model), spec
        self.layouts = dict(layouts or {})

    def stop(self, timeout_ms: int = 10000) -> bool:
        """Ask the loop to end; wait up to ``timeout_ms`` for it (then give up: see ``worker.stop_thread``)."""
        self.request_stop()
        return stop_thread(self, timeout_ms)

    def handle(self, req: PatternRequest) -> None:
        tiles = self._build(req)
        if tiles is not None:
            self.ready.emit(tiles)

    def handle_error(self, req, e) -> None:  # reported in the status bar, never raised in the thread
        self.failed.emit(req.key, str(e) or traceback.format_exc(limit=1))

    def _build(self, req: PatternRequest) -> PatternTiles | None:
        scan, layer, size = req.scan, req.layer, int(req.tile)
        n = scan.layer(layer).units
        tiles = np.full((n, size, size, 3), 32, np.uint8)
        kinds = [""] * n
        # cached optimized images first (never computed here; skipped when none was ever cached)
        if any(cache_dir().glob("optimize-*.npz")):
            for u in range(n):
                if self._newer():
                    return None
                res = ActivationMaximizer(self.model, self.spec, layer, u, preset=req.preset,
                                          layouts=self.layouts).cached()
                if res is not None:
                    tiles[u] = fit_tile(res.image, size)
                    kinds[u] = "optimized"
        rf = ReceptiveFields(self.model, self.spec, layouts=self.layouts)   # the atlas pane's crops (same fit, probes)
        todo = [u for u in range(n) if not kinds[u]]
        watch = Progress("patterns", len(todo), "crop", listener=lambda r: self.progress.emit(req.key, r),
                         interval_s=PATTERN_REPORT_S)       # a crop: one forward and backward of its image
        try:
            with watch:
                for u in todo:
                    if self._newer():
                        return None
                    hits = scan.hits(layer, u)
                    if hits:
                        tiles[u] = fit_tile(rf.crops(layer, u, hits[0]).image, size)
                        kinds[u] = "crop"
                    watch.advance()
        finally:
            rf.close()
        tiles.setflags(write=False)
        return PatternTiles(req.key, layer, tiles, tuple(kinds))

