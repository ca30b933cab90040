"""The window's controllers talk through the state, never through the window (issue 28).

``window.py`` builds one controller per concern and wires them once; ``layout.py`` wires the
menus and panes.  Everywhere else in ``cnnvis_gui/qt`` a controller (or a dialog, the app, the
automation) reaches another only through what it was given: the :class:`ViewerState`, the
:class:`ModelState` / :class:`InputFeed`, signals and callables.  These AST checks keep it so.
"""
from __future__ import annotations

import ast
from pathlib import Path

QT = Path(__file__).resolve().parents[2] / "cnnvis_gui" / "qt"
#: the modules that may reach a controller through the window: they build and wire them
WIRING = {"window.py", "layout.py"}
#: names a window goes by: a parameter or a local (``win = self.win``), or an attribute of a controller
WINDOW_NAMES = {"win", "window", "main", "main_window", "mainwindow", "parent", "root"}
WINDOW_ATTRS = {"win", "_win", "window", "_window", "main", "_main", "parent", "_parent", "root"}
#: parameters a controller's constructor must not have: it takes the state and its widgets, not the window
WINDOW_PARAMS = {"win", "window", "main", "main_window", "mainwindow"}
#: what window.py may pass itself as to a controller: the Qt parent, the root a key filter watches
SELF_KEYWORDS = {"parent", "root"}


def _window_controllers() -> dict:
    """{window attribute: controller class name} of ``self.<attr> = SomeClass(...)`` in MainWindow.__init__,
    for classes imported from a sibling module (the controllers)."""
    tree = ast.parse((QT / "window.py").read_text(encoding="utf-8"))
    imported = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.level == 1 for a in node.names}
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and \
                isinstance(node.value.func, ast.Name) and node.value.func.id in imported:
            for t in node.targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    out[t.attr] = node.value.func.id
    return out


def _is_window(node) -> bool:
    """``win``, ``self.win``, ``self._parent``, ``self.parent()``, ``self.window()``: an expression for the window."""
    if isinstance(node, ast.Name):
        return node.id in WINDOW_NAMES
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr in WINDOW_ATTRS
    if isinstance(node, ast.Call) and not node.args and isinstance(node.func, ast.Attribute) and \
            isinstance(node.func.value, ast.Name) and node.func.value.id == "self":
        return node.func.attr in ("parent", "window", "parentWidget")
    return False


def reach_throughs(source: str, controllers) -> list:
    """``(line, text)`` of every ``<window>.<controller>`` in ``source``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in controllers and _is_window(node.value):
            out.append((node.lineno, node.col_offset, ast.unparse(node)))
    return [(line, text) for line, _, text in sorted(out)]


def window_constructors(source: str, classes) -> list:
    """``(class, parameter)`` for each constructor of ``classes`` in ``source`` that takes the window."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name in classes:
            for f in node.body:
                if isinstance(f, ast.FunctionDef) and f.name == "__init__":
                    args = f.args.posonlyargs + f.args.args + f.args.kwonlyargs
                    out += [(node.name, a.arg) for a in args if a.arg in WINDOW_PARAMS]
    return out


def test_the_window_has_its_controllers():
    ctl = _window_controllers()
    for name in ("session", "inputs", "render", "atlas", "dissect", "saver", "navigator", "persistence", "status"):
        assert name in ctl, f"window.py no longer builds self.{name} = <Controller>(...): {sorted(ctl)}"


def test_no_module_reaches_a_controller_through_the_window():
    controllers = set(_window_controllers())
    found = []
    for path in sorted(QT.glob("*.py")):
        if path.name in WIRING:
            continue
        found += [f"{path.name}:{line}: {text}" for line, text in
                  reach_throughs(path.read_text(encoding="utf-8"), controllers)]
    assert not found, ("these reach a controller through the window; give the controller what it needs "
                       "(the state, a signal, a callable wired in window.py) instead:\n" + "\n".join(found))


def test_no_controller_constructor_takes_the_window():
    classes = set(_window_controllers().values())
    found = []
    for path in sorted(QT.glob("*.py")):
        found += [f"{path.name}: {c}.__init__({p})" for c, p in
                  window_constructors(path.read_text(encoding="utf-8"), classes)]
    assert not found, "controllers take the state and their widgets, not the window:\n" + "\n".join(found)
    # and window.py passes itself only as the Qt parent (or the root a key filter watches)
    tree = ast.parse((QT / "window.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in classes:
            assert not any(isinstance(a, ast.Name) and a.id == "self" for a in node.args), \
                f"window.py:{node.lineno}: {node.func.id}(self, ...) hands a controller the window"


def test_the_checks_catch_a_reach_through():
    """The checks above fail on the code this replaced (a planted reach-through each way)."""
    controllers = {"render", "session", "atlas", "inputs", "status", "persistence"}
    planted = ("class RenderLoop:\n"
               "    def __init__(self, win):\n"
               "        self.win = win\n"
               "    def draw(self, res):\n"
               "        win = self.win\n"
               "        win.atlas.grid_mosaic(res)\n"
               "        self.win.session.gen\n"
               "        self._parent.status.show_message('x')\n"
               "        self.parent().inputs\n")
    assert [t for _, t in reach_throughs(planted, controllers)] == [
        "win.atlas", "self.win.session", "self._parent.status", "self.parent().inputs"]
    assert window_constructors(planted, {"RenderLoop"}) == [("RenderLoop", "win")]
    fine = ("class Saver:\n"
            "    def __init__(self, state, model, status, parent=None):\n"
            "        self.status = status\n"
            "    def save(self, src):\n"
            "        self.status.show_message(src.status)\n")
    assert reach_throughs(fine, controllers) == [] and window_constructors(fine, {"Saver"}) == []
