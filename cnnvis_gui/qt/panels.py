"""The main window's panels: image panes, unit pane, backprop panes, tree (the grid: :mod:`.activation_grid`).

Each image pane owns ONE pyqtgraph ``ImageItem`` created once (``axisOrder='row-major'``)
and every ``setImage`` passes explicit ``levels`` (pyqtgraph ``VideoSpeedTest``).
Panels take the Qt-free :class:`~cnnvis_gui.qt.state.ViewerState` in ``__init__``,
write the user's choices into it and redraw from finished arrays only.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtCore, QtGui, QtWidgets

from .plain import html_text, plain_tooltip
from .state import CAM_LAYER_METHODS, METHOD_GROUPS, METHOD_LABELS, SMOOTHABLE_METHODS, ViewerState

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

SELECTED_COLOR = (255, 255, 0)   # yellow, as core.display.HIGHLIGHT_COLOR
FROZEN_COLOR = (255, 0, 255)     # magenta, as core.display.FROZEN_COLOR


class ClickableImageItem(pg.ImageItem):
    """ImageItem that reports clicks and hovers in image pixel coordinates (x = column, y = row)."""

    clicked = QtCore.pyqtSignal(float, float)
    hovered = QtCore.pyqtSignal(float, float)   # (-1, -1) when the mouse leaves

    def mouseClickEvent(self, ev):
        if ev.button() != QtCore.Qt.LeftButton:
            return super().mouseClickEvent(ev)
        p = self.mapFromScene(ev.scenePos())
        ev.accept()
        self.clicked.emit(p.x(), p.y())

    def hoverEvent(self, ev):
        if ev.isExit():
            self.hovered.emit(-1.0, -1.0)
            return
        p = self.mapFromScene(ev.scenePos())
        self.hovered.emit(p.x(), p.y())


class ElidedLabel(QtWidgets.QLabel):
    """A one-line label that never widens its pane: long text ends in "…" (full text as tooltip).

    It cuts at the end, so texts put what matters first (``layer3 · #5``, ``224×224 · clip.avi``):
    a middle cut made "featu…res.8" out of two names.
    """

    def __init__(self, text="", parent=None, elide=QtCore.Qt.ElideRight):
        super().__init__(parent)
        self.setTextFormat(QtCore.Qt.PlainText)      # status messages and file names: shown as text
        self.setSizePolicy(QtWidgets.QSizePolicy.Ignored, QtWidgets.QSizePolicy.Preferred)
        self.setMinimumWidth(30)
        self.elide = elide          # ElideLeft for a module path: its end says where it is
        self._shorter = ()
        self.setText(text)

    def setText(self, text):        # noqa: N802 (Qt's name): one text, no shorter variants
        self.set_variants([text])

    def set_variants(self, variants) -> None:
        """The full text first, then shorter ones in the order to try them: the label paints the first
        that fits its width, else the last one cut with "…"; ``text()`` and the tooltip are the full text
        ("selected unit 5" is "unit 5" in a narrow pane, not "se…")."""
        variants = [str(v) for v in variants] or [""]
        self._shorter = tuple(variants[1:])
        super().setText(variants[0])
        self.setToolTip(plain_tooltip(variants[0]))

    def is_cut(self) -> bool:
        """The text is wider than the label (a shorter variant or its cut with an ellipsis is painted)."""
        return self.fontMetrics().horizontalAdvance(self.text()) > self.width()

    def shown_text(self) -> str:
        """What the label paints: the first variant that fits, or the last one cut with "…"
        (:func:`elide_words` for a cut at the end)."""
        fm, width = self.fontMetrics(), self.width()
        variants = (self.text(),) + self._shorter
        text = next((v for v in variants if fm.horizontalAdvance(v) <= width), variants[-1])
        if self.elide == QtCore.Qt.ElideRight:
            return elide_words(fm, text, width)
        return fm.elidedText(text, self.elide, width)

    def paintEvent(self, ev):
        p = QtGui.QPainter(self)
        p.setPen(self.palette().color(QtGui.QPalette.WindowText))
        p.drawText(self.rect(), int(self.alignment()), self.shown_text())


def elide_words(fm: QtGui.QFontMetrics, text: str, width: int) -> str:
    """``text`` cut at its end to fit ``width`` pixels, at a word's end where that keeps most of what fits:
    ``"deconvnet …"`` rather than ``"deconvnet r…"``, ``"features.13 …"`` rather than ``"features.13 ·…"``.
    A single long word is still cut inside (its start is better than nothing); the whole text is the tooltip."""
    cut = fm.elidedText(text, QtCore.Qt.ElideRight, width)
    if cut == text or not cut.endswith("…"):
        return cut
    kept = cut[:-1]
    if len(kept) < len(text) and not text[len(kept)].isspace():      # the cut fell inside a word
        i = kept.rstrip().rfind(" ")
        if i >= 0.6 * len(kept):
            kept = kept[:i]
    return kept.rstrip(" ·,;:—-(…") + "…"


def _title(text: str) -> QtWidgets.QLabel:
    lab = QtWidgets.QLabel(text)
    lab.setTextFormat(QtCore.Qt.RichText)
    lab.setStyleSheet("QLabel { font-weight: 600; padding: 1px 2px; }")
    return lab


class ImagePane(QtWidgets.QFrame):
    """A titled pyqtgraph view holding one ImageItem (pan/zoom with the mouse, aspect locked)."""

    def __init__(self, title: str, item: pg.ImageItem | None = None, parent=None, min_size=(160, 140)):
        super().__init__(parent)
        self.setFrameShape(QtWidgets.QFrame.StyledPanel)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(3, 3, 3, 3)
        lay.setSpacing(2)
        self.header = QtWidgets.QHBoxLayout()
        self.title = _title(title)
        self.info = ElidedLabel("")
        self.info.setStyleSheet("QLabel { color: #888; }")
        self.info.setAlignment(QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter)
        self.header.addWidget(self.title)
        self.header.addWidget(self.info, 1)
        lay.addLayout(self.header)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground((24, 24, 28))
        self.view.setMinimumSize(*min_size)
        self.view.ci.layout.setContentsMargins(0, 0, 0, 0)
        self.vb = self.view.addViewBox(lockAspect=True, invertY=True, enableMenu=True)
        self.vb.setDefaultPadding(0.01)
        self.item = item if item is not None else pg.ImageItem(axisOrder="row-major")
        self.vb.addItem(self.item)
        lay.addWidget(self.view, 1)
        self._shape = None
        self.last_image = None
        # a sentence over the picture when what it shows needs saying (the gradient of a unit at its own
        # layer in the grid; why a backprop pane's method cannot map this unit)
        self.note = QtWidgets.QLabel(self.view)
        self.note.setTextFormat(QtCore.Qt.PlainText)
        self.note.setWordWrap(True)
        self.note.setStyleSheet("QLabel { background: rgba(20, 20, 24, 215); color: #f0f0f0; padding: 8px; "
                                "border: 1px solid #d08000; }")
        self.note.hide()

    def set_note(self, text: str) -> None:
        """Show ``text`` over the top of the picture (empty: hide it)."""
        if text == self.note.text() and self.note.isVisible() == bool(text):
            return
        self.note.setText(text)
        self.note.setToolTip(plain_tooltip(text))          # whole, where a small pane cuts it
        self.note.setVisible(bool(text))
        self._place_note()

    def _place_note(self):
        if self.note.isVisible():
            w = max(120, self.view.width() - 24)
            self.note.setFixedWidth(w)
            h = self.note.heightForWidth(w)                    # the wrapped text's height at this width
            self.note.setFixedHeight(min(max(h, 24), max(40, self.view.height() - 24)))   # inside the view
            self.note.move(12, 12)

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        self._place_note()

    def set_rgb(self, img: np.ndarray) -> None:
        """Show an H x W x 3 uint8 RGB array (kept by reference: never mutate it afterwards).

        ``levels=None`` with ``autoLevels=False``: the bytes are shown as they are (pyqtgraph's
        fast path, no per-paint rescale; ``levels=(0, 255)`` cost ~0.6 ms per pane per frame).
        """
        self.item.setImage(img, levels=None, autoLevels=False)
        self._after(img)

    def set_map(self, arr: np.ndarray, levels) -> None:
        self.item.setImage(arr, levels=levels, autoLevels=False)
        self._after(arr)

    def _after(self, img):
        self.last_image = img
        if img.shape[:2] != self._shape:
            self._shape = img.shape[:2]
            self.vb.autoRange(padding=0.01)

    def clear(self):
        self.item.clear()
        self.last_image = None
        self._shape = None




class MethodSettings(QtWidgets.QWidget):
    """SmoothGrad copies and noise (a row under a pane's method) and integrated-gradients steps.

    The values live in the :class:`ViewerState` (``smoothgrad``, ``noise``, ``ig_steps``), shared
    by both backprop panes; :meth:`show_for` shows the controls that apply to a method.  The
    steps box (:attr:`steps`) is placed by the pane beside the method chooser.
    """

    def __init__(self, state: ViewerState, parent=None):
        super().__init__(parent)
        self.state = state
        row = QtWidgets.QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(3)
        self.smooth = QtWidgets.QSpinBox()
        self.smooth.setRange(0, 256)
        self.smooth.setSpecialValueText("smooth off")
        self.smooth.setPrefix("smooth ×")
        self.smooth.setToolTip("SmoothGrad (Smilkov et al. 2017): average the map over N noisy copies of the "
                               "input, run as batched forwards (off: the plain method)")
        self.noise = QtWidgets.QDoubleSpinBox()
        self.noise.setRange(0.0, 1.0)
        self.noise.setSingleStep(0.05)
        self.noise.setDecimals(2)
        self.noise.setPrefix("σ ")
        self.noise.setToolTip("SmoothGrad noise: standard deviation as a fraction of the input's value range")
        self.steps = QtWidgets.QSpinBox()
        self.steps.setRange(1, 256)
        self.steps.setSuffix(" steps")
        self.steps.setToolTip("integrated gradients (Sundararajan et al. 2017): points on the path from the "
                              "all-zero baseline (Gauss-Legendre, as captum)")
        for w in (self.smooth, self.noise):
            row.addWidget(w)
        row.addStretch(1)
        self.smooth.valueChanged.connect(lambda v: self.state.update(smoothgrad=int(v)))
        self.noise.valueChanged.connect(lambda v: self.state.update(noise=round(float(v), 4)))
        self.steps.valueChanged.connect(lambda v: self.state.update(ig_steps=int(v)))
        state.connect(self._on_state)
        self._sync()

    def show_for(self, method: str) -> None:
        on = method in SMOOTHABLE_METHODS
        self.setVisible(on)
        self.steps.setVisible(method == "integrated_gradients")

    def _on_state(self, names):
        if names & {"smoothgrad", "noise", "ig_steps"}:
            self._sync()

    def _sync(self):
        for box, v in ((self.smooth, self.state.smoothgrad), (self.noise, self.state.noise),
                       (self.steps, self.state.ig_steps)):
            box.blockSignals(True)
            box.setValue(v)
            box.blockSignals(False)
        self.noise.setVisible(self.state.smoothgrad > 0)


class BackpropPane(ImagePane):
    """One saliency or CAM view with its method chooser (+ CAM layer, SmoothGrad / IG settings)."""

    def __init__(self, state: ViewerState, which: str = "method", parent=None):
        super().__init__("Backprop", None, parent, (160, 140))
        self.state = state
        self.which = which           # "method" or "method2" field of the state
        self.method_box = QtWidgets.QComboBox()
        if which == "method":
            self.method_box.addItem("off", None)          # as b cycles it: the pane's method says so too
        model = self.method_box.model()
        for heading, methods in METHOD_GROUPS:
            self.method_box.addItem(f"— {heading} —", "")
            model.item(self.method_box.count() - 1).setEnabled(False)     # a heading, not a choice
            for m in methods:
                self.method_box.addItem("   " + METHOD_LABELS[m], m)
        self.method_box.setMaxVisibleItems(self.method_box.count())
        self.method_box.setMinimumContentsLength(13)
        self.method_box.setSizeAdjustPolicy(QtWidgets.QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.method_box.setToolTip("backprop method: gradients (input-sized maps) or CAMs (coarse maps over the "
                                   "input); n cycles the classic five, b toggles off/gradient/deconvnet/guided")
        self.cam_box = QtWidgets.QComboBox()
        self.cam_box.setToolTip("layer whose feature maps Grad-CAM weighs (default: last conv before the unit)")
        self.cam_box.setMinimumContentsLength(6)
        self.cam_box.setSizeAdjustPolicy(QtWidgets.QComboBox.AdjustToMinimumContentsLengthWithIcon)
        row = QtWidgets.QHBoxLayout()
        row.setSpacing(3)
        row.addWidget(self.method_box, 3)           # the method's name first: "Score-CAM" was cut to "Score-CAI"
        self.cam_label = QtWidgets.QLabel("at")
        self.cam_label.setToolTip("Grad-CAM at this layer")
        row.addWidget(self.cam_label)
        row.addWidget(self.cam_box, 2)
        self.settings = MethodSettings(state)
        row.addWidget(self.settings.steps)
        self.layout().insertLayout(1, row)
        self.layout().insertWidget(2, self.settings)
        self.method_box.currentIndexChanged.connect(self._on_method)
        self.cam_box.currentIndexChanged.connect(self._on_cam)
        state.connect(self._on_state)
        self._grey_unavailable()
        self._sync()

    def set_cam_layers(self, names):
        self.cam_box.blockSignals(True)
        self.cam_box.clear()
        self.cam_box.addItem("default", None)
        for n in names:
            self.cam_box.addItem(n, n)
        self.cam_box.blockSignals(False)
        self._sync()

    def _on_method(self, i):
        m = self.method_box.itemData(i)
        if m == "":        # a heading
            return
        if m is None:
            self.state.update(backprop_on=False)
        elif self.which == "method":
            self.state.update(method=m, backprop_on=True)
        else:
            self.state.update(method2=m)

    def _on_cam(self, i):
        self.state.update(cam_layer=self.cam_box.itemData(i))

    def _on_state(self, names):
        if "unavailable" in names:
            self._grey_unavailable()
        if names & {"method", "method2", "cam_layer", "backprop_on"}:
            self._sync()

    def _grey_unavailable(self):
        """Grey the methods this model cannot run (the attention methods on a CNN), their reason as tooltip."""
        why = dict(self.state.unavailable)
        model = self.method_box.model()
        for i in range(self.method_box.count()):
            m = self.method_box.itemData(i)
            if not m:            # "off" and the headings
                continue
            model.item(i).setEnabled(m not in why)
            model.item(i).setToolTip(plain_tooltip(f"{METHOD_LABELS[m]} {why[m]}") if m in why else "")
            self.method_box.setItemText(i, "   " + METHOD_LABELS[m] + ("  (ViT only)" if m in why else ""))

    def _sync(self):
        m = getattr(self.state, self.which)
        self.method_box.blockSignals(True)
        self.method_box.setCurrentIndex(max(0, self.method_box.findData(m)))
        self.method_box.blockSignals(False)
        off = self.which == "method" and not self.state.backprop_on
        cam = m in CAM_LAYER_METHODS and not off       # rollout / LeGrad read every attention layer
        self.settings.show_for(None if off else m)
        self.settings.steps.setVisible(m == "integrated_gradients" and not off)
        self.cam_box.setVisible(cam)
        self.cam_label.setVisible(cam)
        i = self.cam_box.findData(self.state.cam_layer)
        self.cam_box.blockSignals(True)
        self.cam_box.setCurrentIndex(max(0, i))
        self.cam_box.blockSignals(False)
        if off:
            self.method_box.blockSignals(True)
            self.method_box.setCurrentIndex(self.method_box.findData(None))
            self.method_box.blockSignals(False)
        # the method alone: the pane's place says it is a backprop view, and a narrow column keeps it whole
        self.title.setText("backprop off (b)" if off else METHOD_LABELS.get(m, m))


_esc = html_text     # a class label from a file, inside the table's markup


def tree_label(name: str) -> str:
    """A module's row label: its own name (``conv1``, ``downsample``), or -- when that is a bare
    index (``0``, ``1``, ``2`` of a ``Sequential``) -- its dotted path, so that a row deep in the
    hierarchy says where it is: ``features.17``, ``17.conv.0.2`` (the top container's name is
    dropped below its numbered blocks, where every row would repeat it), ``layer1.0.downsample.0``."""
    parts = name.split(".")
    if not parts[-1].isdigit():
        return parts[-1]
    if len(parts) > 2 and parts[1].isdigit() and not any(c.isdigit() for c in parts[0]):
        return ".".join(parts[1:])
    return name


class ModuleTree(QtWidgets.QTreeWidget):
    """The model's modules with output shape, unit count, layout and type; choosing one sets the layer.

    The type comes last: on a narrow dock it is the column that scrolls off (every row's
    tooltip names it too), while the shape and unit count stay readable.  The layout column says
    where a layer's units are (``nchw``, channels-last ``nhwc``, ``tokens:P+HxW``, ``flat``); a
    right click on a layer offers to read it in another layout (:attr:`layoutRequested`).
    """

    NAME_ROLE = QtCore.Qt.UserRole
    COLUMNS = ["Module", "Output", "Units", "Layout", "Type"]
    #: (layer name, layout text or None for the detected one): the user chose a layout in the menu
    layoutRequested = QtCore.pyqtSignal(str, object)

    def __init__(self, state: ViewerState, parent=None):
        super().__init__(parent)
        self.state = state
        self.setHeaderLabels(self.COLUMNS)
        self.setContextMenuPolicy(QtCore.Qt.CustomContextMenu)
        self.customContextMenuRequested.connect(self._layout_menu)
        self.layouts = {}
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(True)
        self.setRootIsDecorated(True)
        self.setIndentation(12)   # deep trees (ResNet blocks) keep their names readable
        # a cut path keeps its block and its end: "10.c…0.1" (a start cut, "…conv.0.1", lost which block)
        self.setTextElideMode(QtCore.Qt.ElideMiddle)
        self.items = {}
        self.visualizable = {}
        self._syncing = False
        self.currentItemChanged.connect(self._on_current)
        state.connect(self._on_state)

    def set_model_map(self, mm) -> None:
        self._syncing = True
        self.clear()
        self.items = {}
        self.visualizable = {}
        self.layouts = {i.name: i.layout for i in mm}
        grey = QtGui.QBrush(QtGui.QColor(140, 140, 140))
        ncol = len(self.COLUMNS)
        infos = sorted(list(mm), key=lambda i: (i.name != "", getattr(i, "order", 0)))
        by_name = {i.name: i for i in infos}
        for info in sorted(infos, key=lambda i: (i.name.count("."), getattr(i, "order", 0))):
            name = info.name
            if name == "":
                parent = self.invisibleRootItem()
                label = "(model output)"
            else:
                parent_name = name.rsplit(".", 1)[0] if "." in name else ""
                parent = self.items.get(parent_name) if parent_name in by_name else None
                parent = parent if parent is not None else self.items.get("", self.invisibleRootItem())
                label = tree_label(name)
            shape = "×".join(str(s) for s in info.shape) if info.shape else "—"
            units = "" if info.units is None else str(info.units)
            lay = info.layout
            item = QtWidgets.QTreeWidgetItem(parent, [label, shape, units, lay.name if lay else "", info.type])
            item.setData(0, self.NAME_ROLE, name)
            self.items[name] = item
            self.visualizable[name] = bool(info.visualizable)
            if not info.visualizable:
                for c in range(ncol):
                    item.setForeground(c, grey)
                    item.setToolTip(c, plain_tooltip(f"not visualizable: {info.reason or 'no unit output'}"))
                item.setFlags(item.flags() & ~QtCore.Qt.ItemIsSelectable)
            else:
                tip = f"{name or 'model output'}: {info.type}, output {shape}"
                if lay is not None:
                    tip += f"\nlayout {lay.name}: {lay.describe()}\n({lay.source}; right click: another layout)"
                for c in range(ncol):
                    item.setToolTip(c, plain_tooltip(tip))
        self.expandAll()
        self.fit_columns()
        self._syncing = False
        self._select(self.state.layer)

    #: the narrowest the module column is cut to so that Output, Units and Layout stay whole
    MIN_NAME_WIDTH = 90
    #: the module column the dock asks room for (a deep name beyond it is cut in its middle)
    NAME_WIDTH = 220

    def _kept_width(self) -> int:
        """Output, Units and Layout at their contents' width: the columns that never scroll off."""
        heads = [self.headerItem().text(c) for c in range(self.columnCount())]
        last = heads.index("Layout") if "Layout" in heads else len(heads) - 1
        return sum(max(self.columnWidth(c), self.sizeHintForColumn(c), self.header().sectionSizeHint(c))
                   for c in range(1, last + 1))

    def fit_columns(self) -> None:
        """Columns to their contents; the module column gives way so that Output, Units and Layout stay whole.

        A long module name is cut in its middle (``17.c…0.2``): its start names the block, its end the row.
        The type (last) is the column that scrolls off on a narrow dock.
        """
        for c in range(self.columnCount()):
            self.resizeColumnToContents(c)
        room = self.viewport().width() - self._kept_width()
        self.setColumnWidth(0, max(self.MIN_NAME_WIDTH, min(self.columnWidth(0), room)))

    def wanted_width(self) -> int:
        """The tree's width with the module column at up to :attr:`NAME_WIDTH` and Output, Units, Layout whole."""
        self.resizeColumnToContents(0)
        name = min(self.columnWidth(0), self.NAME_WIDTH)
        chrome = self.width() - self.viewport().width()
        bar = self.verticalScrollBar()
        if not bar.isVisible():
            chrome += bar.sizeHint().width()
        return name + self._kept_width() + chrome

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        if self.items:
            self.fit_columns()


    def _layout_menu(self, pos) -> None:
        item = self.itemAt(pos)
        name = item.data(0, self.NAME_ROLE) if item is not None else None
        if name is None:
            return
        menu = self.layout_menu(name)
        if menu is not None:
            menu.exec_(self.viewport().mapToGlobal(pos))

    def layout_menu(self, name: str):
        """The menu of layouts for layer ``name`` (None when its output has no batch-first tensor)."""
        lay = self.layouts.get(name)
        if lay is None or not lay.batch_first:
            return None
        menu = QtWidgets.QMenu(self)
        menu.addSection(f"read '{name or 'output'}' as")
        user = lay.source == "set by the user"
        a = menu.addAction("the detected layout" + ("" if user else f" ({lay.name})"))
        a.triggered.connect(lambda _=False: self.layoutRequested.emit(name, None))
        for text, what in (("nchw", "channels first"), ("nhwc", "channels last"), ("flat", "features")):
            a = menu.addAction(f"{text} ({what})")
            a.setCheckable(True)
            a.setChecked(user and lay.name == text)
            a.triggered.connect(lambda _=False, t=text: self.layoutRequested.emit(name, t))
        a = menu.addAction("tokens: P prefix + H x W grid…")
        a.triggered.connect(lambda _=False: self._ask_tokens(name, lay))
        return menu

    def _ask_tokens(self, name, lay) -> None:
        guess = lay.name if lay.kind == "tokens" else "tokens:1+14x14"
        text, ok = QtWidgets.QInputDialog.getText(
            self, "Token layout", f"'{name or 'output'}' outputs N x {' x '.join(map(str, lay.shape))}: its tokens "
            f"as P prefix tokens (class, distillation, registers) then an H x W grid,\nfeatures last:",
            text=guess)
        if ok and text.strip():
            self.layoutRequested.emit(name, text.strip())

    def _on_current(self, cur, _prev):
        if self._syncing or cur is None:
            return
        name = cur.data(0, self.NAME_ROLE)
        if name is not None and self.visualizable.get(name):
            self.state.update(layer=name)

    def _on_state(self, names):
        if "layer" in names:
            self._select(self.state.layer)

    def _select(self, name):
        item = self.items.get(name)
        if item is None:
            return
        self._syncing = True
        self.setCurrentItem(item)
        self.scrollToItem(item)
        self._syncing = False
