"""Dissect dialog: concept folder, layers, Q, progress bar, cancel (Atlas → Dissect…).

The dissection (:class:`~cnnvis_gui.dissect.Dissection`) is built and run in a
:class:`~cnnvis_gui.qt.atlas_dialog.ScanWorker` on a private copy of the model: opening the
concept set (reading its CSV files, listing its images and masks), the model map's probe and the
weights hash all happen in that thread, never on the GUI thread.  A finished dissection from the
cache comes back at once; a cancelled one resumes where it stopped when started again.
"""
from __future__ import annotations

import threading
from pathlib import Path

from PyQt5 import QtCore, QtWidgets

from .atlas_dialog import WorkerDialog, private_model

__all__ = ["DissectDialog", "DissectJob", "DEMO_CONCEPTS"]

#: what the concept field says for the shapes demo's own concept set
DEMO_CONCEPTS = "(the shapes demo's own concept set)"


class DissectJob:
    """A dissection made and run in the worker thread: ``run()`` yields progress, ``result`` at the end.

    ``params`` is {"concepts": folder or None (the shapes demo's set), "layers", "quantile"}.
    """

    def __init__(self, model, spec, params: dict, cache_dir=None):
        self.model, self.spec, self.params, self.cache_dir = model, spec, dict(params), cache_dir
        self.result = None
        self.notices: list = []
        self.method_note = ""
        self._cancel = threading.Event()
        self._job = None

    def cancel(self) -> None:
        self._cancel.set()
        if self._job is not None:
            self._job.cancel()

    def run(self):
        from ..dissect import Dissection
        from ..dissect.demo import DemoDissection
        p = self.params
        if p.get("concepts"):
            self._job = Dissection(self.model, self.spec, p["concepts"], p["layers"], p["quantile"],
                                   cache_dir=self.cache_dir)
            self.method_note = self._job.method_note
        else:
            self._job = DemoDissection(self.model, self.spec, p.get("layers"), cache_dir=self.cache_dir,
                                       quantile=p["quantile"])
        if self._cancel.is_set():
            self._job.cancel()
        yield from self._job.run()
        inner = getattr(self._job, "dissection", self._job)
        self.notices = list(getattr(inner, "notices", []) or [])
        self.result = self._job.result


class DissectDialog(WorkerDialog):
    """Choose a concept folder, layers and Q; dissect with a progress bar; cancel.

    Signals
    -------
    dissected(object, dict) : the :class:`~cnnvis_gui.dissect.DissectResult` and the choices made
    """

    dissected = QtCore.pyqtSignal(object, dict)
    failed_prefix = "Dissection failed"

    def __init__(self, model, spec, layers, selected=None, concepts=None, quantile: float = 0.005,
                 demo: bool = False, cache_dir=None, parent=None):
        super().__init__("Dissect", parent)
        self.setWindowTitle("Network dissection: name what each unit detects")
        self.model, self.spec, self.cache_dir, self.demo = model, spec, cache_dir, demo

        intro = QtWidgets.QLabel(
            "Network dissection (Bau et al., CVPR 2017): each unit's map is thresholded at the (1 − Q) quantile "
            "of its activations, upsampled to the masks of labelled images, and named after the concept it "
            "overlaps best (IoU). Concepts: a Broden folder, or a folder with images/, masks/ (label maps, "
            "0 = none) and labels.csv (id,name[,category]).")
        intro.setWordWrap(True)
        self.concepts = QtWidgets.QLineEdit(str(concepts or (DEMO_CONCEPTS if demo else "")))
        self.concepts.setPlaceholderText("concept folder (Broden, or images/ + masks/ + labels.csv)")
        browse = QtWidgets.QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.concepts, 1)
        row.addWidget(browse)
        if demo:
            use_demo = QtWidgets.QPushButton("Demo set")
            use_demo.setToolTip("the shapes demo's concept set: the ten shapes, eleven colour names and three "
                                "background textures, drawn by the demo's generator")
            use_demo.clicked.connect(lambda: self.concepts.setText(DEMO_CONCEPTS))
            row.addWidget(use_demo)

        self.layers = QtWidgets.QListWidget()
        selected = set(selected or [])
        for name in layers:
            it = QtWidgets.QListWidgetItem(name or "output")
            it.setData(QtCore.Qt.UserRole, name)
            it.setFlags(it.flags() | QtCore.Qt.ItemIsUserCheckable)
            it.setCheckState(QtCore.Qt.Checked if name in selected else QtCore.Qt.Unchecked)
            self.layers.addItem(it)
        self.quantile = QtWidgets.QDoubleSpinBox()
        self.quantile.setDecimals(4)
        self.quantile.setRange(0.0001, 0.5)
        self.quantile.setSingleStep(0.001)
        self.quantile.setValue(float(quantile))
        self.quantile.setToolTip("Q: a unit's mask is where it exceeds its (1 − Q) quantile; the paper uses 0.005")
        form = QtWidgets.QFormLayout()
        form.addRow("Concepts", row)
        form.addRow("Layers (with a spatial map)", self.layers)
        form.addRow("Quantile Q", self.quantile)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(intro)
        lay.addLayout(form)
        lay.addWidget(self.bar)
        lay.addWidget(self.status)
        lay.addLayout(self.buttons)
        self.resize(560, 520)

    def chosen_layers(self) -> list:
        return [self.layers.item(i).data(QtCore.Qt.UserRole) for i in range(self.layers.count())
                if self.layers.item(i).checkState() == QtCore.Qt.Checked]

    def params(self) -> dict:
        text = self.concepts.text().strip()
        return {"concepts": None if text in ("", DEMO_CONCEPTS) and self.demo else text,
                "layers": self.chosen_layers(), "quantile": float(self.quantile.value())}

    def _browse(self):
        start = self.concepts.text() if self.concepts.text() != DEMO_CONCEPTS else ""
        d = QtWidgets.QFileDialog.getExistingDirectory(self, "Concept folder", start)
        if d:
            self.concepts.setText(d)

    def start(self):
        """Dissect in the worker (a finished dissection comes back from the cache at once)."""
        if self.worker is not None:
            return
        p = self.params()
        if p["concepts"] is not None and (not p["concepts"] or not Path(p["concepts"]).expanduser().is_dir()):
            self.status.setText("Choose a concept folder.")
            return
        if not p["layers"]:
            self.status.setText("Choose at least one layer.")
            return
        try:
            job = DissectJob(private_model(self.model), self.spec, p, self.cache_dir)
        except Exception as e:  # noqa: BLE001 - the model cannot be copied: say so
            self.status.setText(f"Dissection failed: {e}")
            return
        self.launch(job, "Reading the concept set…")

    def _done(self, result):
        if result is None:
            self.status.setText(self.status.text() + " — stopped; Dissect again to resume.")
            return
        self.result = result
        self.bar.setValue(100)
        job = getattr(self.sender(), "scan", None)
        how = "from the cache" if result.from_cache else "done"
        parts = [f"{result.images} images, {how}."]
        for t in result.layers.values():
            parts.append(f"{t.name or 'output'}: {t.summary(result.categories)['interpretable']} of {len(t.units)} "
                         f"units interpretable.")
        parts += list(getattr(job, "notices", []) or [])
        if getattr(job, "method_note", ""):
            parts.append(job.method_note)
        self.status.setText(" ".join(parts))
        self.dissected.emit(result, dict(getattr(job, "params", {}) or self.params()))
