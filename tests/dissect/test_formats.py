"""Done when: a Broden-format folder generated here gives the same result as the same data in the
simple format; and Broden's own rules (per-category image sets, whole-image labels, R + 256 G
masks, primary categories) against the brute-force reference."""
import cv2
import numpy as np
import pytest
import torch

from cnnvis_gui.dissect import Dissection, open_concepts

from .helpers import COLOURS, SHAPES, SPEC, colour_net, draw, make_concepts, write_broden
from .reference import activations, dissect_reference

LABELS = [(c[0], c[1], c[2]) for c in COLOURS] + [(s[0], s[1], s[2]) for s in SHAPES]


def _run(folder, q=0.1, layers=("pool",), **kw):
    d = Dissection(colour_net(), SPEC, folder, list(layers), quantile=q, batch_size=8, use_cache=False, **kw)
    for _ in d.run():
        pass
    return d.result


def test_broden_equals_the_same_data_in_the_simple_format(tmp_path):
    simple = make_concepts(tmp_path / "simple", n=18, seed=11)
    images = []
    for f in sorted((simple / "images").glob("*.png")):
        lab = cv2.imread(str(simple / "masks" / f.name), cv2.IMREAD_UNCHANGED).astype(np.int64)
        colour = np.where(lab <= 4, lab, 0)
        shape = np.where(lab >= 5, lab, 0)
        images.append((f.stem, cv2.imread(str(f)), {"color": [colour], "shape": [shape]}))
    broden = write_broden(tmp_path / "broden", images, LABELS, ["color", "shape"], shift={5: 300, 6: 600})
    cs = open_concepts(broden)
    assert cs.format == "broden" and [c.id for c in cs.concepts] == [1, 2, 3, 4, 305, 606]   # the G channel used
    a, b = _run(simple, layers=("pool", "relu")), _run(broden, layers=("pool", "relu"))
    assert a.images == b.images == 18
    for layer in ("pool", "relu"):
        assert [u.to_dict() for u in a.layer(layer).units] == [u.to_dict() for u in b.layer(layer).units]
    assert [(c["name"], c["category"], c["pixels"], c["images"]) for c in a.concepts] == \
        [(c["name"], c["category"], c["pixels"], c["images"]) for c in b.concepts]
    assert a.layer("pool").units[0].concept == "red"


def test_broden_category_image_sets_and_whole_image_labels_follow_the_reference(tmp_path):
    """Shape IoUs sum over the images annotated in 'shape' only; a scene label covers its image."""
    rng = np.random.default_rng(5)
    images, refs = [], []
    for i in range(16):
        img, colour, shape = draw(rng)
        cats = {"color": [colour.astype(np.int64)]}
        annotated = {"color"}
        if i % 2 == 0:                                   # half the images have shape annotations
            cats["shape"] = [shape.astype(np.int64)]
            annotated.add("shape")
        scene = 7 if colour.mean() > 0.3 else 8          # a whole-image label
        cats["scene"] = [scene]
        annotated.add("scene")
        images.append((f"im{i:02d}", img, cats))
        refs.append({"maps": [m for c in ("color", "shape") for m in cats.get(c, [])], "scalars": [scene],
                     "annotated": annotated, "size": img.shape[:2]})
    labels = LABELS + [(7, "busy", "scene"), (8, "plain", "scene")]
    broden = write_broden(tmp_path / "b", images, labels, ["color", "shape", "scene"])
    res = _run(broden, q=0.2)
    x = torch.from_numpy(np.stack([SPEC.to_array(im) for _, im, _ in images]))
    acts = activations(colour_net(), [x[i:i + 8] for i in range(0, 16, 8)], "pool")
    names = {n: (nm, c) for n, nm, c in labels}
    ref = dissect_reference(acts, refs, names, ["color", "shape", "scene"], 0.2)
    for u, (name, iou, threshold) in zip(res.layer("pool").units, ref["units"]):
        assert u.threshold == threshold and u.concept == name
        assert u.iou == pytest.approx(iou, abs=1e-4)
    assert {c["name"]: c["images"] for c in res.concepts}["square"] <= 8


def test_broden_categories_can_be_chosen_and_primary_categories_follow_coverage(tmp_path):
    rng = np.random.default_rng(1)
    images = []
    for i in range(6):
        img, colour, shape = draw(rng)
        images.append((f"im{i}", img, {"color": [colour.astype(np.int64)], "shape": [shape.astype(np.int64)]}))
    broden = write_broden(tmp_path / "b", images, LABELS, ["color", "shape"])
    only = open_concepts(broden, categories=["shape"])
    assert only.categories == ["shape"] and [c.name for c in only.concepts] == ["square", "disk"]
    # coverage decides: a label listed in two c_*.csv files belongs where it covers more (ties: the later one)
    (broden / "c_shape.csv").write_text("code,number,name,frequency,coverage,syns\n1,5,square,1,1.0,\n2,6,disk,1,1.0,\n"
                                        "3,1,red,1,0.5,\n")
    (broden / "c_color.csv").write_text("code,number,name,frequency,coverage,syns\n1,1,red,1,2.0,\n2,2,green,1,1.0,\n"
                                        "3,3,blue,1,1.0,\n4,4,yellow,1,1.0,\n5,6,disk,1,1.0,\n")
    cs = open_concepts(broden)
    assert {c.name: c.category for c in cs.concepts} == {"red": "color", "green": "color", "blue": "color",
                                                         "yellow": "color", "square": "shape", "disk": "shape"}
    res = _run(broden)
    assert res.categories == ["color", "shape"]
