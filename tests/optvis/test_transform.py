"""The robustness transforms: their geometry traced with single bright pixels and against torch's own ops."""
import math

import numpy as np
import pytest
import torch

from cnnvis_gui.core import CnnvisError
from cnnvis_gui.optvis import Jitter, Pad, RandomRotate, RandomScale, Transforms, standard_transforms
from cnnvis_gui.optvis.transform import Transform


class Fixed(Transform):
    """A transform whose matrix is given (the random ones' draws are checked separately)."""

    def __init__(self, m):
        self.m = torch.as_tensor(m, dtype=torch.float64)

    def matrix(self, gen, h, w):
        return self.m


def gens(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def dot(h, w, y, x, c=3):
    img = torch.zeros(1, c, h, w)
    img[0, :, y, x] = 1.0
    return img


def test_no_transform_and_zero_draws_are_exact():
    img = torch.rand(2, 3, 9, 13)
    assert torch.equal(Transforms([])(img, gens(2)), img)
    same = Transforms([Jitter(0), RandomScale(1, 1), RandomRotate(0)])(img, gens(2))
    torch.testing.assert_close(same, img, rtol=0, atol=1e-6)


def test_an_integer_shift_moves_every_pixel_and_uncovers_the_fill():
    img = torch.rand(1, 3, 10, 12)
    shift = Transforms([Fixed([[1, 0, 3], [0, 1, -2], [0, 0, 1]])], fill=0.25)   # dx = 3 right, dy = 2 up
    out = shift(img, gens(1))
    torch.testing.assert_close(out[..., :8, 3:], img[..., 2:, :9], rtol=0, atol=1e-6)
    assert torch.allclose(out[..., :, :3], torch.tensor(0.25)) and torch.allclose(out[..., 8:, :], torch.tensor(0.25))


def test_a_quarter_turn_is_clockwise_on_screen_about_the_centre():
    img = torch.rand(1, 2, 7, 7)
    rot = Transforms([Fixed([[0, -1, 0], [1, 0, 0], [0, 0, 1]])])            # RandomRotate's matrix at +90 degrees
    torch.testing.assert_close(rot(img, gens(1)), torch.rot90(img, k=-1, dims=(2, 3)), rtol=0, atol=1e-5)
    # RandomRotate(90) draws its angle in [-90, 90]: the matrix is a rotation by that angle
    m = RandomRotate(90).matrix(torch.Generator().manual_seed(3), 7, 7)
    a = math.atan2(m[1, 0].item(), m[0, 0].item())
    torch.testing.assert_close(m, torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0],
                                                [0, 0, 1]], dtype=torch.float64))


@pytest.mark.parametrize("h,w", [(11, 11), (9, 15)])
def test_scale_and_pad_map_pixels_where_the_matrix_says(h, w):
    """A bright pixel at (y, x) lands at A (x - cx, y - cy) + centre, for a scale of 2 (exact on the grid)."""
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y, x = 3, 4                                # lands at (1, 3) / (2, 1): inside
    out = Transforms([Fixed(np.diag([2.0, 2.0, 1.0]))])(dot(h, w, y, x), gens(1))
    ty, tx = cy + 2 * (y - cy), cx + 2 * (x - cx)
    peak = torch.nonzero(out[0, 0] == out[0, 0].max())
    assert peak.tolist() and all(abs(py - ty) <= 1 and abs(px - tx) <= 1 for py, px in peak.tolist())
    assert abs(float((out[0, 0] * torch.arange(h)[:, None]).sum() / out[0, 0].sum()) - ty) < 1e-4   # the centroid
    assert abs(float((out[0, 0] * torch.arange(w)[None, :]).sum() / out[0, 0].sum()) - tx) < 1e-4
    # Pad(p) shrinks by W / (W + 2p) and H / (H + 2p): lucent's pad-then-resize
    torch.testing.assert_close(Pad(3).matrix(None, h, w),
                               torch.diag(torch.tensor([w / (w + 6), h / (h + 6), 1.0], dtype=torch.float64)))


def test_the_list_composes_in_order():
    a = torch.tensor([[1, 0, 2], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)       # shift right by 2
    b = torch.tensor([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)      # then a quarter turn
    t = Transforms([Fixed(a), Fixed(b)])
    torch.testing.assert_close(t.matrices(gens(1), 5, 5)[0], b @ a)
    img = torch.rand(1, 1, 9, 9)
    once = t(img, gens(1))
    twice = Transforms([Fixed(b)])(Transforms([Fixed(a)])(img, gens(1)), gens(1))
    torch.testing.assert_close(once[..., 2:-2, 2:-2], twice[..., 2:-2, 2:-2], rtol=0, atol=1e-5)


def test_reflect_fill_mirrors():
    img = torch.rand(1, 1, 6, 8)
    out = Transforms([Fixed([[1, 0, 2], [0, 1, 0], [0, 0, 1]])], fill="reflect")(img, gens(1))
    torch.testing.assert_close(out[..., 2:], img[..., :6], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[..., 1], img[..., 0], rtol=0, atol=1e-6)     # a mirror at the pixel edge
    torch.testing.assert_close(out[..., 0], img[..., 1], rtol=0, atol=1e-6)


def test_each_image_draws_its_own_transforms_from_its_own_generator():
    t = standard_transforms()
    img = torch.rand(3, 3, 16, 20)
    batch = t(img, gens(3, seed=10))
    for i in range(3):
        torch.testing.assert_close(batch[i:i + 1], t(img[i:i + 1], [torch.Generator().manual_seed(10 + i)]))
    assert not torch.allclose(batch[0], batch[1])


def test_random_draws_stay_in_their_ranges():
    g = torch.Generator().manual_seed(0)
    shifts = np.array([Jitter(16).matrix(g, 8, 8)[:2, 2].numpy() for _ in range(400)])
    assert np.abs(shifts).max() <= 16 and np.abs(shifts).max() > 14 and abs(shifts.mean()) < 2
    scales = np.array([RandomScale(0.9, 1.1).matrix(g, 8, 8)[0, 0].item() for _ in range(400)])
    assert 0.9 <= scales.min() < 0.91 and 1.09 < scales.max() <= 1.1
    angles = np.array([math.degrees(math.atan2(m[1, 0], m[0, 0])) for m in
                       (RandomRotate(10).matrix(g, 8, 8).numpy() for _ in range(400))])
    assert -10 <= angles.min() < -9 and 9 < angles.max() <= 10
    assert "jitter ±16 px, scale 0.8-1.2, rotation ±10°" in standard_transforms().describe()


@pytest.mark.parametrize("make,match", [(lambda: Jitter(-1), "jitter"), (lambda: RandomScale(1.2, 1.1), "0 < lo"),
                                        (lambda: RandomRotate(float("nan")), "rotation"), (lambda: Pad(-2), "pad"),
                                        (lambda: Transforms([], fill=2), "fill")])
def test_bad_settings_get_one_line(make, match):
    with pytest.raises(CnnvisError, match=match):
        make()
