"""The saliency display's choices above the backprop panes: filter, sign and clip.

A view of the :class:`ViewerState` (``filter``, ``sign``, ``clip``, ``percentile``): choosing in a box
updates the state, and a change of the state (a key: ``m`` filter, ``M`` sign, ``r`` clip; saved settings)
shows in the boxes.  Both backprop panes, the zoomed view and the saved PNGs follow these choices
(:func:`cnnvis_gui.core.saliency_to_image`); the raw arrays (``.npz``) stay raw.  The CAM methods are
drawn over the input and ignore them.
"""
from __future__ import annotations

from PyQt5 import QtCore, QtWidgets

from .state import CLIP_CHOICES, DISPLAY_FILTERS, ViewerState

FILTER_TIPS = {"raw": "raw: every channel (a colour input keeps its colour: R, G, B = the input's channels)",
               "gray": "gray: the mean over the channels, one map",
               "norm": "norm: the per-pixel length (L2 norm) of the gradient over the channels",
               "normblur": "normblur: the norm, blurred (where the gradient is, without the pixel noise)"}
SIGN_CHOICES = (("signed", "signed: both signs (0 = mid-grey; one map: blue − / white 0 / red +)"),
                ("positive", "positive: only where the gradient is > 0 (black elsewhere)"),
                ("negative", "negative: only where the gradient is < 0, by its size (black elsewhere)"),
                ("absolute", "absolute: the size |g| (0 black)"))


def _clip_key(clip: str, percentile: float) -> str:
    """The clip box's item data: ``"percentile:98"`` (the max ignores its percentile)."""
    return "max:100" if clip == "max" else f"{clip}:{float(percentile):g}"


def _combo(tip: str) -> QtWidgets.QComboBox:
    """A combo box that shrinks with a narrow column down to its longest choice (:func:`_popup_fits`)."""
    box = QtWidgets.QComboBox()
    box.setToolTip(tip)
    box.setSizeAdjustPolicy(QtWidgets.QComboBox.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(5)
    box.setSizePolicy(QtWidgets.QSizePolicy.Expanding, QtWidgets.QSizePolicy.Fixed)
    return box


def _popup_fits(box: QtWidgets.QComboBox) -> None:
    """The list it opens is wide enough to read, and the box itself never cuts a choice's name
    ("normblu" at 1280 x 720): its least width holds the longest one."""
    box.view().setMinimumWidth(box.view().sizeHintForColumn(0) + 24)
    widest = max(box.fontMetrics().horizontalAdvance(box.itemText(i)) for i in range(box.count()))
    opt = QtWidgets.QStyleOptionComboBox()
    box.initStyleOption(opt)
    size = QtCore.QSize(widest + 2, box.fontMetrics().height())
    box.setMinimumWidth(box.style().sizeFromContents(QtWidgets.QStyle.CT_ComboBox, opt, size, box).width())


class SaliencyDisplayControls(QtWidgets.QWidget):
    """``filter [..]``, ``sign [..]`` and ``clip [..]``, one a row (the overlay box under them): how gradient maps
    become pictures."""

    def __init__(self, state: ViewerState, parent=None):
        super().__init__(parent)
        self.state = state
        self.filter_box = _combo("display filter for gradients (m cycles):\n" + "\n".join(FILTER_TIPS.values()))
        for f in DISPLAY_FILTERS:
            self.filter_box.addItem(f, f)
        self.sign_box = _combo("which part of the gradient is shown (M cycles):\n"
                               + "\n".join(t for _, t in SIGN_CHOICES))
        for name, tip in SIGN_CHOICES:
            self.sign_box.addItem(name, name)
        self.clip_box = _combo("the value shown at full brightness; brighter values clip (r cycles):\n"
                               "98th / 99.5th pct: the 98th (99.5th) percentile of |g| — robust, the default\n"
                               "98% mass: captum's visualize_image_attr scale, where the sorted |g| reach 98 % of "
                               "their sum\n"
                               "max: the exact largest |g| — on real networks a few outlier pixels own it "
                               "and the rest looks flat")
        for clip, p, shown in CLIP_CHOICES:
            self.clip_box.addItem(shown, _clip_key(clip, p))
        # filter [..........]
        # sign   [..........]
        # clip   [..........]
        #        (overlay)
        # one box a row: each keeps its longest choice whole in the narrow right column, and the backprop
        # pane under them is as tall as it is wide there anyway (two boxes a row cut "normblur" at 1280 x 720)
        grid = QtWidgets.QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(4)
        grid.setVerticalSpacing(3)
        for row, text, box in ((0, "filter", self.filter_box), (1, "sign", self.sign_box), (2, "clip", self.clip_box)):
            label = QtWidgets.QLabel(text)
            label.setToolTip(box.toolTip())
            grid.addWidget(label, row, 0)
            grid.addWidget(box, row, 1)
            _popup_fits(box)
        grid.setColumnStretch(1, 1)
        self.grid = grid          # the window puts the overlay box after the clip box
        self.filter_box.currentIndexChanged.connect(lambda i: state.update(filter=self.filter_box.itemData(i)))
        self.sign_box.currentIndexChanged.connect(lambda i: state.update(sign=self.sign_box.itemData(i)))
        self.clip_box.currentIndexChanged.connect(self._on_clip)
        state.connect(self._on_state)
        self._sync()

    def add_to_clip_row(self, widget: QtWidgets.QWidget) -> None:
        """Place ``widget`` (the overlay box) under the clip box (beside it, the column had to be wider than
        the grid could spare when the unit atlas is a column of the window)."""
        self.grid.addWidget(widget, 3, 1)

    def _on_clip(self, i):
        clip, p = self.clip_box.itemData(i).split(":")
        self.state.update(clip=clip, percentile=float(p))

    def _on_state(self, names):
        if names & {"filter", "sign", "clip", "percentile"}:
            self._sync()

    def _sync(self):
        s = self.state
        cur = _clip_key(s.clip, s.percentile)
        if self.clip_box.findData(cur) < 0:   # a percentile set elsewhere (saved settings): show it as a choice
            self.clip_box.blockSignals(True)
            p = float(s.percentile)
            self.clip_box.addItem({"percentile": f"{p:g}th pct", "mass": f"{p:g}% mass"}.get(s.clip, "max"),
                                  cur)
            self.clip_box.blockSignals(False)
            _popup_fits(self.clip_box)
        for box, value in ((self.filter_box, s.filter), (self.sign_box, s.sign), (self.clip_box, cur)):
            i = box.findData(value)
            box.blockSignals(True)
            box.setCurrentIndex(max(0, i))
            box.blockSignals(False)
