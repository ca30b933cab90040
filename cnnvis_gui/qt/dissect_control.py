"""Network dissection in the window: the Dissect dialog, the labels of units, the layer summary.

:class:`DissectController` puts a :class:`~cnnvis_gui.dissect.DissectResult` into the window's
:class:`~cnnvis_gui.qt.state.ViewerState` (``state.dissection``); every view reads the labels
from there, never from this controller: the grid (a unit's concept under its tile and in the
hover line), the unit pane's title, the atlas pane's title and the summary dock's bar chart.

It also

* remembers the last dissection of each model (concept folder, layers, Q) and, when the model is
  opened again, looks it up in the cache in a thread: a finished dissection comes back at once
  and never runs the model;
* dissects the shapes demo at first start on its own concept set (drawn from the demo's
  generator, :mod:`cnnvis_gui.dissect.demo`) in the background, so its labels show with no
  download (``CNNVIS_DEMO_DISSECT=0`` turns it off; it follows ``CNNVIS_DEMO_ATLAS`` by default).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading

from PyQt5 import QtCore, QtWidgets

from ..core import CnnvisError

__all__ = ["DissectController"]


def _env_on(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() not in ("0", "false", "no", "off")


class DissectController(QtCore.QObject):
    """The Dissect menu entries, the dissection shown, its summary dock, the demo's first-start run."""

    _lookedUp = QtCore.pyqtSignal(int, object)     # (model gen, DissectResult or None) from the cache lookup

    def __init__(self, state, model, persistence, status, add_dock, atlas_busy=lambda: False,
                 closed=lambda: False, parent=None):
        """``model``: the ModelState (the model dissected; :meth:`on_model_ready` runs when a new one is
        shown: the window wires it); ``status``: the StatusLine; ``add_dock(dock)``: puts the summary
        dock where it was last time, else below the module tree; ``atlas_busy()``: the demo atlas is
        building (its progress has the status bar first); ``closed()``: the window is closing;
        ``parent``: the widget docks and dialogs belong to."""
        super().__init__(parent)
        self.state, self.model, self.persistence, self.status = state, model, persistence, status
        self._add_dock, self._atlas_busy, self._closed, self._parent = add_dock, atlas_busy, closed, parent
        self.dock = None
        self.summary = None
        self.demo_worker = None
        self.auto_demo = _env_on("CNNVIS_DEMO_DISSECT", os.environ.get("CNNVIS_DEMO_ATLAS", "1"))
        self._lookedUp.connect(self._on_looked_up)

    # ------------------------------------------------------------------ the dialog
    def spatial_layers(self) -> list:
        """Layers whose units have a spatial map (what dissection can label)."""
        mm = self.model.mm
        if mm is None:
            return []
        return [l.name for l in mm if l.visualizable and l.layout is not None and l.layout.spatial
                and l.layout.map_shape is not None and len(l.layout.map_shape) == 2]

    def dialog(self):
        """Atlas → Dissect…: the dialog, with this model's last choices (or the demo's set); returns it."""
        loaded = self.model.loaded
        if loaded is None or self.model.mm is None:
            self.status.show_error("open a model first")
            return None
        from ..models.demos import demo_name_of
        from .dissect_dialog import DissectDialog
        last = self.remembered() or {}
        demo = demo_name_of(loaded) == "shapes"
        layers = self.spatial_layers()
        selected = set(last.get("layers", [])) or ({self.state.layer} if self.state.layer in layers else set())
        d = DissectDialog(loaded.model, loaded.spec, layers, selected=selected, concepts=last.get("concepts"),
                          quantile=last.get("quantile", 0.005), demo=demo, parent=self._parent)
        d.dissected.connect(self.on_result)
        d.setAttribute(QtCore.Qt.WA_DeleteOnClose)
        d.show()
        return d

    def on_result(self, result, params) -> None:
        """A dissection finished (or came from the cache): show its labels, remember it, open the summary."""
        self.state.update(dissection=result)
        self.remember(params)
        self.show_summary()
        self._announce(result, "done" if not result.from_cache else "from the cache")

    def _announce(self, result, how: str) -> None:
        t = result.layers.get(self.state.layer)
        here = (f"{self.state.layer or 'output'}: {t.summary(result.categories)['interpretable']} of {len(t.units)} "
                f"units interpretable" if t is not None else "this layer was not dissected")
        self.status.show_message(f"dissection {how}: {here} — hover a unit for its concept (Atlas → Dissection "
                                 f"summary)")

    # ------------------------------------------------------------------ the summary dock
    def show_summary(self):
        """The dock with the current layer's bar chart (Atlas → Dissection summary)."""
        if self.summary is None:
            from .dissect_summary import DissectSummary
            self.summary = DissectSummary(self.state)
            self.dock = QtWidgets.QDockWidget("Dissection: what the units detect", self._parent)
            self.dock.setObjectName("dissect_dock")
            self.dock.setWidget(self.summary)
            self._add_dock(self.dock)      # where it was last time, else below the module tree
        self.dock.show()
        return self.summary

    # ------------------------------------------------------------------ remembering and reopening
    def _settings_key(self) -> str:
        lm = self.model.loaded
        ident = str(getattr(lm, "source", None) or getattr(lm, "name", None) or type(lm.model).__name__)
        return "dissect/model_" + hashlib.blake2b(ident.encode("utf-8"), digest_size=8).hexdigest()

    def remember(self, params: dict) -> None:
        p = self.persistence
        p.set(self._settings_key(), json.dumps({"concepts": params.get("concepts"), "layers": params["layers"],
                                                "quantile": params["quantile"]}))
        p.sync()

    def remembered(self) -> dict | None:
        """{concepts (None: the demo's set), layers, quantile} of this model's last dissection, or None."""
        if self.model.loaded is None:
            return None
        raw = self.persistence.settings.value(self._settings_key())
        try:
            d = json.loads(raw) if raw else None
            if not isinstance(d, dict):
                return None
            return {"concepts": None if d.get("concepts") is None else str(d["concepts"]),
                    "layers": [str(x) for x in d["layers"]], "quantile": float(d["quantile"])}
        except (TypeError, ValueError, KeyError):
            return None

    def on_model_ready(self) -> None:
        """Look this model's last dissection up in the cache (a thread); the shapes demo dissects itself."""
        loaded, gen = self.model.loaded, self.model.gen
        if self.demo_worker is not None and self.demo_worker[1] != gen:      # a demo run for another model
            self._drop_demo()
        last = self.remembered()
        if last is None:
            self.start_demo()
            return
        modules = dict(loaded.model.named_modules())
        if any(name not in modules for name in last["layers"]):
            return

        def work():
            try:
                if last["concepts"] is None:
                    from ..dissect.demo import DemoDissection
                    job = DemoDissection(loaded.model, loaded.spec, last["layers"], quantile=last["quantile"])
                    res = job.make().cached() if (job.folder / ".complete").is_file() else None
                else:
                    from ..dissect import load_dissection
                    res = load_dissection(loaded.model, loaded.spec, last["concepts"], last["layers"],
                                          last["quantile"])
            except Exception:  # noqa: BLE001 - an unreadable cache or a changed concept folder: nothing to show
                res = None
            self._lookedUp.emit(gen, res)
        threading.Thread(target=work, name="cnnvis-dissect-reopen", daemon=True).start()

    def _on_looked_up(self, gen, res) -> None:
        if gen != self.model.gen or self._closed():
            return
        if res is None:
            self.start_demo()
            return
        self.state.update(dissection=res)
        self._announce(res, "reopened from the cache")

    # ------------------------------------------------------------------ the shapes demo at first start
    def start_demo(self) -> bool:
        """For the shapes demo, dissect it on its own concept set in a thread; False otherwise."""
        from ..models.demos import demo_name_of
        loaded = self.model.loaded
        if (not self.auto_demo or loaded is None or demo_name_of(loaded) != "shapes" or self._closed()
                or self.demo_worker is not None):
            return False
        from ..dissect.demo import DEMO_LAYERS
        from .atlas_dialog import ScanWorker, private_model
        from .dissect_dialog import DissectJob
        try:
            model = private_model(loaded.model)
        except CnnvisError as e:
            self.status.show_error(f"demo dissection: {e}")
            return False
        params = {"concepts": None, "layers": list(DEMO_LAYERS), "quantile": 0.005}
        w = ScanWorker(DissectJob(model, loaded.spec, params))
        w.progress.connect(self._on_demo_progress)
        w.finished_scan.connect(self._on_demo_done)
        w.failed.connect(self._on_demo_failed)
        self.demo_worker = (w, self.model.gen, params)
        w.start()
        return True

    def _is_demo(self, sender) -> bool:
        return self.demo_worker is not None and sender is self.demo_worker[0] and not self._closed()

    def _on_demo_progress(self, p) -> None:
        if self._is_demo(self.sender()) and not self._atlas_busy():    # the atlas speaks first
            self.status.show_task(p.describe(), p.done, p.total)

    def _on_demo_done(self, res) -> None:
        if not self._is_demo(self.sender()):
            return
        _, gen, params = self.demo_worker
        self.demo_worker = None
        if not self._atlas_busy():
            self.status.hide_task()
        if res is None or gen != self.model.gen:
            return
        self.state.update(dissection=res)
        self.remember(params)
        self.show_summary()                     # the first start: the bars of what the demo's units detect
        self._announce(res, "of the shapes demo " + ("reopened from the cache" if res.from_cache else "done"))

    def _on_demo_failed(self, message) -> None:
        if not self._is_demo(self.sender()):
            return
        self.demo_worker = None
        self.status.show_error(f"demo dissection: {message}")

    def reset(self) -> None:
        self._drop_demo()

    def _drop_demo(self, wait: bool = False) -> None:
        w, self.demo_worker = self.demo_worker, None
        if w is None:
            return
        w[0].cancel()
        if wait:
            from .atlas_dialog import stop_worker
            stop_worker(w[0])

    def shutdown(self) -> None:
        self._drop_demo(wait=True)
