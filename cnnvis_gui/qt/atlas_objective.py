"""The atlas pane's *Objective* field: any objective written out, optimized as ``cnnvis optimize --objective``.

Usage (inside :class:`~cnnvis_gui.qt.atlas_pane.AtlasPane`)::

    field = ObjectiveField()
    field.submitted.connect(pane.optimize_objective)      # Enter or the button: the text
    field.show_hint(layer, unit)                          # the example in the empty field follows the unit

The text is read by the Qt-free core (:func:`cnnvis_gui.atlas.objective_run.written_run`, the same
function chain as the command line: parser, seeds, layouts, cache), in the pane's worker thread:
:func:`optimize_written` runs there and reports only through the worker's signals.  A text that
cannot be read, an unknown layer, a unit or position out of range are one line in the pane's status.
"""
from __future__ import annotations

from PyQt5 import QtCore, QtWidgets

from .plain import plain_tooltip

__all__ = ["ObjectiveField", "GRAMMAR", "one_line", "optimize_written"]

#: the field's tooltip: the grammar of ``cnnvis optimize --objective`` (optvis/spec_text.py), with examples
GRAMMAR = ("What to maximize, written out as for  cnnvis optimize --objective:\n"
           "terms joined by + and -, each with an optional weight  W*\n"
           "   L:k              channel k of layer L (its mean over positions)\n"
           "   L:k@y,x          channel k at one position (L:k@center: the centre)\n"
           "   output:k         class k (its logit + 4 log-probability)\n"
           "   L:dir=v.npy      a direction in L's channels (a .npy / .npz vector; or dir=[1,0,-0.5,...])\n"
           "e.g.  features.10:5 + 0.5*features.13:20     output:281 - output:285\n"
           "Layers are the names the layer list shows (output: the model output).\n"
           "Enter runs it with the preset (and ×4) beside Optimize; Stop ends it, keeping the best image.")


def one_line(text) -> str:
    """An error for the status line: its first line, without the command line's ``--objective:`` prefix."""
    lines = [s.strip() for s in str(text or "").splitlines() if s.strip()]
    first = lines[0] if lines else "failed"
    return first[len("--objective: "):] if first.startswith("--objective: ") else first


class ObjectiveField(QtWidgets.QWidget):
    """``Objective [ features.10:5 - 0.5*features.10:7 ] [Optimize objective] [Stop]``: one row."""

    submitted = QtCore.pyqtSignal(str)      # the text, stripped, when Enter or the button is pressed
    stopRequested = QtCore.pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.edit = QtWidgets.QLineEdit()
        self.edit.setClearButtonEnabled(True)
        self.edit.setToolTip(plain_tooltip(GRAMMAR))
        self.edit.returnPressed.connect(self._submit)
        self.run_button = QtWidgets.QPushButton("Optimize objective")
        self.run_button.setToolTip("Optimize the objective written on the left (Enter does the same)")
        self.run_button.clicked.connect(self._submit)
        self.stop_button = QtWidgets.QPushButton("Stop")
        self.stop_button.setToolTip("End the running optimization (the objective's or the unit's); the best image "
                                    "so far stays, not cached")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stopRequested)
        label = QtWidgets.QLabel("&Objective")        # Alt+O: the field
        label.setToolTip(self.edit.toolTip())
        label.setBuddy(self.edit)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(label)
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.run_button)
        lay.addWidget(self.stop_button)
        self.show_hint(None, None)

    def show_hint(self, layer, unit) -> None:
        """The example shown in the empty field: the selected unit's layer, else two classes."""
        if layer is None:
            example = "output:0 - output:1"
        else:
            name = layer or "output"
            example = f"{name}:{unit} - 0.5*{name}:{1 if unit == 0 else 0}"
        self.edit.setPlaceholderText(f"e.g. {example}   (hover: how to write one; Enter runs it)")

    def _submit(self) -> None:
        self.submitted.emit(self.edit.text().strip())


def optimize_written(worker, req, stopped) -> None:
    """In the pane's worker thread: ``req.copies`` images of the objective ``req.objective``, as
    ``cnnvis optimize --objective TEXT --preset P --iterations N --seed 0 [--diversity N]`` makes them
    (the same cache: the command's image shows here, and this one there).

    ``stopped()``: True ends the run (a newer request, or Stop), keeping the best images so far.
    """
    from ..atlas.objective_run import DIVERSITY_WEIGHT, objective_values, written_run
    from ..atlas.optimize import params_for, random_input
    from ..optvis.render import RenderStep
    params = params_for(req.preset, max_iter=req.max_iter, seed=0)        # the command's defaults
    res, objective, lay = written_run(worker.model, worker.spec, req.objective, params, req.copies,
                                      DIVERSITY_WEIGHT, worker.layouts,
                                      progress=lambda st: worker.optimized.emit(req, st), stop=stopped)
    if worker._newer():
        return
    rnd = float(objective_values(worker.model, worker.spec, objective, random_input(worker.spec, 1, seed=params.seed + 1), lay)[0])
    worker.optimized.emit(req, RenderStep(res.iterations, params.max_iter, list(res.values), list(res.values),
                                          list(res.images)))
    v = res.values
    span = f"{v[0]:.4g}" if len(v) == 1 else f"{min(v):.4g} to {max(v):.4g}"
    how = " (cached)" if res.from_cache else (f" (stopped at step {res.iterations}, not cached)" if res.stopped else "")
    extra = "" if res.similarity is None else \
        f", Gram similarity {res.similarity:.2f} at {res.diversity_layer or 'output'}"
    image = res.description.split(";")[0]
    worker.status.emit(req, f"{len(v)} image{'s' * (len(v) != 1)}, objective {span} (random input {rnd:.4g})"
                            f"{extra}{how}{' · ' + image if image else ''}{'; ' + res.problem if res.problem else ''}")
