"""Unit maps of a layer: its output as N x C x H x W, in the layout the model map gives it.

A unit is a feature (a channel) and its map is the layer's spatial grid.  Which axis is which is
decided once, in the model map (:mod:`cnnvis_gui.core.layouts`): ``nchw`` (convolutions), ``nhwc``
(channels-last: ConvNeXt, Swin), ``tokens:P+HxW`` (a ViT's or DeiT's patch tokens on their grid;
the P prefix tokens are not part of the map), ``flat`` and ``other`` (no map).  Dissection asks the
model map for every layer's :class:`~cnnvis_gui.core.layouts.Layout` (with the user's overrides,
``--layout NAME=LAYOUT``) and reads the output through :meth:`Layout.to_nchw`; it never guesses
from a shape.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core import CnnvisError, InputSpec, model_map

__all__ = ["layer_layouts", "to_unit_maps"]


def layer_layouts(model: nn.Module, spec: InputSpec, layers, overrides: dict | None = None) -> dict:
    """{layer: (Layout, (C, H, W))} from the model map (one probe forward); a layer without a 2-D map is refused."""
    mm = model_map(model, spec, overrides or None)
    out = {}
    for name in layers:
        info = mm[name]
        lay = info.layout
        grid = None
        if lay is not None and lay.spatial and lay.map_shape is not None and len(lay.map_shape) == 2:
            grid = (int(lay.units),) + tuple(int(s) for s in lay.map_shape)
        if grid is None:
            what = "x".join(map(str, info.shape)) if info.shape else "no tensor"
            how = lay.describe() if lay is not None else (info.reason or "no layout")
            raise CnnvisError(f"layer {info.display_name!r} ({info.type}, output {what}) has no spatial map of units "
                              f"({how}); dissection needs a layer whose units have an H x W map, such as a "
                              f"convolution's output. 'cnnvis info' lists the layers and their layouts.")
        out[name] = (lay, grid)
    return out


def to_unit_maps(name: str, output, layout) -> torch.Tensor:
    """The layer's output (batch first) as B x C x H x W (its layout's view), detached, in a float dtype."""
    if not isinstance(output, torch.Tensor):
        raise CnnvisError(f"layer {name or 'output'!r} does not return a tensor; choose another layer to dissect.")
    a = layout.to_nchw(output.detach())
    if not a.is_floating_point() or a.dtype in (torch.float16, torch.bfloat16):
        a = a.float()
    if a.ndim != 4:
        raise CnnvisError(f"layer {name or 'output'!r} gave a {'x'.join(map(str, output.shape))} output that is not a "
                          f"{layout.name} map; choose a layer whose units have an H x W map.")
    return a
