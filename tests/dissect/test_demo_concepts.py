"""The shapes demo's concept set: drawn from the demo's own generator, seeded, a Broden folder."""
import cv2
import numpy as np

from cnnvis_gui.dissect import open_concepts
from cnnvis_gui.dissect.demo import COLOUR_NAMES, draw_demo_concepts
from cnnvis_gui.models.demo_nets import SHAPES_LABELS
from cnnvis_gui.models.train_demo import make_shape_parts


def test_the_demo_concepts_are_the_generators_images_with_their_masks(tmp_path):
    folder = tmp_path / "demo"
    for _ in draw_demo_concepts(folder, n=20, seed=123):
        pass
    cs = open_concepts(folder)
    assert cs.format == "broden" and cs.categories == ["shape", "color", "texture"] and len(cs) == 20
    names = {c.category: [] for c in cs.concepts}
    for c in cs.concepts:
        names[c.category].append(c.name)
    assert names["shape"] == list(SHAPES_LABELS) and names["color"] == [n for n, _ in COLOUR_NAMES]
    assert names["texture"] == ["flat", "gradient", "blotchy"]
    # image 0 is the generator's own image for the seed; its shape mask is where the figure covers a pixel
    rng = np.random.default_rng(123)
    order = np.arange(20) % 10
    rng.shuffle(order)
    img, alpha, _, kind = make_shape_parts(int(order[0]), rng)
    assert np.array_equal(cv2.imread(str(folder / "images" / "00000.png")), img)
    labels = cs.labels(0, (64, 64))
    shape = labels.maps[0]
    sid = cs.dense[int(order[0]) + 1]
    assert np.array_equal(shape == sid, alpha >= 0.5) and set(np.unique(shape)) == {0, sid}
    texture = labels.maps[2]
    assert np.array_equal(texture > 0, alpha < 0.5)
    assert (labels.maps[1] > 0).all()                         # every pixel has a colour name
    # a second call keeps the finished folder as it is
    stamp = (folder / "index.csv").stat().st_mtime_ns
    assert list(draw_demo_concepts(folder, n=20, seed=123)) == [20]
    assert (folder / "index.csv").stat().st_mtime_ns == stamp
