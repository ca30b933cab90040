"""Dialogs: open a checkpoint (architecture / input spec / pickle trust), edit the spec, edit labels."""
from __future__ import annotations

from PyQt5 import QtCore, QtWidgets

from ..core import FIT_MODES, InputSpec
from .plain import html_text, plain_label


def _floats(text: str):
    parts = [p for p in text.replace(",", " ").split() if p]
    return tuple(float(p) for p in parts) if parts else None


class SpecDialog(QtWidgets.QDialog):
    """Edit an :class:`InputSpec`: shape, mean/std, channel order, scale, fit."""

    def __init__(self, spec: InputSpec | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Input spec")
        spec = spec or InputSpec()
        form = QtWidgets.QFormLayout(self)
        self.channels = QtWidgets.QSpinBox()
        self.channels.setRange(1, 64)
        self.channels.setValue(spec.channels)
        self.height_ = QtWidgets.QSpinBox()
        self.height_.setRange(1, 8192)
        self.height_.setValue(spec.height)
        self.width_ = QtWidgets.QSpinBox()
        self.width_.setRange(1, 8192)
        self.width_.setValue(spec.width)
        self.mean = QtWidgets.QLineEdit(", ".join(f"{v:g}" for v in spec.mean))
        self.std = QtWidgets.QLineEdit(", ".join(f"{v:g}" for v in spec.std))
        self.order = QtWidgets.QComboBox()
        self.order.addItems(["RGB", "BGR"])
        self.order.setCurrentText(spec.channel_order)
        self.scale = QtWidgets.QLineEdit(f"{spec.scale:.8g}")
        self.scale.setToolTip("raw 8-bit values are multiplied by this first (1/255 = 0.00392157 -> [0, 1])")
        self.fit = QtWidgets.QComboBox()
        self.fit.addItems(list(FIT_MODES))
        self.fit.setCurrentText(spec.fit)
        form.addRow("channels", self.channels)
        form.addRow("height", self.height_)
        form.addRow("width", self.width_)
        form.addRow("mean (per channel)", self.mean)
        form.addRow("std (per channel)", self.std)
        form.addRow("channel order", self.order)
        form.addRow("scale", self.scale)
        form.addRow("fit", self.fit)
        self.error = plain_label("")
        self.error.setStyleSheet("color: #e03030")
        form.addRow(self.error)
        bb = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Ok | QtWidgets.QDialogButtonBox.Cancel)
        bb.accepted.connect(self._accept)
        bb.rejected.connect(self.reject)
        form.addRow(bb)

    def spec(self) -> InputSpec:
        return InputSpec(channels=self.channels.value(), height=self.height_.value(), width=self.width_.value(),
                         mean=_floats(self.mean.text()), std=_floats(self.std.text()),
                         channel_order=self.order.currentText(), scale=float(self.scale.text()),
                         fit=self.fit.currentText())

    def _accept(self):
        try:
            self.spec()
        except Exception as e:  # noqa: BLE001
            self.error.setText(str(e))
            return
        self.accept()


class LabelsDialog(QtWidgets.QDialog):
    """Edit class labels, one per line (index = line number)."""

    def __init__(self, labels=None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Class labels")
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(QtWidgets.QLabel("One label per line; line 1 is class 0."))
        self.edit = QtWidgets.QPlainTextEdit("\n".join(labels or []))
        lay.addWidget(self.edit)
        row = QtWidgets.QHBoxLayout()
        load = QtWidgets.QPushButton("Load from file…")
        load.clicked.connect(self._load)
        row.addWidget(load)
        row.addStretch(1)
        bb = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Ok | QtWidgets.QDialogButtonBox.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        row.addWidget(bb)
        lay.addLayout(row)

    def _load(self):
        p, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Labels file", "", "Text (*.txt *.csv);;All (*)")
        if p:
            with open(p, encoding="utf-8", errors="replace") as fh:
                self.edit.setPlainText(fh.read())

    def labels(self):
        ls = [line.strip() for line in self.edit.toPlainText().splitlines()]
        ls = [x for x in ls if x]
        return ls or None


class CheckpointDialog(QtWidgets.QDialog):
    """Ask what a checkpoint does not say: its architecture, input spec, and whether to trust a pickle."""

    def __init__(self, path: str, message: str, spec: InputSpec | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Open checkpoint")
        lay = QtWidgets.QVBoxLayout(self)
        # the path and the loader's message quote the file (a pickle's global names): escaped, never markup
        info = QtWidgets.QLabel(f"<b>{html_text(path)}</b><br>{html_text(message)}")
        info.setWordWrap(True)
        info.setTextFormat(QtCore.Qt.RichText)
        info.setObjectName("checkpoint_message")
        lay.addWidget(info)
        form = QtWidgets.QFormLayout()
        self.arch = QtWidgets.QLineEdit()
        self.arch.setPlaceholderText("e.g. torchvision:resnet18, mymodels.py:Net, package.module:Net")
        form.addRow("architecture", self.arch)
        self.spec_btn = QtWidgets.QPushButton("Edit input spec…")
        self._spec = spec
        self.spec_label = plain_label(spec.describe() if spec else "(from the checkpoint / guessed)")
        self.spec_btn.clicked.connect(self._edit_spec)
        srow = QtWidgets.QHBoxLayout()
        srow.addWidget(self.spec_label, 1)
        srow.addWidget(self.spec_btn)
        form.addRow("input spec", srow)
        self.trust = QtWidgets.QCheckBox("trust this file's pickled code (runs code from the file: only for "
                                         "files you made or trust)")
        form.addRow(self.trust)
        lay.addLayout(form)
        bb = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Open | QtWidgets.QDialogButtonBox.Cancel)
        bb.accepted.connect(self._accept)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)

    def _edit_spec(self):
        d = SpecDialog(self._spec, self)
        if d.exec_() == QtWidgets.QDialog.Accepted:
            self._spec = d.spec()
            self.spec_label.setText(self._spec.describe())

    def _accept(self):
        if self.trust.isChecked():
            r = QtWidgets.QMessageBox.warning(
                self, "Trust pickle?", "Loading a full pickle can run any code stored in the file.\n"
                "Only continue if you trust where this file came from.",
                QtWidgets.QMessageBox.Yes | QtWidgets.QMessageBox.No, QtWidgets.QMessageBox.No)
            if r != QtWidgets.QMessageBox.Yes:
                self.trust.setChecked(False)
                return
        self.accept()

    def values(self) -> dict:
        return {"arch": self.arch.text().strip() or None, "spec": self._spec,
                "trust_pickle": self.trust.isChecked()}


def open_checkpoint_interactive(window) -> bool:
    """File dialog -> try to load -> ask for what is missing (arch / spec / pickle / code trust) -> retry.

    ``window``: the main window, through its API (``last_dir``, ``set_last_dir``, ``open_checkpoint``,
    ``replace_loaded``, ``show_error``); dialogs open over it."""
    p, _ = QtWidgets.QFileDialog.getOpenFileName(
        window, "Open checkpoint", window.last_dir(),
        "Checkpoints (*.pt *.pth *.ckpt *.bin *.safetensors *.pkl);;All (*)")
    if not p:
        return False
    window.set_last_dir(p)
    from ..models import UntrustedCodeError
    from .trust_dialog import confirm_untrusted_code
    kw = {"arch": None, "spec": None, "trust_pickle": False, "trust_code": False}
    for _attempt in range(4):
        try:
            lm = window.open_checkpoint(weights=p, **kw)
        except UntrustedCodeError as e:   # the file names code to run: ask (default No), never guess
            if not confirm_untrusted_code(window, e):
                window.show_error(f"not opened: {e.target} was not run (you answered No)")
                return False
            kw["trust_code"] = True
            continue
        except Exception as e:  # noqa: BLE001 - show the loader's message and ask
            d = CheckpointDialog(p, str(e), kw.get("spec"), window)
            if kw["arch"]:
                d.arch.setText(kw["arch"])
            if "pickle" in str(e).lower():
                d.trust.setFocus()
            if d.exec_() != QtWidgets.QDialog.Accepted:
                window.show_error(f"not opened: {e}")
                return False
            kw.update(d.values())
            continue
        notes = " ".join(str(n) for n in (getattr(lm, "notes", None) or []))
        if kw["spec"] is None and ("guess" in notes or "no normalization" in notes):
            # the file does not say what input the model expects: let the user check the guess
            d = SpecDialog(lm.spec, window)
            d.setWindowTitle("Input spec (guessed — please check)")
            if d.exec_() == QtWidgets.QDialog.Accepted and d.spec() != lm.spec:
                window.replace_loaded(spec=d.spec())
        return True
    return False
