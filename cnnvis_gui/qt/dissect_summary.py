"""The dissection's layer summary: interpretable units by category, as the paper plots them.

Bau et al. (CVPR 2017, Fig. 5 and 6) summarize a layer by how many of its units are detectors
(IoU > 0.04) of a concept in each category, and by how many distinct concepts they detect.  The
view shows both for the window's current layer as bars (one colour per category, the colours the
grid's labels use), and below them the concepts the layer's units detect, most detectors first.
It is a view of the :class:`~cnnvis_gui.qt.state.ViewerState` (its ``dissection`` and ``layer``)
and holds no computation.
"""
from __future__ import annotations

import html
from collections import Counter

import pyqtgraph as pg
from PyQt5 import QtCore, QtWidgets

from .activation_grid import concept_colour

__all__ = ["DissectSummary"]


def _text(text: str, x: float, y: float):
    """A bar's name and count, just right of its end (always drawn: axis labels are dropped when crowded)."""
    t = pg.TextItem(text, color=(225, 225, 225), anchor=(0, 0.5))
    f = t.textItem.font()
    f.setPointSizeF(8.0)
    t.setFont(f)
    t.setPos(x, y)
    return t


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


class DissectSummary(QtWidgets.QWidget):
    """Bars of the current layer's detectors per category, and the concepts they detect."""

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.title = QtWidgets.QLabel("No dissection yet: Atlas → Dissect…")
        self.title.setWordWrap(True)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(False, False)
        self.plot.setBackground((25, 25, 25))
        self.plot.setMinimumHeight(110)
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.plot.invertY(True)
        self.plot.setTitle("detectors per category", size="9pt")
        self.concepts = pg.PlotWidget()
        self.concepts.setMenuEnabled(False)
        self.concepts.setMouseEnabled(False, False)
        self.concepts.setBackground((25, 25, 25))
        self.concepts.setMinimumHeight(150)
        self.concepts.hideAxis("left")
        self.concepts.hideAxis("bottom")
        self.concepts.invertY(True)
        self.concepts.setTitle("units per concept", size="9pt")
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.title)
        lay.addWidget(self.plot, 2)
        lay.addWidget(self.concepts, 3)
        state.connect(self._on_state)
        self.refresh()

    def _on_state(self, names):
        if names & {"dissection", "layer"}:
            self.refresh()

    def refresh(self) -> None:
        s = self.state
        d = s.dissection
        self.plot.clear()
        self.concepts.clear()
        t = d.layers.get(s.layer) if d is not None else None
        if t is None:
            self.title.setText("No dissection of this layer: Atlas → Dissect… (or choose a dissected layer: "
                               + (", ".join(n or "output" for n in d.layers) if d is not None else "none") + ")")
            return
        summary = t.summary(d.categories)
        cats = list(d.categories)
        units = [summary["by_category"][c] for c in cats]
        unique = [summary["unique_by_category"][c] for c in cats]
        per = " · ".join(f"<span style='color:{_hex(concept_colour(c))}'>{html.escape(c)}</span> {n} "
                         f"({u} concept{'s' if u != 1 else ''})" for c, n, u in zip(cats, units, unique))
        self.title.setText(
            f"<b>{html.escape(t.name or 'output')}</b>: {summary['interpretable']} of {len(t.units)} units are "
            f"detectors (IoU &gt; 0.04) · {d.images} images, Q = {t.quantile:g}<br>{per}")
        # horizontal bars: the names sit on the left axis, readable at any width
        for i, c in enumerate(cats):
            self.plot.addItem(pg.BarGraphItem(x0=[0], y=[i], width=[units[i]], height=0.7,
                                              brush=pg.mkBrush(*concept_colour(c))))
            self.plot.addItem(_text(f"{c} {units[i]}", units[i], i))
        self.plot.setYRange(-0.6, len(cats) - 0.4, padding=0)
        self.plot.setXRange(0, max(units + [1]) * 1.7, padding=0)
        count = Counter((u.concept, u.category) for u in t.units if u.interpretable)
        ranked = sorted(count.items(), key=lambda kv: (-kv[1], kv[0][0]))[:16]
        for i, ((name, cat), n) in enumerate(ranked):
            self.concepts.addItem(pg.BarGraphItem(x0=[0], y=[i], width=[n], height=0.7,
                                                  brush=pg.mkBrush(*concept_colour(cat))))
            self.concepts.addItem(_text(f"{name} {n}", n, i))
        if ranked:
            self.concepts.setYRange(-0.6, len(ranked) - 0.4, padding=0)
            self.concepts.setXRange(0, max(count.values()) * 1.7, padding=0)

    def sizeHint(self):
        return QtCore.QSize(420, 380)
