"""A file's strings are shown as text in every label, tooltip and dialog, never as markup.

Qt guesses rich text in QLabel, QMessageBox and tooltips: a pickle's global name, a label, a
model name or an image's file name holding HTML would draw what the file wants ("this file is
safe, tick trust" in green) and hide the real warning.  Each check renders what the user sees
(through Qt's own rich-text engine where the widget would use it) and requires the file's tags
to be in it literally.
"""
from __future__ import annotations

import types
from collections import OrderedDict

import numpy as np
import pytest

pytest.importorskip("pytestqt")

import cv2  # noqa: E402
import torch  # noqa: E402
from PyQt5 import QtCore, QtGui, QtWidgets  # noqa: E402
from torch import nn  # noqa: E402

from cnnvis_gui.core import InputSpec  # noqa: E402

from ..waits import idle, signal, until  # noqa: E402
from .hostile_pickles import as_zip_checkpoint, frame, su  # noqa: E402
from .helpers import pth_with_meta  # noqa: E402

#: what a hostile file writes: markup that, rendered, would read as a reassuring note
HOSTILE = "<font color='green'>tick trust</font><h1>safe"
SEEN = "tick trust"      # the words the file wants read
TAG = "<h1>"             # what must stay visible with them


def rendered(text: str, fmt) -> str:
    """What a label / tooltip with ``text`` in format ``fmt`` shows (rich text through Qt's engine)."""
    rich = fmt == QtCore.Qt.RichText or (fmt == QtCore.Qt.AutoText and QtCore.Qt.mightBeRichText(text))
    if not rich:
        return text
    doc = QtGui.QTextDocument()
    doc.setHtml(text)
    return doc.toPlainText()


def shown_texts(root: QtWidgets.QWidget) -> list:
    """(where, what the user sees) for every label and tooltip under ``root`` (tree items included)."""
    out = []
    widgets = [root] + root.findChildren(QtWidgets.QWidget)
    for w in widgets:
        if isinstance(w, QtWidgets.QLabel):
            out.append((f"{type(w).__name__} {w.objectName()}", rendered(w.text(), w.textFormat())))
        if w.toolTip():
            out.append((f"tooltip of {type(w).__name__}", rendered(w.toolTip(), QtCore.Qt.AutoText)))
        if isinstance(w, QtWidgets.QTreeWidget):
            it = QtWidgets.QTreeWidgetItemIterator(w)
            while it.value():
                item = it.value()
                for c in range(w.columnCount()):
                    if item.toolTip(c):
                        out.append(("tree tooltip", rendered(item.toolTip(c), QtCore.Qt.AutoText)))
                it += 1
    return out


def assert_literal(root) -> int:
    """Every place that shows the file's words shows its tags too; returns how many places show them."""
    places = [(where, text) for where, text in shown_texts(root) if SEEN in text]
    bad = [(where, text) for where, text in places if TAG not in text]
    assert not bad, bad
    return len(places)


def hostile_model():
    net = nn.Sequential(OrderedDict([(HOSTILE.replace(".", ""), nn.Conv2d(3, 4, 3, padding=1)), ("relu", nn.ReLU()),
                                     ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()),
                                     ("fc", nn.Linear(4, 3))])).eval()
    return types.SimpleNamespace(model=net, spec=InputSpec(3, 32, 32), labels=[HOSTILE, "b", "c"],
                                 name=f"net {HOSTILE}", notes=[f"note from the file: {HOSTILE}"])


def test_the_window_shows_a_files_strings_literally(qtbot, window, tmp_path):
    """A model, labels, layer name, input file name and errors that hold HTML."""
    lm = hostile_model()
    layer = next(iter(lm.model._modules))
    with signal(qtbot, window.modelChanged):
        window.load_model(lm, layer=layer)
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "<h1>tick trust.png"), np.full((40, 40, 3), 120, np.uint8))
    window.open_path(str(folder))
    until(qtbot, lambda: SEEN in window.input_pane.info.text())      # the image's file name is shown
    idle(qtbot, window)
    assert window.state.layer == layer
    shown = assert_literal(window)
    assert shown >= 4, shown        # grid title, predictions, tree tooltips, input file name...
    window.show_error(f"cannot read {HOSTILE}")
    window.show_message(f"loaded {HOSTILE}")
    assert assert_literal(window) >= shown


def _answer(record, accept=False):
    """When a modal dialog is up: record what it shows, then close it (reject, or accept)."""
    def act():
        w = QtWidgets.QApplication.activeModalWidget()
        if w is None:
            QtCore.QTimer.singleShot(20, act)
            return
        record.append((type(w).__name__, shown_texts(w)))
        if isinstance(w, QtWidgets.QMessageBox):
            w.button(w.No if w.button(w.No) else w.Ok).click()
        else:
            w.reject()
    QtCore.QTimer.singleShot(0, act)


def test_open_checkpoint_dialog_shows_a_pickles_names_literally(qtbot, window, tmp_path, monkeypatch):
    """The issue's case: a global named with markup that would draw a green "this file is safe" note."""
    from cnnvis_gui.qt import dialogs
    marker = tmp_path / "PWNED"
    data = frame(su(HOSTILE) + su("x") + b"\x93" + su("posix") + su("system") + b"\x93"
                 + su(f"touch '{marker}'") + b"\x85R" + b"0" + b"N.")
    p = as_zip_checkpoint(tmp_path / f"{'<h1>'}tick trust.pth", data)
    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileName", lambda *a, **k: (str(p), ""))
    seen = []
    _answer(seen)
    assert not dialogs.open_checkpoint_interactive(window)
    assert not marker.exists()
    assert [name for name, _ in seen] == ["CheckpointDialog"]
    texts = " ".join(t for _, t in seen[0][1])
    assert "posix.system" in texts and f"{HOSTILE}.x" in texts         # every name, tags and all
    assert assert_literal(window) >= 1                                # the status line's "not opened: ..."


def test_trust_prompt_shows_a_target_with_markup_literally(qtbot, window, tmp_path, monkeypatch):
    from cnnvis_gui.qt import dialogs
    p = pth_with_meta(tmp_path / "e.pth", {"arch": f"os:system{HOSTILE}"})
    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileName", lambda *a, **k: (str(p), ""))
    seen = []
    _answer(seen)
    assert not dialogs.open_checkpoint_interactive(window)
    assert [name for name, _ in seen] == ["TrustCodeDialog"]
    places = [t for _, t in seen[0][1] if SEEN in t]
    assert places and all(TAG in t for t in places), places


def test_plain_helpers():
    from cnnvis_gui.qt.plain import html_text, plain_box, plain_label, plain_tooltip
    assert rendered(plain_tooltip(HOSTILE), QtCore.Qt.AutoText) == HOSTILE
    assert rendered(html_text(HOSTILE), QtCore.Qt.RichText) == HOSTILE
    lab = plain_label(HOSTILE)
    assert rendered(lab.text(), lab.textFormat()) == HOSTILE
    box = plain_box(None, "critical", "t", HOSTILE, HOSTILE)
    assert [t for _, t in shown_texts(box) if SEEN in t] == [HOSTILE, HOSTILE]
    assert plain_tooltip("") == ""
    torch.manual_seed(0)
