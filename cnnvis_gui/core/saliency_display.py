"""Saliency shown the way researchers read it: a filter, a sign and a robust clip.

A gradient map (plain gradient, deconvnet, guided backprop, SmoothGrad, integrated gradients...) is
``C x H x W``: its picture is chosen by three independent choices.

**Filter** -- what is drawn, as in the Deep Visualization Toolbox (Yosinski et al., "Understanding Neural
Networks Through Deep Visualization", 2015):

* ``"raw"``: every channel; a 3-channel map keeps its colour (channel 0 is red).  Other channel counts
  show the single channel, or the channel mean.
* ``"gray"``: the channel mean, one map.
* ``"norm"``: the per-pixel L2 norm over the channels.
* ``"normblur"``: the norm blurred by a Gaussian of ``sigma`` pixels (default ``max(1, min(H, W) / 50)``).

**Sign** -- which part of the values is shown:

* ``"signed"``: both signs.  3-channel raw: zero at mid-grey (128) in every channel, +scale at 255,
  -scale at 0, the toolbox's picture.  One map (gray, raw of a 1-channel model): the diverging
  ColorBrewer RdBu colour map (Harrower & Brewer 2003): negative blue, zero near-white, positive red.
* ``"positive"``, ``"negative"``, ``"absolute"``: ``max(v, 0)``, ``max(-v, 0)`` or ``|v|``, zero black and
  the scale white (3-channel raw keeps one colour per channel).
  ``"gray"`` takes the channel mean first and then the sign (captum's order: reduce, then sign);
  ``"norm"`` / ``"normblur"`` take the sign first: ``positive`` is the norm of the positive parts,
  ``negative`` of the negative parts, and ``signed`` / ``absolute`` are both the norm of the whole
  gradient (a norm has no sign).

**Clip** -- which value is shown at full brightness (the scale); everything beyond it is clipped:

* ``"percentile"`` (default): the ``percentile``-th percentile (default 98) of the shown magnitudes, over
  every value of the picture (all channels for raw, zeros included): at most 2 % of the values
  saturate.  On real networks a handful of outlier pixels own the maximum of a gradient (guided
  backprop of 'Egyptian cat' on the real MobileNetV2: max |g| is 26 times its 98th percentile), and a
  picture scaled by its maximum is an almost uniform grey (``tests/core/test_saliency_realnet.py``).
  numpy's ``percentile`` (linear interpolation), computed exactly in about two passes: a strided sample
  brackets the rank and only the values inside the bracket are partitioned (:func:`_kth`).
* ``"mass"``: captum's convention (``visualize_image_attr(..., outlier_perc=100 - percentile)``): the
  smallest value at which the cumulative sum of the sorted magnitudes reaches ``percentile`` % of their
  total.  On a heavy-tailed gradient it lies much closer to the maximum than the percentile does.
* ``"max"``: the exact maximum magnitude (the toolbox's scale; nothing clips).

A scale of 0 (a map that is 98 % zeros) falls back to the maximum, so a sparse map still shows its
non-zero values.  NaN and inf count as 0; an all-zero map is mid-grey / the diverging map's centre
(signed) or black.  The raw array itself is never changed (the ``.npz`` exports stay raw).
"""
from __future__ import annotations

import math

import numpy as np
import cv2

from .display import _finite, _to_numpy
from .errors import CnnvisError

__all__ = ["FILTERS", "SIGNS", "CLIPS", "DEFAULT_FILTER", "DEFAULT_SIGN", "DEFAULT_CLIP", "DEFAULT_PERCENTILE",
           "saliency_to_image", "display_scale", "diverging_lut", "describe_display"]

FILTERS = ("raw", "gray", "norm", "normblur")
SIGNS = ("signed", "positive", "negative", "absolute")
CLIPS = ("percentile", "mass", "max")
DEFAULT_FILTER = "raw"
DEFAULT_SIGN = "signed"
DEFAULT_CLIP = "percentile"
DEFAULT_PERCENTILE = 98.0

# ColorBrewer RdBu (11 classes, Harrower & Brewer 2003), reversed: blue (negative) -> near-white -> red
_RDBU_R = ((5, 48, 97), (33, 102, 172), (67, 147, 195), (146, 197, 222), (209, 229, 240), (247, 247, 247),
           (253, 219, 199), (244, 165, 130), (214, 96, 77), (178, 24, 43), (103, 0, 31))
_DIVERGING: list = []
_HIST_BINS = 4096
_SAMPLE = 2048          # values in the strided sample that brackets a percentile's rank
_MARGIN = 40            # sample ranks on either side (6 standard deviations of a sample rank at p = 98)


def diverging_lut() -> np.ndarray:
    """256 x 3 uint8 RGB: the reversed ColorBrewer RdBu map with its centre colour exactly at entry 128.

    Entry ``i`` shows the signed value ``(i - 128) / 127.5 * scale`` (rounded down), matching the
    mid-grey mapping: entries 0..128 run through the five blue anchors to the centre, 128..255 through
    the five red ones.  Read-only.
    """
    if not _DIVERGING:
        a = np.asarray(_RDBU_R, np.float64)
        neg = np.linspace(0.0, 5.0, 129)                 # entries 0..128 -> anchors 0..5
        pos = np.linspace(5.0, 10.0, 128)[1:]            # entries 129..255 -> anchors 5..10
        x = np.concatenate([neg, pos])
        lut = np.stack([np.interp(x, np.arange(11), a[:, k]) for k in range(3)], axis=1)
        lut = np.floor(lut + 0.5).astype(np.uint8)
        lut.setflags(write=False)
        _DIVERGING.append(lut)
    return _DIVERGING[0]


def _diverging_lut3() -> np.ndarray:
    if len(_DIVERGING) < 2:
        _DIVERGING.append(np.ascontiguousarray(diverging_lut().reshape(256, 1, 3)))
    return _DIVERGING[1]


def _check_choices(filter, sign, clip, percentile) -> float:
    if filter not in FILTERS:
        raise CnnvisError(f"saliency_to_image: unknown filter {filter!r}; choose one of {FILTERS}.")
    if sign not in SIGNS:
        raise CnnvisError(f"saliency display: unknown sign {sign!r}; choose one of {SIGNS}.")
    if clip not in CLIPS:
        raise CnnvisError(f"saliency display: unknown clip {clip!r}; choose one of {CLIPS}.")
    try:
        p = float(percentile)
    except (TypeError, ValueError):
        p = float("nan")
    if not (0.0 < p <= 100.0):
        raise CnnvisError(f"saliency display: percentile must be in (0, 100], got {percentile!r}; "
                          f"{DEFAULT_PERCENTILE:g} clips the brightest 2 %, 100 is the maximum.")
    return p


def _bins(a: np.ndarray, top: float) -> np.ndarray:
    """Histogram bin of every value of the non-negative ``a`` over ``[0, top]``, monotonic in the value.

    ``floor(a * (bins / top))``: a product by a positive float never reverses an order, so a bin holds
    exactly the values between its neighbours' and a rank (or a running sum) can be found by bin first.
    """
    idx = (a * np.float32(_HIST_BINS / top)).astype(np.int32)
    np.minimum(idx, _HIST_BINS - 1, out=idx)
    return idx


def _kth(a: np.ndarray, ks: tuple, top: float) -> list:
    """The values of ranks ``ks`` (0-based, ascending, neighbours) of the non-negative 1-D ``a`` (maximum ``top``).

    Exact, in about two passes over ``a``: a strided sample brackets the ranks, values below the bracket
    are counted and only the values inside it are partitioned.  When the bracket misses (a sample that
    does not represent the map), a histogram finds each rank's bin instead (:func:`_kth_by_bins`).
    """
    n = a.size
    if n > 8 * _SAMPLE:
        sample = np.sort(a[::n // _SAMPLE])
        m = sample.size
        j0 = int(ks[0] / (n - 1) * (m - 1))
        lo = sample[max(0, j0 - _MARGIN)]
        hi = sample[min(m - 1, j0 + 1 + _MARGIN)]
        before = int(np.count_nonzero(a < lo))
        inside = a[(a >= lo) & (a <= hi)]
        rel = [k - before for k in ks]
        if rel[0] >= 0 and rel[-1] < inside.size:
            part = np.partition(inside, rel)
            return [float(part[r]) for r in rel]
    return _kth_by_bins(a, ks, top)


def _kth_by_bins(a: np.ndarray, ks: tuple, top: float) -> list:
    """:func:`_kth` by a histogram: each rank's bin is found from the counts, only that bin is partitioned."""
    idx = _bins(a, top)
    cum = np.cumsum(np.bincount(idx, minlength=_HIST_BINS))
    out, members, held = [], None, -1
    for k in ks:
        b = int(np.searchsorted(cum, k, side="right"))
        if b != held:                        # neighbouring ranks usually share a bin: one pass for both
            members, held = a[idx == b], b
        before = int(cum[b - 1]) if b else 0
        out.append(float(np.partition(members, k - before)[k - before]))
    return out


def _percentile(a: np.ndarray, p: float) -> float:
    """``np.percentile(a, p)`` (linear interpolation) of the non-negative 1-D float32 ``a``, computed in O(n)."""
    n = a.size
    top = float(a.max())
    if p >= 100.0 or top <= 0.0:
        return top
    pos = p / 100.0 * (n - 1)
    lo = int(math.floor(pos))
    frac = pos - lo
    if lo + 1 >= n:
        return top
    v0, v1 = _kth(a, (lo, lo + 1), top) if frac > 0 else _kth(a, (lo,), top) * 2
    # numpy's _lerp: a + (b - a) * t, with the other form for t >= 0.5 (same rounding as np.percentile)
    return float(v1 - (v1 - v0) * (1 - frac)) if frac >= 0.5 else float(v0 + (v1 - v0) * frac)


def _mass_threshold(a: np.ndarray, p: float) -> float:
    """captum's ``_cumulative_sum_threshold``: the sorted value where the running sum first reaches p % of the total.

    The sums are float64; a value-weighted histogram finds the bin where the running sum crosses, and only
    that bin's values are sorted.
    """
    top = float(a.max())
    if p >= 100.0 or top <= 0.0:
        return top
    idx = _bins(a, top)
    cum = np.cumsum(np.bincount(idx, weights=a, minlength=_HIST_BINS))
    target = cum[-1] * 0.01 * p
    b = min(int(np.searchsorted(cum, target, side="left")), _HIST_BINS - 1)
    members = np.sort(a[idx == b])
    before = float(cum[b - 1]) if b else 0.0
    i = int(np.searchsorted(before + np.cumsum(members, dtype=np.float64), target, side="left"))
    return float(members[min(i, members.size - 1)])


def display_scale(magnitudes, clip: str = DEFAULT_CLIP, percentile: float = DEFAULT_PERCENTILE) -> float:
    """The value shown at full brightness for non-negative ``magnitudes`` (any shape): see the module docstring.

    Returns 0 only when every magnitude is 0 (a percentile or mass of 0 falls back to the maximum).
    """
    p = _check_choices(DEFAULT_FILTER, DEFAULT_SIGN, clip, percentile)
    return _scale(_finite(_to_numpy(magnitudes)).ravel(), clip, p)


def _scale(a: np.ndarray, clip: str, p: float) -> float:
    """:func:`display_scale` of a finite, non-negative, 1-D float32 ``a`` with checked choices."""
    if a.size == 0:
        return 0.0
    top = float(a.max())
    if top <= 0.0 or clip == "max":
        return max(top, 0.0)
    t = _percentile(a, p) if clip == "percentile" else _mass_threshold(a, p)
    return t if t > 0.0 else top


def _signed_to_uint8(v: np.ndarray, t: float) -> np.ndarray:
    """Signed values -> uint8: 0 at 128, +t (and beyond) at 255, -t (and beyond) at 0."""
    if t <= 0:
        return np.full(v.shape, 128, np.uint8)
    # divided first (127.5 / t overflows float32 when t < 4e-37); clipped to [-1, 1], so the value lies in
    # [0.5, 255.5]: 0 -> 128, +t -> 255.5, -t -> 0.5, and truncation is the floor
    u = v / np.float32(t)
    np.clip(u, np.float32(-1), np.float32(1), out=u)
    u *= np.float32(127.5)
    u += np.float32(128.0)
    return u.astype(np.uint8)


def _magnitude_to_uint8(v: np.ndarray, t: float) -> np.ndarray:
    """Non-negative values -> uint8: 0 black, t (and beyond) white, rounded half up."""
    if t <= 0:
        return np.zeros(v.shape, np.uint8)
    u = v / np.float32(t)
    np.clip(u, np.float32(0), np.float32(1), out=u)
    u *= np.float32(255.0)
    u += np.float32(0.5)
    return u.astype(np.uint8)


def _gray3(g: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(g[..., None], 3, axis=2))


def _signed_part(v: np.ndarray, sign: str) -> np.ndarray:
    if sign == "positive":
        return np.maximum(v, np.float32(0))
    if sign == "negative":
        return np.maximum(-v, np.float32(0))
    return np.abs(v)


def _as_chw(grad) -> np.ndarray:
    g = _to_numpy(grad)
    if g.ndim == 4 and g.shape[0] == 1:
        g = g[0]
    if g.ndim == 2:
        g = g[None]
    if g.ndim != 3 or g.shape[0] == 0:
        raise CnnvisError(f"saliency_to_image: expected a C x H x W gradient, got shape {tuple(g.shape)}.")
    return _finite(g)


def saliency_to_image(grad, filter: str = DEFAULT_FILTER, sigma: float | None = None, *,
                      sign: str = DEFAULT_SIGN, clip: str = DEFAULT_CLIP,
                      percentile: float = DEFAULT_PERCENTILE) -> np.ndarray:
    """Show a gradient (saliency, deconvnet, guided backprop...) as an RGB image.

    Parameters
    ----------
    grad : array-like or torch tensor, C x H x W (also 1 x C x H x W or H x W)
    filter : one of :data:`FILTERS` -- ``"raw"``, ``"gray"``, ``"norm"``, ``"normblur"``
    sigma : float, optional
        Blur for ``"normblur"`` (> 0 pixels); ignored by the other filters.
    sign : one of :data:`SIGNS` -- ``"signed"``, ``"positive"``, ``"negative"``, ``"absolute"``
    clip : one of :data:`CLIPS` -- ``"percentile"`` (default), ``"mass"`` (captum's), ``"max"``: how the
        value shown at full brightness is chosen (brighter values clip)
    percentile : float in (0, 100]
        For ``"percentile"`` and ``"mass"``: 98 (default) clips the brightest 2 %; 100 is the maximum.

    Returns
    -------
    ndarray H x W x 3 uint8 RGB, C-contiguous.  See the module docstring for every combination.
    """
    p = _check_choices(filter, sign, clip, percentile)
    g = _as_chw(grad)
    c, h, w = g.shape
    if filter in ("raw", "gray"):
        keep_colour = filter == "raw" and c == 3
        v = g if keep_colour else (g[0] if c == 1 else g.mean(axis=0))
        if sign == "signed":
            t = _scale(np.abs(v).ravel(), clip, p)
            img = _signed_to_uint8(v, t)
            if keep_colour:
                return np.ascontiguousarray(img.transpose(1, 2, 0))
            if img.size == 0:
                return np.zeros(img.shape + (3,), np.uint8)
            return cv2.LUT(cv2.merge([img, img, img]), _diverging_lut3())
        m = _signed_part(v, sign)
        img = _magnitude_to_uint8(m, _scale(m.ravel(), clip, p))
        return np.ascontiguousarray(img.transpose(1, 2, 0)) if keep_colour else _gray3(img)
    # the norm of g / max|g| (the picture is scaled anyway): g * g underflows to 0 below |g| ~ 1e-19
    # and overflows above ~ 2e19 in float32
    part = g if sign in ("signed", "absolute") else _signed_part(g, sign)
    top = float(np.abs(part).max()) if part.size else 0.0
    gs = part / np.float32(top) if top > 0 else part
    norm = np.sqrt(np.einsum("chw,chw->hw", gs, gs, dtype=np.float32))
    if filter == "normblur":
        if sigma is None:
            sigma = max(1.0, min(h, w) / 50.0)
        sigma = float(sigma)
        if not (math.isfinite(sigma) and sigma > 0):
            raise CnnvisError(f"saliency_to_image: sigma must be > 0 pixels, got {sigma!r}.")
        norm = cv2.GaussianBlur(norm, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT101)
    return _gray3(_magnitude_to_uint8(norm, _scale(norm.ravel(), clip, p)))


def describe_display(filter: str, sign: str, clip: str, percentile: float = DEFAULT_PERCENTILE) -> str:
    """A short caption of the display choices, e.g. ``"raw · signed · clip 98th pct"``."""
    p = _check_choices(filter, sign, clip, percentile)
    sc = {"percentile": f"clip {p:g}th pct", "mass": f"clip {p:g}% mass", "max": "max"}[clip]
    return f"{filter} · {sign} · {sc}"
