"""Display helpers: mosaic layout and hit-testing, normalization, saliency filters, colormaps."""
import functools

import numpy as np
import pytest
import torch

from cnnvis_gui.core import CnnvisError
from cnnvis_gui.core.display import (
    ActivationMosaic, normalize_unit, colormap_lut, heatmap, overlay,
    SEPARATOR_COLOR, HIGHLIGHT_COLOR, FROZEN_COLOR,
)
from cnnvis_gui.core.saliency_display import FILTERS, saliency_to_image as _saliency_to_image
from tests.core.saliency_helpers import diverging_index

# these tests are about the toolbox's exact max scale (tests/core/test_saliency_display.py: the others)
saliency_to_image = functools.partial(_saliency_to_image, clip="max")

SEP = np.array(SEPARATOR_COLOR, np.uint8)


def _centre(rect):
    x0, y0, w, h = rect
    return x0 + w // 2, y0 + h // 2


def _check_image(img):
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.flags.c_contiguous


# ----------------------------------------------------------------------------- layout

@pytest.mark.parametrize("shape", [(16, 5, 5), (10, 3, 7), (7, 6, 2), (1, 4, 4), (37, 1, 1)])
def test_unit_at_round_trip_and_separators(shape):
    acts = np.random.default_rng(0).random(shape).astype(np.float32)
    m = ActivationMosaic(acts)
    _check_image(m.image)
    assert m.n_units == shape[0] and m.tile_shape == shape[1:]
    assert m.rows * m.cols >= m.n_units > (m.rows - 1) * m.cols
    H, W = m.image.shape[:2]
    assert (H, W) == (m.rows * (shape[1] + 1) + 1, m.cols * (shape[2] + 1) + 1)
    for u in range(m.n_units):
        x0, y0, w, h = m.tile_rect(u)
        assert (w, h) == (shape[2], shape[1])
        assert m.unit_at(*_centre((x0, y0, w, h))) == u
        assert m.unit_at(x0, y0) == u and m.unit_at(x0 + w - 1, y0 + h - 1) == u
        # the pixels just outside the tile are separators
        assert m.unit_at(x0 - 1, y0) is None and m.unit_at(x0 + w, y0) is None
        assert m.unit_at(x0, y0 - 1) is None and m.unit_at(x0, y0 + h) is None
        assert (m.image[y0 - 1, x0] == SEP).all() and (m.image[y0 + h, x0 + w] == SEP).all()
    assert m.unit_at(0, 0) is None
    assert m.unit_at(-1, 3) is None and m.unit_at(W, 1) is None and m.unit_at(1, H) is None


def test_empty_trailing_cells_are_none():
    m = ActivationMosaic(np.ones((5, 4, 4), np.float32))
    assert m.rows * m.cols > 5
    x0, y0, w, h = m.tile_rect(4)
    # the cell right after the last unit is empty
    cell = 5
    r, c = divmod(cell, m.cols)
    xe, ye = 1 + c * 5 + 2, 1 + r * 5 + 2
    assert m.unit_at(xe, ye) is None
    assert (m.image[ye, xe] == SEP).all()


def test_grid_honours_tile_aspect():
    m = ActivationMosaic(np.random.rand(64, 8, 32).astype(np.float32))
    H, W = m.image.shape[:2]
    assert (m.rows, m.cols) != (8, 8)
    assert 0.8 < W / H < 1.25
    # square tiles: 64 -> 8 x 8
    sq = ActivationMosaic(np.random.rand(64, 6, 6).astype(np.float32))
    assert (sq.rows, sq.cols) == (8, 8)
    # a wide target aspect gives a wide mosaic
    wide = ActivationMosaic(np.random.rand(64, 6, 6).astype(np.float32), aspect=4.0)
    H2, W2 = wide.image.shape[:2]
    assert 3.0 < W2 / H2 < 5.5


def test_non_square_tiles_keep_orientation():
    acts = np.zeros((3, 2, 5), np.float32)
    acts[1, 1, 4] = 1.0                      # row 1, column 4 of unit 1
    m = ActivationMosaic(acts)
    x0, y0, w, h = m.tile_rect(1)
    assert (w, h) == (5, 2)
    assert (m.image[y0 + 1, x0 + 4] == 255).all()
    assert (m.image[y0, x0 + 4] == 0).all() and (m.image[y0 + 1, x0] == 0).all()
    assert m.position_at(x0 + 4, y0 + 1) == (1, 1, 4)


def test_min_tile_upscales_and_maps_back():
    acts = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    m = ActivationMosaic(acts, min_tile=7)
    assert m.scale == 4 and m.tile_shape == (2, 2)
    x0, y0, w, h = m.tile_rect(2)
    assert (w, h) == (8, 8)
    tile = m.image[y0:y0 + 8, x0:x0 + 8, 0]
    # nearest-neighbour repeat: 4x4 blocks of one value each
    expected = np.round(acts[2] / 11 * 255).astype(np.uint8).repeat(4, 0).repeat(4, 1)
    np.testing.assert_array_equal(tile, expected)
    assert m.unit_at(x0 + 7, y0 + 7) == 2 and m.unit_at(x0 + 8, y0) is None
    assert m.position_at(x0 + 5, y0 + 2) == (2, 0, 1)
    for u in range(3):
        assert m.unit_at(*_centre(m.tile_rect(u))) == u


def test_from_tiles_places_rgb_tiles_in_the_given_grid():
    acts = np.random.default_rng(0).random((10, 4, 4)).astype(np.float32)
    m = ActivationMosaic(acts, min_tile=8, aspect=1.5)
    tiles = np.random.default_rng(1).integers(0, 255, (10, 12, 12, 3), dtype=np.uint8)
    p = ActivationMosaic.from_tiles(tiles, grid=(m.rows, m.cols))
    _check_image(p.image)
    assert (p.rows, p.cols, p.n_units) == (m.rows, m.cols, 10)
    for u in range(10):
        x0, y0, w, h = p.tile_rect(u)
        assert (w, h) == (12, 12)
        assert np.array_equal(p.image[y0:y0 + h, x0:x0 + w], tiles[u])
        assert p.unit_at(*_centre(p.tile_rect(u))) == u
    assert p.unit_at(0, 0) is None                                # separator
    assert np.array_equal(p.image[0, 0], SEP)
    if m.rows * m.cols > 10:                                       # empty trailing cell
        r, c = divmod(10, m.cols)
        assert p.unit_at(1 + c * 13 + 6, 1 + r * 13 + 6) is None


def test_from_tiles_chooses_a_grid_and_checks_input():
    tiles = np.zeros((6, 5, 10, 3), np.uint8)
    p = ActivationMosaic.from_tiles(tiles, labels=list("abcdef"), separator=0)
    assert p.rows * p.cols >= 6 and p.label(2) == "2: c" and p.tile_rect(0) == (0, 0, 10, 5)
    with pytest.raises(CnnvisError):
        ActivationMosaic.from_tiles(np.zeros((6, 5, 5), np.uint8))
    with pytest.raises(CnnvisError):
        ActivationMosaic.from_tiles(tiles.astype(np.float32))
    with pytest.raises(CnnvisError, match="cannot hold"):
        ActivationMosaic.from_tiles(tiles, grid=(2, 2))


def test_linear_layer_tiles():
    feats = np.array([0.0, 1.0, 2.0, 4.0, -1.0, 3.0, 0.5], np.float32)
    m = ActivationMosaic(feats, min_tile=3, labels=list("abcdefg"))
    assert m.n_units == 7 and m.tile_shape == (1, 1) and m.scale == 3
    H, W = m.image.shape[:2]
    assert 0.6 < W / H < 1.7
    for u, v in enumerate(feats):
        x0, y0, w, h = m.tile_rect(u)
        assert (w, h) == (3, 3)
        tile = m.image[y0:y0 + 3, x0:x0 + 3]
        want = int(np.floor(max(v, 0) / 4 * 255 + 0.5))
        assert (tile == want).all(), (u, tile[..., 0], want)      # flat tile
        assert m.unit_at(x0 + 1, y0 + 1) == u
    assert m.label(3) == "3: d"
    # "unit" normalization of a linear layer must not turn every feature white
    mu = ActivationMosaic(feats, normalize="unit")
    assert mu.image[_centre(mu.tile_rect(1))[::-1]][0] == 64


def test_batch_and_torch_input():
    t = torch.rand(1, 4, 3, 3)
    m = ActivationMosaic(t)
    np.testing.assert_array_equal(m.image, ActivationMosaic(t[0].numpy()).image)


def test_bad_input_raises():
    with pytest.raises(CnnvisError):
        ActivationMosaic(np.zeros((2, 2, 3, 3, 3)))
    with pytest.raises(CnnvisError, match="0..3"):
        ActivationMosaic(np.zeros((4, 3, 3)), highlight=4)
    with pytest.raises(CnnvisError, match="normalize"):
        ActivationMosaic(np.zeros((4, 3, 3)), normalize="global")
    with pytest.raises(CnnvisError):
        ActivationMosaic(np.zeros((4, 3, 3))).tile_rect(9)


# ----------------------------------------------------------------------------- outlines

def test_highlight_and_frozen_outlines_on_separator_ring():
    acts = np.random.default_rng(1).random((9, 4, 4)).astype(np.float32)
    plain = ActivationMosaic(acts)
    m = ActivationMosaic(acts, highlight=4, frozen=0)
    assert HIGHLIGHT_COLOR != FROZEN_COLOR
    x0, y0, w, h = m.tile_rect(4)
    ring = np.concatenate([m.image[y0 - 1, x0 - 1:x0 + w + 1], m.image[y0 + h, x0 - 1:x0 + w + 1],
                           m.image[y0:y0 + h, x0 - 1], m.image[y0:y0 + h, x0 + w]])
    assert (ring == HIGHLIGHT_COLOR).all()
    fx, fy, fw, fh = m.tile_rect(0)
    assert (m.image[fy - 1, fx:fx + fw] == FROZEN_COLOR).all()
    assert (m.image[fy:fy + fh, fx - 1] == FROZEN_COLOR).all()
    # tile contents untouched; everything else equal to the plain mosaic
    np.testing.assert_array_equal(m.image[y0:y0 + h, x0:x0 + w], plain.image[y0:y0 + h, x0:x0 + w])
    changed = (m.image != plain.image).any(axis=2)
    rings = np.zeros_like(changed)
    for u in (0, 4):
        rx, ry, rw, rh = m.tile_rect(u)
        rings[ry - 1:ry + rh + 1, rx - 1:rx + rw + 1] = True
        rings[ry:ry + rh, rx:rx + rw] = False
    np.testing.assert_array_equal(changed, rings)   # only the two 1-px rings changed
    assert m.unit_at(x0 - 1, y0) is None


def test_outline_without_separator_stays_inside_tile():
    acts = np.zeros((4, 5, 5), np.float32)
    m = ActivationMosaic(acts, separator=0, highlight=3, frozen=0)
    assert m.image.shape[:2] == (10, 10)
    x0, y0, w, h = m.tile_rect(3)
    assert (x0, y0) == (5, 5)
    assert (m.image[5, 5:10] == HIGHLIGHT_COLOR).all() and (m.image[5:10, 9] == HIGHLIGHT_COLOR).all()
    assert (m.image[7, 7] == 0).all()
    assert (m.image[0, 0:5] == FROZEN_COLOR).all()
    assert m.unit_at(5, 5) == 3 and m.unit_at(4, 4) == 0


# ----------------------------------------------------------------------------- normalization

def _tile(m, u):
    x0, y0, w, h = m.tile_rect(u)
    return m.image[y0:y0 + h, x0:x0 + w, 0].astype(int)


def test_layer_vs_unit_normalization():
    acts = np.array([[[0.0, 1.0], [2.0, 4.0]],
                     [[0.0, 0.5], [0.5, 1.0]],
                     [[-3.0, -1.0], [0.0, 2.0]]], np.float32)
    layer = ActivationMosaic(acts, normalize="layer")
    np.testing.assert_array_equal(_tile(layer, 0), [[0, 64], [128, 255]])
    np.testing.assert_array_equal(_tile(layer, 1), [[0, 32], [32, 64]])
    np.testing.assert_array_equal(_tile(layer, 2), [[0, 0], [0, 128]])     # negatives clipped to black
    unit = ActivationMosaic(acts, normalize="unit")
    np.testing.assert_array_equal(_tile(unit, 0), [[0, 64], [128, 255]])
    np.testing.assert_array_equal(_tile(unit, 1), [[0, 128], [128, 255]])
    np.testing.assert_array_equal(_tile(unit, 2), [[0, 0], [0, 255]])
    # R == G == B for activations
    x0, y0, w, h = unit.tile_rect(1)
    t = unit.image[y0:y0 + h, x0:x0 + w]
    assert (t[..., 0] == t[..., 1]).all() and (t[..., 1] == t[..., 2]).all()


def test_all_negative_or_zero_unit_is_black():
    acts = np.stack([np.full((3, 3), -2.0), np.zeros((3, 3)), np.ones((3, 3))]).astype(np.float32)
    m = ActivationMosaic(acts, normalize="unit")
    assert (_tile(m, 0) == 0).all() and (_tile(m, 1) == 0).all() and (_tile(m, 2) == 255).all()


def test_gain_and_gamma():
    acts = np.array([[[0.0, 0.25], [0.5, 1.0]]], np.float32)
    np.testing.assert_array_equal(_tile(ActivationMosaic(acts, gain=2.0), 0), [[0, 128], [255, 255]])
    g = _tile(ActivationMosaic(acts, gamma=2.0), 0)
    np.testing.assert_array_equal(g, [[0, 16], [64, 255]])
    g = _tile(ActivationMosaic(acts, gamma=0.5), 0)
    np.testing.assert_array_equal(g, [[0, 128], [180, 255]])
    # normalize_unit: exact float values
    v = normalize_unit(acts[0], gain=2.0, gamma=2.0)
    assert v.dtype == np.float32
    np.testing.assert_allclose(v, [[0.0, 0.25], [1.0, 1.0]], atol=1e-6)
    v = normalize_unit(acts[0], lo=0.25, hi=0.75)
    np.testing.assert_allclose(v, [[0.0, 0.0], [0.5, 1.0]], atol=1e-6)
    np.testing.assert_allclose(normalize_unit(acts[0], gamma=0.5), np.sqrt(acts[0]), atol=1e-6)
    assert (normalize_unit(-acts[0]) == 0).all()
    with pytest.raises(CnnvisError):
        normalize_unit(acts[0], gamma=0)


def test_nan_and_inf_are_zero():
    acts = np.array([[[np.nan, 1.0], [np.inf, -np.inf]], [[2.0, np.nan], [0.0, 0.0]]], np.float32)
    m = ActivationMosaic(acts)
    _check_image(m.image)
    np.testing.assert_array_equal(_tile(m, 0), [[0, 128], [0, 0]])
    np.testing.assert_array_equal(_tile(m, 1), [[255, 0], [0, 0]])
    assert (ActivationMosaic(np.full((4, 2, 2), np.nan, np.float32), normalize="unit").image.max()
            == SEPARATOR_COLOR[0])
    v = normalize_unit(np.array([np.nan, 2.0, np.inf]))
    np.testing.assert_allclose(v, [0.0, 1.0, 0.0])


def test_all_zero_layer():
    m = ActivationMosaic(np.zeros((8, 3, 3), np.float32))
    for u in range(8):
        assert (_tile(m, u) == 0).all()


# ----------------------------------------------------------------------------- saliency

def test_filters_constant():
    assert FILTERS == ("raw", "gray", "norm", "normblur")


def test_raw_filter_signed_mapping():
    g = np.zeros((3, 4, 5), np.float32)
    g[0, 0, 0] = 2.0
    g[1, 0, 0] = -2.0
    g[2, 1, 1] = 1.0
    img = saliency_to_image(g, "raw")
    _check_image(img)
    assert img.shape == (4, 5, 3)
    assert tuple(img[0, 0]) == (255, 0, 128)      # colour kept: +max red, -max green, 0 blue
    assert tuple(img[1, 1]) == (128, 128, 191)
    assert (img[2:, :] == 128).all()
    # C = 1 -> one map, in the diverging colour map
    img1 = saliency_to_image(torch.tensor([[[-1.0, 0.0, 0.5]]]), "raw")
    np.testing.assert_array_equal(diverging_index(img1)[0], [0, 128, 191])
    # C = 4 -> channel mean, one map
    g4 = np.zeros((4, 1, 2), np.float32)
    g4[:, 0, 0] = [4, 0, 0, 0]
    g4[:, 0, 1] = [-2, 0, 0, 0]
    np.testing.assert_array_equal(diverging_index(saliency_to_image(g4, "raw"))[0], [255, 64])


def test_gray_filter():
    g = np.array([[[1.0, -3.0]], [[3.0, -1.0]], [[2.0, -2.0]]], np.float32)
    img = saliency_to_image(g, "gray")
    np.testing.assert_array_equal(diverging_index(img)[0], [255, 0])


def test_norm_filter_equals_l2_norm():
    g = np.random.default_rng(2).standard_normal((3, 6, 7)).astype(np.float32)
    img = saliency_to_image(g, "norm")
    n = np.sqrt((g.astype(np.float64) ** 2).sum(axis=0))
    want = np.floor(n / n.max() * 255 + 0.5)
    assert np.abs(img[..., 0].astype(int) - want).max() <= 1
    assert img[..., 0].max() == 255
    assert (img[..., 0] == img[..., 2]).all()


def test_normblur_blurs_and_sigma_matters():
    g = np.zeros((3, 64, 64), np.float32)
    g[:, 32, 32] = 1.0
    g[:, 10, 50] = 0.7
    sharp = saliency_to_image(g, "norm")[..., 0].astype(float)
    b1 = saliency_to_image(g, "normblur", sigma=1.0)[..., 0].astype(float)
    b4 = saliency_to_image(g, "normblur", sigma=4.0)[..., 0].astype(float)
    assert b1.max() == 255 and b4.max() == 255          # rescaled

    def max_grad(a):
        return max(np.abs(np.diff(a, axis=0)).max(), np.abs(np.diff(a, axis=1)).max())

    assert max_grad(b1) < max_grad(sharp)
    assert max_grad(b4) < max_grad(b1)
    assert (b4 > 0).sum() > (b1 > 0).sum() > (sharp > 0).sum()
    default = saliency_to_image(g, "normblur")                  # sigma = max(1, 64/50)
    assert not np.array_equal(default, saliency_to_image(g, "normblur", sigma=4.0))
    with pytest.raises(CnnvisError):
        saliency_to_image(g, "normblur", sigma=0)


def test_non_square_saliency():
    g = np.random.default_rng(3).standard_normal((3, 20, 50)).astype(np.float32)
    for f in FILTERS:
        img = saliency_to_image(g, f)
        _check_image(img)
        assert img.shape == (20, 50, 3)


@pytest.mark.parametrize("f,value", [("raw", 128), ("gray", (247, 247, 247)), ("norm", 0), ("normblur", 0)])
def test_zero_and_nan_gradients(f, value):
    assert (saliency_to_image(np.zeros((3, 8, 9)), f) == value).all()
    g = np.full((3, 8, 9), np.nan, np.float32)
    assert (saliency_to_image(g, f) == value).all()
    g[0, 1, 1] = 1.0
    g[1, 2, 2] = np.inf
    img = saliency_to_image(g, f, sign="absolute")
    assert img.max() == 255


def test_unknown_filter():
    with pytest.raises(CnnvisError, match="normblur"):
        saliency_to_image(np.zeros((3, 2, 2)), "sobel")


# ----------------------------------------------------------------------------- colour

def _luma(lut):
    return lut.astype(float) @ np.array([0.2126, 0.7152, 0.0722])


@pytest.mark.parametrize("name", ["inferno", "viridis"])
def test_colormap_lut(name):
    lut = colormap_lut(name)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    y = _luma(lut)
    assert (np.diff(y) >= -0.5).all()            # monotone lightness (within rounding)
    assert y[-1] - y[0] > 150


def test_inferno_endpoints_and_monotone():
    lut = colormap_lut("inferno")
    assert tuple(lut[0]) == (0, 0, 4) and tuple(lut[255]) == (252, 255, 164)
    assert (np.diff(_luma(lut)[::4]) > 0).all()    # strictly increasing at a coarser step
    assert tuple(colormap_lut("viridis")[0]) == (68, 1, 84)
    with pytest.raises(CnnvisError):
        colormap_lut("jet")


def test_colormap_close_to_matplotlib():
    mpl = pytest.importorskip("matplotlib")
    for name in ("inferno", "viridis"):
        ref = np.round(mpl.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255)
        assert np.abs(colormap_lut(name).astype(int) - ref).max() <= 5


def test_heatmap():
    v = np.array([[0.0, 1.0], [2.0, -1.0], [np.nan, 0.5]], np.float32)
    img = heatmap(v)
    _check_image(img)
    lut = colormap_lut("inferno")
    assert img.shape == (3, 2, 3)
    assert tuple(img[0, 0]) == tuple(lut[0]) and tuple(img[0, 1]) == tuple(lut[255])
    assert tuple(img[1, 0]) == tuple(lut[255]) and tuple(img[1, 1]) == tuple(lut[0])
    assert tuple(img[2, 0]) == tuple(lut[0])
    assert abs(int(img[2, 1, 0]) - int(lut[128, 0])) <= 1
    assert tuple(heatmap(np.ones((1, 1)), "viridis")[0, 0]) == (253, 231, 37)


def test_overlay_blends_and_resizes_non_square():
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 2] = 200
    cam = np.zeros((4, 6), np.float32)
    cam[:, 3:] = 1.0                                   # right half hot
    out = overlay(rgb, cam, alpha=0.5)
    _check_image(out)
    assert out.shape == (40, 60, 3)
    hot = colormap_lut("inferno")[255].astype(float)
    np.testing.assert_allclose(out[20, 55], 0.5 * hot + 0.5 * np.array([0, 0, 200]), atol=1)
    np.testing.assert_allclose(out[20, 2], 0.5 * np.array([0, 0, 4]) + 0.5 * np.array([0, 0, 200]), atol=1)
    np.testing.assert_array_equal(overlay(rgb, cam, alpha=0.0), rgb)
    np.testing.assert_array_equal(overlay(rgb, np.ones((40, 60)), alpha=1.0)[0, 0], hot)
    with pytest.raises(CnnvisError):
        overlay(rgb, cam, alpha=1.5)


# ----------------------------------------------------------------------------- issue 16: edges a user can hit

def test_position_at_floors_fractions_left_of_and_above_the_image():
    """A click half a pixel left of (or above) a separator-free mosaic is outside it, not in unit 0.

    pyqtgraph maps a click to float image coordinates; ``int(-0.5)`` would be 0 (truncation
    toward zero) and select the first tile, ``floor(-0.5)`` is -1: outside.
    """
    acts = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    m = ActivationMosaic(acts, separator=0, aspect=4.0)
    assert (m.rows, m.cols) == (1, 2)
    for x, y in [(-0.5, 1.0), (1.0, -0.5), (-0.01, -0.99), (-0.99, 2.5)]:
        assert m.position_at(x, y) is None, (x, y)
        assert m.unit_at(x, y) is None, (x, y)
    # fractions inside floor to the pixel they are in
    assert m.position_at(0.0, 0.0) == (0, 0, 0)
    assert m.position_at(3.99, 2.99) == (0, 2, 3)
    assert m.position_at(4.0, 0.5) == (1, 0, 0)
    assert m.position_at(7.99, 2.99) == (1, 2, 3)
    assert m.position_at(8.0, 1.0) is None and m.position_at(1.0, 3.0) is None
    # with separators and an upscale: a fraction inside the separator stays on it
    m2 = ActivationMosaic(acts, separator=2, min_tile=8, aspect=4.0)
    x0, y0, w, h = m2.tile_rect(1)
    assert m2.position_at(x0 - 0.01, y0 + 1) is None
    assert m2.position_at(x0 + w - 0.01, y0 + h - 0.01) == (1, 2, 3)
    assert m2.position_at(x0 + 0.5, y0 + 0.5) == (1, 0, 0)


def _blur_sigma_of_impulse(img: np.ndarray, y: int, x: int) -> float:
    """Standard deviation (pixels) of the blurred impulse's profile along its row and column."""
    v = img[..., 0].astype(np.float64)
    est = []
    for prof, c in ((v[y, :], x), (v[:, x], y)):
        d = np.arange(prof.size) - c
        est.append(np.sqrt((prof * d * d).sum() / prof.sum()))
    return float(np.mean(est))


@pytest.mark.parametrize("hw, sigma", [((120, 200), 2.4), ((300, 250), 5.0), ((40, 40), 1.0)])
def test_normblur_default_sigma_is_the_documented_value(hw, sigma):
    """Default blur = max(1, min(H, W) / 50) pixels (the docstring), measured on a blurred impulse."""
    h, w = hw
    g = np.zeros((3, h, w), np.float32)
    g[:, h // 2, w // 2] = 1.0
    img = saliency_to_image(g, "normblur")
    measured = _blur_sigma_of_impulse(img, h // 2, w // 2)
    assert measured == pytest.approx(sigma, rel=0.08), measured
    # and the default is exactly what passing that sigma gives
    np.testing.assert_array_equal(img, saliency_to_image(g, "normblur", sigma=sigma))
    # the measurement itself tells sigmas apart
    other = _blur_sigma_of_impulse(saliency_to_image(g, "normblur", sigma=sigma * 1.3), h // 2, w // 2)
    assert other == pytest.approx(sigma * 1.3, rel=0.08)


def test_grid_prefers_few_empty_cells_and_no_lone_last_row():
    from cnnvis_gui.core.display import _choose_grid
    for aspect in (0.9, 1.0, 1.2):
        assert _choose_grid(64, 8, 8, 1, aspect) == (8, 8)
    cases = lone = 0
    for n in range(16, 2049, 7):
        for aspect in (0.8, 1.0, 1.33, 1.78):
            rows, cols = _choose_grid(n, 14, 14, 1, aspect)
            assert rows * cols >= n and (rows - 1) * cols < n
            cases += 1
            lone += (n - (rows - 1) * cols) * 4 < cols
    assert lone <= cases // 100, (lone, cases)
