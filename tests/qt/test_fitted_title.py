"""The grid's fitted title paints its whole text inside the width it asks for (its last bracket was cut)."""
from __future__ import annotations

import numpy as np
import pytest
from PyQt5 import QtGui

from cnnvis_gui.qt.fitted_title import FittedTitle

TITLES = ["Activations — <b>features.14</b> <span style='color:#888'>(ReLU, 64×8×8)</span>",
          "Activations — <b>blocks.5</b> <span style='color:#888'>(192 units of 14×14 · tokens:2+14x14)</span>",
          "<b>stages.1.blocks.0.mlp.fc1</b> <span style='color:#888'>(768 units of 8×8)</span>"]


def ink_columns(widget) -> np.ndarray:
    """The x of every pixel column of ``widget`` that differs from its background (its top-right pixel)."""
    img = widget.grab().toImage().convertToFormat(QtGui.QImage.Format_RGB888)
    w, h, bpl = img.width(), img.height(), img.bytesPerLine()
    a = np.frombuffer(img.constBits().asstring(bpl * h), np.uint8).reshape(h, bpl)[:, :w * 3].reshape(h, w, 3)
    return np.where((np.abs(a.astype(int) - a[0, -1]).sum(2) > 30).any(0))[0]


@pytest.mark.parametrize("html", TITLES)
def test_the_title_is_whole_at_the_width_it_asks_for(qtbot, html):
    """At its size hint the title shows its full text, and the text's last pixel is inside the label
    (a style sheet's padding had added a ~5 px indent that the width did not count)."""
    title = FittedTitle()
    qtbot.addWidget(title)
    title.set_variants([html, "short"])
    title.resize(title.sizeHint().width(), 30)
    title.show()
    qtbot.waitExposed(title)
    assert title.shown_text() == html
    ink = ink_columns(title)
    assert ink.size and ink.max() < title.width() - 1, (ink.max(), title.width())
    assert ink.min() <= title.contentsMargins().left() + 2           # the text starts at the padding

