"""Saliency display: sign and robust scale, against references written out here and against captum.

captum's ``visualize_image_attr`` normalisation (``_normalize_attr``: reduce over channels, pick the sign,
divide by the cumulative-sum threshold, clip to [-1, 1]) is the independent reference of the ``"mass"``
scale; numpy's ``percentile`` is the reference of the ``"percentile"`` scale (the default).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnvis_gui.core import CnnvisError, describe_display, display_scale, saliency_to_image
from cnnvis_gui.core.saliency_display import (DEFAULT_PERCENTILE, DEFAULT_CLIP, DEFAULT_SIGN, FILTERS, CLIPS,
                                              SIGNS, _mass_threshold, _percentile, diverging_lut)
from tests.core.saliency_helpers import diverging_index


def _heavy(shape, seed=0):
    """A gradient like guided backprop on a real network: mostly small values, a few huge outliers."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(shape).astype(np.float32) * 0.05
    flat = g.reshape(-1)
    idx = rng.choice(flat.size, size=max(1, flat.size // 2000), replace=False)
    flat[idx] = rng.choice([-1.0, 1.0], idx.size) * rng.uniform(2.0, 5.0, idx.size)
    return g


# ------------------------------------------------------------------ the threshold itself
@pytest.mark.parametrize("n", [1, 2, 3, 7, 50, 1000, 3 * 224 * 224])
@pytest.mark.parametrize("p", [0.5, 50.0, 90.0, 98.0, 99.9, 100.0])
def test_percentile_is_numpys_linear_percentile(n, p):
    rng = np.random.default_rng(n)
    for a in (np.abs(rng.standard_normal(n)), np.abs(rng.standard_cauchy(n)),
              rng.integers(0, 4, n).astype(float),              # ties spanning bins
              np.r_[np.zeros(n - 1), 1.0]):                      # nearly all zero
        a = a.astype(np.float32)
        want = np.percentile(a, p)
        assert _percentile(a, p) == pytest.approx(float(want), rel=1e-6, abs=1e-30), (n, p)


def test_percentile_with_values_that_share_a_histogram_bin():
    a = np.float32(1.0) + np.arange(10_000, dtype=np.float32) * np.float32(1e-7)   # all in the top bin
    a = np.r_[np.zeros(10, np.float32), a]
    for p in (10.0, 50.0, 98.0):
        assert _percentile(a, p) == pytest.approx(float(np.percentile(a, p)), rel=1e-7)


def test_percentile_when_the_strided_sample_misleads():
    """The sample that brackets the rank is every (n // 2048)-th value: make those all small."""
    from cnnvis_gui.core import saliency_display as sd
    n = 3 * 224 * 224
    rng = np.random.default_rng(1)
    a = rng.uniform(1.0, 2.0, n).astype(np.float32)
    a[::n // sd._SAMPLE] = rng.uniform(0.0, 0.5, a[::n // sd._SAMPLE].size)
    for p in (50.0, 98.0, 99.9):
        assert _percentile(a, p) == pytest.approx(float(np.percentile(a, p)), rel=1e-7)
    calls = []
    real = sd._kth_by_bins
    try:
        sd._kth_by_bins = lambda *args: calls.append(args) or real(*args)
        _percentile(a, 98.0)
        assert len(calls) == 1                     # the bracket missed: the histogram answered
        _percentile(rng.uniform(0, 1, n).astype(np.float32), 98.0)
        assert len(calls) == 1                     # a representative sample: no histogram
    finally:
        sd._kth_by_bins = real


@pytest.mark.parametrize("p", [50.0, 90.0, 98.0, 100.0])
def test_mass_is_captums_cumulative_sum_threshold(p):
    from captum.attr._utils.visualization import _cumulative_sum_threshold
    for seed in range(4):
        a = np.abs(_heavy((3, 40, 50), seed))
        assert _mass_threshold(a.ravel(), p) == pytest.approx(float(_cumulative_sum_threshold(a, p)), rel=1e-5)


def test_display_scale_choices_and_fallbacks():
    a = np.abs(_heavy((3, 64, 64)))
    assert display_scale(a, "max") == float(a.max())
    assert display_scale(a) == pytest.approx(float(np.percentile(a, 98)), rel=1e-6)   # the default
    assert display_scale(a) < display_scale(a, "mass") < display_scale(a, "max")
    assert display_scale(a, "percentile", 100) == float(a.max())
    sparse = np.zeros(1000, np.float32)
    sparse[:5] = [1, 2, 3, 4, 5]                  # 99.5 % zeros: the 98th percentile is 0 -> the maximum
    assert display_scale(sparse) == 5.0
    assert display_scale(np.zeros(10)) == 0.0 and display_scale(np.zeros(0)) == 0.0
    assert display_scale(np.array([np.nan, np.inf, 1.0, 2.0]), "max") == 2.0
    assert display_scale(torch.tensor([1.0, 3.0]), "max") == 3.0


@pytest.mark.parametrize("kw,msg", [
    (dict(sign="both"), r"unknown sign 'both'; choose one of \('signed', 'positive', 'negative', 'absolute'\)"),
    (dict(clip="std"), r"unknown clip 'std'; choose one of \('percentile', 'mass', 'max'\)"),
    (dict(percentile=0), r"percentile must be in \(0, 100\], got 0; 98 clips the brightest 2 %, 100 is the max"),
    (dict(percentile=101), r"percentile must be in \(0, 100\], got 101"),
    (dict(percentile="x"), r"percentile must be in \(0, 100\], got 'x'"),
    (dict(percentile=float("nan")), r"percentile must be in \(0, 100\], got nan"),
])
def test_bad_choices_say_what_to_choose(kw, msg):
    with pytest.raises(CnnvisError, match=msg):
        saliency_to_image(np.zeros((3, 2, 2)), **kw)


def test_defaults_are_the_robust_ones():
    assert (DEFAULT_SIGN, DEFAULT_CLIP, DEFAULT_PERCENTILE) == ("signed", "percentile", 98.0)
    g = _heavy((3, 30, 40))
    np.testing.assert_array_equal(saliency_to_image(g), saliency_to_image(g, "raw", sign="signed",
                                                                           clip="percentile", percentile=98))
    assert describe_display("raw", "signed", "percentile") == "raw · signed · clip 98th pct"
    assert describe_display("norm", "positive", "mass", 99.5) == "norm · positive · clip 99.5% mass"
    assert describe_display("gray", "absolute", "max") == "gray · absolute · max"


# ------------------------------------------------------------------ every filter x sign x scale, written out
def _reference(g, filter, sign, scale, p=98.0, sigma=None):
    """The picture, from the definitions in the module docstring, in float64 and with numpy only."""
    import cv2
    g = np.nan_to_num(np.asarray(g, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    c = g.shape[0]

    def thr(m):
        m = m.ravel()
        if m.max() <= 0:
            return 0.0
        if scale == "max":
            return m.max()
        if scale == "percentile":
            t = np.percentile(m, p)
        else:
            s = np.sort(m)
            cum = np.cumsum(s)
            t = s[np.nonzero(cum >= cum[-1] * p / 100)[0][0]]
        return t if t > 0 else m.max()

    def mag8(m, t):
        return np.zeros(m.shape, np.uint8) if t <= 0 else np.floor(np.clip(m / t, 0, 1) * 255 + 0.5).astype(np.uint8)

    def part(v):
        return {"positive": np.maximum(v, 0), "negative": np.maximum(-v, 0)}.get(sign, np.abs(v))

    if filter in ("raw", "gray"):
        colour = filter == "raw" and c == 3
        v = g if colour else (g[0] if c == 1 else g.mean(0))
        if sign == "signed":
            t = thr(np.abs(v))
            idx = np.full(v.shape, 128, np.uint8) if t <= 0 else np.floor(np.clip(v / t, -1, 1) * 127.5 + 128).astype(np.uint8)
            return idx.transpose(1, 2, 0) if colour else diverging_lut()[idx]
        m = part(v)
        out = mag8(m, thr(m))
        return out.transpose(1, 2, 0) if colour else np.repeat(out[..., None], 3, 2)
    pp = g if sign in ("signed", "absolute") else part(g)
    n = np.sqrt((pp ** 2).sum(0))
    if filter == "normblur":
        h, w = n.shape
        s = sigma or max(1.0, min(h, w) / 50)
        n = cv2.GaussianBlur(n, (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT101)
    return np.repeat(mag8(n, thr(n))[..., None], 3, 2)


@pytest.mark.parametrize("filter", FILTERS)
@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("c", [1, 3, 4])
def test_every_combination_matches_the_written_out_reference(filter, sign, clip, c):
    g = _heavy((c, 37, 53), seed=c)
    got = saliency_to_image(g, filter, sign=sign, clip=clip).astype(int)
    want = _reference(g, filter, sign, clip).astype(int)
    assert got.shape == (37, 53, 3)
    diff = np.abs(got - want)
    if filter in ("raw", "gray") and sign == "signed" and not (filter == "raw" and c == 3):
        diff = np.abs(diverging_index(got) - diverging_index(want))
    assert diff.max() <= 1, (filter, sign, clip, c)
    assert (diff > 0).mean() < 0.01                   # float32 rounding, never a different rule


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("outlier_perc", [2, 10])
def test_gray_with_mass_scale_is_captums_visualize_image_attr_normalisation(sign, outlier_perc):
    """captum sums the channels (we average: the same picture, the threshold scales too) and uses float32."""
    from captum.attr._utils.visualization import _normalize_attr
    captum_sign = {"signed": "all", "absolute": "absolute_value"}.get(sign, sign)
    for seed in range(3):
        g = _heavy((3, 48, 64), seed)
        # visualize_image_attr(method="heat_map") sums the channels, then normalises the 2-D map
        norm = _normalize_attr(g.transpose(1, 2, 0).sum(axis=2), captum_sign, outlier_perc)
        got = saliency_to_image(g, "gray", sign=sign, clip="mass", percentile=100 - outlier_perc)
        if sign == "signed":
            want = np.floor(norm * 127.5 + 128).astype(int)
            assert np.abs(diverging_index(got) - want).max() <= 1
        else:
            want = np.floor(np.abs(norm) * 255 + 0.5).astype(int)    # captum's negative is in [-1, 0]
            assert np.abs(got[..., 0].astype(int) - want).max() <= 1


def test_signs_show_the_parts_they_name():
    g = np.zeros((3, 2, 4), np.float32)
    g[:, 0, 0] = 1.0          # positive everywhere
    g[:, 0, 1] = -1.0         # negative everywhere
    g[0, 0, 2], g[1, 0, 2] = 1.0, -1.0   # mixed channels
    kw = dict(clip="max")
    pos = saliency_to_image(g, "raw", sign="positive", **kw)
    neg = saliency_to_image(g, "raw", sign="negative", **kw)
    ab = saliency_to_image(g, "raw", sign="absolute", **kw)
    assert tuple(pos[0, 0]) == (255, 255, 255) and tuple(pos[0, 1]) == (0, 0, 0) and tuple(pos[0, 2]) == (255, 0, 0)
    assert tuple(neg[0, 0]) == (0, 0, 0) and tuple(neg[0, 1]) == (255, 255, 255) and tuple(neg[0, 2]) == (0, 255, 0)
    assert tuple(ab[0, 2]) == (255, 255, 0) and (ab[1] == 0).all()
    sg = saliency_to_image(g, "raw", sign="signed", **kw)
    assert tuple(sg[0, 0]) == (255,) * 3 and tuple(sg[0, 1]) == (0,) * 3 and tuple(sg[1, 0]) == (128,) * 3
    gray = saliency_to_image(g, "gray", sign="signed", **kw)       # one map: blue negative, red positive
    lut = diverging_lut()
    assert tuple(gray[0, 0]) == tuple(lut[255]) and tuple(gray[0, 1]) == tuple(lut[0])
    assert tuple(gray[1, 0]) == tuple(lut[128]) == (247, 247, 247)
    assert gray[0, 0, 0] > gray[0, 0, 2] and gray[0, 1, 2] > gray[0, 1, 0]
    # norms: the positive part's norm, the negative part's, and the whole for signed / absolute
    npos = saliency_to_image(g, "norm", sign="positive", **kw)[..., 0]
    nneg = saliency_to_image(g, "norm", sign="negative", **kw)[..., 0]
    np.testing.assert_array_equal(npos[0], [255, 0, 147, 0])       # 1 / sqrt(3) of the max
    np.testing.assert_array_equal(nneg[0], [0, 255, 147, 0])
    np.testing.assert_array_equal(saliency_to_image(g, "norm", sign="signed"), saliency_to_image(g, "norm", sign="absolute"))


def test_robust_scale_saturates_the_top_two_percent_only():
    g = _heavy((3, 100, 100), seed=7)
    img = saliency_to_image(g, "raw").astype(int)
    saturated = ((img == 0) | (img == 255)).mean()
    assert 0.015 < saturated <= 0.021                      # the 2 % beyond the 98th percentile of |g|
    exact = saliency_to_image(g, "raw", clip="max").astype(int)
    assert ((exact == 0) | (exact == 255)).sum() == 1       # only the maximum itself
    assert (np.abs(img - 128) > 16).mean() > 0.5 > 0.01 > (np.abs(exact - 128) > 16).mean()


def test_a_sparse_map_still_shows_its_values():
    g = np.zeros((3, 50, 50), np.float32)
    g[0, 10, 10], g[1, 20, 20] = 3.0, -1.5
    img = saliency_to_image(g, "raw")
    assert tuple(img[10, 10]) == (255, 128, 128) and tuple(img[20, 20]) == (128, 64, 128)
    assert saliency_to_image(g, "norm")[10, 10, 0] == 255


def test_the_picture_does_not_depend_on_the_gradients_magnitude():
    g = _heavy((3, 40, 40), seed=3)
    for f in FILTERS:
        base = saliency_to_image(g, f)
        for k in (1e-30, 1e-10, 1e10, 1e30):
            assert np.abs(saliency_to_image(g * np.float32(k), f).astype(int) - base).max() <= 1, (f, k)


def test_the_input_is_never_changed():
    g = _heavy((3, 20, 20))
    keep = g.copy()
    for f in FILTERS:
        for s in SIGNS:
            saliency_to_image(g, f, sign=s)
    np.testing.assert_array_equal(g, keep)


def test_diverging_lut_is_rdbu_reversed_with_the_centre_at_128():
    lut = diverging_lut()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8 and not lut.flags.writeable
    assert tuple(lut[0]) == (5, 48, 97) and tuple(lut[128]) == (247, 247, 247) and tuple(lut[255]) == (103, 0, 31)
    luma = lut.astype(float) @ [0.2126, 0.7152, 0.0722]
    assert np.all(np.diff(luma[:129]) >= 0) and np.all(np.diff(luma[128:]) <= 0)   # brightest at zero
