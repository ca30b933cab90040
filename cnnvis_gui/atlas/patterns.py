"""Pattern mode: one picture per unit of a layer, to show in the activation grid instead of activations.

The toolbox's ``s`` key shows every unit's optimized image (or its best top-1 crop) in
place of its activation tile.  These helpers return one H x W x 3 uint8 RGB image per unit
(None where there is none yet); the window draws each into the unit's tile
(``ActivationMosaic.tile_rect(unit)``), e.g. via :func:`cnnvis_gui.atlas.fit_tile`.
"""
from __future__ import annotations

from ..core import InputSpec
from .crops import ReceptiveFields
from .optimize import ActivationMaximizer, DEFAULT_PRESET
from .results import AtlasScan

__all__ = ["top1_crops", "optimized_images"]


def top1_crops(model, spec: InputSpec, scan: AtlasScan, layer: str, units=None, probes: int = 4,
               deconv: bool = False, layouts: dict | None = None) -> list:
    """Each unit's best hit, cropped to its receptive field (or its deconv crop when ``deconv``).

    A unit is a channel of the layer's layout (``layouts``: the user's overrides), as in the scan.
    """
    t = scan.layer(layer)
    units = range(t.units) if units is None else units
    rf = ReceptiveFields(model, spec, probes=probes, layouts=layouts)
    out = []
    try:
        for u in units:
            hits = scan.hits(t.name, u)
            if not hits:
                out.append(None)
                continue
            c = rf.crops(t.name, u, hits[0])
            out.append(c.deconv if deconv else c.image)
    finally:
        rf.close()
    return out


def optimized_images(model, spec: InputSpec, layer: str, n_units: int, preset=DEFAULT_PRESET, cache_dir=None,
                     layouts: dict | None = None, **overrides) -> list:
    """Cached optimized images of units 0..n_units-1 (None for units not optimized yet; never computes)."""
    out = []
    for u in range(n_units):
        res = ActivationMaximizer(model, spec, layer, u, preset=preset, cache_dir=cache_dir, layouts=layouts,
                                  **overrides).cached()
        out.append(None if res is None else res.image)
    return out
