"""Display helpers at the extremes a user can reach: gamma on signed layers and partial grids,
large gains, layers and gradients of tiny or huge magnitude, defaults, odd array-likes.

Written from what mutation testing (``tools/mutation.sh core/display.py``) left alive: each test
computes its expectation here (numpy in float64, the docstring's formula written out), never
with the module's own helpers.
"""
import math
import warnings

import functools

import numpy as np
import pytest

from cnnvis_gui.core import CnnvisError
from cnnvis_gui.core.display import ActivationMosaic, colormap_lut, heatmap, normalize_unit, overlay
from cnnvis_gui.core.saliency_display import saliency_to_image as _saliency_to_image

# these tests are about the toolbox's exact max scale (tests/core/test_saliency_display.py: the others)
saliency_to_image = functools.partial(_saliency_to_image, clip="max")
from tests.core.saliency_helpers import diverging_index  # noqa: E402

# matplotlib's inferno at 0 and 1 (van der Walt & Smith, 2015)
INFERNO_0, INFERNO_1 = (0, 0, 4), (252, 255, 164)


def _tiles(m: ActivationMosaic) -> np.ndarray:
    """The red channel of every unit's tile, n x th x tw, cut out through tile_rect."""
    out = []
    for u in range(m.n_units):
        x0, y0, w, h = m.tile_rect(u)
        out.append(m.image[y0:y0 + h, x0:x0 + w, 0])
    return np.stack(out)


def _shown(a: np.ndarray, normalize: str, gain: float, gamma: float) -> np.ndarray:
    """The docstring's mapping in float64: round(255 * clip(a * gain / max, 0, 1) ** gamma), max of
    the layer or of each unit, a max <= 0 shows black."""
    a = a.astype(np.float64)
    hi = a.reshape(len(a), -1).max(axis=1)[:, None, None] if normalize == "unit" else np.float64(a.max())
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(hi > 0, np.clip(a / np.where(hi > 0, hi, 1.0) * gain, 0, 1), 0.0)
    return np.rint(255 * v ** gamma)


# ----------------------------------------------------------------------------- mosaic: gamma and gain
@pytest.mark.parametrize("gamma", [1.0, 2.0, 3.0, 0.5])
@pytest.mark.parametrize("gain", [1.0, 3.7, 4000.0, 1e8])
@pytest.mark.parametrize("normalize", ["layer", "unit"])
def test_signed_layer_with_gamma_gain_and_a_partial_last_row(gamma, gain, normalize):
    """Negative activations stay black under any gamma (2 would square them bright), a large gain
    saturates the maximum to white (it must not wrap to black), and a 5-unit layer (partial last
    row) with an upscale builds at all."""
    a = np.random.default_rng(7).standard_normal((5, 3, 4)).astype(np.float32)
    a[2] = -np.abs(a[2])                                             # a silent unit
    m = ActivationMosaic(a, normalize=normalize, gain=gain, gamma=gamma, min_tile=6)
    assert m.rows * m.cols > 5 and m.scale == 2
    got = _tiles(m)[:, ::2, ::2].astype(int)                          # one pixel per activation
    want = _shown(a, normalize, gain, gamma)
    assert np.abs(got - want).max() <= 1, (gamma, gain, normalize)
    assert (got[a < 0] == 0).all()
    assert (got[2] == 0).all()


@pytest.mark.parametrize("peak", [2.0 ** -126, 1e-40, 1e-44, 3e-39, 1e-20, 1.0, 1e30, 3e38])
@pytest.mark.parametrize("gain", [1.0, 3e38 * 2.0 ** -126, 0.25, 50.0])
def test_any_layer_scale_and_gain(peak, gain):
    """A layer's picture does not depend on its magnitude: max 1e-44 or 3e38, and the gain that
    makes gain / max land exactly on the switch to the divide-first path (2**-126 x 3.53)."""
    base = np.array([[[1.0, 0.5, 0.125], [0.0, -0.5, 0.0625]], [[0.25, 0.0, -1.0], [0.75, 0.375, 0.0]]])
    a = (base * peak).astype(np.float32)
    assert a.max() > 0
    for normalize in ("layer", "unit"):
        for gamma in (1.0, 0.5):
            m = ActivationMosaic(a, normalize=normalize, gain=gain, gamma=gamma, separator=0, aspect=3.0)
            got = _tiles(m).astype(int)
            want = _shown(a, normalize, gain, gamma)
            assert np.abs(got - want).max() <= 1, (peak, gain, normalize, gamma, got, want)


def test_tiny_units_beside_silent_ones_raise_no_numpy_warning():
    """A live view redraws 30 times a second: no RuntimeWarning per frame for silent units."""
    a = np.zeros((5, 2, 2), np.float32)
    a[0, 0, 0] = np.float32(1e-40)                                   # gain / max overflows float32
    a[0, 1, 0] = -3e38                                               # far below a tiny max: -inf, black
    a[1, 0, 1] = -2.0                                                # max == 0
    a[2] = -1.0                                                      # max < 0
    a[3, 1, 1] = 2.0
    a[4, 0, 0], a[4, 1, 1] = 1e-30, -1e10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for normalize in ("unit", "layer"):
            for gamma in (1.0, 0.5):
                for gain in (1.0, 0.0):
                    m = ActivationMosaic(a, normalize=normalize, gamma=gamma, gain=gain, separator=0, aspect=5.0)
                    t = _tiles(m)
                    assert (t[1] == 0).all() and (t[2] == 0).all() and (t[:, 1, 0] == 0).all()
                    assert gain or (t == 0).all()
        t = _tiles(ActivationMosaic(a, normalize="unit", separator=0, aspect=5.0))
        assert t[0, 0, 0] == t[3, 1, 1] == t[4, 0, 0] == 255 and t[4, 1, 1] == 0
        for g in (np.zeros((3, 4, 5), np.float32), np.full((3, 4, 5), 1e-40, np.float32),
                  np.full((3, 4, 5), 1e30, np.float32)):
            for f in ("raw", "gray", "norm", "normblur"):
                saliency_to_image(g, f)
        normalize_unit(np.array([0.0, 1e-39], np.float32))


def test_linear_flag_is_a_bool():
    assert ActivationMosaic(np.ones((2, 3, 3), np.float32)).is_linear is False
    assert ActivationMosaic(np.ones((2, 3), np.float32)).is_linear is False
    assert ActivationMosaic(np.ones(3, np.float32)).is_linear is True


@pytest.mark.parametrize("name", ["highlight", "frozen"])
def test_out_of_range_outline_unit_is_named_in_the_message(name):
    with pytest.raises(CnnvisError) as e:
        ActivationMosaic(np.ones((3, 2, 2), np.float32), **{name: 5})
    assert str(e.value) == f"ActivationMosaic: {name} unit 5 is out of range; the layer has units 0..2."


@pytest.mark.parametrize("grid", [(-1, -5), (-2, -3), (-5, -1)])
def test_from_tiles_rejects_a_negative_grid(grid):
    """(-1) x (-5) holds 5 'cells' by multiplication; it is still no grid."""
    with pytest.raises(CnnvisError, match=r"a %d x %d grid cannot hold 5 tiles" % grid):
        ActivationMosaic.from_tiles(np.zeros((5, 2, 2, 3), np.uint8), grid=grid)


def test_near_tie_grids_go_to_fewer_rows():
    """Two grids whose fit to the aspect agrees to 9 decimals tie, and the one with fewer rows wins
    (the _choose_grid docstring): 2 square tiles at an aspect a hair below 1."""
    d = 6e-11
    aspect = math.exp(-d)
    one_row = abs(math.log(11 / (6 * aspect)))                        # 1 x 2: 11 x 6 pixels
    two_rows = abs(math.log(6 / (11 * aspect)))                       # 2 x 1: 6 x 11 pixels
    assert two_rows < one_row and round(two_rows, 9) == round(one_row, 9)
    assert round(two_rows, 10) != round(one_row, 10)                  # the test tells 9 from 10 decimals
    m = ActivationMosaic(np.ones((2, 4, 4), np.float32), aspect=aspect)
    assert (m.rows, m.cols) == (1, 2)
    assert (ActivationMosaic(np.ones((2, 4, 4), np.float32), aspect=math.exp(-1e-6)).rows) == 2


# ----------------------------------------------------------------------------- saliency
def test_saliency_default_filter_is_raw():
    g = np.random.default_rng(3).standard_normal((3, 4, 5)).astype(np.float32)
    m = np.abs(g.astype(np.float64)).max()
    want = np.floor(g.astype(np.float64) / m * 127.5 + 128).transpose(1, 2, 0)
    assert np.abs(saliency_to_image(g).astype(int) - want).max() <= 1
    assert np.abs(diverging_index(saliency_to_image(g[:1])) - want[..., 0]).max() <= 1


@pytest.mark.parametrize("scale", [1e-38, 1e-30, 1e-20, 1.0, 1e20, 1e30])
def test_saliency_does_not_depend_on_the_gradient_magnitude(scale):
    """Vanishing (1e-38) and exploding (1e30) gradients show like unit ones: the signed filters keep
    0 at mid-grey, the norm is not squared into float32 underflow / overflow."""
    rng = np.random.default_rng(5)
    g64 = rng.standard_normal((3, 6, 7))
    g64[:, 0, 0] = 0.0
    g = (g64 * scale).astype(np.float32)
    g64 = g.astype(np.float64)                                        # what the function really gets
    m = np.abs(g64).max()
    raw = np.floor(g64 / m * 127.5 + 128).transpose(1, 2, 0)
    assert np.abs(saliency_to_image(g, "raw").astype(int) - raw).max() <= 1, scale
    assert (saliency_to_image(g, "raw")[0, 0] == 128).all()
    mean = g64.mean(axis=0)
    gray = np.floor(mean / np.abs(mean).max() * 127.5 + 128)
    assert np.abs(diverging_index(saliency_to_image(g, "gray")) - gray).max() <= 1, scale
    norm = np.sqrt((g64 ** 2).sum(axis=0))
    want = np.floor(norm / norm.max() * 255 + 0.5)
    got = saliency_to_image(g, "norm")[..., 0].astype(int)
    assert np.abs(got - want).max() <= 1, scale
    assert got[0, 0] == 0 and got.max() == 255
    blur = saliency_to_image(g, "normblur", sigma=1.0)[..., 0]
    np.testing.assert_array_equal(blur, saliency_to_image(g64 / m, "normblur", sigma=1.0)[..., 0])


def test_normalize_unit_of_a_tiny_map():
    """A map whose max is 1e-39 (subnormal float32) scales to [0, 1] like any other (no NaN)."""
    a = np.array([0.0, 1e-39, 5e-40, -1e-39], np.float32)
    v = normalize_unit(a)
    assert v.dtype == np.float32 and np.isfinite(v).all()
    np.testing.assert_allclose(v, [0.0, 1.0, float(a[2]) / float(a[1]), 0.0], rtol=1e-6)
    np.testing.assert_allclose(normalize_unit(a, gain=4.0, gamma=0.5), np.sqrt(np.clip(a / a[1] * 4.0, 0, 1)),
                               rtol=1e-6)


# ----------------------------------------------------------------------------- colour
def test_colour_table_default_is_inferno():
    lut = colormap_lut()
    assert tuple(lut[0]) == INFERNO_0 and tuple(lut[255]) == INFERNO_1
    assert tuple(heatmap(np.ones((1, 1)))[0, 0]) == INFERNO_1


def test_heatmap_of_values_far_above_one_is_the_top_colour():
    """Clipped to 1 before indexing: 255 * 1e10 would wrap to index 0 (black) in OpenCV's rounding."""
    img = heatmap(np.array([[1.5, 1e10, 3e38, 1e7]], np.float32))
    assert (img == np.array(INFERNO_1, np.uint8)).all()


@pytest.mark.parametrize("kind", ["int64", "int32", "list"])
def test_overlay_on_an_integer_image(kind):
    """An image of integers 0..255 that is not uint8 (np.int64 from a list, int32) is blended like
    its uint8 copy: out = round((1 - alpha) * rgb + alpha * colour)."""
    rgb = np.random.default_rng(1).integers(0, 256, (3, 4, 3))
    img = rgb.tolist() if kind == "list" else rgb.astype(kind)
    out = overlay(img, np.ones((3, 4), np.float32), alpha=0.25, cmap="gray")
    assert out.dtype == np.uint8 and out.shape == (3, 4, 3)
    want = np.rint(0.75 * rgb + 0.25 * 255)
    assert np.abs(out.astype(int) - want).max() <= 1


# ----------------------------------------------------------------------------- array-likes
class _TaggedFrame:
    """An array-like (``__array__``) that is no torch tensor, yet carries a ``cpu`` attribute (its
    device tag, as some capture wrappers have)."""
    cpu = "cpu:0"

    def __init__(self, a):
        self.a = np.asarray(a)

    def __array__(self, dtype=None, copy=None):
        return self.a if dtype is None else self.a.astype(dtype)


def test_array_like_with_a_cpu_attribute_is_read_as_an_array():
    v = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    lut = colormap_lut("gray")
    np.testing.assert_array_equal(heatmap(_TaggedFrame(v), "gray")[..., 0], lut[np.rint(v * 255).astype(int), 0])
    m = ActivationMosaic(_TaggedFrame(v[None]), separator=0)
    np.testing.assert_array_equal(m.image[..., 0], np.rint(v * 255))


@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_a_gain_past_float32_keeps_silent_pixels_black(gamma):
    """gain 1e39 is inf in float32: every positive value is white, zero and below stay black
    (0 x inf is NaN there, which OpenCV 5 would draw white)."""
    a = np.array([[[0.0, 1.0], [-1.0, 1e-30]], [[0.0, 0.0], [0.0, 0.0]]], np.float32)
    for normalize in ("unit", "layer"):
        m = ActivationMosaic(a, normalize=normalize, gain=1e39, gamma=gamma, separator=0, aspect=2.0)
        np.testing.assert_array_equal(_tiles(m), [[[0, 255], [0, 255]], [[0, 0], [0, 0]]])
