"""Receptive-field crops against independent references (killing the survivors of a mutation run).

Each figure is recomputed here from its definition: the support is the union of the non-zero
plain-gradient pixels of the hit image and of seeded N(0, 1) probes; the "max deconv" image is
``saliency_to_image`` of the rule's saliency at the hit position; a tile is ``cv2.resize`` with
the interpolation the docstring names, centred on a dark square.
"""
import cv2
import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_gui.atlas import TopKScan
from cnnvis_gui.atlas.crops import (Box, ReceptiveFields, crop_hits, fit_tile, input_image, input_position,
                                    support_box)
from cnnvis_gui.core import CnnvisError, InputSpec, saliency, saliency_to_image
from cnnvis_gui.sources import load_image

from .helpers import TINY_SPEC, make_images, tiny_model

LAYERS = ("features.1", "features.4", "features.7")


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    root = tmp_path_factory.mktemp("cropref")
    make_images(root / "im", n=12, bad=False)
    model = tiny_model()
    s = TopKScan(model, TINY_SPEC, root / "im", list(LAYERS), k=2, batch_size=6, use_cache=False)
    for _ in s.run():
        pass
    return model, s.result


def _support(model, spec, x, layer, unit, pos):
    g = saliency(model, x, layer, unit, "gradient", objective=pos)
    return (g != 0).any(dim=1).any(dim=0).numpy()


def _probe_support(model, spec, layer, unit, pos, probes, seed):
    if probes <= 0:
        return np.zeros((spec.height, spec.width), bool)
    x0 = torch.randn((probes,) + spec.shape, generator=torch.Generator().manual_seed(seed))
    return _support(model, spec, x0, layer, unit, pos)


@pytest.mark.parametrize("probes,seed", [(4, 0), (1, 3), (0, 0)])
def test_support_is_the_gradient_support_of_the_hit_and_the_probes(scanned, probes, seed):
    model, res = scanned
    rf = ReceptiveFields(model, TINY_SPEC, probes=probes, seed=seed)
    try:
        seen_probe_only = 0
        for layer in LAYERS:
            for unit in (1, 4):
                for hit in res.hits(layer, unit):
                    c = rf.crops(layer, unit, hit)
                    assert c.hit is hit
                    x, rgb = input_image(TINY_SPEC, hit.path)
                    own = _support(model, TINY_SPEC, x, layer, unit, (hit.y, hit.x))
                    probe = _probe_support(model, TINY_SPEC, layer, unit, (hit.y, hit.x), probes, seed)
                    np.testing.assert_array_equal(c.support, own | probe)
                    np.testing.assert_array_equal(rf.probe_support(layer, unit, hit.y, hit.x), probe)
                    assert c.box == (support_box(c.support) or Box(0, 0, 32, 32))
                    np.testing.assert_array_equal(c.full_image, rgb)
                    seen_probe_only += int((probe & ~own).any())
        assert (seen_probe_only > 0) == (probes > 0)   # the probes widen some boxes, or there are none
    finally:
        rf.close()


def test_the_defaults_are_4_probes_and_seed_0_and_the_seed_matters(scanned):
    model, res = scanned
    hit = res.hits("features.7", 1)[0]
    d = ReceptiveFields(model, TINY_SPEC)
    try:
        for layer in LAYERS:
            np.testing.assert_array_equal(d.probe_support(layer, 1, 1, 2),
                                          _probe_support(model, TINY_SPEC, layer, 1, (1, 2), 4, 0))
    finally:
        d.close()
    a, b = ReceptiveFields(model, TINY_SPEC, probes=1), ReceptiveFields(model, TINY_SPEC, probes=1, seed=7)
    try:
        pos = (hit.y, hit.x)
        np.testing.assert_array_equal(a.probe_support("features.7", 1, *pos),
                                      _probe_support(model, TINY_SPEC, "features.7", 1, pos, 1, 0))
        assert not np.array_equal(a.probe_support("features.7", 1, *pos), b.probe_support("features.7", 1, *pos))
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("method,filt", [("guided", "raw"), ("deconvnet", "norm"), ("gradient", "gray")])
def test_max_deconv_image_is_the_rule_at_the_hit_position(scanned, method, filt):
    model, res = scanned
    for layer in ("features.4", "features.7"):
        hits = res.hits(layer, 2)
        crops = crop_hits(model, TINY_SPEC, layer, 2, hits, probes=2, method=method, filter=filt)
        for hit, c in zip(hits, crops):
            x, _ = input_image(TINY_SPEC, hit.path)
            s = saliency(model, x, layer, 2, method, objective=(hit.y, hit.x))[0].numpy()
            ref = saliency_to_image(s, filt)
            np.testing.assert_array_equal(c.full_deconv, ref)
            np.testing.assert_array_equal(c.deconv, c.box.crop(ref))
            sup = _support(model, TINY_SPEC, x, layer, 2, (hit.y, hit.x)) | _probe_support(
                model, TINY_SPEC, layer, 2, (hit.y, hit.x), 2, 0)
            np.testing.assert_array_equal(c.support, sup)


def test_bgr_models_get_their_deconv_image_in_rgb(scanned):
    """A BGR model's saliency has its channels in B, G, R order: the picture shows them as R, G, B."""
    model, res = scanned
    bgr = InputSpec(channels=3, height=32, width=32, mean=(0.5,) * 3, std=(0.25,) * 3, channel_order="BGR")
    hit = res.hits("features.4", 2)[0]
    (c,) = crop_hits(model, bgr, "features.4", 2, [hit], probes=0, method="guided")
    x, _ = input_image(bgr, hit.path)
    s = saliency(model, x, "features.4", 2, "guided", objective=(hit.y, hit.x))[0].numpy()
    np.testing.assert_array_equal(c.full_deconv, saliency_to_image(np.ascontiguousarray(s[::-1]), "raw"))
    assert not np.array_equal(c.full_deconv, saliency_to_image(s, "raw"))


def test_the_fit_reaches_the_crops(scanned):
    model, res = scanned
    hit = res.hits("features.7", 1)[0]          # the images are 40 x 36: each fit sees another picture
    x, rgb = input_image(TINY_SPEC, hit.path, "letterbox")
    np.testing.assert_array_equal(x[0].numpy(), TINY_SPEC.to_array(load_image(hit.path), "letterbox"))
    assert not np.array_equal(rgb, input_image(TINY_SPEC, hit.path)[1])
    (c,) = crop_hits(model, TINY_SPEC, "features.7", 1, [hit], probes=0, fit="letterbox")
    np.testing.assert_array_equal(c.full_image, rgb)
    np.testing.assert_array_equal(c.support, _support(model, TINY_SPEC, x, "features.7", 1, (hit.y, hit.x)))


def test_only_the_three_rules_are_accepted():
    with pytest.raises(CnnvisError, match="method must be 'guided', 'deconvnet' or 'gradient', got 'smooth'"):
        ReceptiveFields(tiny_model(), TINY_SPEC, method="smooth")
    ReceptiveFields(tiny_model(), TINY_SPEC, method="gradient").close()


def test_input_position_is_the_centre_of_the_map_cell():
    assert input_position(0, 0, (2, 2), (4, 4)) == (0.5, 0.5)
    assert input_position(1, 0, (2, 4), (4, 8)) == (2.5, 0.5)
    assert input_position(3, 2, (4, 4), (4, 4)) == (3.0, 2.0)


def test_box_contains_its_first_row_and_column_not_its_end():
    b = Box(2, 3, 5, 7)
    assert b.contains(2, 3) and b.contains(4.5, 6.5)
    assert not b.contains(5, 3) and not b.contains(2, 7) and not b.contains(1.9, 3) and not b.contains(2, 2.9)
    assert not b.contains(3, 9) and not b.contains(9, 4)


class _Volume(nn.Module):
    """An image as a 1-channel volume (depth = colour): a 1 x 3 x 3 Conv3d, then a 1 x 2 x 2 max-pool
    (N x 4 x 3 x 16 x 16), whose gradient reaches one pixel of each window: input-dependent support."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c3 = nn.Conv3d(1, 4, (1, 3, 3), padding=(0, 1, 1))
        self.pool = nn.MaxPool3d((1, 2, 2))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        v = self.pool(torch.relu(self.c3(x.unsqueeze(1))))
        return self.fc(v.mean((2, 3, 4)))


def test_a_5d_hit_is_cropped_at_its_depth_row_and_column(tmp_path):
    make_images(tmp_path / "im", n=4, bad=False)
    model = _Volume().eval()
    s = TopKScan(model, TINY_SPEC, tmp_path / "im", ["pool"], k=2, use_cache=False)
    for _ in s.run():
        pass
    rf = ReceptiveFields(model, TINY_SPEC, probes=3)
    try:
        checked = widened = 0
        for unit in range(4):
            for hit in s.result.hits("pool", unit):
                d, r, col = np.unravel_index(hit.x, (3, 16, 16))
                c = rf.crops("pool", unit, hit)
                x, _ = input_image(TINY_SPEC, hit.path)
                pos = (int(d), int(r), int(col))
                own = _support(model, TINY_SPEC, x, "pool", unit, pos)
                probe = _probe_support(model, TINY_SPEC, "pool", unit, pos, 3, 0)
                np.testing.assert_array_equal(c.support, own | probe)
                widened += int((probe & ~own).any())
                # the 2 x 2 window of the hit, grown by the 3 x 3 kernel: rows 2r-1 .. 2r+2
                assert c.box.y0 >= 2 * r - 1 and c.box.y1 <= 2 * r + 3 and c.box.x0 >= 2 * col - 1
                assert c.box.x1 <= 2 * col + 3
                checked += 1
        assert checked >= 4 and widened > 0
    finally:
        rf.close()


def _tile_reference(img, size, pad=32):
    h, w = img.shape[:2]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    interp = cv2.INTER_NEAREST if s >= 2 else (cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    r = cv2.resize(img, (nw, nh), interpolation=interp)
    if r.ndim == 2:
        r = r[..., None]
    out = np.full((size, size, 3), pad, np.uint8)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = r[..., :3]
    return out, (y0, x0, nh, nw)


@pytest.mark.parametrize("shape,size", [((5, 3), 10), ((5, 3), 11), ((7, 9), 9), ((7, 9), 12), ((40, 36), 20),
                                        ((12, 20), 10), ((1, 6), 12), ((1, 6), 4), ((9, 1), 4)])
def test_fit_tile_scales_with_the_named_interpolation_and_centres(shape, size):
    rng = np.random.default_rng(sum(shape) + size)
    img = rng.integers(0, 255, shape + (3,), dtype=np.uint8)
    out = fit_tile(img, size)
    ref, (y0, x0, nh, nw) = _tile_reference(img, size)
    assert out.dtype == np.uint8 and out.shape == (size, size, 3)
    np.testing.assert_array_equal(out, ref)
    s = size / max(shape)
    if s >= 2:      # nearest: every source pixel becomes a block of itself
        np.testing.assert_array_equal(out[y0, x0], img[0, 0])
        np.testing.assert_array_equal(out[y0 + nh - 1, x0 + nw - 1], img[-1, -1])
    # the padding is the dark grey around the picture, the same on both sides (+-1)
    assert (out[:y0] == 32).all() and (out[y0 + nh:] == 32).all() and (out[:, :x0] == 32).all()
    assert abs((size - nh - y0) - y0) <= 1 and abs((size - nw - x0) - x0) <= 1


def test_fit_tile_on_gray_and_four_channel_crops_and_a_pad_colour():
    rng = np.random.default_rng(5)
    gray = rng.integers(0, 255, (6, 4, 1), dtype=np.uint8)
    out = fit_tile(gray, 12, pad=0)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    np.testing.assert_array_equal(out[:, 2:10, 0], np.repeat(np.repeat(gray[..., 0], 2, 0), 2, 1))
    rgba = rng.integers(0, 255, (4, 4, 4), dtype=np.uint8)
    np.testing.assert_array_equal(fit_tile(rgba, 8), np.repeat(np.repeat(rgba[..., :3], 2, 0), 2, 1))
    wide = rng.integers(0, 255, (2, 8, 3), dtype=np.uint8)
    out = fit_tile(wide, 8, pad=200)
    assert (out[:3] == 200).all() and (out[5:] == 200).all() and not (out[3:5] == 200).all()


class _SeqNet(nn.Module):
    """Image -> per-pixel features -> a sequence N x C x (H*W) -> a max-pool over it (input-dependent support)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.pix = nn.Conv2d(3, 4, 1)
        self.seq = nn.MaxPool1d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.seq(torch.relu(self.pix(x)).flatten(2)).mean(2))


class _FlatNet(nn.Module):
    """A flat N x F unit over the top-left quarter through a ReLU: its support depends on the image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.pix = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(4 * 16 * 16, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.pix(x))[:, :, :16, :16].flatten(1))


def test_sequence_hits_unite_the_probes_and_flat_hits_do_not(tmp_path):
    """A position in a sequence (N x C x L) is positional: the probes widen its support.  A flat
    feature (N x F) has no position: its support is the hit image's own."""
    make_images(tmp_path / "im", n=6, bad=False)
    seq, flat = _SeqNet().eval(), _FlatNet().eval()
    s = TopKScan(seq, TINY_SPEC, tmp_path / "im", ["seq"], k=2, use_cache=False)
    f = TopKScan(flat, TINY_SPEC, tmp_path / "im", ["fc"], k=2, use_cache=False)
    for scan in (s, f):
        for _ in scan.run():
            pass
    widened = 0
    rf = ReceptiveFields(seq, TINY_SPEC, probes=3)
    try:
        for unit in range(4):
            for hit in s.result.hits("seq", unit):
                c = rf.crops("seq", unit, hit)
                x, _ = input_image(TINY_SPEC, hit.path)
                own = _support(seq, TINY_SPEC, x, "seq", unit, (int(hit.x),))
                probe = _probe_support(seq, TINY_SPEC, "seq", unit, (int(hit.x),), 3, 0)
                np.testing.assert_array_equal(c.support, own | probe)
                widened += int((probe & ~own).any())
    finally:
        rf.close()
    assert widened > 0
    rf = ReceptiveFields(flat, TINY_SPEC, probes=3)
    try:
        partial = 0
        for unit in range(3):
            for hit in f.result.hits("fc", unit):
                c = rf.crops("fc", unit, hit)
                x, _ = input_image(TINY_SPEC, hit.path)
                own = _support(flat, TINY_SPEC, x, "fc", unit, "sum")
                np.testing.assert_array_equal(c.support, own)
                partial += int(own[:16, :16].sum() < 256)
        assert partial > 0            # the ReLU switched some pixels off: the probes would have added them
    finally:
        rf.close()


def test_no_probes_means_no_probe_forward(scanned):
    model, res = scanned
    rf = ReceptiveFields(model, TINY_SPEC, probes=0)
    batches = []
    real = rf.vis.forward
    rf.vis.forward = lambda x, layers=None: batches.append(x.shape[0]) or real(x, layers=layers)
    try:
        hits = res.hits("features.4", 1)
        for hit in hits:
            rf.crops("features.4", 1, hit)
        assert batches == [1] * len(hits) and rf._probe_frame is None
    finally:
        rf.close()
