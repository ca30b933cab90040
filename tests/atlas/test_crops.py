"""Receptive-field crops: contain the hit position, exclude zero-gradient pixels, tight boxes."""
import numpy as np
import pytest

from cnnvis_gui.atlas import TopKScan
from cnnvis_gui.atlas.crops import ReceptiveFields, crop_hits, input_image, input_position, support_box, Box
from cnnvis_gui.atlas.montage import unit_montage
from cnnvis_gui.core import saliency

from .helpers import TINY_SPEC, tiny_model

# theoretical receptive field sizes of TinyNet (conv3 / pool2 / conv3 / pool2 / conv3)
RF = {"features.1": 3, "features.4": 8, "features.7": 18}
MAP = {"features.1": 32, "features.4": 16, "features.7": 8}


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    from .helpers import make_images
    root = tmp_path_factory.mktemp("crops")
    make_images(root / "im", n=24, bad=False)
    model = tiny_model()
    s = TopKScan(model, TINY_SPEC, root / "im", list(RF) + ["output"], k=3, batch_size=8, use_cache=False)
    for _ in s.run():
        pass
    return model, s.result


def test_support_box():
    m = np.zeros((10, 12), bool)
    assert support_box(m) is None
    m[2, 3] = m[5, 7] = True
    assert support_box(m) == Box(2, 3, 6, 8)


@pytest.mark.parametrize("layer", list(RF))
def test_crops_contain_hit_and_exclude_zero_gradient(scanned, layer):
    model, res = scanned
    rf = ReceptiveFields(model, TINY_SPEC, probes=4)
    try:
        checked = 0
        for unit in (0, 3, 5):
            for hit in res.hits(layer, unit):
                c = rf.crops(layer, unit, hit)
                b = c.box
                if not c.support.any():      # a unit that is off on every input: the whole input
                    assert hit.value <= 0 and b == Box(0, 0, 32, 32)
                    continue
                checked += 1
                cy, cx = input_position(hit.y, hit.x, (MAP[layer],) * 2, (32, 32))
                assert b.contains(cy, cx)
                assert b.height <= RF[layer] and b.width <= RF[layer]
                # independent gradient of the unit at the hit position on the hit image
                x, rgb = input_image(TINY_SPEC, hit.path)
                g = saliency(model, x, layer, unit, "gradient", objective=(hit.y, hit.x))[0]
                nz = (g != 0).any(dim=0).numpy()
                outside = nz.copy()
                outside[b.y0:b.y1, b.x0:b.x1] = False
                assert not outside.any()
                # tight: every border row / column of the box has a non-zero gradient pixel
                s = c.support[b.y0:b.y1, b.x0:b.x1]
                assert s[0].any() and s[-1].any() and s[:, 0].any() and s[:, -1].any()
                assert not c.support[~np.pad(np.ones((b.height, b.width), bool),
                                             ((b.y0, 32 - b.y1), (b.x0, 32 - b.x1)))].any()
                assert c.image.shape == c.deconv.shape == (b.height, b.width, 3)
                np.testing.assert_array_equal(c.image, rgb[b.y0:b.y1, b.x0:b.x1])
        assert checked >= 3
    finally:
        rf.close()


def test_flat_layer_uses_whole_input_and_montage(scanned):
    model, res = scanned
    crops = crop_hits(model, TINY_SPEC, "output", 1, res.hits("output", 1), method="deconvnet")
    assert all(c.box == Box(0, 0, 32, 32) for c in crops)
    m = unit_montage(crops, k=9, tile=20)
    assert m.dtype == np.uint8 and m.shape[2] == 3 and m.shape[0] == 3 * 20 + 2 * 2


def test_pattern_mode_images(scanned, tmp_path):
    from cnnvis_gui.atlas import maximize, optimized_images, top1_crops
    model, res = scanned
    tiles = top1_crops(model, TINY_SPEC, res, "features.4")
    assert len(tiles) == 12 and all(t is not None and t.dtype == np.uint8 for t in tiles)
    maximize(model, TINY_SPEC, "features.4", 1, cache_dir=tmp_path, max_iter=5)
    opt = optimized_images(model, TINY_SPEC, "features.4", 3, cache_dir=tmp_path, max_iter=5)
    assert opt[0] is None and opt[1].shape == (32, 32, 3) and opt[2] is None
