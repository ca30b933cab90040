"""Read a signed one-map saliency picture back to its index: 0 = -scale, 128 = zero, 255 = +scale."""
from __future__ import annotations

import numpy as np

from cnnvis_gui.core.saliency_display import diverging_lut


def diverging_index(img: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 drawn with the diverging map -> H x W int index into it (asserts every colour is in it)."""
    lut = diverging_lut().astype(np.int64)
    code = lambda a: (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]   # noqa: E731
    keys = code(lut)
    order = np.argsort(keys)
    c = code(np.asarray(img).astype(np.int64))
    pos = np.searchsorted(keys[order], c)
    pos = np.minimum(pos, 255)
    found = keys[order][pos] == c
    assert found.all(), f"{(~found).sum()} pixels are not colours of the diverging map"
    return order[pos]
