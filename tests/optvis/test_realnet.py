"""The default optimized images on the real MobileNetV2 (IMAGENET1K_V1, offline): what the issue asks of them,
measured here with few steps (the full comparison with lucent is benchmarks/bench_optvis.py).

Each image is judged by this test alone: the unit's value through a forward hook of its own, under random
shifts (±16 px), scales (0.9-1.1) and rotations (±10°) drawn with torchvision's own resampling (not the
optimizer's transforms), against a real photograph of what the unit is about (the cat photo).
"""
import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import affine

from cnnvis_gui.atlas import maximize

STEPS = 64


def draws(n=16, seed=7):
    g = np.random.default_rng(seed)
    return [dict(angle=float(g.uniform(-10, 10)), translate=[int(g.integers(-16, 17)), int(g.integers(-16, 17))],
                 scale=float(g.uniform(0.9, 1.1)), shear=[0.0]) for _ in range(n)]


def transformed(x, spec, n=16):
    """n randomly shifted / scaled / rotated copies of the normalized 1 x 3 x H x W input x (fill: mean colour)."""
    return torch.cat([affine(x, interpolation=InterpolationMode.BILINEAR, fill=0.0, **d) for d in draws(n)])


def read(model, layer, x):
    seen = {}
    mod = model if layer == "" else dict(model.named_modules())[layer]
    h = mod.register_forward_hook(lambda m, a, o: seen.__setitem__("a", o.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return seen["a"]


@pytest.fixture(autouse=True)
def _no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))


def test_tabby_is_read_as_tabby_from_every_side_with_natural_contrast(realnet):
    m, spec = realnet.model, realnet.spec
    tabby = realnet.label_index("tabby")
    res = maximize(m, spec, "output", tabby, max_iter=STEPS)
    cat = spec.to_tensor(realnet.photo("chelsea"))
    logits = read(m, "", transformed(res.x, spec))
    assert (logits.argmax(1) == tabby).float().mean() >= 0.9
    assert float(logits[:, tabby].mean()) > 2 * float(read(m, "", cat)[0, tabby])
    assert res.image.std() / 255 >= 0.10
    assert res.activation == pytest.approx(float(read(m, "", res.x)[0, tabby]), rel=1e-4)
    assert "Fourier" in res.description and "decorrelated colour" in res.description


def test_the_eye_unit_beats_the_cat_photo_under_transforms(realnet):
    """features.13 channel 91 answers to the cat's eyes (the getting-started tour)."""
    m, spec = realnet.model, realnet.spec
    res = maximize(m, spec, "features.13", 91, max_iter=STEPS)
    got = read(m, "features.13", transformed(res.x, spec))[:, 91].mean((1, 2))
    cat = read(m, "features.13", transformed(spec.to_tensor(realnet.photo("chelsea")), spec))[:, 91].mean((1, 2))
    assert float(got.mean()) > 2 * float(cat.mean())
    assert res.image.std() / 255 >= 0.10


def test_diversity_gives_different_tabbies_that_stay_tabbies(realnet):
    """Two images of 'tabby' in one run: with the default diversity their Gram matrices at the last block differ
    far more than without it, and each is still read as a tabby, above the cat photo's logit."""
    from cnnvis_gui.atlas.objective_run import DIVERSITY_WEIGHT, gram_similarity, optimize_objective
    from cnnvis_gui.atlas.optimize import params_for
    from cnnvis_gui.optvis import class_logit
    m, spec = realnet.model, realnet.spec
    tabby = realnet.label_index("tabby")
    p = params_for("fourier", max_iter=STEPS)
    runs = {w: optimize_objective(m, spec, class_logit(tabby), 2, p, w, "features.18.2", use_cache=False,
                                  key=("output", tabby)) for w in (0.0, DIVERSITY_WEIGHT)}
    plain, diverse = (gram_similarity(m, runs[w].x, "features.18.2") for w in (0.0, DIVERSITY_WEIGHT))
    assert diverse < plain - 0.3, (plain, diverse)
    logits = read(m, "", runs[DIVERSITY_WEIGHT].x)
    cat = float(read(m, "", spec.to_tensor(realnet.photo("chelsea")))[0, tabby])
    assert (logits.argmax(1) == tabby).all() and (logits[:, tabby] > cat).all(), (logits[:, tabby], cat)
