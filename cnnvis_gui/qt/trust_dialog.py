"""Ask before running code a file names: the window's side of ``trust_code`` (see ``models/trust.py``).

A checkpoint whose metadata names an architecture outside the allowlist (a
``package.module:callable`` or a ``.py`` file) is refused by the loader with
:class:`~cnnvis_gui.models.UntrustedCodeError`.  The window then shows
:class:`TrustCodeDialog`: what the file asks to run, where it says so, and No as the default
(Enter and Escape both answer No).  Only Yes retries with ``trust_code=True``; the answer is
never remembered.
"""
from __future__ import annotations

from html import escape

from PyQt5 import QtCore, QtWidgets

__all__ = ["TrustCodeDialog", "confirm_untrusted_code", "load_with_consent"]


class TrustCodeDialog(QtWidgets.QMessageBox):
    """"Run the code this file names?" with the callable / file path shown and No as the default."""

    def __init__(self, error, parent=None):
        super().__init__(QtWidgets.QMessageBox.Warning, "Run code named by this file?", "", parent=parent)
        self.error = error
        target = getattr(error, "target", "") or "?"
        head, _, attr = target.rpartition(":")
        is_file = head.endswith(".py") or "/" in head or "\\" in head
        what = (f"the Python file<br><b>{escape(head)}</b><br>(its top level runs on import, then "
                f"<b>{escape(attr)}</b> is called)" if is_file
                else f"the Python callable<br><b>{escape(target)}</b>")
        path = getattr(error, "path", None)
        self.setTextFormat(QtCore.Qt.RichText)
        self.setText(f"The file <b>{escape(str(path or ''))}</b> asks to run {what} to build its network.")
        self.setInformativeText(
            f"Named by {escape(getattr(error, 'origin', '') or 'its metadata')}.<br>Running it can do anything "
            f"your user account can do. Answer Yes only if you trust where this file came from; otherwise give "
            f"the architecture yourself (File → Open checkpoint, architecture field).")
        informative = self.findChild(QtWidgets.QLabel, "qt_msgbox_informativelabel")
        if informative is not None:     # Qt 5 leaves it guessing: our markup around escaped strings, always
            informative.setTextFormat(QtCore.Qt.RichText)
        self.setStandardButtons(QtWidgets.QMessageBox.Yes | QtWidgets.QMessageBox.No)
        self.setDefaultButton(QtWidgets.QMessageBox.No)
        self.setEscapeButton(QtWidgets.QMessageBox.No)
        self.setObjectName("trust_code_dialog")


def confirm_untrusted_code(parent, error) -> bool:
    """Show :class:`TrustCodeDialog` for ``error``; True only when the user answers Yes."""
    return TrustCodeDialog(error, parent).exec_() == QtWidgets.QMessageBox.Yes


def load_with_consent(parent, load):
    """``load(trust_code=False)``; if the file names code to run, ask, and on Yes ``load(trust_code=True)``.

    Returns the loaded model, or None when the user answered No (nothing was run or changed).
    Any other error propagates.
    """
    from ..models import UntrustedCodeError
    try:
        return load(trust_code=False)
    except UntrustedCodeError as e:
        if not confirm_untrusted_code(parent, e):
            return None
        return load(trust_code=True)
