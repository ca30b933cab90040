"""Pass 1 checks every mask from its header; a mask whose header is not a plain label map is decoded there.

The ids a mask holds are checked when the tally reads it (``ConceptSet.labels``), with the same
message; everything a header shows (missing file, colour where a label map is due, another size,
a broken chunk) still stops pass 1 at once.
"""
import cv2
import numpy as np
import pytest

from cnnvis_gui.dissect.concepts import ConceptError
from cnnvis_gui.dissect.demo import demo_concepts_folder, draw_demo_concepts
from cnnvis_gui.dissect.formats import open_concepts

from .helpers import make_concepts


def _no_decode(raw, path):
    raise AssertionError(f"decoded {path}")


def test_plain_label_maps_are_checked_without_decoding(tmp_path):
    cs = open_concepts(make_concepts(tmp_path / "c", n=4))
    cs.decode = _no_decode
    for i in range(len(cs)):
        cs.check(i, (32, 32))


def test_the_demos_broden_masks_are_checked_without_decoding(tmp_path):
    folder = demo_concepts_folder(8, cache_dir=tmp_path)
    for _ in draw_demo_concepts(folder, 8):
        pass
    cs = open_concepts(folder)
    assert cs.format == "broden" and all(len(im.masks) == 3 for im in cs.images)
    cs.decode = _no_decode
    for i in range(len(cs)):
        cs.check(i, (64, 64))


def test_an_unknown_id_is_refused_when_the_masks_are_read(tmp_path):
    c = make_concepts(tmp_path / "c", n=4)
    m = cv2.imread(str(c / "masks" / "im001.png"), cv2.IMREAD_UNCHANGED)
    m[0, 0] = 9
    cv2.imwrite(str(c / "masks" / "im001.png"), m)
    cs = open_concepts(c)
    cs.check(1, (32, 32))                                        # the header is a plain label map
    with pytest.raises(ConceptError, match="holds concept id 9"):
        cs.labels(1, (32, 32))


@pytest.mark.parametrize("bad, words", [
    (lambda c: cv2.imwrite(str(c / "masks" / "im001.png"), np.full((32, 32, 3), 2, np.uint8)),
     "3-channel (colour) image, not a label map"),
    (lambda c: (c / "masks" / "im001.png").write_bytes(
        (c / "masks" / "im001.png").read_bytes()[:40]), "im001.png"),
    (lambda c: (c / "masks" / "im001.png").unlink(), "is missing"),
])
def test_what_a_header_shows_is_refused_in_pass_1(tmp_path, bad, words):
    c = make_concepts(tmp_path / "c", n=4)
    cs = open_concepts(c)
    bad(c)
    with pytest.raises(ConceptError, match=words.replace("(", r"\(").replace(")", r"\)")):
        cs.check(1, (32, 32))


def test_a_broden_mask_of_another_size_is_refused_in_pass_1(tmp_path):
    folder = demo_concepts_folder(4, cache_dir=tmp_path)
    for _ in draw_demo_concepts(folder, 4):
        pass
    cs = open_concepts(folder)
    rel = cs.images[2].masks[1]
    cv2.imwrite(str(cs.root / rel), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ConceptError, match="must have one size|is 32x32"):
        cs.check(2, (64, 64))
