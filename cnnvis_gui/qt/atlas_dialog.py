"""Scan dialog for the unit atlas: folder, layers, k, progress bar, cancel.

Usage (main window)::

    dlg = AtlasScanDialog(model, spec, layers=model_map.visualizable_names(), parent=self)
    dlg.scanFinished.connect(atlas_pane.set_scan)      # AtlasScan, also emitted for a cached scan
    dlg.show()

The scan runs in a :class:`ScanWorker` (a ``QThread``) on a private copy of the model, so
the main window's render worker can keep using the original at the same time (module
hooks are global to a module).  Results cross threads only as signals.
"""
from __future__ import annotations

import copy
from pathlib import Path

from PyQt5 import QtCore, QtWidgets

from ..atlas import TopKScan, ScanProgress

__all__ = ["ScanWorker", "AtlasScanDialog", "private_model"]


def private_model(model):
    """A copy of ``model`` for a worker thread (same weights, so the same cache keys)."""
    try:
        return copy.deepcopy(model)
    except Exception:  # a model that cannot be copied: share it (hooks are thread-filtered)
        return model


class ScanWorker(QtCore.QThread):
    """Runs one :class:`~cnnvis_gui.atlas.TopKScan`; :meth:`cancel` stops it between batches."""

    progress = QtCore.pyqtSignal(object)      # ScanProgress
    finished_scan = QtCore.pyqtSignal(object)  # AtlasScan, or None when cancelled
    failed = QtCore.pyqtSignal(str)

    def __init__(self, scan: TopKScan, parent=None):
        super().__init__(parent)
        self.scan = scan

    def cancel(self):
        self.scan.cancel()

    def run(self):
        try:
            for p in self.scan.run():
                self.progress.emit(p)
            self.finished_scan.emit(self.scan.result)
        except Exception as e:  # reported in the dialog, never raised in the thread
            self.failed.emit(f"{type(e).__name__}: {e}" if not str(e).startswith(type(e).__name__) else str(e))


class AtlasScanDialog(QtWidgets.QDialog):
    """Choose a folder, layers and k; scan with a progress bar; cancel; reopen cached scans at once.

    Signals
    -------
    scanFinished(object) : the :class:`~cnnvis_gui.atlas.AtlasScan` (fresh or from the cache)
    """

    scanFinished = QtCore.pyqtSignal(object)

    def __init__(self, model, spec, layers, folder=None, k: int = 9, selected=None, cache_dir=None,
                 batch_size: int = 32, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Unit atlas: scan a folder")
        self.model, self.spec, self.cache_dir = model, spec, cache_dir
        self.worker: ScanWorker | None = None
        self.result = None

        self.folder = QtWidgets.QLineEdit(str(folder or ""))
        self.folder.setPlaceholderText("folder of images (searched recursively)")
        browse = QtWidgets.QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)

        self.layers = QtWidgets.QListWidget()
        selected = set(selected or [])
        for name in layers:
            it = QtWidgets.QListWidgetItem(name or "output")
            it.setData(QtCore.Qt.UserRole, name)
            it.setFlags(it.flags() | QtCore.Qt.ItemIsUserCheckable)
            it.setCheckState(QtCore.Qt.Checked if name in selected else QtCore.Qt.Unchecked)
            self.layers.addItem(it)

        self.k = QtWidgets.QSpinBox()
        self.k.setRange(1, 100)
        self.k.setValue(int(k))
        self.batch = QtWidgets.QSpinBox()
        self.batch.setRange(1, 4096)
        self.batch.setValue(int(batch_size))
        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 100)
        self.bar.setValue(0)
        self.status = QtWidgets.QLabel("")
        self.status.setWordWrap(True)

        self.start_button = QtWidgets.QPushButton("Scan")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        close = QtWidgets.QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.start_button, self.cancel_button, close):
            buttons.addWidget(b)

        form = QtWidgets.QFormLayout()
        form.addRow("Folder", row)
        form.addRow("Layers", self.layers)
        form.addRow("Images per unit (k)", self.k)
        form.addRow("Batch size", self.batch)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.bar)
        lay.addWidget(self.status)
        lay.addLayout(buttons)

    # ------------------------------------------------------------------ choices
    def chosen_layers(self) -> list:
        return [self.layers.item(i).data(QtCore.Qt.UserRole) for i in range(self.layers.count())
                if self.layers.item(i).checkState() == QtCore.Qt.Checked]

    def _browse(self):
        d = QtWidgets.QFileDialog.getExistingDirectory(self, "Folder of images", self.folder.text())
        if d:
            self.folder.setText(d)

    # ------------------------------------------------------------------ scan
    def start(self):
        """Start (or resume) the scan in the worker; a finished cached scan comes back at once."""
        if self.worker is not None:
            return
        folder, layers = self.folder.text().strip(), self.chosen_layers()
        if not folder or not Path(folder).expanduser().is_dir():
            self.status.setText("Choose a folder of images.")
            return
        if not layers:
            self.status.setText("Choose at least one layer.")
            return
        try:
            scan = TopKScan(private_model(self.model), self.spec, folder, layers, k=self.k.value(),
                            batch_size=self.batch.value(), cache_dir=self.cache_dir)
        except Exception as e:
            self.status.setText(str(e))
            return
        # the folder listing, weights hash and cache lookup happen in the worker, not here
        self.bar.setValue(0)
        self.status.setText("Listing the folder…")
        self.worker = ScanWorker(scan, self)
        self.worker.progress.connect(self._progress)
        self.worker.finished_scan.connect(self._done)
        self.worker.failed.connect(self._failed)
        self.worker.finished.connect(self._worker_gone)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.worker.start()

    def cancel(self):
        if self.worker is not None:
            self.worker.cancel()
            self.status.setText("Stopping after this batch… (the scan resumes where it stopped next time)")

    def _progress(self, p: ScanProgress):
        self.bar.setValue(int(round(100 * p.fraction)))
        self.status.setText(p.describe())

    def _done(self, result):
        if result is None:
            self.status.setText(self.status.text() + " — stopped; Scan again to resume.")
            return
        self.result = result
        self.bar.setValue(100)
        src = "from the cache" if result.from_cache else "done"
        sk = f", {len(result.skipped)} files skipped" if result.skipped else ""
        self.status.setText(f"{len(result.paths)} images, {src}{sk}.")
        self.scanFinished.emit(result)

    def _failed(self, message: str):
        self.status.setText(f"Scan failed: {message}")

    def _worker_gone(self):
        self.worker = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def closeEvent(self, ev):
        if self.worker is not None:
            self.worker.cancel()
            self.worker.wait(10000)
        super().closeEvent(ev)
