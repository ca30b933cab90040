"""Display helpers at their edges: what mutation testing (tools/mutation.sh core/display.py) showed
no test pinned down -- argument checks and their messages, tiny and empty layers, torch tensors that
require grad, the grid layout rule, the outline without separators, the colour-map index, grey overlays.
Every expectation is written out here from the docstrings, not read back from the module.
"""
import math
import re

import functools

import numpy as np
import pytest
import torch

from cnnvis_gui.core import CnnvisError
from cnnvis_gui.core.display import HIGHLIGHT_COLOR, ActivationMosaic, colormap_lut, heatmap, normalize_unit, overlay
from cnnvis_gui.core.saliency_display import saliency_to_image as _saliency_to_image

# these tests are about the toolbox's exact max scale (tests/core/test_saliency_display.py: the others)
saliency_to_image = functools.partial(_saliency_to_image, clip="max")
from tests.core.saliency_helpers import diverging_index  # noqa: E402


# ----------------------------------------------------------------------------- argument checks
@pytest.mark.parametrize("kw, match", [
    ({"gain": -1.0}, "gain"), ({"gain": math.inf}, "gain"), ({"gain": math.nan}, "gain"),
    ({"gamma": 0.0}, "gamma"), ({"gamma": -0.5}, "gamma"), ({"gamma": math.inf}, "gamma"),
    ({"aspect": 0.0}, "aspect"), ({"aspect": -2.0}, "aspect"), ({"aspect": math.nan}, "aspect"),
    ({"min_tile": 0}, "min_tile"), ({"separator": -1}, "separator"),
    ({"labels": ["a", "b"]}, "labels"), ({"highlight": 3}, "highlight"), ({"frozen": 3}, "frozen"),
    ({"highlight": -1}, "highlight"), ({"normalize": "tile"}, "normalize"),
])
def test_mosaic_rejects_bad_arguments_with_a_message(kw, match):
    with pytest.raises(CnnvisError, match=match):
        ActivationMosaic(np.ones((3, 4, 4), np.float32), **kw)


def test_mosaic_accepts_the_boundaries():
    a = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
    ActivationMosaic(a, gain=0.0, gamma=1e-3, min_tile=1, separator=0, highlight=2, frozen=0, aspect=1e-3)
    dim = ActivationMosaic(a, gain=0.5)                          # a gain below 1 dims (does not raise)
    full = ActivationMosaic(a)
    x0, y0, w, h = full.tile_rect(0)
    assert dim.image[y0:y0 + h, x0:x0 + w].max() < full.image[y0:y0 + h, x0:x0 + w].max()


@pytest.mark.parametrize("shape", [(0, 3, 3), (3, 0, 3), (3, 3, 0)])
def test_mosaic_of_an_empty_layer_is_an_error(shape):
    with pytest.raises(CnnvisError, match="no values"):
        ActivationMosaic(np.zeros(shape, np.float32))


def test_mosaic_of_a_wrong_rank_is_an_error():
    with pytest.raises(CnnvisError, match=r"C x h x w"):
        ActivationMosaic(np.zeros((2, 2, 3, 4, 4), np.float32))


def test_normalize_unit_checks_and_edges():
    with pytest.raises(CnnvisError, match="gain"):
        normalize_unit(np.ones((2, 2)), gain=-1)
    with pytest.raises(CnnvisError, match="gamma"):
        normalize_unit(np.ones((2, 2)), gamma=0)
    np.testing.assert_allclose(normalize_unit(np.array([[1.0, 2.0]]), gain=0.5), [[0.25, 0.5]])
    empty = normalize_unit(np.zeros((0, 4), np.float32))
    assert empty.shape == (0, 4) and empty.dtype == np.float32
    for lo, hi in [(math.nan, 1.0), (0.0, math.nan), (0.0, math.inf), (2.0, 1.0)]:
        z = normalize_unit(np.array([[0.5, 3.0]], np.float32), lo=lo, hi=hi)
        assert z.dtype == np.float32 and (z == 0).all(), (lo, hi)


# ----------------------------------------------------------------------------- values shown
def test_linear_and_1d_layers_are_tiled():
    lin = ActivationMosaic(np.array([0.0, 1.0, 4.0, -2.0], np.float32))
    assert lin.is_linear and lin.tile_shape == (1, 1) and lin.n_units == 4
    vals = [lin.image[lin.tile_rect(u)[1], lin.tile_rect(u)[0], 0] for u in range(4)]
    assert vals == [0, 64, 255, 0]
    # "unit" normalization would make every feature white: a linear layer is scaled per layer
    assert ActivationMosaic(np.array([1.0, 4.0], np.float32), normalize="unit").normalize == "unit"
    per = ActivationMosaic(np.array([1.0, 4.0], np.float32), normalize="unit")
    assert per.image[per.tile_rect(0)[1], per.tile_rect(0)[0], 0] == 64
    conv1d = ActivationMosaic(np.array([[0.0, 2.0, 1.0], [4.0, 0.0, 0.0]], np.float32))
    assert not conv1d.is_linear and conv1d.tile_shape == (1, 3)
    x0, y0, _, _ = conv1d.tile_rect(0)
    assert list(conv1d.image[y0, x0:x0 + 3, 0]) == [0, 128, 64]
    assert conv1d.position_at(x0 + 1, y0) == (0, 0, 1)


def test_gamma_uses_the_layer_scale_not_one():
    """Values divided by the layer max (here 8, not 1), then raised to gamma."""
    a = np.array([[[2.0, 8.0], [0.5, -3.0]]], np.float32)
    m = ActivationMosaic(a, gamma=0.5, separator=0)
    want = np.round(255 * np.clip(a[0] / 8.0, 0, 1) ** 0.5)
    np.testing.assert_array_equal(m.image[..., 0], want)            # negatives black, not NaN
    m2 = ActivationMosaic(a * 100, gamma=0.5, gain=2.0, separator=0)
    np.testing.assert_array_equal(m2.image[..., 0], np.round(255 * np.clip(a[0] / 8.0 * 2, 0, 1) ** 0.5))


@pytest.mark.parametrize("peak", [1e-39, 1e-44, 3e-30])
def test_tiny_activations_still_show_their_max_white(peak):
    """A layer whose max is so small that 255 / max overflows float32 is scaled all the same."""
    a = np.zeros((2, 2, 2), np.float32)
    a[0, 0, 0] = np.float32(peak)
    a[0, 1, 1] = np.float32(peak) / 2
    a[1, 0, 1] = np.float32(-peak)
    for kw in ({}, {"gamma": 0.5}, {"normalize": "unit"}):
        m = ActivationMosaic(a, separator=0, aspect=2.0, **kw)
        t0 = m.image[:2, :2, 0]
        assert t0[0, 0] == 255 and 0 < t0[1, 1] < 255 and (m.image[:2, 2:, 0] == 0).all(), kw


def test_per_unit_scale_with_silent_units():
    a = np.zeros((3, 2, 2), np.float32)
    a[0] = [[1.0, 0.5], [0.0, 0.25]]
    a[1] = -1.0                                  # silent (negative only): black
    a[2] = [[10.0, 5.0], [0.0, 0.0]]
    m = ActivationMosaic(a, normalize="unit", separator=0, aspect=3.0)
    assert (m.rows, m.cols) == (1, 3)
    np.testing.assert_array_equal(m.image[:, 0:2, 0], [[255, 128], [0, 64]])
    assert (m.image[:, 2:4, 0] == 0).all()
    np.testing.assert_array_equal(m.image[:, 4:6, 0], [[255, 128], [0, 0]])


def test_outline_without_separators_is_on_the_tile_border():
    a = np.full((4, 5, 6), 0.0, np.float32)
    m = ActivationMosaic(a, separator=0, highlight=3, aspect=1.0)
    x0, y0, w, h = m.tile_rect(3)
    mask = np.zeros(m.image.shape[:2], bool)
    mask[y0, x0:x0 + w] = mask[y0 + h - 1, x0:x0 + w] = True
    mask[y0:y0 + h, x0] = mask[y0:y0 + h, x0 + w - 1] = True
    assert (m.image[mask] == HIGHLIGHT_COLOR).all()
    assert (m.image[~mask] == 0).all()                              # nothing else coloured


def test_tile_rect_and_label_ranges():
    m = ActivationMosaic(np.ones((4, 2, 2), np.float32), labels=["w", "x", "y", "z"])
    with pytest.raises(CnnvisError, match=r"unit 4 is out of range.*0\.\.3"):
        m.tile_rect(4)
    with pytest.raises(CnnvisError, match=r"0\.\.3"):
        m.tile_rect(-1)
    assert [m.label(u) for u in (0, 3)] == ["0: w", "3: z"]
    assert m.label(4) == "unit 4" and m.label(-1) == "unit -1"
    assert ActivationMosaic(np.ones((4, 2, 2), np.float32)).label(0) == "unit 0"
    m2 = ActivationMosaic(np.ones((12, 3, 5), np.float32), min_tile=6)
    assert repr(m2) == (f"ActivationMosaic(12 units of 3x5 x2, {m2.rows}x{m2.cols} grid, "
                        f"image {m2.image.shape[1]}x{m2.image.shape[0]})")


def test_min_tile_smaller_than_the_map_does_not_upscale():
    m = ActivationMosaic(np.ones((2, 9, 9), np.float32), min_tile=4)
    assert m.scale == 1 and m.tile_rect(0)[2:] == (9, 9)
    assert ActivationMosaic(np.ones((2, 3, 3), np.float32)).scale == 1


def _layout_rule(n, th, tw, sep, aspect):
    """The documented layout, by brute force: the (rows, cols) whose whole mosaic is closest to the
    aspect in log ratio, + 0.6 x empty cells / n, + 0.3 when the last row holds less than a quarter
    of the columns (lone tiles under a full grid); ties to fewer rows; never a wholly empty column."""
    best = None
    for cols in range(1, n + 1):
        rows = -(-n // cols)
        if -(-n // rows) != cols:
            continue
        w, h = cols * (tw + sep) + sep, rows * (th + sep) + sep
        empty = rows * cols - n
        lone = rows > 1 and (cols - empty) * 4 < cols
        score = round(abs(math.log(w / (h * aspect))) + 0.6 * empty / n + 0.3 * lone, 9)
        if best is None or (score, rows) < best[0]:
            best = ((score, rows), (rows, cols))
    return best[1]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 10, 12, 13, 17, 31, 33, 50, 64, 65, 70, 97, 100, 257])
@pytest.mark.parametrize("tile, aspect", [((4, 4), 1.0), ((3, 8), 1.0), ((6, 6), 16 / 9), ((8, 2), 0.5),
                                          ((5, 5), 1.3), ((7, 7), 2.4)])
def test_grid_layout_follows_the_rule(n, tile, aspect):
    m = ActivationMosaic(np.ones((n,) + tile, np.float32), aspect=aspect)
    assert (m.rows, m.cols) == _layout_rule(n, tile[0], tile[1], 1, aspect)
    t = ActivationMosaic.from_tiles(np.zeros((n,) + tile + (3,), np.uint8), aspect=aspect)
    assert (t.rows, t.cols) == (m.rows, m.cols)


def test_grid_layout_examples():
    """64 square units in a square view: 8 x 8 (not 7 x 10); 65: no lone 65th tile under 8 x 8."""
    assert (ActivationMosaic(np.ones((64, 5, 5), np.float32)).rows, 8) == (8, 8)
    m = ActivationMosaic(np.ones((65, 5, 5), np.float32))
    assert (m.cols - (m.rows * m.cols - 65)) * 4 >= m.cols


# ----------------------------------------------------------------------------- from_tiles
def test_from_tiles_geometry_and_checks():
    tiles = np.arange(5 * 2 * 3 * 3, dtype=np.uint8).reshape(5, 2, 3, 3)
    t = ActivationMosaic.from_tiles(tiles)
    assert (t.scale, t.normalize, t.highlight, t.frozen, t.is_linear) == (1, None, None, None, False)
    assert t.tile_shape == (2, 3) and t.separator == 1
    assert t.image.shape == (t.rows * 3 + 1, t.cols * 4 + 1, 3)
    for u in range(5):
        x0, y0, w, h = t.tile_rect(u)
        np.testing.assert_array_equal(t.image[y0:y0 + h, x0:x0 + w], tiles[u])
    assert (ActivationMosaic.from_tiles(tiles, grid=(1, 5)).rows, 5) == (1, 5)
    assert ActivationMosaic.from_tiles(tiles, grid=(5, 1)).cols == 1
    assert ActivationMosaic.from_tiles(np.zeros((1, 1, 1, 3), np.uint8)).n_units == 1
    wide = ActivationMosaic.from_tiles(np.zeros((16, 4, 4, 3), np.uint8), aspect=4.0)
    assert wide.cols > wide.rows
    for grid in [(1, 4), (0, 5), (5, 0), (2, 2)]:
        with pytest.raises(CnnvisError, match="cannot hold"):
            ActivationMosaic.from_tiles(tiles, grid=grid)
    for bad, match in [(tiles.astype(np.float32), "uint8"), (tiles[..., :2], "n x h x w x 3"),
                       (np.zeros((0, 2, 2, 3), np.uint8), "tiles")]:
        with pytest.raises(CnnvisError, match=match):
            ActivationMosaic.from_tiles(bad)
    for kw, match in [({"aspect": 0.0}, "aspect"), ({"separator": -1}, "separator"), ({"labels": ["a"]}, "labels")]:
        with pytest.raises(CnnvisError, match=match):
            ActivationMosaic.from_tiles(tiles, **kw)


# ----------------------------------------------------------------------------- saliency, colour
def test_saliency_of_a_tensor_that_requires_grad():
    """The engine's gradients may still require grad: shown like their values."""
    g = torch.randn(3, 5, 6, requires_grad=True) * 1.0
    for f in ("raw", "gray", "norm", "normblur"):
        np.testing.assert_array_equal(saliency_to_image(g, f), saliency_to_image(g.detach().numpy(), f))
    t = torch.rand(4, 4, requires_grad=True) * 1.0
    np.testing.assert_array_equal(heatmap(t), heatmap(t.detach().numpy()))


def test_all_zero_saliency_is_mid_grey_uint8():
    for f, v in (("raw", 128), ("gray", (247, 247, 247)), ("norm", 0), ("normblur", 0)):
        img = saliency_to_image(np.zeros((3, 4, 5), np.float32), f)
        assert img.dtype == np.uint8 and img.shape == (4, 5, 3) and (img == v).all(), f
    one = saliency_to_image(np.zeros((1, 4, 5), np.float32), "raw")     # one map: the diverging map's centre
    assert one.dtype == np.uint8 and (diverging_index(one) == 128).all()


def test_heatmap_indexes_the_colour_table_by_round_255_v():
    lut = colormap_lut("inferno")
    k = np.arange(256)
    v = ((k + np.where(k % 2, 0.3, -0.3).clip(-k, 255 - k)) / 255).astype(np.float32).reshape(16, 16)
    want = lut[k.reshape(16, 16)]                                   # round(255 v) = k (no halves)
    np.testing.assert_array_equal(heatmap(v), want)
    np.testing.assert_array_equal(heatmap(np.array([[-1.0, 2.0, np.nan]])), lut[[[0, 255, 0]]])
    with pytest.raises(CnnvisError, match=r"H x W map, got shape \(2, 2, 2\)"):
        heatmap(np.zeros((2, 2, 2)))
    e = heatmap(np.zeros((0, 3)))
    assert e.shape == (0, 3, 3) and e.dtype == np.uint8


def test_overlay_on_a_grey_image():
    grey = np.full((4, 6), 100, np.uint8)
    out = overlay(grey, np.ones((4, 6), np.float32), alpha=0.5, cmap="gray")
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8 and (out == 178).all()   # (100 + 255) / 2
    same = overlay(np.repeat(grey[..., None], 3, axis=2), np.ones((4, 6), np.float32), alpha=0.5, cmap="gray")
    np.testing.assert_array_equal(out, same)


def test_saliency_input_shapes():
    rng = np.random.default_rng(4)
    g = rng.standard_normal((3, 4, 5)).astype(np.float32)
    for f in ("raw", "gray", "norm", "normblur"):
        np.testing.assert_array_equal(saliency_to_image(g[None], f), saliency_to_image(g, f))   # 1 x C x H x W
    one = g[:1]
    np.testing.assert_array_equal(saliency_to_image(one[0], "raw"), saliency_to_image(one, "raw"))   # H x W
    # C == 1 shows that channel, C == 2 (or more than 3) the channel mean, both in the diverging map
    m = np.abs(one[0]).max()
    np.testing.assert_array_equal(diverging_index(saliency_to_image(one, "raw")),
                                  np.floor(np.clip(one[0] / m * 127.5 + 128, 0, 255)).astype(np.uint8))
    two = g[:2]
    np.testing.assert_array_equal(saliency_to_image(two, "raw"), saliency_to_image(two.mean(0), "raw"))
    for bad in (np.zeros((2, 3, 4, 5), np.float32), np.zeros((0, 4, 5), np.float32), np.zeros((5,), np.float32)):
        with pytest.raises(CnnvisError, match=r"expected a C x H x W gradient, got shape \(%s" % bad.shape[0]):
            saliency_to_image(bad, "raw")
    with pytest.raises(CnnvisError, match="sigma must be > 0 pixels, got -1.0"):
        saliency_to_image(g, "normblur", sigma=-1)
    with pytest.raises(CnnvisError, match="unknown filter 'blur'"):
        saliency_to_image(g, "blur")


def test_colour_tables_are_read_only_and_named():
    lut = colormap_lut("viridis")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8 and not lut.flags.writeable
    assert tuple(lut[0]) == (68, 1, 84) and tuple(lut[255]) == (253, 231, 37)
    with pytest.raises(ValueError):
        lut[0, 0] = 1
    with pytest.raises(CnnvisError, match="unknown colormap 'jet'"):
        colormap_lut("jet")


def test_enlarge_makes_each_pixel_a_square():
    from cnnvis_gui.core.display import MAX_ZOOM, enlarge
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert enlarge(img, 1) is img
    for z in (2, 3, MAX_ZOOM):
        big = enlarge(img, z)
        assert big.shape == (2 * z, 3 * z, 3) and big.dtype == np.uint8
        np.testing.assert_array_equal(big, img.repeat(z, axis=0).repeat(z, axis=1))
    grey = np.array([[0, 255], [7, 9]], np.uint8)
    np.testing.assert_array_equal(enlarge(grey, 2), grey.repeat(2, 0).repeat(2, 1))
    for bad in (0, MAX_ZOOM + 1, 2.0, True, "2", -1):
        with pytest.raises(CnnvisError, match=r"zoom must be an integer in 1\.\.%d, got %s" % (MAX_ZOOM, re.escape(repr(bad)))):
            enlarge(img, bad)


def test_norm_scale_is_255_over_the_max_exactly():
    g = np.array([[[1.0, 0.99, 0.5, 0.0]]], np.float32)            # C=1: the norm is |g|
    np.testing.assert_array_equal(saliency_to_image(g, "norm")[0, :, 0], [255, 252, 128, 0])


def test_empty_gradients_give_empty_images():
    for f in ("raw", "gray", "norm"):
        img = saliency_to_image(np.zeros((3, 0, 4), np.float32), f)
        assert img.shape == (0, 4, 3) and img.dtype == np.uint8, f


def test_outline_of_a_first_row_tile_without_separators():
    m = ActivationMosaic(np.zeros((9, 3, 3), np.float32), separator=0, highlight=1, aspect=1.0)
    assert (m.rows, m.cols) == (3, 3)
    x0, y0, w, h = m.tile_rect(1)
    assert (m.image[y0 + h - 1, x0:x0 + w] == HIGHLIGHT_COLOR).all()
    assert (m.image[h:] == 0).all()                                   # the rows below stay untouched


@pytest.mark.parametrize("n", [5, 9, 10, 17, 33])
@pytest.mark.parametrize("aspect", [2.6, 3.2, 4.0])
def test_grid_layout_wide_views(n, aspect):
    m = ActivationMosaic(np.ones((n, 4, 4), np.float32), aspect=aspect)
    assert (m.rows, m.cols) == _layout_rule(n, 4, 4, 1, aspect)


def test_from_tiles_default_aspect_is_square():
    t = ActivationMosaic.from_tiles(np.zeros((16, 4, 4, 3), np.uint8))
    assert (t.rows, t.cols) == (4, 4)


def test_overlay_messages():
    rgb = np.zeros((4, 6, 3), np.uint8)
    with pytest.raises(CnnvisError, match=r"H x W x 3 image, got shape \(4, 6, 4\)"):
        overlay(np.zeros((4, 6, 4), np.uint8), np.ones((4, 6)))
    with pytest.raises(CnnvisError, match=r"alpha must be in \[0, 1\], got 1.5"):
        overlay(rgb, np.ones((4, 6)), alpha=1.5)
    with pytest.raises(CnnvisError, match=r"h x w map of values, got shape \(2, 4, 6\)"):
        overlay(rgb, np.ones((2, 4, 6)))
    # a coarse map (Grad-CAM) is resized to the image
    assert overlay(rgb, np.ones((2, 3)), alpha=1.0, cmap="gray").min() == 255
