"""Model → Open pretrained…: torchvision's (and timm's) pretrained classifiers, searchable.

Every weight variant is one row (architecture, weights, cached, details); the list comes
from :func:`cnnvis_gui.models.pretrained.catalog` (no network).  Opening a row runs a
:class:`PretrainedLoader` thread: the file is fetched (from the hub cache, or downloaded
with a cancellable progress dialog) and the model is loaded with its own labels and input
spec; the result arrives as ``modelLoaded(LoadedModel, arch, variant)``.
"""
from __future__ import annotations

import threading

from PyQt5 import QtCore, QtWidgets

from .plain import plain_label, plain_tooltip

__all__ = ["PretrainedDialog", "PretrainedLoader"]

_LIBS = (("torchvision", "torchvision (classification)"), ("timm", "timm"))
_LISTING: set = set()      # catalog threads still running (a running QThread must never be destroyed)


class CatalogThread(QtCore.QThread):
    """Reads one library's list of pretrained weights (importing torchvision/timm takes seconds)."""

    listed = QtCore.pyqtSignal(str, object, str)      # library, [CatalogEntry], error message

    def __init__(self, library: str):
        super().__init__()
        self.library = library
        _LISTING.add(self)
        self.finished.connect(lambda: _LISTING.discard(self))

    def run(self):
        from ..models.pretrained import catalog
        try:
            rows = catalog(self.library)
        except Exception as e:  # noqa: BLE001 - ModelLoadError: not installed; anything else: said in the dialog
            self.listed.emit(self.library, [], str(e))
        else:
            self.listed.emit(self.library, rows, "")


class PretrainedLoader(QtCore.QThread):
    """Fetch (maybe download) and load one pretrained model; :meth:`cancel` stops a download."""

    progress = QtCore.pyqtSignal(object, object)     # done bytes, total bytes or None
    loaded = QtCore.pyqtSignal(object)               # LoadedModel
    failed = QtCore.pyqtSignal(str, bool)            # message, cancelled

    def __init__(self, arch: str, variant: str, device="auto", parent=None):
        super().__init__(parent)
        self.arch, self.variant, self.device = arch, variant, device
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def run(self):
        from .. import models
        from ..models import pretrained as P
        from ..models.download import DownloadCancelled
        try:
            ref = P.resolve(self.arch, self.variant)
            P.fetch(ref, progress=lambda d, t: self.progress.emit(d, t), cancel=self._cancel)
            if self._cancel.is_set():
                raise DownloadCancelled("cancelled")
            lm = models.load(arch=self.arch, pretrained=self.variant, device=self.device)
        except DownloadCancelled:
            self.failed.emit("download cancelled; nothing was saved", True)
        except Exception as e:  # noqa: BLE001 - the loader's message, shown in the dialog
            self.failed.emit(str(e), False)
        else:
            self.loaded.emit(lm)


class PretrainedDialog(QtWidgets.QDialog):
    """Search the pretrained models, see which are cached, open one.

    Signals
    -------
    modelLoaded(object, str, str) : the ``LoadedModel``, its architecture and weights name
    """

    modelLoaded = QtCore.pyqtSignal(object, str, str)
    listShown = QtCore.pyqtSignal(str)                # the library whose list is shown now

    def __init__(self, parent=None, device="auto"):
        super().__init__(parent)
        self.setWindowTitle("Open a pretrained model")
        self.resize(760, 560)
        self.device = device
        self.loader: PretrainedLoader | None = None
        self.progress_dialog: QtWidgets.QProgressDialog | None = None

        self.library = QtWidgets.QComboBox()
        self.search = QtWidgets.QLineEdit()
        self.search.setPlaceholderText("search: resnet, vit, efficientnet, IMAGENET1K_V2…")
        self.search.setClearButtonEnabled(True)
        self.cached_only = QtWidgets.QCheckBox("only cached")
        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.library)
        top.addWidget(self.search, 1)
        top.addWidget(self.cached_only)

        self.tree = QtWidgets.QTreeWidget()
        self.tree.setHeaderLabels(["Model", "Weights", "Cached", "Details"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setSortingEnabled(False)
        self.tree.setSelectionMode(QtWidgets.QAbstractItemView.SingleSelection)
        self.count = plain_label("")
        self.message = plain_label("")                 # a failed load's message quotes the file
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        self.buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Open
                                                  | QtWidgets.QDialogButtonBox.Close)
        self.open_button = self.buttons.button(QtWidgets.QDialogButtonBox.Open)
        self.open_button.setEnabled(False)

        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.tree, 1)
        lay.addWidget(self.count)
        lay.addWidget(self.message)
        lay.addWidget(self.buttons)

        self._rows: dict = {}                 # library -> [CatalogEntry]
        self._errors: dict = {}
        self._listing: dict = {}              # library -> CatalogThread running
        for lib, title in _LIBS:
            self.library.addItem(title, lib)
        self.library.currentIndexChanged.connect(self._fill)
        self.search.textChanged.connect(self._filter)
        self.cached_only.toggled.connect(self._filter)
        self.tree.itemSelectionChanged.connect(self._selection)
        self.tree.itemDoubleClicked.connect(lambda *_: self.open_selected())
        self.buttons.accepted.connect(self.open_selected)
        self.buttons.rejected.connect(self.reject)
        self._fill()
        self.search.setFocus()

    # ------------------------------------------------------------------ the list
    def _fill(self, *_):
        lib = self.library.currentData()
        self.tree.clear()
        self.message.setText("")
        if lib in self._rows:
            self._show(lib)
            return
        self.count.setText(f"reading the list of {lib} models…")
        if lib not in self._listing:
            t = self._listing[lib] = CatalogThread(lib)
            t.listed.connect(self._on_listed)
            t.start()

    def _on_listed(self, lib, rows, error):
        self._listing.pop(lib, None)
        self._rows[lib], self._errors[lib] = rows, error
        if lib == self.library.currentData():
            self._show(lib)

    def _show(self, lib):
        self.tree.clear()
        self.message.setText(self._errors.get(lib, ""))
        items = []
        for r in self._rows[lib]:
            name = r.arch.split(":", 1)[1]
            it = QtWidgets.QTreeWidgetItem([name, r.variant + ("  (default)" if r.is_default else ""),
                                            "yes" if r.cached else "", r.detail])
            it.setData(0, QtCore.Qt.UserRole, (r.arch, r.variant, r.cached))
            it.setToolTip(0, plain_tooltip(f"{r.arch} · {r.variant}"))
            items.append(it)
        self.tree.addTopLevelItems(items)
        for c in range(4):
            self.tree.resizeColumnToContents(c)
        self._filter()
        self.listShown.emit(lib)

    def _filter(self, *_):
        if self.library.currentData() not in self._rows:
            return
        words = self.search.text().lower().split()
        only = self.cached_only.isChecked()
        shown = cached = 0
        for i in range(self.tree.topLevelItemCount()):
            it = self.tree.topLevelItem(i)
            arch, variant, is_cached = it.data(0, QtCore.Qt.UserRole)
            hay = f"{arch} {variant} {it.text(3)}".lower()
            visible = all(w in hay for w in words) and (is_cached or not only)
            it.setHidden(not visible)
            shown += visible
            cached += is_cached
        self.count.setText(f"{shown} shown of {self.tree.topLevelItemCount()} weight files, {cached} in the cache "
                           f"(open one that is not: it is downloaded once)")
        self._selection()

    def is_listed(self) -> bool:
        """The chosen library's list has been read (it is read in a thread the first time)."""
        return self.library.currentData() in self._rows

    def visible_rows(self) -> list:
        """[(arch, variant, cached)] of the rows the list shows now."""
        return [self.tree.topLevelItem(i).data(0, QtCore.Qt.UserRole) for i in range(self.tree.topLevelItemCount())
                if not self.tree.topLevelItem(i).isHidden()]

    def select(self, arch: str, variant: str) -> bool:
        """Select the row of ``arch`` / ``variant`` (True when it is shown)."""
        for i in range(self.tree.topLevelItemCount()):
            it = self.tree.topLevelItem(i)
            if it.data(0, QtCore.Qt.UserRole)[:2] == (arch, variant) and not it.isHidden():
                self.tree.setCurrentItem(it)
                return True
        return False

    def _selection(self):
        it = self.tree.currentItem()
        self.open_button.setEnabled(it is not None and not it.isHidden() and self.loader is None)

    # ------------------------------------------------------------------ opening
    def open_selected(self) -> bool:
        it = self.tree.currentItem()
        if it is None or it.isHidden() or self.loader is not None:
            return False
        arch, variant, cached = it.data(0, QtCore.Qt.UserRole)
        self.message.setText("")
        self.loader = w = PretrainedLoader(arch, variant, self.device, self)
        pd = QtWidgets.QProgressDialog(f"{'Loading' if cached else 'Downloading'} {arch} · {variant}…", "Cancel",
                                       0, 0, self)
        pd.setWindowTitle("Open a pretrained model")
        pd.setWindowModality(QtCore.Qt.WindowModal)
        pd.setMinimumDuration(0)
        pd.setAutoClose(False)
        pd.setAutoReset(False)
        pd.canceled.connect(w.cancel)
        self.progress_dialog = pd
        w.progress.connect(self._on_progress)
        w.loaded.connect(self._on_loaded)
        w.failed.connect(self._on_failed)
        w.finished.connect(self._on_finished)
        self._selection()
        pd.show()
        w.start()
        return True

    def _on_progress(self, done, total):
        pd = self.progress_dialog
        if pd is None:
            return
        mb = 1024 * 1024
        if total:
            pd.setRange(0, max(1, int(total // 1024)))
            pd.setValue(int(done // 1024))
            pd.setLabelText(f"Downloading {self.loader.arch} · {self.loader.variant}: "
                            f"{done / mb:.1f} of {total / mb:.1f} MB")
        else:
            pd.setLabelText(f"Downloading {self.loader.arch} · {self.loader.variant}: {done / mb:.1f} MB")

    def _on_loaded(self, lm):
        w = self.loader
        self.modelLoaded.emit(lm, w.arch, w.variant)
        self.accept()

    def _on_failed(self, message, cancelled):
        self.message.setText(message)
        self.message.setStyleSheet("" if cancelled else "QLabel { color: #e03030; }")

    def _on_finished(self):
        if self.progress_dialog is not None:
            self.progress_dialog.close()
            self.progress_dialog.deleteLater()
            self.progress_dialog = None
        self.loader = None
        self._selection()

    def done(self, r):
        """Closing while a download runs cancels it and waits for the thread to end."""
        if self.loader is not None:
            self.loader.cancel()
            self.loader.wait()
        super().done(r)
