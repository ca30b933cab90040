"""Display helpers: activation mosaics, colormaps and heat-map overlays (saliency: :mod:`.saliency_display`).

Everything here is Qt-free (numpy + OpenCV) and returns ``uint8`` RGB arrays,
C-contiguous and ready for ``pyqtgraph.ImageItem(axisOrder='row-major')``.

The conventions follow the Deep Visualization Toolbox (Yosinski et al., "Understanding
Neural Networks Through Deep Visualization", ICML DL workshop 2015): a layer is shown as
a tiled mosaic of its channels with a per-layer or per-unit scale, an individual "boost"
(gain) and a gamma.  Gradients (raw, grey, norm, blurred norm, with a sign and a robust scale)
are drawn by :mod:`.saliency_display`.

Design choices
--------------
* Negative activations (pre-ReLU layers) are clipped: 0 is always black and the layer
  (or unit) maximum is white, so a frame-to-frame change of the minimum never shifts the
  brightness of everything else, and the picture matches what the following ReLU passes.
  A layer (or unit) whose maximum is <= 0 is shown black.
* Non-finite values (NaN, +-inf) are treated as 0.
* A picture does not depend on the magnitude of its values: a layer whose max is 1e-40, a
  gradient of 1e-30 or 1e30 and a gain of 1e8 are shown like any other (values are divided by
  their max before anything is scaled, squared or rounded, so nothing overflows float32).
* The mosaic has a ``separator``-pixel frame around the whole image and between tiles, in
  the dark neutral ``SEPARATOR_COLOR``. The highlighted / frozen unit outlines are drawn
  **on that separator ring** around the tile, so they never cover activation pixels
  (with ``separator=0`` they are drawn on the tile's own border pixels instead). When the
  highlighted and frozen units are neighbours they share one separator line; the
  highlight colour wins.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import cv2

from .bounds import check_output_size
from .errors import CnnvisError

__all__ = [
    "ActivationMosaic", "normalize_unit",
    "colormap_lut", "heatmap", "overlay", "COLORMAPS",
    "SEPARATOR_COLOR", "HIGHLIGHT_COLOR", "FROZEN_COLOR", "MAX_ZOOM", "enlarge",
]

#: The largest integer enlargement of a written picture (``--zoom``): a 224 x 224 map becomes 7168 px wide.
MAX_ZOOM = 32
NORMALIZE_MODES = ("layer", "unit")

SEPARATOR_COLOR = (40, 40, 40)     # dark neutral grey (R == G == B: drawn on the grey canvas)
HIGHLIGHT_COLOR = (255, 255, 0)    # yellow: the unit under the cursor / selected
FROZEN_COLOR = (255, 0, 255)       # magenta: the unit frozen for back-propagation

# Anchor colours sampled at 33 evenly spaced points of matplotlib's perceptually uniform
# colormaps (van der Walt & Smith, 2015); linear interpolation between them stays within
# 4 levels (of 255) of the originals, without importing matplotlib at run time.
_CMAP_ANCHORS = {
    "inferno": [
        (0, 0, 4), (4, 3, 18), (11, 7, 36), (21, 11, 55), (33, 12, 74), (47, 10, 91),
        (61, 9, 101), (74, 12, 107), (87, 16, 110), (100, 21, 110), (113, 25, 110), (125, 30, 109),
        (138, 34, 106), (151, 39, 102), (163, 44, 97), (176, 49, 91), (188, 55, 84), (199, 62, 76),
        (210, 70, 68), (219, 80, 59), (228, 90, 49), (235, 102, 40), (241, 115, 29), (246, 128, 19),
        (249, 142, 9), (251, 157, 7), (252, 172, 17), (251, 188, 33), (249, 203, 53), (245, 219, 76),
        (242, 234, 105), (243, 246, 138), (252, 255, 164),
    ],
    "viridis": [
        (68, 1, 84), (71, 13, 96), (72, 24, 106), (72, 35, 116), (71, 45, 123), (69, 55, 129),
        (66, 64, 134), (62, 73, 137), (59, 82, 139), (55, 91, 141), (51, 99, 141), (47, 107, 142),
        (44, 114, 142), (41, 122, 142), (38, 130, 142), (35, 137, 142), (33, 145, 140), (31, 152, 139),
        (31, 160, 136), (34, 167, 133), (40, 174, 128), (50, 182, 122), (63, 188, 115), (78, 195, 107),
        (94, 201, 98), (112, 207, 87), (132, 212, 75), (152, 216, 62), (173, 220, 48), (194, 223, 35),
        (216, 226, 25), (236, 229, 27), (253, 231, 37),
    ],
    "magma": [
        (0, 0, 4), (3, 3, 18), (10, 8, 34), (19, 13, 52), (29, 17, 71), (41, 17, 90),
        (54, 16, 107), (68, 15, 118), (81, 18, 124), (93, 23, 127), (106, 28, 129), (118, 33, 129),
        (131, 38, 129), (144, 42, 129), (156, 46, 127), (170, 51, 125), (183, 55, 121), (196, 60, 117),
        (208, 65, 111), (220, 72, 105), (231, 82, 99), (239, 93, 94), (245, 107, 92), (249, 121, 93),
        (252, 137, 97), (253, 152, 105), (254, 167, 114), (254, 182, 124), (254, 196, 136), (254, 211, 149),
        (253, 226, 163), (252, 240, 178), (252, 253, 191),
    ],
    "gray": [(0, 0, 0), (255, 255, 255)],
}
COLORMAPS = tuple(_CMAP_ANCHORS)
_LUT_CACHE: dict[str, np.ndarray] = {}


# --------------------------------------------------------------------------- helpers

def _to_numpy(a) -> np.ndarray:
    """Array-like or torch tensor -> float32 ndarray (no torch import needed here)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):      # torch.Tensor, without importing torch
        a = a.detach().cpu().float().numpy()
    return np.asarray(a, dtype=np.float32)


def _finite(a: np.ndarray) -> np.ndarray:
    """Replace NaN / +-inf by 0 (copying only when needed)."""
    if np.isfinite(a).all():
        return a
    return np.where(np.isfinite(a), a, np.float32(0)).astype(np.float32, copy=False)


def _check_gain_gamma(gain: float, gamma: float) -> None:
    if not (math.isfinite(gain) and gain >= 0):
        raise CnnvisError(f"gain must be a finite number >= 0 (got {gain!r}); 1.0 leaves values unchanged.")
    if not (math.isfinite(gamma) and gamma > 0):
        raise CnnvisError(f"gamma must be a finite number > 0 (got {gamma!r}); 1.0 leaves values unchanged.")


def _clip_nan_black(v: np.ndarray, hi, m) -> None:
    """``clip(v, 0, hi)`` in place, NaN -> 0, where ``v`` is a finite-or-infinite array times ``m``.

    A NaN there is ``0 * inf``, so only a multiplier ``m`` of 0 or inf makes one (a gain of 0, or
    one past float32).  ``np.clip`` keeps NaN, and OpenCV's ``convertScaleAbs`` turns it into 0 (4.x)
    or 255 (5.x): it is set to 0 here, at a pass over the array only in that case.
    """
    np.clip(v, np.float32(0), np.float32(hi), out=v)
    if not 0 < m < np.inf:
        np.copyto(v, np.float32(0), where=np.isnan(v))


def _scaled_to_uint8(a: np.ndarray, k, gamma: float) -> np.ndarray:
    """uint8 ``round(255 * clip(a * k, 0, 1) ** gamma)``, NaN black; ``a`` has no NaN, ``k`` a float32 scalar (the gain)."""
    if gamma == 1.0:
        m = np.float32(255.0) * k
        v = a * m
        # clipped first: convertScaleAbs rounds and saturates to 0..255, but a value past 2**31
        # (a large gain) wraps to 0 there and a unit's maximum would turn black
        _clip_nan_black(v, 255, m)
        return cv2.convertScaleAbs(v.reshape(v.shape[0], -1)).reshape(v.shape)
    v = a * k
    _clip_nan_black(v, 1, k)
    np.power(v, np.float32(gamma), out=v)
    return cv2.convertScaleAbs(v.reshape(v.shape[0], -1), alpha=255.0).reshape(v.shape)


def normalize_unit(act2d, lo=None, hi=None, gain: float = 1.0, gamma: float = 1.0) -> np.ndarray:
    """Scale one unit's activation map to [0, 1] for display.

    ``v = clip((a - lo) / (hi - lo) * gain, 0, 1) ** gamma`` -- the toolbox's boost (``gain``,
    multiply then clip) followed by its gamma.

    Parameters
    ----------
    act2d : array-like or torch tensor, h x w (any shape works)
        Activation values; NaN / inf count as 0.
    lo : float, optional
        Value shown black. Default 0 (negative activations are clipped to black).
    hi : float, optional
        Value shown white (before ``gain``). Default: the maximum of ``act2d``.
        If ``hi <= lo`` the result is all 0.
    gain : float
        Multiplier applied after scaling, then clipped to 1 (>= 0).
    gamma : float
        Exponent applied on [0, 1] (> 0); < 1 brightens weak responses.

    Returns
    -------
    ndarray float32, same shape as ``act2d``, values in [0, 1].
    """
    _check_gain_gamma(float(gain), float(gamma))
    a = _finite(_to_numpy(act2d))
    lo = 0.0 if lo is None else float(lo)
    hi = (float(a.max()) if a.size else 0.0) if hi is None else float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return np.zeros(a.shape, np.float32)
    # in float64: over a tiny span (a map whose max is 1e-39) 1 / (hi - lo) overflows float32 (0 * inf = NaN)
    v = (a.astype(np.float64) - lo) / (hi - lo) * gain
    np.clip(v, 0.0, 1.0, out=v)
    if gamma != 1.0:
        np.power(v, gamma, out=v)
    return v.astype(np.float32)


# --------------------------------------------------------------------------- mosaic

def _choose_grid(n: int, cell_h: int, cell_w: int, sep: int, aspect: float) -> tuple[int, int]:
    """Rows, cols whose whole mosaic (cells plus separators) is closest to ``aspect`` (w / h).

    Closeness is on a log scale; empty cells cost extra, and a last row holding less than a
    quarter of the columns (a lone tile or two under a full grid) costs more. Scores that agree
    to 9 decimals tie, and the grid with fewer rows wins.
    """
    cols = np.arange(1, n + 1)
    rows = -(-n // cols)
    keep = cols == -(-n // rows)                   # no wholly empty column
    cols, rows = cols[keep], rows[keep]
    width = cols * (cell_w + sep) + sep
    height = rows * (cell_h + sep) + sep
    score = np.abs(np.log(width / (height * aspect)))
    empty = rows * cols - n
    score = score + 0.6 * empty / n               # prefer few empty cells (64 units: 8 x 8, not 7 x 10) ...
    score = score + 0.3 * ((cols - empty) * 4 < cols) * (rows > 1)   # ... and no last row of a few lone tiles
    best = np.lexsort((rows, np.round(score, 9)))[0]
    return int(rows[best]), int(cols[best])


class ActivationMosaic:
    """One layer's activations (one sample) tiled into a single RGB image.

    The grid is chosen so that the whole mosaic is about ``aspect`` (width / height,
    default square) given the tile's own aspect ratio. Tiles are separated (and framed)
    by ``separator`` pixels of ``SEPARATOR_COLOR``; unused trailing cells are filled with
    the same colour. Building it is vectorized (reshape/transpose into the grid): a
    256 x 56 x 56 layer takes a few milliseconds.

    Parameters
    ----------
    acts : array-like or torch tensor
        ``C x h x w`` (conv layer; ``1 x C x h x w`` is accepted), ``F`` (linear layer:
        each feature becomes a flat square tile whose brightness is its value) or
        ``C x L`` (1-D conv: each channel a 1 x L strip).
    normalize : {"layer", "unit"}
        ``"layer"``: one scale for the layer, 0 -> black, layer max -> white.
        ``"unit"``: each tile scaled by its own max. Negatives are clipped to black.
        For linear input, ``"unit"`` would make every feature white, so it is scaled
        per layer as well.
    gain, gamma : float
        Toolbox boost (multiply then clip) and gamma, see :func:`normalize_unit`.
    highlight, frozen : int, optional
        Units outlined in ``HIGHLIGHT_COLOR`` / ``FROZEN_COLOR`` on the separator ring
        around their tile (on the tile's border pixels when ``separator=0``).
    aspect : float, optional
        Target width / height of the whole mosaic; default 1.0 (square).
    separator : int
        Separator width in pixels (>= 0).
    labels : sequence of str, optional
        One name per unit (e.g. class names for a linear output); see :meth:`label`.
        Not drawn into the image.
    min_tile : int, optional
        Upscale small tiles by an integer nearest-neighbour factor so that their
        shorter side is at least this many pixels (e.g. 1 x 1 linear tiles, 4 x 4 maps).

    Attributes
    ----------
    image : ndarray, H x W x 3 uint8, C-contiguous RGB
    rows, cols : int
    tile_shape : (int, int)
        ``(h, w)`` of one unit's activation map (before upscaling).
    scale : int
        Upscaling factor; a tile occupies ``h*scale x w*scale`` image pixels.
    n_units : int
    """

    def __init__(self, acts, normalize: str = "layer", gain: float = 1.0, gamma: float = 1.0,
                 highlight: int | None = None, frozen: int | None = None,
                 aspect: float | None = None, separator: int = 1,
                 labels: Sequence[str] | None = None, min_tile: int | None = None):
        a = _to_numpy(acts)
        self.is_linear = False
        if a.ndim == 4 and a.shape[0] == 1:
            a = a[0]
        if a.ndim == 1:
            self.is_linear = True
            a = a.reshape(-1, 1, 1)
        elif a.ndim == 2:
            a = a[:, None, :]
        elif a.ndim != 3:
            raise CnnvisError(f"ActivationMosaic: expected C x h x w (conv), C x L or F (linear) "
                              f"activations of one sample, got shape {tuple(a.shape)}.")
        n, h, w = a.shape
        if n == 0 or h == 0 or w == 0:
            raise CnnvisError(f"ActivationMosaic: the layer has no values (shape {tuple(a.shape)}).")
        if normalize not in NORMALIZE_MODES:
            raise CnnvisError(f"ActivationMosaic: normalize must be one of {NORMALIZE_MODES}, got {normalize!r}.")
        _check_gain_gamma(float(gain), float(gamma))
        sep = int(separator)
        if sep < 0:
            raise CnnvisError(f"ActivationMosaic: separator must be >= 0 pixels, got {separator!r}.")
        aspect = 1.0 if aspect is None else float(aspect)
        if not (math.isfinite(aspect) and aspect > 0):
            raise CnnvisError(f"ActivationMosaic: aspect (width / height) must be > 0, got {aspect!r}.")
        scale = 1
        if min_tile is not None:
            if int(min_tile) < 1:
                raise CnnvisError(f"ActivationMosaic: min_tile must be >= 1 pixel, got {min_tile!r}.")
            scale = max(1, -(-int(min_tile) // min(h, w)))
        if labels is not None:
            labels = tuple(str(s) for s in labels)
            if len(labels) != n:
                raise CnnvisError(f"ActivationMosaic: {len(labels)} labels for {n} units; give one per unit.")
        for name, u in (("highlight", highlight), ("frozen", frozen)):
            if u is not None and not (0 <= int(u) < n):
                raise CnnvisError(f"ActivationMosaic: {name} unit {u} is out of range; the layer has "
                                  f"units 0..{n - 1}.")

        self.n_units = n
        self.tile_shape = (h, w)
        self.scale = scale
        self.separator = sep
        self.normalize = normalize
        self.labels = labels
        self.highlight = None if highlight is None else int(highlight)
        self.frozen = None if frozen is None else int(frozen)
        th, tw = h * scale, w * scale
        self._th, self._tw = th, tw
        self.rows, self.cols = _choose_grid(n, th, tw, sep, aspect)

        tiles = self._tiles_uint8(_finite(a), normalize, float(gain), float(gamma))
        if scale > 1:
            tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
        gray = self._assemble(tiles)
        img = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
        if self.frozen is not None:
            self._outline(img, self.frozen, FROZEN_COLOR)
        if self.highlight is not None:
            self._outline(img, self.highlight, HIGHLIGHT_COLOR)
        self.image = img

    @classmethod
    def from_tiles(cls, tiles, grid: tuple[int, int] | None = None, aspect: float | None = None,
                   separator: int = 1, labels: Sequence[str] | None = None) -> "ActivationMosaic":
        """Lay out ready-made RGB tiles, one per unit, with the mosaic's geometry.

        For pictures *of* units (pattern mode: each unit's optimized image or best top-1
        crop) shown in place of their activations: ``tile_rect``, ``unit_at`` and
        ``position_at`` work exactly as for an activation mosaic.

        Parameters
        ----------
        tiles : ndarray, n x th x tw x 3 uint8 RGB
        grid : (rows, cols), optional
            Use this grid (e.g. ``(m.rows, m.cols)`` of the activation mosaic of the same
            layer, so every unit keeps its cell); default: chosen like the constructor's.
        aspect, separator, labels : as for the constructor.
        """
        t = np.asarray(tiles)
        if t.ndim != 4 or t.shape[3] != 3 or t.dtype != np.uint8 or 0 in t.shape:
            raise CnnvisError(f"ActivationMosaic.from_tiles: expected n x h x w x 3 uint8 RGB tiles, "
                              f"got shape {tuple(t.shape)} of {t.dtype}.")
        n, th, tw = t.shape[:3]
        sep = int(separator)
        if sep < 0:
            raise CnnvisError(f"ActivationMosaic: separator must be >= 0 pixels, got {separator!r}.")
        if labels is not None:
            labels = tuple(str(s) for s in labels)
            if len(labels) != n:
                raise CnnvisError(f"ActivationMosaic: {len(labels)} labels for {n} units; give one per unit.")
        if grid is not None:
            rows, cols = (int(v) for v in grid)
            if rows < 1 or cols < 1 or rows * cols < n:
                raise CnnvisError(f"ActivationMosaic.from_tiles: a {rows} x {cols} grid cannot hold {n} tiles.")
        else:
            a = 1.0 if aspect is None else float(aspect)
            if not (math.isfinite(a) and a > 0):
                raise CnnvisError(f"ActivationMosaic: aspect (width / height) must be > 0, got {aspect!r}.")
            rows, cols = _choose_grid(n, th, tw, sep, a)
        self = cls.__new__(cls)
        self.is_linear = False
        self.n_units = n
        self.tile_shape = (th, tw)
        self.scale = 1
        self.separator = sep
        self.normalize = None
        self.labels = labels
        self.highlight = self.frozen = None
        self._th, self._tw = th, tw
        self.rows, self.cols = rows, cols
        self.image = np.ascontiguousarray(
            np.stack([self._assemble(np.ascontiguousarray(t[..., c])) for c in range(3)], axis=-1))
        return self

    # -- building -------------------------------------------------------------------
    def _tiles_uint8(self, a: np.ndarray, normalize: str, gain: float, gamma: float) -> np.ndarray:
        """n x h x w float -> n x h x w uint8 with the chosen scale, gain, clip and gamma."""
        n = a.shape[0]
        if normalize == "unit" and not self.is_linear:
            hi = a.reshape(n, -1).max(axis=1)[:, None, None]
        else:
            hi = a.max()
        # divided by the max first (gain / max overflows float32 when the max is tiny, 1e-39); a layer
        # or unit whose max is <= 0 is divided by inf: black. A value far below a tiny max (-1e10
        # under 1e-30) overflows to -inf (times a gain of 0: NaN), black as it should be.
        with np.errstate(over="ignore", invalid="ignore"):
            return _scaled_to_uint8(a / np.where(hi > 0, hi, np.float32(np.inf)), np.float32(gain), gamma)

    def _assemble(self, tiles: np.ndarray) -> np.ndarray:
        """n x th x tw uint8 tiles -> H x W grey canvas with separators."""
        rows, cols, sep, th, tw = self.rows, self.cols, self.separator, self._th, self._tw
        n = tiles.shape[0]
        height, width = rows * (th + sep) + sep, cols * (tw + sep) + sep
        bg = SEPARATOR_COLOR[0]
        canvas = np.full((height, width), bg, np.uint8)
        # view of the grid part: (rows, th+sep, cols, tw+sep), separator first in each cell
        grid = canvas[:rows * (th + sep), :cols * (tw + sep)].reshape(rows, th + sep, cols, tw + sep)
        full_rows = n // cols
        if full_rows:
            grid[:full_rows, sep:, :, sep:] = (
                tiles[:full_rows * cols].reshape(full_rows, cols, th, tw).transpose(0, 2, 1, 3))
        rest = n - full_rows * cols
        if rest:
            grid[full_rows, sep:, :rest, sep:] = tiles[full_rows * cols:].transpose(1, 0, 2)
        return canvas

    def _outline(self, img: np.ndarray, unit: int, color) -> None:
        x0, y0, tw, th = self.tile_rect(unit)
        s = self.separator
        if s > 0:        # ring on the separator pixels around the tile
            img[y0 - s:y0, x0 - s:x0 + tw + s] = color
            img[y0 + th:y0 + th + s, x0 - s:x0 + tw + s] = color
            img[y0:y0 + th, x0 - s:x0] = color
            img[y0:y0 + th, x0 + tw:x0 + tw + s] = color
        else:            # no separators: the tile's own border pixels
            img[y0, x0:x0 + tw] = color
            img[y0 + th - 1, x0:x0 + tw] = color
            img[y0:y0 + th, x0] = color
            img[y0:y0 + th, x0 + tw - 1] = color

    # -- queries --------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return self.image.shape[:2]

    def tile_rect(self, unit: int) -> tuple[int, int, int, int]:
        """Image rectangle ``(x0, y0, w, h)`` of a unit's tile (upscaled size, no separators)."""
        unit = int(unit)
        if not 0 <= unit < self.n_units:
            raise CnnvisError(f"ActivationMosaic: unit {unit} is out of range; the layer has "
                              f"units 0..{self.n_units - 1}.")
        r, c = divmod(unit, self.cols)
        s = self.separator
        return (s + c * (self._tw + s), s + r * (self._th + s), self._tw, self._th)

    def position_at(self, x, y) -> tuple[int, int, int] | None:
        """Map an image pixel to ``(unit, ty, tx)``: the unit and the activation row/column.

        ``x`` is the image column, ``y`` the image row (floats are floored). Returns None
        on separators, outside the image and in empty trailing cells.
        """
        xi, yi = math.floor(x), math.floor(y)
        s, th, tw = self.separator, self._th, self._tw
        if xi < s or yi < s:
            return None
        c, dx = divmod(xi - s, tw + s)
        r, dy = divmod(yi - s, th + s)
        if dx >= tw or dy >= th or c >= self.cols or r >= self.rows:
            return None
        unit = r * self.cols + c
        if unit >= self.n_units:
            return None
        return unit, dy // self.scale, dx // self.scale

    def unit_at(self, x, y) -> int | None:
        """Unit whose tile contains image pixel (x = column, y = row), or None."""
        p = self.position_at(x, y)
        return None if p is None else p[0]

    def label(self, unit: int) -> str:
        """Display name of a unit: its label if ``labels`` was given, else ``"unit N"``."""
        unit = int(unit)
        if self.labels is not None and 0 <= unit < self.n_units:
            return f"{unit}: {self.labels[unit]}"
        return f"unit {unit}"

    def __repr__(self) -> str:
        return (f"ActivationMosaic({self.n_units} units of {self.tile_shape[0]}x{self.tile_shape[1]}"
                f" x{self.scale}, {self.rows}x{self.cols} grid, image {self.shape[1]}x{self.shape[0]})")


# --------------------------------------------------------------------------- colour

def colormap_lut(name: str = "inferno") -> np.ndarray:
    """256-entry colour table of a perceptual colormap.

    Parameters
    ----------
    name : one of ``COLORMAPS`` ("inferno", "viridis", "magma", "gray")

    Returns
    -------
    ndarray 256 x 3 uint8 RGB (read-only; copy before changing it).
    """
    lut = _LUT_CACHE.get(name)
    if lut is None:
        if name not in _CMAP_ANCHORS:
            raise CnnvisError(f"colormap_lut: unknown colormap {name!r}; choose one of {COLORMAPS}.")
        anchors = np.asarray(_CMAP_ANCHORS[name], np.float64)
        xa = np.linspace(0.0, 1.0, len(anchors))
        x = np.linspace(0.0, 1.0, 256)
        lut = np.stack([np.interp(x, xa, anchors[:, k]) for k in range(3)], axis=1)
        lut = np.floor(lut + 0.5).astype(np.uint8)
        lut.setflags(write=False)
        _LUT_CACHE[name] = lut
    return lut


def heatmap(values2d, cmap: str = "inferno") -> np.ndarray:
    """Colour a map of values in [0, 1] (clipped; NaN -> 0).

    Parameters
    ----------
    values2d : array-like or torch tensor, H x W
    cmap : colormap name, see :func:`colormap_lut`

    Returns
    -------
    ndarray H x W x 3 uint8 RGB.
    """
    v = _finite(_to_numpy(values2d))
    if v.ndim != 2:
        raise CnnvisError(f"heatmap: expected an H x W map, got shape {tuple(v.shape)}.")
    lut = colormap_lut(cmap)
    if v.size == 0:
        return np.zeros(v.shape + (3,), np.uint8)
    v = np.clip(v, 0.0, 1.0)
    idx = cv2.convertScaleAbs(v, alpha=255.0)          # round(255 * v) as uint8
    return cv2.LUT(cv2.merge([idx, idx, idx]), np.ascontiguousarray(lut.reshape(256, 1, 3)))


def overlay(rgb, values2d, alpha: float = 0.5, cmap: str = "inferno") -> np.ndarray:
    """Blend a heat map (e.g. Grad-CAM) over an image.

    ``out = (1 - alpha) * rgb + alpha * heatmap(values)``; ``values2d`` is resized
    (bilinear) to the image size when it differs.

    Parameters
    ----------
    rgb : ndarray H x W x 3 uint8 (or H x W grey)
    values2d : array-like or torch tensor, h x w, values in [0, 1]
    alpha : float in [0, 1]
    cmap : colormap name

    Returns
    -------
    ndarray H x W x 3 uint8 RGB.
    """
    img = np.asarray(rgb)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise CnnvisError(f"overlay: expected an H x W x 3 image, got shape {tuple(img.shape)}.")
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise CnnvisError(f"overlay: alpha must be in [0, 1], got {alpha!r}.")
    v = _finite(_to_numpy(values2d))
    if v.ndim != 2:
        raise CnnvisError(f"overlay: expected an h x w map of values, got shape {tuple(v.shape)}.")
    h, w = img.shape[:2]
    if v.shape != (h, w):
        v = cv2.resize(v, (w, h), interpolation=cv2.INTER_LINEAR)     # cv2 takes (width, height)
    heat = heatmap(v, cmap)
    img = np.ascontiguousarray(img, dtype=np.uint8)
    return cv2.addWeighted(img, 1.0 - alpha, heat, alpha, 0.0)


def enlarge(img: np.ndarray, zoom: int) -> np.ndarray:
    """``img`` enlarged ``zoom`` times with nearest-neighbour pixels (each value becomes a square).

    ``zoom`` must be an integer in 1..:data:`MAX_ZOOM`; 1 returns ``img`` itself.
    """
    if isinstance(zoom, bool) or not isinstance(zoom, int) or not 1 <= zoom <= MAX_ZOOM:
        raise CnnvisError(f"zoom must be an integer in 1..{MAX_ZOOM}, got {zoom!r}")
    if zoom == 1:
        return img
    check_output_size(img.shape[0], img.shape[1], zoom, "zoom")       # before the enlarged copy is made
    return cv2.resize(img, (img.shape[1] * zoom, img.shape[0] * zoom), interpolation=cv2.INTER_NEAREST)
