"""Keys and navigation: the viewer's keys work whichever panel has focus.

:class:`KeyFilter` is an application-wide event filter that turns a key press into an
action name (:mod:`cnnvis_gui.qt.keys`); :class:`Navigator` runs the action on the state,
the input or the atlas.  A new key gets its row in ``keys.KEYS`` and its branch in
:meth:`Navigator.run_action`.
"""
from __future__ import annotations

from PyQt5 import QtCore, QtWidgets

from . import keys as keytable

SPECIAL = {QtCore.Qt.Key_Left: "Left", QtCore.Qt.Key_Right: "Right", QtCore.Qt.Key_Up: "Up",
           QtCore.Qt.Key_Down: "Down", QtCore.Qt.Key_PageUp: "PgUp", QtCore.Qt.Key_PageDown: "PgDown",
           QtCore.Qt.Key_F1: "F1", QtCore.Qt.Key_Escape: "Esc"}


class KeyFilter(QtCore.QObject):
    """Application-wide key filter: the viewer's keys work whichever panel has focus."""

    def __init__(self, root, handle_key_event):
        """``root``: the top-level widget whose keys are the viewer's; ``handle_key_event(ev)``: True
        when it used the key."""
        super().__init__(root)
        self.root, self._handle = root, handle_key_event

    def eventFilter(self, obj, ev):
        if ev.type() != QtCore.QEvent.KeyPress:
            return False
        w = obj if isinstance(obj, QtWidgets.QWidget) else None
        if w is None or w.window() is not self.root:
            return False
        if isinstance(w, (QtWidgets.QLineEdit, QtWidgets.QAbstractSpinBox, QtWidgets.QPlainTextEdit,
                          QtWidgets.QTextEdit)) or isinstance(QtWidgets.QApplication.activePopupWidget(),
                                                              QtWidgets.QWidget):
            return False
        return self._handle(ev)


class Navigator:
    """Key names -> actions on the state, the input source and the atlas."""

    _MOVES = {"Left": (-1, 0), "Right": (1, 0), "Up": (0, -1), "Down": (0, 1),
              "j": (-1, 0), "l": (1, 0), "i": (0, -1), "k": (0, 1)}

    def __init__(self, state, model, step_image, toggle_patterns, show_message, sync_controls=lambda: None,
                 close=lambda: None):
        """``model``: the ModelState (layers, maps); ``step_image(d)``: the input's previous / next
        image; ``toggle_patterns()``: the atlas's pattern mode; ``sync_controls()``: shows the
        state in the controls again (a refused choice); ``close()``: quits."""
        self.state, self.model = state, model
        self._step_image, self._toggle_patterns, self._close = step_image, toggle_patterns, close
        self.show_message, self.sync_controls = show_message, sync_controls

    def handle_key_event(self, ev) -> bool:
        mods = ev.modifiers() & ~QtCore.Qt.KeypadModifier
        if mods & (QtCore.Qt.ControlModifier | QtCore.Qt.AltModifier | QtCore.Qt.MetaModifier):
            return False
        name = SPECIAL.get(ev.key())
        if name is not None:
            if mods & QtCore.Qt.ShiftModifier and name in ("Left", "Right", "Up", "Down"):
                name = "shift+" + name
        else:
            name = ev.text()
            if len(name) != 1 or not name.isprintable():
                return False
        action = keytable.action_for(name)
        if action is None:
            return False
        self.run_action(action, name)
        return True

    def run_action(self, action: str, key: str = "") -> None:
        s = self.state
        if action.startswith("move"):
            if action == "move3":
                k = key.replace("shift+", "")
                dx, dy = self._MOVES.get(k.lower() if len(k) == 1 else k, (0, 0))
                s.move(dx * 3, dy * 3)
            else:
                s.move(*{"move_left": (-1, 0), "move_right": (1, 0), "move_up": (0, -1),
                         "move_down": (0, 1)}[action])
        elif action in ("prev_layer", "next_layer"):
            self.step_layer(-1 if action == "prev_layer" else 1)
        elif action in ("prev_module", "next_module"):
            self.step_module(-1 if action == "prev_module" else 1)
        elif action in ("prev_image", "next_image"):
            self._step_image(-1 if action == "prev_image" else 1)
        elif action == "toggle_camera":
            s.toggle("use_camera")
        elif action == "freeze_frame":
            s.toggle("frozen_frame")
        elif action == "freeze_unit":
            s.toggle_frozen_unit()
        elif action == "cycle_backprop":
            s.cycle_backprop()
        elif action == "cycle_method":
            s.cycle_method()
        elif action == "cycle_filter":
            s.cycle_filter()
        elif action in ("cycle_sign", "cycle_clip"):      # the saliency display's sign and clip
            getattr(s, action)()
        elif action == "cycle_zoom":
            s.cycle_zoom()
        elif action == "cycle_gamma":
            s.cycle_gamma()
        elif action == "toggle_per_unit":
            s.toggle("per_unit")
        elif action == "toggle_grid_mode":
            s.toggle_grid_mode()
            if s.grid_mode == "gradients" and s.frozen_unit is None:
                self.show_message("gradients of the selected unit at its own layer are zero except its own tile: "
                                 "press d to freeze the unit, then u to look at gradients in lower layers")
        elif action == "toggle_patterns":
            self._toggle_patterns()
        elif action == "toggle_help":
            s.toggle("show_help")
        elif action == "reset":
            s.reset()
        elif action == "quit":
            self._close()

    # ------------------------------------------------------------------ the backprop objective
    def choose_objective(self, choice) -> None:
        """The objective box: sum / activation / max, "position" (the centre until a click), or a token
        layer's prefix token ("prefix:0", the class token: beside the map, not on it)."""
        if isinstance(choice, str) and choice.startswith("prefix:"):
            if self._prefix_tokens() <= int(choice.split(":")[1]):
                self.show_message("the class-token objective needs a token layer with a class token "
                                      "(a ViT block); this layer has none")
                self.sync_controls()
                return
            self.state.update(objective=choice)
            return
        if choice != "position":
            self.state.update(objective=choice)
            return
        if not isinstance(self.state.objective, tuple):
            shape = self._unit_map_shape()
            if shape is None:
                self.show_message("a position objective needs a unit with a spatial map (h x w)")
                self.sync_controls()
                return
            self.state.update(objective=(shape[0] // 2, shape[1] // 2))
        self.show_message("click a position in the unit map: backprop pushes back from that point")

    def click_unit_map(self, x: float, y: float) -> None:
        """A click on the unit pane: with the position objective, backprop from that point."""
        if not isinstance(self.state.objective, tuple):
            return
        shape = self._unit_map_shape()
        if shape is None:
            return
        r, c = int(y), int(x)
        if 0 <= r < shape[0] and 0 <= c < shape[1]:
            self.state.update(objective=(r, c))

    def _unit_map_shape(self):
        """(h, w) of the backprop unit's map, or None when its units are not 2-D maps."""
        mm = self.model.mm
        layer = self.state.backprop_unit[0]
        if mm is None or layer not in mm.names():
            return None
        shape = tuple(mm[layer].map_shape or ())         # through the layer's layout (channels last, tokens)
        return shape if len(shape) == 2 else None

    def _prefix_tokens(self) -> int:
        """How many prefix tokens (class, ...) the backprop unit's layer has: 0 unless it is a token layer."""
        mm = self.model.mm
        layer = self.state.backprop_unit[0]
        if mm is None or layer not in mm.names() or mm[layer].layout is None:
            return 0
        return mm[layer].layout.prefix

    def fit_objective(self) -> None:
        """The backprop unit moved to another layer: a clicked position is kept inside its map, a
        prefix-token objective needs a layer with that prefix token."""
        pos = self.state.objective
        if isinstance(pos, str) and pos.startswith("prefix:"):
            if self._prefix_tokens() <= int(pos.split(":")[1]):
                self.state.update(objective="sum")
            return
        if not isinstance(pos, tuple):
            return
        shape = self._unit_map_shape()
        if shape is None:
            self.state.update(objective="sum")
        else:
            self.state.update(objective=(min(pos[0], shape[0] - 1), min(pos[1], shape[1] - 1)))

    def step_module(self, d: int) -> None:
        """``U`` / ``O``: the previous / next module in the tree's order (every visualizable module)."""
        mm = self.model.mm
        if mm is None:
            return
        names = list(mm.visualizable_names())
        if not names:
            return
        i = names.index(self.state.layer) if self.state.layer in names else 0
        self.state.update(layer=names[max(0, min(len(names) - 1, i + d))])

    def step_layer(self, d: int) -> None:
        """``u`` / ``o``: the previous / next stop (:mod:`cnnvis_gui.core.stops`) in forward order.

        From a module that is not a stop (chosen in the tree, or with ``U`` / ``O``), the nearest
        stop that ends before / after it.
        """
        mm = self.model.mm
        if mm is None:
            return
        stops = self._stops(mm)
        if not stops:
            return self.step_module(d)
        cur = self.state.layer
        if cur in stops:
            i = stops.index(cur) + d
        else:
            ends = mm[cur].ends if cur in mm else ()
            at = ends[-1] if ends else -1
            before = [k for k, n in enumerate(stops) if mm[n].ends[-1] < at]
            i = (before[-1] if before else -1) + (1 if d > 0 else 0)
        self.state.update(layer=stops[max(0, min(len(stops) - 1, i))])

    def _stops(self, mm) -> list:
        if getattr(self, "_stops_of", None) is not mm:
            from ..core.stops import layer_stops
            self._stops_of, self._stop_names = mm, layer_stops(mm)
        return self._stop_names
