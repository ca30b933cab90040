"""Unit maps of a layer: its output as N x C x H x W, whatever the layer's layout.

A unit is a feature (a channel) and its map is the layer's spatial grid.  Which axis is which
is a property of the model map (:mod:`cnnvis_gui.core.modelmap`): ``nchw`` (convolutions),
``nhwc`` (channels-last: ConvNeXt, Swin), ``tokens:P+HxW`` (N x (P + H W) x C: ViT, DeiT; the P
prefix tokens are not part of the map), ``flat`` (N x F: no map).  Dissection asks the model
map once per layer (:func:`layer_layouts`) and never guesses from a shape; a model map that
does not know layouts yet means ``nchw`` for a 4-D output.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from ..core import CnnvisError, InputSpec, model_map

__all__ = ["layer_layouts", "layer_grid", "to_unit_maps", "NOT_SPATIAL"]

NOT_SPATIAL = ("flat", "not spatial")


def _layout_of(info) -> str:
    layout = getattr(info, "layout", None)
    if layout is None:                             # a model map without layouts: the output's own rank
        shape = info.shape or ()
        return "nchw" if len(shape) == 3 else ("flat" if len(shape) <= 1 else "not spatial")
    return str(getattr(layout, "name", layout))


def layer_layouts(model: nn.Module, spec: InputSpec, layers) -> dict:
    """{layer: (layout, (C, H, W))} from the model map (one probe forward); a layer without a map is refused."""
    mm = model_map(model, spec)
    out = {}
    for name in layers:
        info = mm[name]
        layout = _layout_of(info)
        grid = layer_grid(layout, info.shape)
        if grid is None:
            what = "x".join(map(str, info.shape)) if info.shape else "no tensor"
            raise CnnvisError(f"layer {info.display_name!r} ({info.type}, output {what}) has no spatial map of units "
                              f"(layout {layout}); dissection needs a layer whose units have an H x W map, such as a "
                              f"convolution's output. 'cnnvis info' lists the layers.")
        out[name] = (layout, grid)
    return out


def layer_grid(layout: str, shape) -> tuple | None:
    """(C, H, W) of a layer's unit maps, or None when it has none."""
    if shape is None or layout in NOT_SPATIAL:
        return None
    shape = tuple(int(s) for s in shape)
    if layout == "nchw" and len(shape) == 3:
        return shape
    if layout == "nhwc" and len(shape) == 3:
        return shape[2], shape[0], shape[1]
    m = re.fullmatch(r"tokens:(\d+)\+(\d+)x(\d+)", layout)
    if m and len(shape) == 2:
        p, h, w = (int(g) for g in m.groups())
        return (shape[1], h, w) if shape[0] == p + h * w else None
    return None


def to_unit_maps(name: str, output, layout: str) -> torch.Tensor:
    """The layer's output (batch first) as B x C x H x W, detached, in a float dtype."""
    if not isinstance(output, torch.Tensor):
        raise CnnvisError(f"layer {name or 'output'!r} does not return a tensor; choose another layer to dissect.")
    a = output.detach()
    if not a.is_floating_point() or a.dtype in (torch.float16, torch.bfloat16):
        a = a.float()
    if layout == "nchw" and a.ndim == 4:
        return a
    if layout == "nhwc" and a.ndim == 4:
        return a.permute(0, 3, 1, 2)
    m = re.fullmatch(r"tokens:(\d+)\+(\d+)x(\d+)", layout)
    if m and a.ndim == 3:
        p, h, w = (int(g) for g in m.groups())
        return a[:, p:, :].transpose(1, 2).reshape(a.shape[0], a.shape[2], h, w)
    raise CnnvisError(f"layer {name or 'output'!r} gave a {'x'.join(map(str, a.shape))} output that is not a "
                      f"{layout} map; choose a layer whose units have an H x W map.")
