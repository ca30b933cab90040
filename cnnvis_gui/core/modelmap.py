"""The model map: every module with its type, output shape, units and calls per forward.

Built from one recorded forward (:class:`~cnnvis_gui.core.Visualizer.model_map` runs a probe;
every :class:`~cnnvis_gui.core.Frame` has its own), with the activation census of its graph.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Sequence

from .errors import CnnvisError
from .layouts import Layout, parse_layout

__all__ = ["LayerInfo", "ModelMap", "CamCandidate", "choose_cam_layer", "resolve_layer_name", "check_overrides",
           "build_map"]


@dataclass(frozen=True)
class LayerInfo:
    """One module of the model as seen in one forward pass."""

    name: str
    type: str
    shape: tuple | None
    units: int | None
    calls: int
    visualizable: bool
    reason: str | None
    is_conv: bool
    order: int
    depth: int
    ends: tuple = ()       # where each call ended in the forward's order of module-call ends
    layout: Layout | None = None   # where its units and their map are (:mod:`.layouts`), of its last call

    @property
    def display_name(self) -> str:
        return self.name if self.name else "(model output)"

    @property
    def layout_name(self) -> str:
        """``nchw``, ``nhwc``, ``tokens:P+HxW``, ``flat``, ``other`` -- or ``-`` when it has none."""
        return self.layout.name if self.layout is not None else "-"

    @property
    def map_shape(self) -> tuple | None:
        """One unit's map: ``(H, W)`` (also of a token or channels-last layer), ``(L,)``, ``()`` for flat."""
        return None if self.layout is None or not self.visualizable else self.layout.map_shape


class ModelMap:
    """Every module by its dotted name, in ``named_modules()`` order."""

    def __init__(self, layers: Sequence[LayerInfo], relu_calls=0, functional_relu_calls=0,
                 other_activations=None, generalized_activations=None, deconvnet_notice=None,
                 mixing_operations=None):
        self.layers = list(layers)
        self.deconvnet_notice = deconvnet_notice   # deconvnet is input-independent here (core.independence)
        self._by_name = {l.name: l for l in self.layers}
        self.relu_calls = relu_calls
        self.functional_relu_calls = functional_relu_calls
        self.other_activations = dict(other_activations or {})         # those keeping the plain gradient
        self.generalized_activations = dict(generalized_activations or {})  # those with the generalized rule
        self.mixing_operations = dict(mixing_operations or {})   # LayerNorm / softmax / attention: plain gradient

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def __contains__(self, name):
        return name in self._by_name

    def __getitem__(self, name) -> LayerInfo:
        return self._by_name[resolve_layer_name(name, self._by_name, self.visualizable_names())]

    def names(self) -> list[str]:
        return [l.name for l in self.layers]

    def visualizable_names(self) -> list[str]:
        return [l.name for l in self.layers if l.visualizable]

    @property
    def output_name(self) -> str:
        return ""

    def layout(self, name) -> Layout:
        """Where ``name``'s units and their map are (:mod:`.layouts`): the one answer every consumer uses."""
        info = self[name]
        if info.layout is None:
            raise CnnvisError(f"layer {info.display_name!r} ({info.type}) has no layout: {info.reason}.")
        return info.layout

    @property
    def default_layer(self) -> str:
        """The last convolutional layer to run (or the output when there is none).

        When channels-last or token maps run after it (ConvNeXt, Swin, ViT), the last spatial map of
        more than one position instead.
        """
        convs = [l for l in self.layers if l.is_conv and l.visualizable]
        best = max(convs, key=lambda l: l.order) if convs else None
        later = _spatial_after(self.layers, best.ends[-1] if best is not None and best.ends else -1)
        if later:
            return max(later, key=lambda l: l.ends[-1]).name
        return best.name if best is not None else ""

    def default_cam_layer(self, layer: str) -> str | None:
        """The last convolutional layer (4-D output) that finishes before ``layer``'s last call does.

        The same answer as :meth:`Frame.default_cam_layer <cnnvis_gui.core.Frame.default_cam_layer>`
        gives from a frame that recorded every module: from the map, a frame that recorded only
        a few layers can still name its CAM layer (and record it).  Where channels-last or token maps
        finish after that convolution, :func:`choose_cam_layer` says which map is taken.
        """
        target = self[layer]
        if not target.ends:
            raise CnnvisError(f"layer {target.display_name!r} did not run in the forward pass; nothing to show.")
        entries = [CamCandidate(l.name, l.layout, l.is_conv and l.shape is not None and len(l.shape) == 3,
                                l.type, l.order, end)
                   for l in self.layers if l.visualizable or _is_attention(l.type) for end in l.ends]
        return choose_cam_layer(entries, target.ends[-1])

    def describe(self) -> str:
        rows = [f"{'name':40s} {'type':22s} {'output':18s} {'layout':16s} {'units':>6s} {'calls':>5s}"]
        for l in self.layers:
            shape = "x".join(map(str, l.shape)) if l.shape else "-"
            rows.append(f"{l.display_name:40s} {l.type:22s} {shape:18s} {l.layout_name:16s} "
                        f"{(l.units if l.units is not None else '-')!s:>6s} {l.calls:>5d}"
                        + ("" if l.visualizable else f"  [{l.reason}]"))
        return "\n".join(rows)


@dataclass(frozen=True)
class CamCandidate:
    """One module call as a CAM layer candidate: its layout, whether it is a convolution with a
    2-D map, its type, where it started and ended in the forward's order."""

    name: str
    layout: Layout | None
    conv: bool
    type: str
    start: int
    end: int


def _many_cells(layout) -> bool:
    return (layout is not None and layout.spatial and len(layout.map_shape) == 2
            and layout.map_shape[0] * layout.map_shape[1] > 1)


def _spatial_after(layers, end) -> list:
    """Channels-last / token layers with a map of more than one position that end after ``end``; when there
    are any, every spatial layer of more than one position that ends after ``end``."""
    if not any(l.visualizable and _many_cells(l.layout) and l.layout.kind in ("nhwc", "tokens") and l.ends
               and l.ends[-1] > end for l in layers):
        return []
    return [l for l in layers if l.visualizable and _many_cells(l.layout) and l.ends and l.ends[-1] > end]


def _is_attention(type_name: str) -> bool:
    return "attention" in type_name.lower()


def choose_cam_layer(entries, done: int) -> str | None:
    """The default CAM layer of a unit whose call ends at ``done``, among ``entries`` (:class:`CamCandidate`).

    The last convolution with a 2-D map that ends by then (Grad-CAM's choice; unchanged for CNNs).  When a
    channels-last or token map ends after it (ConvNeXt, Swin, ViT), the last map of more than one position
    that ends by then.  That map's prefix tokens (a ViT's class token) may be all the unit reads after the
    last attention, where the patch tokens get no gradient: for a token map with prefix tokens, the last
    token map that ends before the last attention module starts (pytorch-grad-cam's ``blocks[-1].norm1``).
    """
    best = None
    for e in entries:
        if e.conv and e.end <= done and (best is None or e.end > best.end):
            best = e
    after = best.end if best is not None else -1
    modern = [e for e in entries if e.end <= done and e.end > after and _many_cells(e.layout)
              and e.layout.kind in ("nhwc", "tokens")]
    if not modern:
        return best.name if best is not None else None
    spatial = [e for e in entries if e.end <= done and _many_cells(e.layout)]
    pick = max(spatial, key=lambda e: e.end)
    if pick.layout.kind == "tokens" and pick.layout.prefix:
        attn = [e for e in entries if _is_attention(e.type) and e.start <= pick.end]
        if attn:
            last = max(attn, key=lambda e: e.start)
            before = [e for e in spatial if e.layout.kind == "tokens" and e.end < last.start]
            if before:
                pick = max(before, key=lambda e: e.end)
    return pick.name


def resolve_layer_name(name, known, candidates) -> str:
    if not isinstance(name, str):
        raise CnnvisError(f"a layer is named by a string from model.named_modules(), got {name!r}")
    if name in known:
        return name
    if name in ("output", "(model output)") and "" in known:
        return ""
    close = difflib.get_close_matches(name, [c for c in candidates if c], n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
    named = [c for c in candidates if c]
    raise CnnvisError(f"unknown layer {name!r}.{hint} Valid layers are names from "
                      f"model.named_modules(), e.g. {', '.join(repr(c) for c in named[:8])}"
                      f"{' ...' if len(named) > 8 else ''} (or 'output' for the model output).")


def check_overrides(layouts, names) -> dict:
    """``{module name: layout text}`` checked for syntax and names (shapes are checked by :func:`~.layouts.infer_layouts`)."""
    out = {}
    if layouts is None:
        return out
    if not isinstance(layouts, dict):
        raise CnnvisError(f"layouts must be a dict of layer name -> layout, got {type(layouts).__name__}.")
    known = {n: n for n in names}
    for name, text in layouts.items():
        parse_layout(text)
        out[resolve_layer_name(name, known, list(names))] = text
    return out


def build_map(structure, calls: dict, census, layouts: dict | None = None) -> ModelMap:
    """The map of one recording: ``structure`` (names, types), its calls by module, its activation census,
    and the layouts of its calls (``{name: [Layout per call]}``, :func:`~.layouts.infer_layouts`)."""
    layers = []
    layouts = layouts or {}
    for name, cs in calls.items():
        depth = 0 if name == "" else name.count(".") + 1
        if not cs:
            layers.append(LayerInfo(name, structure.types[name], None, None, 0, False,
                                    "not run in the forward pass", structure.conv[name], 10**9, depth))
            continue
        last = cs[-1]
        full = last.shape
        shape = full[1:] if full is not None else None
        reason = last.reason
        per_call = layouts.get(name) or []
        layout = per_call[len(cs) - 1] if len(per_call) == len(cs) else None
        if reason is None and layout is not None and layout.kind == "other":
            reason = f"not spatial: {layout.reason}"
        vis = reason is None
        units = (layout.units if layout is not None else shape[0]) if vis and shape else None
        layers.append(LayerInfo(name, structure.types[name], shape, units, len(cs), vis, reason,
                                structure.conv[name], cs[0].start, depth, tuple(c.done for c in cs),
                                layout if last.reason is None else None))
    return ModelMap(layers, census.relu_calls, census.functional_relu_calls, census.other_activations,
                    census.generalized_activations, getattr(census, "deconvnet_notice", None),
                    getattr(census, "mixing_operations", None))
