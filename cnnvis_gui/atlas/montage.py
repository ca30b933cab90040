"""Toolbox-style montages: a unit's top-k crops and their deconv crops, as grids side by side."""
from __future__ import annotations

import math

import numpy as np

from .crops import fit_tile

__all__ = ["grid", "unit_montage"]


def grid(tiles, cols: int | None = None, tile: int = 64, sep: int = 2, n: int | None = None,
         background: int = 255) -> np.ndarray:
    """Lay out H x W x 3 uint8 images as a ``cols``-wide grid of ``tile`` x ``tile`` cells.

    ``n`` cells are drawn (default ``len(tiles)``); missing ones stay empty (dark).
    """
    n = len(tiles) if n is None else n
    n = max(n, 1)
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    out = np.full((rows * tile + (rows - 1) * sep, cols * tile + (cols - 1) * sep, 3), background, np.uint8)
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        y, x = r * (tile + sep), c * (tile + sep)
        out[y:y + tile, x:x + tile] = fit_tile(tiles[i], tile) if i < len(tiles) else 32
    return out


def unit_montage(crops, k: int, tile: int = 64, sep: int = 2, gap: int = 8, extra=None) -> np.ndarray:
    """The top-k image crops (left grid) and their deconv crops (right grid), side by side.

    ``crops``: :class:`~cnnvis_gui.atlas.crops.HitCrops` list (best first); ``extra``: an optional
    H x W x 3 image (e.g. the unit's optimized image) appended on the right as one tile column.
    """
    cols = int(math.ceil(math.sqrt(max(k, 1))))
    left = grid([c.image for c in crops], cols, tile, sep, n=k)
    right = grid([c.deconv for c in crops], cols, tile, sep, n=k)
    parts = [left, np.full((left.shape[0], gap, 3), 255, np.uint8), right]
    if extra is not None:
        parts += [np.full((left.shape[0], gap, 3), 255, np.uint8), grid([extra], 1, left.shape[0], 0)]
    return np.ascontiguousarray(np.concatenate(parts, axis=1))
