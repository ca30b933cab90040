"""The model session: which model the window shows, loading it, and the model dialogs.

:class:`ModelSession` owns the loaded model (``loaded``), its generation number ``gen``
(bumped by every model or input-spec change, so results of an older model are dropped)
and its :class:`~cnnvis_gui.core.ModelMap` once the render worker has it ready.  A new way
to open a model (a dialog, a menu entry) lives here and ends in :meth:`load_model`.
"""
from __future__ import annotations

from pathlib import Path

from PyQt5 import QtCore, QtWidgets

from ..core import CnnvisError
from .state import shared
from .timing import calm_gc


class ModelSession(QtCore.QObject):
    """Load models into the render worker and set the window up for the model map it returns.

    It writes the shared :class:`~cnnvis_gui.qt.state.ModelState` (``gen``, ``loaded``, ``mm``,
    ``device``) and says what happened through two signals the window wires once:
    ``loading`` (a new model goes to the worker: what belonged to the old one goes) and ``shown``
    (the worker's model map is in the state and the views are set up for it).
    """

    loading = QtCore.pyqtSignal()
    shown = QtCore.pyqtSignal()

    def __init__(self, state, model, feed, persistence, status, tree, backprop_panes, set_model, open_input,
                 set_title=lambda title: None, closed=lambda: False, parent=None):
        """``model``: the ModelState written here; ``feed``: the InputFeed (which input is shown);
        ``status``: the StatusLine; ``tree`` / ``backprop_panes``: the module tree and the backprop
        panes the new map's layers go into; ``set_model(gen, model, spec, layouts)``: the render
        worker's; ``open_input(path)``: opens an input (the demo's samples); ``closed()``: the window
        is closing; ``parent``: the widget dialogs open over."""
        super().__init__(parent)
        self.state, self.model, self.feed = state, model, feed
        self.persistence, self.status = persistence, status
        self.tree, self.backprop_panes = tree, tuple(backprop_panes)
        self._set_model, self._open_input, self._set_title, self._closed = set_model, open_input, set_title, closed
        self._parent = parent
        self._initial = {}
        self._notices = []

    # the shared ModelState under the names the window and the tests know
    gen, loaded, mm, device = (shared("model", n) for n in ("gen", "loaded", "mm", "device"))

    def show_error(self, text) -> None:
        self.status.show_error(text)

    # ------------------------------------------------------------------ loading
    def load_model(self, loaded, layer=None, unit=None, method=None) -> None:
        """Show ``loaded`` (models.LoadedModel-like: .model, .spec, .labels, .name, .notes)."""
        m = self.model
        m.loaded = loaded
        m.gen += 1
        m.mm = None
        self.loading.emit()
        self.state.update(dissection=None)          # the labels belong to the old model
        self._initial = {k: v for k, v in (("layer", layer), ("unit", unit), ("method", method)) if v is not None}
        self._notices = [str(n) for n in (getattr(loaded, "notes", None) or [])]
        name = getattr(loaded, "name", "model")
        self._set_title(f"cnnvis-gui — {name}")
        self.status.show_message(f"loading {name} …")
        self._set_model(m.gen, loaded.model, loaded.spec, getattr(loaded, "layouts", None))

    def on_model_ready(self, ready) -> None:
        """The worker has the model and its map: choose the first layer/unit, fill the panes."""
        m, status = self.model, self.status
        if ready.gen != m.gen or self._closed():
            return
        m.mm = ready.model_map
        m.device = ready.device
        status.set_device(ready.device)
        names = list(m.mm.visualizable_names())
        init = self._initial
        layer = init.get("layer")
        if layer is not None:
            try:
                info = m.mm[layer]            # the core's message: nearest names, valid choices
            except CnnvisError as e:
                status.show_error(str(e))
                layer = None
            else:
                layer = info.name
                if layer not in names:
                    status.show_error(f"layer {info.name or 'output'!r} cannot be shown: {info.reason}")
                    layer = None
        if layer is None:          # the first view: a mid-network stop with readable maps (core.stops)
            from ..core.stops import first_layer
            layer = first_layer(m.mm)
        self.tree.set_model_map(m.mm)
        cams = [i.name for i in m.mm if getattr(i, "is_conv", False)]
        for pane in self.backprop_panes:
            pane.set_cam_layers(cams)
        upd = dict(layer=layer, frozen_unit=None, cam_layer=None, unavailable=getattr(ready, "unavailable", ()))
        if "method" in init:
            upd.update(method=init["method"], backprop_on=True)
        n = self.units(layer)
        upd["n_units"] = n
        upd["unit"] = max(0, min(int(init.get("unit", 0)), n - 1)) if n else 0
        if "unit" in init and n and not (0 <= int(init["unit"]) < n):
            status.show_error(f"unit {init['unit']} is out of range for layer {layer!r} (0..{n - 1})")
        self.state.update(**upd)
        self.tree._select(layer)
        msg = f"model {getattr(m.loaded, 'name', '')}: {len(names)} visualizable layers"
        if self._notices:
            status.show_notice(msg + " — " + "; ".join(self._notices))
        else:
            status.show_message(msg)
        calm_gc()
        self.shown.emit()

    def set_layout(self, layer: str, text) -> bool:
        """Read ``layer`` in the layout ``text`` (None: the detected one) and show the model again.

        The layout is checked against the layer's shape first: a wrong one is a message, and the
        model stays as it was.  Returns True when the model is reloaded with the new layouts.
        """
        from ..core.layouts import fit_layout
        if self.mm is None or self.loaded is None:
            return False
        try:
            info = self.mm[layer]
            if text is not None:
                if info.shape is None:
                    raise CnnvisError(f"layer {info.display_name!r} has no tensor output to read: {info.reason}")
                fit_layout(text, info.shape, info.name,
                           batch_ok=info.layout is None or info.layout.batch_first)
        except CnnvisError as e:
            self.show_error(str(e))
            return False
        layouts = dict(getattr(self.loaded, "layouts", None) or {})
        if text is None:
            if layouts.pop(info.name, None) is None:
                return False
        else:
            layouts[info.name] = text
        self.loaded.layouts = layouts
        self.load_model(self.loaded, layer=self.state.layer, unit=self.state.unit)
        return True

    def layout_dialog(self) -> None:
        """Model > Layer layout: read the current layer in another layout (empty: the detected one)."""
        from ..core.layouts import layout_help
        if self.mm is None:
            return
        info = self.mm[self.state.layer]
        cur = info.layout.name if info.layout is not None else ""
        shape = "x".join(map(str, info.shape or ()))
        text, ok = QtWidgets.QInputDialog.getText(
            self._parent, "Layer layout", f"'{info.display_name}' outputs N x {shape}, read as "
            f"{cur}.\nRead it as {layout_help()}.\nLeave empty for the detected layout:", text=cur)
        if ok:
            self.set_layout(info.name, text.strip() or None)

    def units(self, layer) -> int:
        """Number of units of ``layer`` on the current model map (0 before it is ready)."""
        return self.model.units(layer)

    def forget_map(self) -> None:
        """The model failed to load in the worker: nothing can be rendered until another one."""
        self.model.mm = None

    # ------------------------------------------------------------------ ways to open a model
    def open_demo(self, name="shapes", images=True) -> bool:
        from .. import models
        try:
            lm = models.demo(name)
        except Exception as e:  # noqa: BLE001
            self.show_error(f"demo model {name}: {e}")
            return False
        self.load_model(lm)
        self.persistence.remember_model(f"demo:{name}")
        if images:
            self.open_samples(name)
        return True

    # ------------------------------------------------------------------ the demo models' sample images
    def open_samples(self, name) -> bool:
        """Open the sample images shipped with demo ``name`` as the input."""
        from .. import models
        try:
            paths = [str(p) for p in models.demo_samples(name)]
        except Exception as e:  # noqa: BLE001
            self.show_error(f"demo images: {e}")
            return False
        if paths:
            self._open_input(paths if len(paths) > 1 else paths[0])
        return bool(paths)

    def samples_shown(self):
        """The demo whose sample images are the current input, or None."""
        from .. import models
        path = getattr(self.feed.source, "current_path", None)
        if not path:
            return None
        try:
            folder = Path(path).resolve().parent
            for name in models.DEMO_NAMES:
                if folder == (models.assets_dir() / "samples" / name).resolve():
                    return name
        except OSError:
            pass
        return None

    def offer_samples(self, lm) -> None:
        """A model opened from a file: a demo's own checkpoint gets its sample images (as the Demo
        menu gives them) when another demo's samples, or nothing, are shown; another model shown on a
        demo's samples says so, since they may not be the inputs it was made for."""
        from ..models.demos import demo_name_of
        demo = demo_name_of(lm)
        shown = self.samples_shown()
        if demo is not None and shown != demo and (shown is not None or self.feed.source is None):
            self.open_samples(demo)
        elif demo is None and shown is not None:
            self._notices.append(f"the input is still the {shown} demo's sample images: File → Open image, "
                                 f"folder or video for this model's own")

    def open_checkpoint(self, weights=None, arch=None, spec=None, trust_pickle=False, labels=None,
                        trust_code=False):
        from .. import models
        lm = models.load(weights=weights, arch=arch, spec=spec, trust_pickle=trust_pickle, labels=labels,
                         trust_code=trust_code)
        self.load_model(lm)
        self.offer_samples(lm)
        self.persistence.remember_model(weights or arch, arch=arch if weights else None)
        return lm

    def open_pretrained_dialog(self):
        """Model → Open pretrained…: the searchable list of torchvision/timm weights; returns the dialog."""
        from .pretrained_dialog import PretrainedDialog
        d = PretrainedDialog(self._parent)
        d.modelLoaded.connect(self.on_pretrained)
        d.setAttribute(QtCore.Qt.WA_DeleteOnClose)
        d.show()
        return d

    def on_pretrained(self, lm, arch, variant) -> None:
        """A pretrained model came from the dialog: show it, remember it (Recent, next start)."""
        from ..options import pretrained_entry
        self.load_model(lm)
        self.offer_samples(lm)
        self.persistence.remember_model(*pretrained_entry(arch, variant))

    def open_recent(self, what, arch) -> None:
        if what.startswith("demo:"):
            self.open_demo(what[5:], images=self.feed.source is None)
            return
        from ..options import model_from_entry
        from .trust_dialog import load_with_consent
        where = self.persistence.settings.fileName()
        try:   # as `cnnvis --model/--weights` would; code the entry or its file names runs only after a Yes
            lm = load_with_consent(self._parent, lambda trust_code: model_from_entry(
                what, arch, trust_code=trust_code, settings_file=where))
        except Exception as e:  # noqa: BLE001
            self.show_error(f"cannot open {what}: {e}")
            return
        if lm is None:
            self.show_error(f"not opened: {what} names code to run and you answered No")
            return
        self.load_model(lm)
        self.offer_samples(lm)
        self.persistence.remember_model(what, arch=arch or None)

    # ------------------------------------------------------------------ editing the loaded model
    def edit_spec_dialog(self) -> None:
        if self.loaded is None:
            return
        from .dialogs import SpecDialog
        d = SpecDialog(self.loaded.spec, self._parent)
        if d.exec_() == QtWidgets.QDialog.Accepted:
            try:
                spec = d.spec()
            except Exception as e:  # noqa: BLE001
                self.show_error(str(e))
                return
            self.replace_loaded(spec=spec)

    def edit_labels_dialog(self) -> None:
        if self.loaded is None:
            return
        from .dialogs import LabelsDialog
        d = LabelsDialog(getattr(self.loaded, "labels", None), self._parent)
        if d.exec_() == QtWidgets.QDialog.Accepted:
            self.replace_loaded(labels=d.labels())

    def replace_loaded(self, **kw) -> None:
        """The same model with other fields (spec, labels): reloaded, on the same layer and unit."""
        import copy
        lm = copy.copy(self.loaded)
        for k, v in kw.items():
            try:
                setattr(lm, k, v)
            except Exception:  # noqa: BLE001 - frozen dataclass
                import dataclasses
                lm = dataclasses.replace(lm, **{k: v})
        s = self.state
        self.load_model(lm, layer=s.layer, unit=s.unit)
