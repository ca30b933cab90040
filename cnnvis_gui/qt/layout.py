"""The window's widgets and menus, built once: where every pane sits.

:func:`build_panels` creates the module tree dock, the input / unit / predictions column,
the centre (activation grid and the two zoom views), the backprop column and the help
overlay, and sets them as attributes of the window (``win.grid``, ``win.bp1`` ...).
:func:`build_menus` wires the menu bar to the controllers: a new menu entry calls the
controller that owns its concern.  This module and ``window.py`` are the only ones that reach the
controllers through the window (``win.session``...); the controllers never do.
"""
from __future__ import annotations

from PyQt5 import QtCore, QtGui, QtWidgets

from . import keys as keytable
from .display_controls import SaliencyDisplayControls
from .activation_grid import ActivationGrid
from .panels import BackpropPane, ClickableImageItem, ImagePane, ModuleTree
from .readouts import Predictions, UnitPane

#: the objective box: (shown, ViewerState.objective; "position" = the point clicked in the unit map)
OBJECTIVE_CHOICES = (("sum", "sum"), ("activation", "activation"), ("max", "max"),
                     ("position (click the unit)", "position"), ("class token", "prefix:0"))


def build_panels(win) -> None:
    s = win.state
    win.tree = ModuleTree(s)
    win.tree.layoutRequested.connect(lambda name, text: win.session.set_layout(name, text))
    dock = QtWidgets.QDockWidget("Modules", win)
    dock.setObjectName("modules_dock")
    dock.setWidget(win.tree)
    dock.setFeatures(QtWidgets.QDockWidget.DockWidgetMovable | QtWidgets.QDockWidget.DockWidgetFloatable)
    win.addDockWidget(QtCore.Qt.LeftDockWidgetArea, dock)
    win.resizeDocks([dock], [300], QtCore.Qt.Horizontal)
    win.tree.setMinimumWidth(150)           # narrow it on a laptop: names keep their column, the rest scrolls
    win.tree_dock = dock

    win.input_pane = ImagePane("Model input")
    win.input_pane.title.setToolTip("the frame as the model sees it: after crop / stretch / letterbox to the input spec")
    win.unit_pane = UnitPane(lut=win.lut, item=ClickableImageItem(axisOrder="row-major"))
    win.predictions = Predictions()
    win.grid = ActivationGrid(s)
    win.grid.unitClicked.connect(s.select_unit)
    win.zoom_unit = UnitPane(lut=win.lut)
    win.zoom_unit.title.setText("Unit (zoom, z)")
    win.zoom_bp = ImagePane("Backprop (zoom, z)")
    win.center = QtWidgets.QStackedWidget()
    for w in (win.grid, win.zoom_unit, win.zoom_bp):
        win.center.addWidget(w)
    win.bp1 = BackpropPane(s, "method")
    win.bp2 = BackpropPane(s, "method2")
    win.compare_box = QtWidgets.QCheckBox("compare")
    win.compare_box.setToolTip("a second backprop pane with another method, side by side")
    win.compare_box.toggled.connect(lambda on: s.update(compare=on))
    win.display_controls = SaliencyDisplayControls(s)
    win.filter_box = win.display_controls.filter_box
    win.overlay_box = QtWidgets.QCheckBox("overlay")
    win.overlay_box.setToolTip("show the gradient magnitude over the input (Grad-CAM is always overlaid)")
    win.overlay_box.toggled.connect(lambda on: s.update(overlay=on))
    win.objective_box = QtWidgets.QComboBox()
    for text, data in OBJECTIVE_CHOICES:
        win.objective_box.addItem(text, data)
    win.objective_box.setToolTip("what the backprop pushes back from the unit: the sum of its map, its value at "
                                 "its most active position (activation), its maximum, one position you "
                                 "click in the unit map, or (a ViT's token layers) the feature at the class "
                                 "token, which is not on the map")
    win.objective_box.currentIndexChanged.connect(lambda i: win.navigator.choose_objective(
        win.objective_box.itemData(i)))
    win.unit_pane.item.clicked.connect(win.navigator.click_unit_map)

    left = QtWidgets.QSplitter(QtCore.Qt.Vertical)
    left.addWidget(win.input_pane)
    left.addWidget(win.unit_pane)
    left.addWidget(win.predictions)
    left.setStretchFactor(0, 3)
    left.setStretchFactor(1, 3)
    left.setStretchFactor(2, 1)

    right = QtWidgets.QWidget()
    rl = QtWidgets.QVBoxLayout(right)
    rl.setContentsMargins(0, 0, 0, 0)
    rl.setSpacing(3)
    win.display_controls.add_to_clip_row(win.overlay_box)
    rl.addWidget(win.display_controls)
    opts2 = QtWidgets.QHBoxLayout()
    opts2.addWidget(win.compare_box)
    opts2.addStretch(1)
    opts2.addWidget(QtWidgets.QLabel("objective"))
    opts2.addWidget(win.objective_box)
    rl.addLayout(opts2)
    win.bp_split = QtWidgets.QSplitter(QtCore.Qt.Vertical)
    win.bp_split.addWidget(win.bp1)
    win.bp_split.addWidget(win.bp2)
    rl.addWidget(win.bp_split, 1)

    win.splitter = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
    win.splitter.addWidget(left)
    win.splitter.addWidget(win.center)
    win.splitter.addWidget(right)
    win.splitter.setStretchFactor(0, 2)
    win.splitter.setStretchFactor(1, 5)
    win.splitter.setStretchFactor(2, 2)
    win.splitter.setSizes([300, 700, 320])
    for w in (left, win.center):
        w.setMinimumWidth(200)
    # the display boxes never cut a choice ("normblu"): the column keeps the width its rows need
    right.setMinimumWidth(max(200, win.display_controls.minimumSizeHint().width()))
    win.setCentralWidget(win.splitter)

    win.help_overlay = QtWidgets.QLabel(win)
    win.help_overlay.setTextFormat(QtCore.Qt.RichText)
    win.help_overlay.setText(keytable.html_table())
    win.help_overlay.setAlignment(QtCore.Qt.AlignTop | QtCore.Qt.AlignLeft)
    win.help_overlay.setStyleSheet("QLabel { background: rgba(10,10,20,225); color: #eee; padding: 24px;"
                                   " font-size: 13px; border: 1px solid #555; }")
    win.help_overlay.hide()


def add_dock(win, dock, area) -> None:
    """Put ``dock`` where it was last time (the saved window state), else in ``area``."""
    if not win.restoreDockWidget(dock):
        win.addDockWidget(area, dock)


def add_dock_below_tree(win, dock) -> None:
    """Put ``dock`` where it was last time, else below the module tree."""
    if not win.restoreDockWidget(dock):
        win.addDockWidget(QtCore.Qt.LeftDockWidgetArea, dock)
        win.splitDockWidget(win.tree_dock, dock, QtCore.Qt.Vertical)
        win.resizeDocks([win.tree_dock, dock], [40, 60], QtCore.Qt.Vertical)


def _act(menu, text, slot, shortcut=None):
    a = menu.addAction(text)
    a.triggered.connect(lambda _=False: slot())
    if shortcut:
        a.setShortcut(QtGui.QKeySequence(shortcut))
    return a


def build_menus(win) -> None:
    session, inputs, atlas, saver = win.session, win.inputs, win.atlas, win.saver
    mb = win.menuBar()
    fm = mb.addMenu("&File")
    from .dialogs import open_checkpoint_interactive
    _act(fm, "Open &checkpoint…", lambda: open_checkpoint_interactive(win), "Ctrl+O")
    win.recent_menu = win.persistence.recent_menu = fm.addMenu("&Recent models")
    demo = fm.addMenu("&Demo models")
    for name in ("shapes", "glyphs"):
        _act(demo, name, lambda _=False, n=name: session.open_demo(n))
    fm.addSeparator()
    _act(fm, "Open &image…", inputs.open_image_dialog, "Ctrl+I")
    _act(fm, "Open &folder…", inputs.open_folder_dialog, "Ctrl+D")
    _act(fm, "Open &video…", inputs.open_video_dialog)
    _act(fm, "Choose c&amera…", inputs.choose_camera_dialog)
    fm.addSeparator()
    _act(fm, "&Save panes as PNG…", saver.save_pngs_dialog, "Ctrl+S")
    _act(fm, "Save raw arrays (.&npz)…", saver.save_npz_dialog, "Ctrl+Shift+S")
    fm.addSeparator()
    _act(fm, "&Quit", win.close, "Ctrl+Q")
    win.model_menu = mm = mb.addMenu("&Model")
    _act(mm, "Open &pretrained…", session.open_pretrained_dialog, "Ctrl+Shift+O")
    mm.addSeparator()
    _act(mm, "Edit input &spec…", session.edit_spec_dialog)
    _act(mm, "Edit &labels…", session.edit_labels_dialog)
    _act(mm, "Layer la&yout…", session.layout_dialog)
    am = mb.addMenu("&Atlas")
    _act(am, "&Scan a folder for each unit's top images…", atlas.scan_dialog)
    _act(am, "Show the unit &atlas pane", atlas.show_atlas)
    am.addSeparator()
    _act(am, "&Dissect: name what each unit detects…", win.dissect.dialog)
    _act(am, "Dissection s&ummary (detectors per category)", win.dissect.show_summary)
    vm = mb.addMenu("&View")
    vm.addAction(win.tree_dock.toggleViewAction())
    win.atlas_layout_action = atlas.layout_action = a = vm.addAction("Unit atlas in the main window")
    a.setCheckable(True)
    a.setToolTip("the selected unit's top images, their backprop crops and its optimized image as a column "
                 "of the window instead of a dock")
    a.toggled.connect(atlas.set_in_layout)
    vm.addSeparator()
    for _names, shown, action, desc in keytable.KEYS:
        if action.startswith("move") or action in ("quit",):
            continue
        a = vm.addAction(f"{desc}\t{shown}")
        a.triggered.connect(lambda _=False, act=action: win.run_action(act))
    hm = mb.addMenu("&Help")
    _act(hm, "&Keys (h, F1)", lambda: win.run_action("toggle_help"))
    _act(hm, "&About", lambda: about(win))
    win.persistence.fill_recent()


def about(win) -> None:
    QtWidgets.QMessageBox.about(win, "cnnvis-gui",
                                "cnnvis-gui — see inside PyTorch CNNs: activations, deconvnet, guided "
                                "backprop, Grad-CAM, live.\nPress h for the keys.")


#: the module dock widens for its Layout column only while the rest of the window keeps this many pixels
TREE_DOCK_KEEPS = 900


def fit_tree_dock(win) -> None:
    """Widen the module dock (never narrow it) until Output, Units and Layout are whole, while the panes
    beside it keep :data:`TREE_DOCK_KEEPS` px.

    The first 300 px cut ViT's ``tokens:1+14x14`` to "toke…" at 1280 x 720 (the dock takes ~380 px there); the
    dock grows on a model load only as far as that model's columns need, so a user's wider dock is kept.
    """
    dock, tree = win.tree_dock, win.tree
    if dock.isFloating() or not dock.isVisible():
        return
    want = tree.wanted_width() + (dock.width() - tree.width())
    cap = win.width() - TREE_DOCK_KEEPS
    before = win.splitter.sizes()
    grew = want > dock.width() and cap > dock.width()
    if grew:
        win.resizeDocks([dock], [min(want, cap)], QtCore.Qt.Horizontal)

    def laid_out():
        # the activation grid gives the dock its room: the splitter had shrunk every pane by its stretch,
        # cutting the backprop column's method box to "Grad-CA" at 1280 x 720
        sizes = win.splitter.sizes()
        centre = win.splitter.indexOf(win.center)
        if grew and len(sizes) == len(before) and sum(sizes) < sum(before) and centre >= 0:
            keep = list(before)
            keep[centre] = sum(sizes) - (sum(before) - before[centre])
            if keep[centre] >= win.center.minimumSizeHint().width():
                win.splitter.setSizes(keep)
        # the new model's first layer in the middle of the tree (it had ended under the bottom edge)
        if tree.currentItem() is not None:
            tree.scrollToItem(tree.currentItem(), QtWidgets.QAbstractItemView.PositionAtCenter)

    QtCore.QTimer.singleShot(0, laid_out)     # once the resize (and a scroll bar it brings) is laid out
