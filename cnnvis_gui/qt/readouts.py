"""What the network says about the selection: the unit's map (or its value) and the class predictions.

Both are read in a narrow column beside the grid (about 210 px on a 1280 x 720 screen), so
neither cuts its words: the unit pane's header names the layer cut at its start ("…features.13"),
a one-value unit shows its number and the layer's range wrapped, long class names wrap.
"""
from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtCore, QtWidgets

from .panels import ImagePane, _esc, _title
from .plain import plain_tooltip

__all__ = ["UnitPane", "Predictions", "prefix_names"]


def _row(widget) -> QtWidgets.QHBoxLayout:
    row = QtWidgets.QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(widget, 1)
    return row


class UnitPane(ImagePane):
    """The selected unit's activation map, enlarged, with a colour scale.

    The worker sends the map already coloured (uint8 RGB); the colour bar only shows the scale.
    """

    def __init__(self, parent=None, lut=None, item=None):
        super().__init__("Unit", item, parent, (160, 140))
        self.info.elide = QtCore.Qt.ElideLeft        # "…features.13": the layer name's end says where
        # the dissection's label of the unit, on a line of its own under "Unit N  of layer": it wraps in a
        # narrow pane ("no detector (best checkerboard, IoU 0.04)" beside the title was cut mid-word)
        self.concept = QtWidgets.QLabel()
        self.concept.setTextFormat(QtCore.Qt.RichText)
        self.concept.setWordWrap(True)
        self.concept.setStyleSheet("QLabel { padding: 0px 2px; }")
        self.concept.hide()
        self.layout().insertLayout(1, _row(self.concept))
        self.bar = None
        if lut is not None:
            cmap = pg.ColorMap(np.linspace(0, 1, len(lut)), np.asarray(lut, dtype=np.ubyte))
            self.bar = pg.ColorBarItem(values=(0, 1), colorMap=cmap, interactive=False, width=12)
            self.view.addItem(self.bar)
        self._bar_levels, self._bar_time, self._bar_pending = None, 0.0, None
        self._bar_timer = QtCore.QTimer(self)
        self._bar_timer.setSingleShot(True)
        self._bar_timer.timeout.connect(self._bar_catch_up)
        # a unit with one value (fc layers, the output): the number and a bar, not a 1 x 1 image
        self.value = QtWidgets.QLabel()
        self.value.setTextFormat(QtCore.Qt.RichText)
        self.value.setAlignment(QtCore.Qt.AlignCenter)
        self.value.setWordWrap(True)                 # the layer's range wraps in a narrow pane, never cut
        self.value.setMinimumSize(160, 140)
        self.value.hide()
        self.layout().insertWidget(self.layout().indexOf(self.view), self.value, 1)

    def set_concept(self, html: str, tip: str = "") -> None:
        """The unit's dissection label under the title (rich text; "" hides the line)."""
        self.concept.setText(html)
        self.concept.setToolTip(plain_tooltip(tip))
        self.concept.setVisible(bool(html))

    def set_info(self, where: str, prefix=(), tip: str = "") -> None:
        """The header beside "Unit N": ``where`` ("of blocks.5"), after a token layer's ``prefix`` token
        values for this feature (class, distillation, registers: beside its map, not on it).

        The prefix comes first and the longest variant that fits is shown: "CLS 0.357 · dist 0.12 · of
        blocks.5", without the layer, with 2 digits, then the class token alone; DeiT's distillation token
        had been in the tooltip only at 1280 x 720.  Without a prefix the layer is cut at its start."""
        self.info.elide = QtCore.Qt.ElideRight if prefix else QtCore.Qt.ElideLeft
        if not prefix:
            self.info.setText(where)
        else:
            names = prefix_names(len(prefix))
            tokens = lambda fmt: " · ".join(f"{n} {v:{fmt}}" for n, v in zip(names, prefix))   # noqa: E731
            self.info.set_variants([f"{tokens('.3g')} · {where}", tokens(".3g"), tokens(".2g"),
                                    f"{names[0]} {prefix[0]:.3g}"])
            tip += (f"\nthe {len(prefix)} prefix token(s) (CLS: the class token; then distillation (DeiT) or "
                    f"registers) are not on the map; their value for this feature: "
                    + ", ".join(f"{n} {v:.6g}" for n, v in zip(names, prefix))
                    + "\nobjective 'class token' backprops from prefix token 0")
        self.info.setToolTip(plain_tooltip(tip))

    #: the colour bar's scale is redrawn when an end moves by more than this part of the range ...
    BAR_TOLERANCE = 0.02
    #: ... and at most this often (s) while it keeps moving (a live source); the header has the exact range
    BAR_INTERVAL = 0.25
    #: seconds on a monotonic clock (tests give the pane a clock of their own)
    clock = staticmethod(time.monotonic)

    def _bar_moved(self, levels) -> bool:
        """A live unit's range changes every frame; redrawing the bar's axis (ticks, labels) took
        ~7 ms of the GUI thread per frame, time the render thread waited for the GIL.  The bar is
        redrawn when an end moves by more than ``BAR_TOLERANCE`` of the range, at most every
        ``BAR_INTERVAL`` seconds; a change that settles is drawn by the next frame after that."""
        lo, hi = (float(v) for v in levels)
        old = self._bar_levels
        now = self.clock()
        if old is not None:
            tol = self.BAR_TOLERANCE * max(hi - lo, old[1] - old[0], 1e-12)
            if abs(lo - old[0]) <= tol and abs(hi - old[1]) <= tol:
                return False
            wait = self._bar_time + self.BAR_INTERVAL - now
            if wait > 0:
                self._bar_pending = (lo, hi)          # drawn when the interval is over, if no frame comes
                if not self._bar_timer.isActive():
                    self._bar_timer.start(max(1, int(wait * 1000)))
                return False
        self._bar_levels, self._bar_time, self._bar_pending = (lo, hi), now, None
        self._bar_timer.stop()
        return True

    def _bar_catch_up(self):
        if self._bar_pending is not None and self.bar is not None:
            self._bar_levels, self._bar_time = self._bar_pending, self.clock()
            self.bar.setLevels(self._bar_pending)
            self._bar_pending = None

    def set_unit(self, rgb, levels, value=None, value_range=None):
        """Show the unit's map; a 1 x 1 map with its ``value`` shows the number and where it lies
        in ``value_range`` (the layer's lowest to highest unit value)."""
        if self.bar is not None and self._bar_moved(levels):
            self.bar.setLevels(levels)
        scalar = value is not None and rgb.shape[0] == 1 and rgb.shape[1] == 1
        self.view.setVisible(not scalar)
        self.value.setVisible(scalar)
        if scalar:
            self.value.setText(_value_html(float(value), value_range))
        self.set_rgb(rgb)


def prefix_names(p: int) -> list:
    """Short names of a token layer's ``p`` prefix tokens: the class token, then DeiT's distillation
    token when there are two, else registers (ViT with registers: 1 + 4)."""
    if p == 2:
        return ["CLS", "dist"]
    return ["CLS"] + [f"reg{i}" for i in range(1, p)]


def _value_html(v: float, value_range) -> str:
    lo, hi = value_range if value_range is not None else (min(v, 0.0), max(v, 0.0))
    frac = 0.0 if hi <= lo else min(1.0, max(0.0, (v - lo) / (hi - lo)))
    w = max(1, int(round(frac * 200)))
    return (f"<div style='font-size:26px; font-weight:600'>{v:.4g}</div>"
            f"<table cellspacing='0' cellpadding='0' style='margin-top:6px'><tr>"
            f"<td bgcolor='#e0a030' width='{w}' height='12'></td>"
            f"<td bgcolor='#303038' width='{201 - w}' height='12'></td></tr></table>"
            f"<div style='color:#888'>the layer's units: {lo:.3g} … {hi:.3g}</div>")


class Predictions(QtWidgets.QFrame):
    """Top-5 classes with probability bars."""

    BAR_PX = 40      # the bar at 100 %: the class name gets the rest of a narrow pane

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFrameShape(QtWidgets.QFrame.StyledPanel)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(3, 3, 3, 3)
        lay.addWidget(_title("Predictions (top 5)"))
        self.text = QtWidgets.QLabel("—")
        self.text.setTextFormat(QtCore.Qt.RichText)
        self.text.setWordWrap(True)         # "black-and-tan coonhound" wraps in a narrow pane, never cut
        self.text.setSizePolicy(QtWidgets.QSizePolicy.Ignored, QtWidgets.QSizePolicy.Preferred)
        self.text.setAlignment(QtCore.Qt.AlignTop | QtCore.Qt.AlignLeft)
        lay.addWidget(self.text, 1)
        self.rows = ()

    def set_predictions(self, rows):
        rows = tuple(rows)
        if rows == self.rows:
            return
        self.rows = rows
        if not rows:
            self.text.setText("<span style='color:#888'>the output is not a class score vector</span>")
            return
        html = ["<table cellspacing='0' cellpadding='1'>"]
        for label, p in rows:       # percentage, label, bar: the number first; a long label wraps, never cut
            w = max(1, int(round(p * self.BAR_PX)))
            html.append(f"<tr><td style='padding-right:6px' align='right' valign='top'>{p * 100:.1f}%</td>"
                        f"<td style='padding-right:6px'>{_esc(label)}</td>"
                        f"<td valign='middle'><table cellspacing='0' cellpadding='0'><tr><td bgcolor='#3a8ee6' "
                        f"width='{w}' height='10'></td></tr></table></td></tr>")
        html.append("</table>")
        self.text.setText("".join(html))
        self.text.setToolTip(plain_tooltip("\n".join(f"{p * 100:.2f}%  {label}" for label, p in rows)))
