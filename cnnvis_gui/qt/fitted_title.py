"""A pane title that shows the longest of its variants that fits the pane.

The activation grid's title names the layer and what its units are: ``Activations — stages.2.blocks.0.mlp.fc1
(1536 units of 14×14 · nhwc · Linear, 14×14×1536)``.  A rich-text ``QLabel`` narrower than that is clipped
at its end, so at 1280×720 it read "(1536 units of 14" with the grid's size cut off.  :class:`FittedTitle`
takes shorter variants (``set_variants``), longest first, and paints the first that fits its width;
``text()`` stays the full title (the tooltip, the tests and the other controllers read it).
"""
from __future__ import annotations

import math

from PyQt5 import QtCore, QtGui, QtWidgets


class FittedTitle(QtWidgets.QLabel):
    """A bold rich-text title: the full text when it fits, else the first shorter variant that does."""

    def __init__(self, text: str = "", parent=None):
        super().__init__(parent)
        self.setTextFormat(QtCore.Qt.RichText)
        self.setStyleSheet("QLabel { font-weight: 600; padding: 1px 2px; }")
        # a style sheet's padding gives the label a frame, and a framed label indents its text by half an
        # "x" (~5 px) that ``_width`` did not count: the title's last character was cut.  No indent: the
        # padding is the only room beside the text.
        self.setIndent(0)
        self._variants: tuple = ()
        self.setText(text)

    def setText(self, text) -> None:     # noqa: N802 (Qt's name): one text, no shorter variants
        self.set_variants([text])

    def set_variants(self, variants) -> None:
        """``variants``: rich texts, the full title first, then shorter ones in the order to try them."""
        self._variants = tuple(str(v) for v in variants) or ("",)
        self.updateGeometry()
        self._fit()

    def text(self) -> str:
        return self._variants[0]

    def shown_text(self) -> str:
        """The variant on screen."""
        return super().text()

    def _width(self, html: str) -> int:
        """The label's width that shows ``html`` whole: its text's width, the padding and a pixel."""
        self.ensurePolished()                 # the style sheet's bold font, also before the label is shown
        doc = QtGui.QTextDocument()
        doc.setDefaultFont(self.font())
        doc.setDocumentMargin(0)
        doc.setHtml(html)
        m = self.contentsMargins()
        return math.ceil(doc.idealWidth()) + m.left() + m.right() + 1

    def sizeHint(self) -> QtCore.QSize:      # noqa: N802 (Qt's name): the full title's room, so that it grows back
        h = super().sizeHint()
        return QtCore.QSize(self._width(self._variants[0]), h.height())

    def minimumSizeHint(self) -> QtCore.QSize:   # noqa: N802
        h = super().minimumSizeHint()
        return QtCore.QSize(min(self._width(self._variants[-1]), 120), h.height())

    def _fit(self) -> None:
        shown = next((v for v in self._variants if self._width(v) <= self.width()), self._variants[-1])
        if shown != super().text():
            super().setText(shown)

    def resizeEvent(self, ev) -> None:   # noqa: N802
        super().resizeEvent(ev)
        self._fit()
