"""Receptive-field crops of top-k hits, and their deconv / guided-backprop images.

The deep visualization toolbox cropped each top-9 image with receptive-field arithmetic
written by hand for AlexNet.  Here the region is read off the network itself: it is the
bounding box of the input pixels with a non-zero gradient of the unit's activation at the
hit position (``Frame.saliency(layer, unit, "gradient", objective=(y, x))``).

A single image's gradient support can be smaller than the region that *can* influence
the position (a ReLU that is off, a max-pool that picked one pixel), so the support is the
union over the hit image itself and a few random probe inputs (``probes``, N(0, 1) in the
model's normalized space, fixed seed, one batched forward shared by all layers).  Every pixel outside
the box has a zero gradient for all of them, and every border row and column of the box
holds at least one pixel with a non-zero gradient (the box is tight).  When nothing has a
non-zero gradient (a unit that is off everywhere), the box is the whole input.

The "max deconv" column of the toolbox is the deconvnet (Zeiler & Fergus 2014) or guided
backprop (Springenberg et al. 2015) image of the same unit at the same position on the hit
image, rendered with :func:`cnnvis_gui.core.saliency_to_image` and cropped the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from ..core import CnnvisError, InputSpec, Visualizer, saliency_to_image
from ..core.bounds import MAX_PROBES, bounded_int
from ..sources import load_image
from .results import Hit

__all__ = ["Box", "HitCrops", "ReceptiveFields", "support_box", "input_position", "crop_hits", "input_image",
           "fit_tile"]


@dataclass(frozen=True)
class Box:
    """A rectangle of input pixels: rows ``y0 .. y1 - 1``, columns ``x0 .. x1 - 1``."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    def contains(self, y: float, x: float) -> bool:
        return self.y0 <= y < self.y1 and self.x0 <= x < self.x1

    def crop(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(img[self.y0:self.y1, self.x0:self.x1])

    def to_list(self) -> list:
        return [self.y0, self.x0, self.y1, self.x1]


def support_box(mask: np.ndarray) -> Box | None:
    """Tight bounding box of the True pixels of an H x W mask, or None when there are none."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return Box(int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


def input_position(y: int, x: int, layer_hw, input_hw) -> tuple:
    """Centre (y, x), in input pixels, of position (y, x) of an h x w map over an H x W input."""
    h, w = layer_hw
    H, W = input_hw
    return (y + 0.5) * H / h - 0.5, (x + 0.5) * W / w - 0.5


def input_image(spec: InputSpec, path, fit=None) -> tuple:
    """Decode an image file -> (its model input 1 x C x H x W tensor, H x W x 3 uint8 RGB of what the model sees)."""
    arr = spec.to_array(load_image(path), fit)
    return torch.from_numpy(arr)[None], spec.to_image(arr)


def fit_tile(img: np.ndarray, size: int, pad: int = 32) -> np.ndarray:
    """Scale an H x W x 3 crop to fit a size x size tile (aspect kept, dark padding)."""
    h, w = img.shape[:2]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    interp = cv2.INTER_NEAREST if s >= 2 else (cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    r = cv2.resize(img, (nw, nh), interpolation=interp)   # cv2 takes (width, height)
    out = np.full((size, size, 3), pad, np.uint8)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = r.reshape(nh, nw, -1)[..., :3] if r.ndim == 3 else r[..., None]
    return out


@dataclass
class HitCrops:
    """One top-k hit with its receptive-field box and the two crops (H x W x 3 uint8 RGB)."""

    hit: Hit
    box: Box
    image: np.ndarray          # crop of the input image at model resolution
    deconv: np.ndarray         # crop of the deconv / guided backprop image
    full_image: np.ndarray
    full_deconv: np.ndarray
    support: np.ndarray        # H x W bool: union of non-zero gradient pixels


class ReceptiveFields:
    """Gradient-support receptive fields of a model, per (layer, unit, position), cached in memory.

    Parameters
    ----------
    model, spec : the network and its input
    probes : int
        Random inputs whose gradient support is united with the hit image's (default 4).
    method : {"guided", "deconvnet"}
        Rule for the "max deconv" image.
    filter : str
        :data:`cnnvis_gui.core.FILTERS` name used to render it.
    layouts : dict, optional
        The user's layout overrides (``Visualizer(layouts=...)``): a hit's position is on the
        layer's grid as its layout reads it.
    """

    def __init__(self, model: nn.Module, spec: InputSpec, probes: int = 4, method: str = "guided",
                 filter: str = "raw", seed: int = 0, fit=None, layouts: dict | None = None):
        if method not in ("guided", "deconvnet", "gradient"):
            raise CnnvisError(f"method must be 'guided', 'deconvnet' or 'gradient', got {method!r}.")
        self.model, self.spec = model, spec
        self.vis = Visualizer(model, spec, layouts=layouts)
        self.probes = bounded_int(probes, "probes (random inputs per receptive field)", 0, MAX_PROBES)
        self.method, self.filter, self.seed, self.fit = method, filter, seed, fit
        self._probe_frame = None       # ONE forward of the probe batch answers every layer
        self._probe_support: dict = {}

    @staticmethod
    def _objective(frame, layer, y, x):
        """(objective, positional?) of a hit: its position for N x C x ... maps, "sum" for N x F features.

        The scan stores a hit on an H x W map (channels first or last, or a token grid: the layer's
        layout) as (y, x), on an L map as (0, x) and on a D x H x W map as (0, flat index); each is
        turned back into a position in the unit's map.
        """
        per_unit = frame.layout(layer).map_shape
        if len(per_unit) == 2:
            return (int(y), int(x)), True
        if len(per_unit) == 1:
            return (int(x),), True
        if len(per_unit) > 2:
            return tuple(int(i) for i in np.unravel_index(int(x), tuple(per_unit))), True
        return "sum", False

    def _probes(self):
        if self._probe_frame is None:
            g = torch.Generator().manual_seed(self.seed)
            x0 = torch.randn((self.probes,) + self.spec.shape, generator=g)
            self._probe_frame = self.vis.forward(x0)
        return self._probe_frame

    def probe_support(self, layer: str, unit: int, y: int, x: int) -> np.ndarray:
        """H x W bool: pixels with a non-zero gradient at (y, x) for at least one random probe."""
        key = (layer, int(unit), int(y), int(x))
        if key not in self._probe_support:
            H, W = self.spec.height, self.spec.width
            if self.probes <= 0:
                self._probe_support[key] = np.zeros((H, W), bool)
                return self._probe_support[key]
            frame = self._probes()
            obj, _ = self._objective(frame, layer, y, x)
            grad = frame.saliency(layer, int(unit), "gradient", objective=obj)
            self._probe_support[key] = (grad != 0).any(dim=1).any(dim=0).cpu().numpy()
        return self._probe_support[key]

    def crops(self, layer: str, unit: int, hit: Hit) -> HitCrops:
        """Box, image crop and deconv crop of one hit (one forward, two backward passes)."""
        x, rgb = input_image(self.spec, hit.path, self.fit)
        with self.vis.forward(x, layers=[layer]) as frame:   # only the layer asked about is recorded
            obj, positional = self._objective(frame, layer, hit.y, hit.x)
            grad = frame.saliency(layer, int(unit), "gradient", objective=obj)
            dec = frame.saliency(layer, int(unit), self.method, objective=obj) if self.method != "gradient" else grad
        support = (grad[0] != 0).any(dim=0).cpu().numpy()
        if positional:
            support = support | self.probe_support(layer, unit, hit.y, hit.x)
        box = support_box(support) or Box(0, 0, self.spec.height, self.spec.width)
        d = dec[0].detach().cpu().numpy()
        if self.spec.channels == 3 and self.spec.channel_order == "BGR":
            d = d[::-1]
        deconv = saliency_to_image(np.ascontiguousarray(d), self.filter)
        return HitCrops(hit, box, box.crop(rgb), box.crop(deconv), rgb, deconv, support)

    def close(self):
        if self._probe_frame is not None:
            self._probe_frame.close()
            self._probe_frame = None


def crop_hits(model: nn.Module, spec: InputSpec, layer: str, unit: int, hits, probes: int = 4,
              method: str = "guided", filter: str = "raw", fit=None, layouts: dict | None = None) -> list:
    """:class:`HitCrops` for each hit of ``unit`` (see :class:`ReceptiveFields`)."""
    rf = ReceptiveFields(model, spec, probes=probes, method=method, filter=filter, fit=fit, layouts=layouts)
    try:
        return [rf.crops(layer, unit, h) for h in hits]
    finally:
        rf.close()
