"""The activation grid: every unit of the current layer tiled in one image; click selects, hover informs.

Tiles carry names where the state has them: a labelled linear layer's class names, or what each
unit detects (network dissection, ``ViewerState.dissection``: the concept of every interpretable
unit, coloured by its category, and the unit's label in the hover line).
"""
from __future__ import annotations

import zlib

import pyqtgraph as pg
from PyQt5 import QtCore, QtGui, QtWidgets

from .fitted_title import FittedTitle
from .panels import FROZEN_COLOR, SELECTED_COLOR, ClickableImageItem, ImagePane
from .plain import plain_tooltip
from .state import ViewerState

__all__ = ["ActivationGrid", "concept_colour"]


class ActivationGrid(ImagePane):
    """Every unit of the current layer tiled in one image; click selects, hover informs."""

    unitClicked = QtCore.pyqtSignal(int)

    def __init__(self, state: ViewerState, parent=None):
        super().__init__("Activations", ClickableImageItem(axisOrder="row-major"), parent, (320, 260))
        # the layer's title keeps its units in sight when the pane is narrow (fitted_title)
        title = FittedTitle("Activations")
        self.header.replaceWidget(self.title, title)
        self.title.deleteLater()
        self.title = title
        self.state = state
        self.mosaic = None
        self.unit_max = None
        self.unit_mean = None
        self.hover_text = ""
        self._label_items = []
        self._labels_key = None
        self.sel_rect = QtWidgets.QGraphicsRectItem(self.item)
        self.frozen_rect = QtWidgets.QGraphicsRectItem(self.item)
        for r, c, w in ((self.sel_rect, SELECTED_COLOR, 2.5), (self.frozen_rect, FROZEN_COLOR, 2.5)):
            pen = pg.mkPen(c, width=w)
            pen.setCosmetic(True)
            r.setPen(pen)
            r.setBrush(QtGui.QBrush(QtCore.Qt.NoBrush))
            r.setZValue(10)
            r.hide()
        self.item.clicked.connect(self._on_click)
        self.vb.sigTransformChanged.connect(self._fit_labels)    # zoom, resize: the labels fit their tiles again
        self.item.hovered.connect(self._on_hover)
        state.connect(self._on_state)
    def set_mosaic(self, mosaic, unit_max, unit_mean) -> None:
        old = self.mosaic
        self.mosaic, self.unit_max, self.unit_mean = mosaic, unit_max, unit_mean
        self.set_rgb(mosaic.image)
        key = (mosaic.image.shape, tuple(_labels(mosaic)), self._concepts_key())
        if old is None or key != self._labels_key:
            self._place_labels()
        self.update_outlines()

    def _concepts_key(self):
        d = self.state.dissection
        return (id(d), self.state.layer) if d is not None and self.state.layer in d.layers else None

    def _place_labels(self):
        """Class names under the tiles of a labelled linear layer, or what each unit detects
        (network dissection: the concept of its interpretable units), for up to 256 tiles."""
        for t in self._label_items:
            t.setParentItem(None)
            if t.scene() is not None:
                t.scene().removeItem(t)
        self._label_items = []
        m = self.mosaic
        if m is None:
            return
        self._labels_key = (m.image.shape, tuple(_labels(m)), self._concepts_key())
        names = _labels(m)
        if names and m.n_units <= 64:
            for u, name in enumerate(names):
                self._add_label(u, str(name), (230, 230, 230))
            return
        if self._labels_key[2] is None or m.n_units > 256:
            return
        for u in range(m.n_units):
            lab = self.state.unit_label(self.state.layer, u)
            if lab is not None and lab.interpretable:
                self._add_label(u, lab.concept, concept_colour(lab.category), small=True)

    def _add_label(self, u: int, text: str, colour, small: bool = False) -> None:
        x0, y0, w, h = self.mosaic.tile_rect(u)
        t = pg.TextItem(text, color=colour, anchor=(0.5, 1.0), fill=(0, 0, 0, 150))
        t.full_text, t.tile_width, t.base_pt = text, w, (7.0 if small else t.textItem.font().pointSizeF())
        t.setToolTip(f"unit {u}: {text}")
        t.setParentItem(self.item)
        t.setPos(x0 + w / 2, y0 + h)
        self._label_items.append(t)
        self._fit_label(t)

    #: the smallest font a tile's label shrinks to before it is cut with "…" (the hover line names it whole)
    MIN_LABEL_PT = 6.0

    def _fit_label(self, t) -> None:
        """Fit a tile's label into the tile's width on screen: the font shrinks (down to ``MIN_LABEL_PT``)
        before the word is cut, and a cut word ends in "…" ("checkerb…"), never in a bare cut letter."""
        px = self.vb.viewPixelSize()[0] if self.vb.width() > 0 else 0.0
        room = t.tile_width / px - 4 if px > 0 else 1e9          # the tile's width in screen pixels, less a margin
        f = QtGui.QFont(t.textItem.font())
        pt = t.base_pt
        while True:
            f.setPointSizeF(pt)
            fm = QtGui.QFontMetricsF(f)
            if fm.horizontalAdvance(t.full_text) <= room or pt <= self.MIN_LABEL_PT:
                break
            pt = max(self.MIN_LABEL_PT, pt - 0.5)
        text = t.full_text if fm.horizontalAdvance(t.full_text) <= room else \
            fm.elidedText(t.full_text, QtCore.Qt.ElideRight, max(room, fm.horizontalAdvance("x…")))
        t.setFont(f)
        if t.textItem.toPlainText() != text:
            t.setText(text)

    def _fit_labels(self, *_) -> None:
        for t in self._label_items:
            self._fit_label(t)

    def unit_at(self, x: float, y: float):
        if self.mosaic is None:
            return None
        h, w = self.mosaic.image.shape[:2]
        if not (0 <= x < w and 0 <= y < h):
            return None
        return self.mosaic.unit_at(int(x), int(y))

    def _on_click(self, x, y):
        u = self.unit_at(x, y)
        if u is not None:
            self.unitClicked.emit(int(u))

    def _on_hover(self, x, y):
        u = self.unit_at(x, y) if x >= 0 else None
        if u is None or self.unit_max is None or u >= len(self.unit_max):
            self.hover_text = ""
        else:
            names = _labels(self.mosaic)
            name = f" ({names[u]})" if names and u < len(names) else ""
            lab = self.state.unit_label(self.state.layer, u)
            detects = f"   {lab.describe()}" if lab is not None else ""
            self.hover_text = (f"unit {u}{name}   max {self.unit_max[u]:.3g}   mean {self.unit_mean[u]:.3g}{detects}")
        self._show_info()

    def _info_variants(self) -> list:
        """"selected unit 5   frozen 3", shorter where the title leaves the header little room: at
        1280 x 720 a ViT block's title left ~30 px and the line read "se…"; now "unit 5", "#5"."""
        s = self.state
        if s.frozen_unit is None:
            return [f"selected unit {s.unit}", f"unit {s.unit}", f"#{s.unit}"]
        f = s.frozen_unit[1]
        return [f"selected unit {s.unit}   frozen {f}", f"unit {s.unit} · frozen {f}", f"#{s.unit} · frozen {f}",
                f"#{s.unit}"]

    def _show_info(self) -> None:
        """The hovered unit's line, else the selected (and frozen) unit's, in the header beside the title."""
        if self.hover_text:
            self.info.setText(self.hover_text)
            return
        self.info.set_variants(self._info_variants())
        self.info.setToolTip(plain_tooltip(self._info_variants()[0] + "\nthe selected unit has the yellow outline" +
                                           ("; the frozen one (d), magenta, is the unit the backprop panes show"
                                            if self.state.frozen_unit is not None else "")))

    def _on_state(self, names):
        if names & {"unit", "frozen_unit", "layer"}:
            self.update_outlines()
        if "dissection" in names and self.mosaic is not None:
            self._place_labels()

    def update_outlines(self):
        m, s = self.mosaic, self.state
        if m is None:
            self.sel_rect.hide()
            self.frozen_rect.hide()
            return
        n = m.n_units
        if 0 <= s.unit < n:
            self.sel_rect.setRect(QtCore.QRectF(*m.tile_rect(s.unit)))
            self.sel_rect.show()
        else:
            self.sel_rect.hide()
        fu = s.frozen_unit
        if fu is not None and fu[0] == s.layer and 0 <= fu[1] < n:
            x0, y0, w, h = m.tile_rect(fu[1])
            self.frozen_rect.setRect(QtCore.QRectF(x0 - 1, y0 - 1, w + 2, h + 2))
            self.frozen_rect.show()
        else:
            self.frozen_rect.hide()
        if not self.hover_text:
            self._show_info()


#: the text colour of a concept's category in the grid (the paper's figures colour categories too)
_CATEGORY_COLOURS = {"shape": (255, 190, 90), "object": (255, 190, 90), "color": (120, 220, 255),
                     "texture": (150, 240, 140), "part": (240, 150, 240), "material": (240, 240, 120),
                     "scene": (255, 140, 140)}


def concept_colour(category) -> tuple:
    """RGB of a concept category's labels (a stable colour for categories not listed)."""
    if category in _CATEGORY_COLOURS:
        return _CATEGORY_COLOURS[category]
    h = zlib.crc32(str(category).encode()) % 360
    c = QtGui.QColor.fromHsv(h, 110, 250)
    return (c.red(), c.green(), c.blue())


def _labels(mosaic):
    return list(getattr(mosaic, "labels", None) or []) if mosaic is not None else []
