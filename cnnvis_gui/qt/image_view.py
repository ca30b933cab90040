"""An image label that can be clicked, and the window that shows its image large.

The atlas pane's optimized image is two tiles wide: 40-80 px in a low dock (a 1280 x 720 screen),
too small to see what a 224 px optimized image shows.  Clicking it opens :class:`LargeImage`, a
window of its own with the image enlarged (nearest neighbour: the pixels as computed), kept up to
date while the optimization runs.
"""
from __future__ import annotations

import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets

__all__ = ["ClickableImage", "LargeImage", "rgb_pixmap"]


def rgb_pixmap(rgb: np.ndarray, size: int) -> QtGui.QPixmap:
    """An H x W x 3 uint8 RGB array as a pixmap fitted into ``size`` x ``size`` (nearest neighbour)."""
    rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    h, w = rgb.shape[:2]
    img = QtGui.QImage(rgb.data, w, h, 3 * w, QtGui.QImage.Format_RGB888).copy()
    return QtGui.QPixmap.fromImage(img).scaled(size, size, QtCore.Qt.KeepAspectRatio, QtCore.Qt.FastTransformation)


class ClickableImage(QtWidgets.QLabel):
    """A QLabel that emits :attr:`clicked` on a left click."""

    clicked = QtCore.pyqtSignal()

    def mouseReleaseEvent(self, ev):
        if ev.button() == QtCore.Qt.LeftButton and self.rect().contains(ev.pos()):
            self.clicked.emit()
        super().mouseReleaseEvent(ev)


class LargeImage(QtWidgets.QLabel):
    """A window of its own showing one RGB image as large as it is (at least 448 px; it follows resizing)."""

    def __init__(self, parent=None):
        super().__init__(parent, QtCore.Qt.Window)
        self.setAlignment(QtCore.Qt.AlignCenter)
        self.setStyleSheet("background: #202020")
        self.setMinimumSize(64, 64)
        self.rgb = None

    def show_image(self, rgb: np.ndarray, title: str) -> None:
        first = self.rgb is None
        self.rgb = rgb
        self.setWindowTitle(title)
        if first:
            side = max(448, max(rgb.shape[:2]))
            self.resize(side, side)
        self._draw()

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        self._draw()

    def _draw(self):
        if self.rgb is not None:
            self.setPixmap(rgb_pixmap(self.rgb, max(16, min(self.width(), self.height()))))
