"""The saliency display on the real network: guided backprop of 'Egyptian cat' on the cat photo.

On real networks a handful of outlier pixels own the maximum of a gradient, so the toolbox's max scale
shows an almost uniform picture; the default (clip at the 98th percentile of |g|) shows what the method
found.  Measured here on the real pretrained MobileNetV2 (the ``realnet`` fixture):

* *visible fraction*: the share of pixels at least 16 levels (of 255) away from the picture's zero
  colour (mid-grey for signed raw, the diverging map's centre for a signed single map, black for norms);
* *edge correlation*: Pearson correlation of the displayed deviation with the Sobel edge magnitude of the
  photo as the model sees it (guided backprop is known to trace edges: Springenberg et al. 2015).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cnnvis_gui.core import saliency, saliency_to_image
from cnnvis_gui.core.saliency_display import diverging_lut

ZERO = {"raw": 128, "gray": diverging_lut()[128].astype(np.float32), "norm": 0, "normblur": 0}


@pytest.fixture(scope="module")
def cat_map(realnet):
    """(guided-backprop map 3 x 224 x 224 of 'Egyptian cat', the model's view of the photo as RGB)."""
    x = realnet.spec.to_tensor(realnet.photo("chelsea"))
    g = saliency(realnet.model, x, "classifier.1", unit=realnet.label_index("Egyptian cat"), method="guided")
    return g[0].numpy(), realnet.spec.to_image(x)


def visible_fraction(img: np.ndarray, f: str) -> float:
    dev = np.abs(img.astype(np.float32) - ZERO[f]).max(axis=-1)
    return float((dev > 16).mean())


def edge_correlation(img: np.ndarray, f: str, rgb: np.ndarray) -> float:
    dev = np.abs(img.astype(np.float32) - ZERO[f]).max(axis=-1)
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    edges = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    return float(np.corrcoef(dev.ravel(), edges.ravel())[0, 1])


def test_the_map_is_heavy_tailed(cat_map):
    g, _ = cat_map
    a = np.abs(g)
    assert a.max() > 10 * np.percentile(a, 98)       # the reason: a few pixels own the maximum


@pytest.mark.parametrize("f", ["raw", "gray", "norm"])
def test_max_scale_hides_the_structure_and_the_default_shows_it(cat_map, f):
    g, rgb = cat_map
    exact = saliency_to_image(g, f, clip="max")
    robust = saliency_to_image(g, f)                  # the default: 98th percentile
    assert visible_fraction(exact, f) < 0.05          # measured: raw 0.005, gray 0.016, norm 0.020
    assert visible_fraction(robust, f) > 0.30         # measured: raw 0.41, gray 0.42, norm 0.49
    # what becomes visible is the photo's structure, not noise
    assert edge_correlation(robust, f, rgb) > max(0.15, edge_correlation(exact, f, rgb))


def test_normblur_and_captums_mass_scale_are_brighter_too(cat_map):
    g, _ = cat_map
    assert visible_fraction(saliency_to_image(g, "normblur"), "normblur") > 0.5
    assert visible_fraction(saliency_to_image(g, "normblur", clip="max"), "normblur") < 0.3
    # captum's cumulative-mass threshold lies between: brighter than max, far dimmer than the percentile
    mass = visible_fraction(saliency_to_image(g, "raw", clip="mass"), "raw")
    assert visible_fraction(saliency_to_image(g, "raw", clip="max"), "raw") < mass < 0.1


def test_signs_split_the_real_map(cat_map):
    g, _ = cat_map
    pos = saliency_to_image(g, "gray", sign="positive")[..., 0]
    neg = saliency_to_image(g, "gray", sign="negative")[..., 0]
    mean = g.mean(axis=0)
    assert (pos[mean <= 0] == 0).all() and (neg[mean >= 0] == 0).all()
    assert (pos > 16).mean() > 0.1 and (neg > 16).mean() > 0.1
