"""What the user is looking at, as a plain Python object (no Qt, no torch).

``ViewerState`` holds every choice the user makes in the main window: the current
layer and unit, the backprop method(s) and display filter, zoom, boosts, frozen
unit/frame, the grid mode.  Widgets get the state in ``__init__``, change it through
its methods and listen to :attr:`ViewerState.changed` (napari's ``Dims`` pattern).
The worker never sees the state itself: the window snapshots it into an immutable
:class:`~cnnvis_gui.qt.worker.RenderRequest`.

Two more plain holders carry what the window's controllers share, so that none reaches
another through the window: :class:`ModelState` (the model shown, written by the model
session alone) and :class:`InputFeed` (the input in use, written by the input controller
alone).  Every other controller gets them in ``__init__`` and only reads them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable, Optional

from ..core.attribution import DEFAULT_NOISE, DEFAULT_STEPS
from ..core.saliency_display import (DEFAULT_CLIP, DEFAULT_FILTER, DEFAULT_PERCENTILE, DEFAULT_SIGN, FILTERS,
                                     SIGNS)
from .timing import Rate

#: Methods a backprop pane can show, by group (the pane's chooser lists them under these headings).
#: Names are the core's with ``_`` for ``-`` (``integrated_gradients`` is ``"integrated-gradients"``).
METHOD_GROUPS = (
    ("gradients", ("gradient", "deconvnet", "guided", "input_x_gradient", "integrated_gradients")),
    ("CAMs", ("gradcam", "hirescam", "xgradcam", "layercam", "gradcam++", "scorecam", "eigencam",
              "guided_gradcam", "rollout", "legrad")),
)
BACKPROP_METHODS = tuple(m for _, group in METHOD_GROUPS for m in group)
#: the CAM family (coarse maps over the input); the others are input-shaped saliency maps
CAM_METHODS = METHOD_GROUPS[1][1]
#: the CAM-family methods that read a ViT's attention layers (core.ATTENTION_CAMS): no CAM layer to choose,
#: greyed in the choosers on a network without attention (:attr:`ViewerState.unavailable` says why)
ATTENTION_METHODS = ("rollout", "legrad")
#: the methods whose pane has a CAM layer to choose
CAM_LAYER_METHODS = tuple(m for m in CAM_METHODS if m not in ATTENTION_METHODS)
#: the methods SmoothGrad applies to (every gradient method)
SMOOTHABLE_METHODS = METHOD_GROUPS[0][1]
#: the order ``n`` cycles (the classic, one-backward methods)
N_CYCLE = ("gradient", "deconvnet", "guided", "gradcam", "guided_gradcam")
METHOD_LABELS = {
    "gradient": "gradient",
    "deconvnet": "deconvnet",
    "guided": "guided backprop",
    "input_x_gradient": "input × gradient",
    "integrated_gradients": "integrated gradients",
    "gradcam": "Grad-CAM",
    "hirescam": "HiResCAM",
    "xgradcam": "XGrad-CAM",
    "layercam": "LayerCAM",
    "gradcam++": "Grad-CAM++",
    "scorecam": "Score-CAM",
    "eigencam": "Eigen-CAM",
    "guided_gradcam": "guided Grad-CAM",
    "rollout": "attention rollout",
    "legrad": "LeGrad",
}
#: ``b`` cycles off -> gradient -> deconvnet -> guided -> off (the deep visualization toolbox's order).
B_CYCLE = (None, "gradient", "deconvnet", "guided")
DISPLAY_FILTERS = FILTERS
#: the saliency display's clip choices, as ``r`` cycles them: (clip, percentile, shown); "98% mass" is captum's
CLIP_CHOICES = (("percentile", 98.0, "98th pct"), ("percentile", 99.5, "99.5th pct"),
                ("mass", 98.0, "98% mass"), ("max", 100.0, "max"))
ZOOM_MODES = ("normal", "unit", "backprop")
GAMMAS = (1.0, 0.7, 0.5, 0.35)
GRID_MODES = ("activations", "gradients")


@dataclass
class ViewerState:
    """Every user choice of the main window; mutate with :meth:`update` or the helpers.

    Listeners in :attr:`changed` are called with the set of field names that changed.
    """

    layer: str = ""
    unit: int = 0
    n_units: int = 0                 # of the current layer (set by the window from the model map)
    grid_cols: int = 1               # columns of the current mosaic (set when a mosaic is drawn)
    method: str = "guided"           # primary backprop method
    backprop_on: bool = True
    compare: bool = False            # second backprop pane side by side
    method2: str = "gradcam"
    smoothgrad: int = 0              # SmoothGrad copies for the gradient methods (0: off)
    noise: float = DEFAULT_NOISE     # SmoothGrad noise, std as a fraction of the input's range
    ig_steps: int = DEFAULT_STEPS    # integrated-gradients points
    filter: str = DEFAULT_FILTER     # raw, as cnnvis export / atlas and saliency_to_image: every channel, unblurred
    sign: str = DEFAULT_SIGN         # saliency display: signed / positive / negative / absolute
    clip: str = DEFAULT_CLIP         # saliency display: the full-brightness value (percentile / mass / max)
    percentile: float = DEFAULT_PERCENTILE
    overlay: bool = False
    cam_layer: Optional[str] = None  # None -> the engine's default (last conv before the unit)
    objective: str = "sum"
    zoom: str = "normal"
    gamma: float = 1.0
    per_unit: bool = False           # T: normalize every tile on its own
    grid_mode: str = "activations"
    patterns: bool = False           # s: grid shows each unit's optimized image / top-1 crop (atlas)
    frozen_unit: Optional[tuple] = None   # (layer, unit) whose backprop stays shown
    frozen_frame: bool = False
    use_camera: bool = False
    show_help: bool = False
    dissection: Optional[object] = None   # the DissectResult whose unit labels are shown (None: none)
    unavailable: tuple = ()          # ((method, why), ...) the model cannot run: greyed in the choosers
    changed: list = field(default_factory=list, repr=False, compare=False)

    # ------------------------------------------------------------------ observer
    def connect(self, callback: Callable[[set], None]) -> None:
        self.changed.append(callback)

    def disconnect(self, callback) -> None:
        if callback in self.changed:
            self.changed.remove(callback)

    def update(self, **kw) -> set:
        """Set fields; notify listeners once with the names whose value really changed."""
        names = {f.name for f in fields(self)} - {"changed"}
        diff = set()
        for k, v in kw.items():
            if k not in names:
                raise AttributeError(f"ViewerState has no field {k!r}")
            if getattr(self, k) != v:
                object.__setattr__(self, k, v)
                diff.add(k)
        if diff:
            for cb in list(self.changed):
                cb(diff)
        return diff

    def snapshot(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "changed"}

    # ------------------------------------------------------------------ derived
    def unit_label(self, layer: str | None = None, unit: int | None = None):
        """What the dissection shown says unit ``unit`` of ``layer`` detects (a ``UnitLabel``), or None."""
        d = self.dissection
        layer = self.layer if layer is None else layer
        unit = self.unit if unit is None else unit
        t = getattr(d, "layers", {}).get(layer) if d is not None else None
        if t is None or not 0 <= int(unit) < len(t.units):
            return None
        return t.units[int(unit)]

    @property
    def backprop_unit(self) -> tuple:
        """(layer, unit) whose backprop is shown: the frozen one if any, else the selection."""
        return self.frozen_unit if self.frozen_unit is not None else (self.layer, self.unit)

    # ------------------------------------------------------------------ actions (keys call these)
    def select_unit(self, unit: int) -> None:
        if self.n_units <= 0:
            return
        self.update(unit=max(0, min(int(unit), self.n_units - 1)))

    def move(self, dx: int, dy: int) -> None:
        """Move the selection in the grid: dx columns, dy rows (clipped to the layer)."""
        if self.n_units <= 0:
            return
        cols = max(1, self.grid_cols)
        rows = -(-self.n_units // cols)
        row, col = divmod(self.unit, cols)
        col = max(0, min(cols - 1, col + dx))
        row = max(0, min(rows - 1, row + dy))
        u = row * cols + col
        if u >= self.n_units:       # an empty cell of the partial last row
            u = u - cols if dy > 0 else self.n_units - 1
        self.update(unit=max(0, u))

    def cycle_backprop(self) -> None:
        cur = self.method if self.backprop_on else None
        i = B_CYCLE.index(cur) if cur in B_CYCLE else 0
        nxt = B_CYCLE[(i + 1) % len(B_CYCLE)]
        if nxt is None:
            self.update(backprop_on=False)
        else:
            self.update(backprop_on=True, method=nxt)

    def cycle_method(self) -> None:
        i = N_CYCLE.index(self.method) if self.method in N_CYCLE else -1
        self.update(backprop_on=True, method=N_CYCLE[(i + 1) % len(N_CYCLE)])

    def cycle_filter(self) -> None:
        i = DISPLAY_FILTERS.index(self.filter) if self.filter in DISPLAY_FILTERS else -1
        self.update(filter=DISPLAY_FILTERS[(i + 1) % len(DISPLAY_FILTERS)])

    def cycle_sign(self) -> None:
        i = SIGNS.index(self.sign) if self.sign in SIGNS else -1
        self.update(sign=SIGNS[(i + 1) % len(SIGNS)])

    def cycle_clip(self) -> None:
        keys = [(c, p) for c, p, _ in CLIP_CHOICES]
        cur = (self.clip, float(self.percentile))
        i = keys.index(cur) if cur in keys else -1
        c, p = keys[(i + 1) % len(keys)]
        self.update(clip=c, percentile=p)

    def cycle_zoom(self) -> None:
        self.update(zoom=ZOOM_MODES[(ZOOM_MODES.index(self.zoom) + 1) % len(ZOOM_MODES)])

    def cycle_gamma(self) -> None:
        i = GAMMAS.index(self.gamma) if self.gamma in GAMMAS else 0
        self.update(gamma=GAMMAS[(i + 1) % len(GAMMAS)])

    def toggle(self, name: str) -> None:
        self.update(**{name: not getattr(self, name)})

    def toggle_grid_mode(self) -> None:
        self.update(grid_mode="gradients" if self.grid_mode == "activations" else "activations")

    def toggle_frozen_unit(self) -> None:
        self.update(frozen_unit=None if self.frozen_unit is not None else (self.layer, self.unit))

    def reset(self) -> None:
        """Esc: back to the plain view (keeps layer, unit and source)."""
        self.update(zoom="normal", gamma=1.0, per_unit=False, grid_mode="activations", patterns=False,
                    frozen_unit=None, frozen_frame=False, show_help=False, backprop_on=True,
                    overlay=False)


@dataclass(eq=False)
class ModelState:
    """The model the window shows.  Written by :class:`~cnnvis_gui.qt.session.ModelSession` alone;
    the render loop, the atlas, the dissection, navigation and saving read it."""

    gen: int = 0                     # bumped by every model (or input spec) change: older results are dropped
    loaded: Optional[object] = None  # models.LoadedModel-like: .model, .spec, .labels, .name, .notes
    mm: Optional[object] = None      # its core.ModelMap, once the render worker has it ready
    device: str = "—"

    def units(self, layer) -> int:
        """Number of units of ``layer`` on the current model map (0 before it is ready)."""
        if self.mm is None:
            return 0
        try:
            u = self.mm[layer].units
        except Exception:  # noqa: BLE001
            return 0
        return int(u or 0)


@dataclass(eq=False)
class InputFeed:
    """The input in use.  Written by :class:`~cnnvis_gui.qt.inputs.InputController` alone; the render
    loop, the status line, the atlas and the model session read it."""

    frame: Optional[object] = None   # the newest frame: a private read-only H x W x 3 uint8 BGR array
    frame_id: int = 0                # bumped by every new frame
    source: Optional[object] = None  # the file source: image / folder / video
    camera: Optional[object] = None
    capture_rate: Rate = field(default_factory=Rate)

    def active(self, use_camera: bool):
        """The source frames come from: the camera when ``use_camera`` (ViewerState.use_camera), else the files."""
        return self.camera if use_camera else self.source


def shared(holder: str, name: str) -> property:
    """A controller's attribute that is field ``name`` of its shared holder ``self.<holder>`` (read and set)."""
    return property(lambda self: getattr(getattr(self, holder), name),
                    lambda self, value: setattr(getattr(self, holder), name, value),
                    doc=f"``self.{holder}.{name}``")
