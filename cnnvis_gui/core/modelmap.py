"""The model map: every module with its type, output shape, units and calls per forward.

Built from one recorded forward (:class:`~cnnvis_gui.core.Visualizer.model_map` runs a probe;
every :class:`~cnnvis_gui.core.Frame` has its own), with the activation census of its graph.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Sequence

from .errors import CnnvisError

__all__ = ["LayerInfo", "ModelMap", "resolve_layer_name", "build_map"]


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


    @property
    def display_name(self) -> str:
        return self.name if self.name else "(model output)"


class ModelMap:
    """Every module by its dotted name, in ``named_modules()`` order."""

    def __init__(self, layers: Sequence[LayerInfo], relu_calls=0, functional_relu_calls=0,
                 other_activations=None, generalized_activations=None, deconvnet_notice=None):
        self.layers = list(layers)
        self.deconvnet_notice = deconvnet_notice   # deconvnet is input-independent here (core.independence)
        self._by_name = {l.name: l for l in self.layers}
        self.relu_calls = relu_calls
        self.functional_relu_calls = functional_relu_calls
        self.other_activations = dict(other_activations or {})         # those keeping the plain gradient
        self.generalized_activations = dict(generalized_activations or {})  # those with the generalized rule

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

    @property
    def default_layer(self) -> str:
        """The last convolutional layer to run (or the output when there is none)."""
        convs = [l for l in self.layers if l.is_conv and l.visualizable]
        if convs:
            return max(convs, key=lambda l: l.order).name
        return ""

    def default_cam_layer(self, layer: str) -> str | None:
        """The last convolutional layer (4-D output) that finishes before ``layer``'s last call does.

        The same answer as :meth:`Frame.default_cam_layer <cnnvis_gui.core.Frame.default_cam_layer>`
        gives from a frame that recorded every module: from the map, a frame that recorded only
        a few layers can still name its CAM layer (and record it).
        """
        target = self[layer]
        if not target.ends:
            raise CnnvisError(f"layer {target.display_name!r} did not run in the forward pass; nothing to show.")
        done = target.ends[-1]
        best, best_done = None, -1
        for l in self.layers:
            if not (l.is_conv and l.visualizable and l.shape is not None and len(l.shape) == 3):
                continue
            for end in l.ends:
                if best_done < end <= done:
                    best, best_done = l.name, end
        return best

    def describe(self) -> str:
        rows = [f"{'name':40s} {'type':22s} {'output':18s} {'units':>6s} {'calls':>5s}"]
        for l in self.layers:
            shape = "x".join(map(str, l.shape)) if l.shape else "-"
            rows.append(f"{l.display_name:40s} {l.type:22s} {shape:18s} "
                        f"{(l.units if l.units is not None else '-')!s:>6s} {l.calls:>5d}"
                        + ("" if l.visualizable else f"  [{l.reason}]"))
        return "\n".join(rows)


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


def build_map(structure, calls: dict, census) -> ModelMap:
    """The map of one recording: ``structure`` (names, types), its calls by module, its activation census."""
    layers = []
    for name, cs in calls.items():
        depth = 0 if name == "" else name.count(".") + 1
        if not cs:
            layers.append(LayerInfo(name, structure.types[name], None, None, 0, False,
                                    "not run in the forward pass", structure.conv[name], 10**9, depth))
            continue
        last = cs[-1]
        full = last.shape
        shape = full[1:] if full is not None else None
        vis = last.reason is None
        layers.append(LayerInfo(name, structure.types[name], shape, (shape[0] if vis and shape else None),
                                len(cs), vis, last.reason, structure.conv[name], cs[0].start, depth,
                                tuple(c.done for c in cs)))
    return ModelMap(layers, census.relu_calls, census.functional_relu_calls, census.other_activations,
                    census.generalized_activations, getattr(census, "deconvnet_notice", None))
