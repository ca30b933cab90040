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
import threading
import time
from pathlib import Path

from PyQt5 import QtCore, QtWidgets

from ..atlas import TopKScan
from ..core import CnnvisError
from .plain import plain_label

__all__ = ["ScanWorker", "WorkerDialog", "AtlasScanDialog", "private_model", "strip_recording_hooks", "stop_worker"]


_FORWARD_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks")
_HOOK_ID_DICTS = {"_forward_hooks": ("_forward_hooks_with_kwargs", "_forward_hooks_always_called"),
                  "_forward_pre_hooks": ("_forward_pre_hooks_with_kwargs",)}


def _is_our_hook(hook) -> bool:
    """A recording hook of this package (engine, scan, optimizer): never meant to outlive its forward."""
    fn = getattr(hook, "func", hook)          # functools.partial
    fn = getattr(fn, "__func__", fn)          # bound method
    return str(getattr(fn, "__module__", "") or "").startswith("cnnvis_gui.")


def strip_recording_hooks(model) -> int:
    """Remove this package's forward (pre-)hooks from every module of ``model``; returns how many.

    A deep copy taken while another thread runs a recorded forward on the original holds
    the engine's hooks of that forward; their handles point at the original, so they would
    never be removed from the copy (they keep that forward's frame alive and fire on every
    call).  The user's own hooks stay.
    """
    removed = 0
    for m in model.modules():
        for attr in _FORWARD_HOOK_DICTS:
            hooks = getattr(m, attr, None)
            if not hooks:
                continue
            ids = [i for i, h in list(hooks.items()) if _is_our_hook(h)]
            for i in ids:
                hooks.pop(i, None)
                for other in _HOOK_ID_DICTS[attr]:
                    d = getattr(m, other, None)
                    if d is not None:
                        d.pop(i, None)
            removed += len(ids)
    return removed


def private_model(model, attempts: int = 20):
    """A hook-free copy of ``model`` for a worker thread (same weights, so the same cache keys).

    The copy may be taken while the render worker runs a recorded forward on ``model`` (its
    hook dicts change meanwhile): a copy that fails with ``RuntimeError`` ("dictionary changed
    size during iteration") is retried, and the recording hooks a copy caught are removed.
    The model is never shared: when no copy can be made, :class:`~cnnvis_gui.core.CnnvisError`
    says why (callers show it in the UI).
    """
    last = None
    for i in range(max(1, int(attempts))):
        try:
            copy_ = copy.deepcopy(model)
        except RuntimeError as e:          # a dict of the model changed while it was copied: retry
            last = e
            time.sleep(0.002 * min(i + 1, 10))
            continue
        except Exception as e:  # noqa: BLE001 - a model that cannot be copied at all
            raise CnnvisError(f"cannot make a private copy of the model for the background worker "
                              f"({type(e).__name__}: {e}); the model must support copy.deepcopy.") from e
        strip_recording_hooks(copy_)
        return copy_
    raise CnnvisError(f"cannot make a private copy of the model for the background worker: it kept changing "
                      f"while being copied ({last}); try again.")


# Running scan workers, so that a QThread is never destroyed while it runs (that aborts the
# process): a worker has no Qt parent and stays referenced here until its thread has finished.
_RUNNING: set = set()
_RUNNING_LOCK = threading.Lock()


def _forget(worker) -> None:
    with _RUNNING_LOCK:
        _RUNNING.discard(worker)


def stop_worker(worker) -> None:
    """Cancel a :class:`ScanWorker` and wait until its thread has ended.

    The scan checks for cancel between batches, so this returns after at most one batch;
    there is deliberately no timeout (destroying a running ``QThread`` aborts the process).
    """
    if worker is None:
        return
    worker.cancel()
    worker.wait()
    _forget(worker)


class ScanWorker(QtCore.QThread):
    """Runs one :class:`~cnnvis_gui.atlas.TopKScan`; :meth:`cancel` stops it between batches."""

    progress = QtCore.pyqtSignal(object)      # ScanProgress
    finished_scan = QtCore.pyqtSignal(object)  # AtlasScan, or None when cancelled
    failed = QtCore.pyqtSignal(str)

    def __init__(self, scan: TopKScan, parent=None):
        super().__init__(parent)
        self.scan = scan
        with _RUNNING_LOCK:
            for w in [w for w in _RUNNING if w.isFinished()]:
                _RUNNING.discard(w)
            _RUNNING.add(self)

    def cancel(self):
        self.scan.cancel()

    def run(self):
        try:
            for p in self.scan.run():
                self.progress.emit(p)
            self.finished_scan.emit(self.scan.result)
        except CnnvisError as e:  # a message for the user (no images in the folder, bad layer...)
            self.failed.emit(str(e))
        except Exception as e:  # reported in the dialog, never raised in the thread
            self.failed.emit(f"{type(e).__name__}: {e}" if not str(e).startswith(type(e).__name__) else str(e))


class WorkerDialog(QtWidgets.QDialog):
    """A dialog that runs one job in a :class:`ScanWorker`: progress bar, status line, Start / Cancel / Close.

    A job is any object with ``run()`` (a generator of progress with ``fraction`` and
    ``describe()``), ``cancel()`` and ``result`` (the atlas's scan, a dissection).  Subclasses build
    their form around :attr:`bar`, :attr:`status` and :attr:`buttons`, call :meth:`launch`, and
    implement ``_done(result)``.
    """

    #: the status line's words when the job fails, before the message
    failed_prefix = "Failed"

    def __init__(self, start_text: str, parent=None):
        super().__init__(parent)
        self.worker: ScanWorker | None = None
        self.result = None
        # the dialog may be deleted (WA_DeleteOnClose, its parent window closing) without a closeEvent:
        # then too cancel the job and wait for it (a lambda that holds no reference to the dialog)
        self._live = {"worker": None}
        self.destroyed.connect(lambda _=None, live=self._live: stop_worker(live.pop("worker", None)))
        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 100)
        self.bar.setValue(0)
        self.status = plain_label("")                  # progress and errors quote file and folder names
        self.status.setWordWrap(True)
        self.start_button = QtWidgets.QPushButton(start_text)
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        close = QtWidgets.QPushButton("Close")
        close.clicked.connect(self.close)
        self.buttons = QtWidgets.QHBoxLayout()
        self.buttons.addStretch(1)
        for b in (self.start_button, self.cancel_button, close):
            self.buttons.addWidget(b)

    def start(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _done(self, result):  # pragma: no cover - abstract
        raise NotImplementedError

    def launch(self, job, status: str) -> None:
        """Run ``job`` in a new worker (no Qt parent: never destroyed with the dialog while it runs)."""
        self.bar.setValue(0)
        self.status.setText(status)
        self.worker = ScanWorker(job)
        self._live["worker"] = self.worker
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
            self.status.setText("Stopping after this batch… (it resumes where it stopped next time)")

    def _progress(self, p):
        self.bar.setValue(int(round(100 * p.fraction)))
        self.status.setText(p.describe())

    def _failed(self, message: str):
        self.status.setText(f"{self.failed_prefix}: {message}")

    def _worker_gone(self):
        w = self.sender()
        _forget(w)
        if w is not None and w is not self.worker:   # an earlier job, already stopped by shutdown()
            return
        self.worker = self._live["worker"] = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def shutdown(self):
        """Cancel a running job and wait for its thread to end (the partial job is checkpointed)."""
        w, self.worker, self._live["worker"] = self.worker, None, None
        stop_worker(w)
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def closeEvent(self, ev):
        self.shutdown()
        super().closeEvent(ev)

    def reject(self):   # Escape: like Close
        self.shutdown()
        super().reject()


class AtlasScanDialog(WorkerDialog):
    """Choose a folder, layers and k; scan with a progress bar; cancel; reopen cached scans at once.

    Signals
    -------
    scanFinished(object) : the :class:`~cnnvis_gui.atlas.AtlasScan` (fresh or from the cache)
    """

    scanFinished = QtCore.pyqtSignal(object)
    failed_prefix = "Scan failed"

    def __init__(self, model, spec, layers, folder=None, k: int = 9, selected=None, cache_dir=None,
                 batch_size: int = 32, parent=None, layouts=None, stops=None, current=None):
        super().__init__("Scan", parent)
        self.setWindowTitle("Unit atlas: scan a folder")
        self.model, self.spec, self.cache_dir = model, spec, cache_dir
        self.layouts = dict(layouts or {})      # the user's layout overrides: the scan reads units through them

        self.folder = QtWidgets.QLineEdit(str(folder or ""))
        self.folder.setPlaceholderText("folder of images (searched recursively)")
        browse = QtWidgets.QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)

        # the ticked layers come first, where they are seen; with ``stops`` (core.stops) the other modules
        # wait behind "every module" (MobileNetV2 has 213)
        self.layers = QtWidgets.QListWidget()
        selected = set(selected or [])
        self.current, self.stops = current, None if stops is None else set(stops)
        for name in [n for n in layers if n in selected] + [n for n in layers if n not in selected]:
            it = QtWidgets.QListWidgetItem((name or "output") + ("   (the current layer)" if name == current else ""))
            it.setData(QtCore.Qt.UserRole, name)
            it.setFlags(it.flags() | QtCore.Qt.ItemIsUserCheckable)
            it.setCheckState(QtCore.Qt.Checked if name in selected else QtCore.Qt.Unchecked)
            self.layers.addItem(it)
        self.every_module = QtWidgets.QCheckBox("every module")
        self.every_module.setToolTip("list every module, not only the layers o / u step through")
        self.every_module.setVisible(self.stops is not None)
        self.every_module.toggled.connect(self._show_layers)
        self.ticked = plain_label("")
        self.ticked.setWordWrap(True)
        self.layers.itemChanged.connect(lambda _it: self._say_ticked())
        self._show_layers()
        self._say_ticked()

        self.k = QtWidgets.QSpinBox()
        self.k.setRange(1, 100)
        self.k.setValue(int(k))
        self.batch = QtWidgets.QSpinBox()
        self.batch.setRange(1, 4096)
        self.batch.setValue(int(batch_size))

        form = QtWidgets.QFormLayout()
        form.addRow("Folder", row)
        form.addRow("Layers", self.layers)
        form.addRow("", self.every_module)
        form.addRow("Scans", self.ticked)
        form.addRow("Images per unit (k)", self.k)
        form.addRow("Batch size", self.batch)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.bar)
        lay.addWidget(self.status)
        lay.addLayout(self.buttons)

    # ------------------------------------------------------------------ choices
    def _show_layers(self) -> None:
        every = self.stops is None or self.every_module.isChecked()
        for i in range(self.layers.count()):
            it = self.layers.item(i)
            name = it.data(QtCore.Qt.UserRole)
            it.setHidden(not (every or name in self.stops or it.checkState() == QtCore.Qt.Checked))
        self.layers.scrollToTop()

    def _say_ticked(self) -> None:
        """The layers that will be scanned, in words: nothing is scanned that the user cannot see."""
        names = self.chosen_layers()
        if not names:
            self.ticked.setText("no layer ticked yet")
            return
        shown = [(n or "output") + (" (the current layer)" if n == self.current else "") for n in names[:6]]
        more = f" and {len(names) - 6} more" if len(names) > 6 else ""
        self.ticked.setText(f"{len(names)} layer{'s' if len(names) != 1 else ''}: {', '.join(shown)}{more}")

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
                            batch_size=self.batch.value(), cache_dir=self.cache_dir, layouts=self.layouts)
        except Exception as e:
            self.status.setText(f"Scan failed: {e}")
            return
        # the folder listing, weights hash and cache lookup happen in the worker, not here
        self.launch(scan, "Listing the folder…")

    def cancel(self):
        if self.worker is not None:
            self.worker.cancel()
            self.status.setText("Stopping after this batch… (the scan resumes where it stopped next time)")

    def _done(self, result):
        if result is None:
            self.status.setText(self.status.text() + " — stopped; Scan again to resume.")
            return
        self.result = result
        self.bar.setValue(100)
        src = "from the cache" if result.from_cache else "done"
        sk = f", {len(result.skipped)} files skipped" if result.skipped else ""
        notes = list(getattr(getattr(self.sender(), "scan", None), "notices", None) or [])
        self.status.setText(" ".join([f"{len(result.paths)} images, {src}{sk}."] + notes))
        self.scanFinished.emit(result)
