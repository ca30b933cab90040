"""Text from files, shown as text: message boxes, labels and tooltips that never render markup.

Qt guesses whether a string is rich text (``Qt::mightBeRichText``: does it look like a tag?)
in ``QMessageBox``, ``QLabel`` and tooltips.  A message that quotes a file -- a checkpoint's
metadata, a pickle's global names, a label, an image's file name -- would then be rendered
as HTML that the file wrote: a green "this file is safe" note, a hidden warning, an image.
Everything here shows its text literally.  Where a widget mixes our own markup with a
file's strings, escape each string (:func:`html_text`) before it joins the markup.
"""
from __future__ import annotations

from html import escape

from PyQt5 import QtCore, QtWidgets

__all__ = ["html_text", "plain_box", "plain_box_labels", "plain_label", "plain_message", "plain_tooltip", "set_plain"]

_ICONS = {"critical": QtWidgets.QMessageBox.Critical, "warning": QtWidgets.QMessageBox.Warning,
          "information": QtWidgets.QMessageBox.Information, "question": QtWidgets.QMessageBox.Question}


def html_text(text) -> str:
    """``text`` escaped for a rich-text label: every character shows as itself, newlines as breaks."""
    return escape(str(text)).replace("\n", "<br>")


def plain_tooltip(text) -> str:
    """A tooltip for ``text`` that Qt shows literally (tooltips guess rich text too); "" stays ""."""
    text = str(text or "")
    return QtCore.Qt.convertFromPlainText(text, QtCore.Qt.WhiteSpaceNormal) if text else ""


def set_plain(label: QtWidgets.QLabel, text="", tooltip: bool = False) -> QtWidgets.QLabel:
    """Show ``text`` literally in ``label`` (and as its tooltip with ``tooltip=True``)."""
    label.setTextFormat(QtCore.Qt.PlainText)
    label.setText(str(text))
    if tooltip:
        label.setToolTip(plain_tooltip(text))
    return label


def plain_label(text="", parent=None) -> QtWidgets.QLabel:
    """A QLabel that shows its text literally, now and after every later ``setText``."""
    label = QtWidgets.QLabel(parent)
    return set_plain(label, text)


def plain_box(parent, icon: str, title: str, text: str, informative: str = "") -> QtWidgets.QMessageBox:
    """A message box (``icon``: critical, warning, information, question) showing its texts literally."""
    box = QtWidgets.QMessageBox(_ICONS[icon], str(title), "", QtWidgets.QMessageBox.Ok, parent)
    box.setTextFormat(QtCore.Qt.PlainText)
    box.setText(str(text))
    if informative:
        box.setInformativeText(str(informative))
    plain_box_labels(box)
    box.setObjectName("plain_message")
    return box


def plain_box_labels(box: QtWidgets.QMessageBox) -> None:
    """Every text label of ``box`` plain (Qt 5's ``setTextFormat`` leaves the informative text's guess on)."""
    for name in ("qt_msgbox_label", "qt_msgbox_informativelabel"):
        label = box.findChild(QtWidgets.QLabel, name)
        if label is not None:
            label.setTextFormat(QtCore.Qt.PlainText)


def plain_message(parent, icon: str, title: str, text: str, informative: str = "") -> int:
    """Show :func:`plain_box` modally; returns the button pressed."""
    return plain_box(parent, icon, title, text, informative).exec_()
