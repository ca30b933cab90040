"""Masks line up with what the model sees: the spec's crop and letterbox, masks of another size."""
import cv2
import numpy as np
import pytest

from cnnvis_gui.dissect import Dissection
from cnnvis_gui.dissect.tally import mask_geometry

from .helpers import SPEC, colour_net, make_concepts


def _run(folder, **kw):
    d = Dissection(colour_net(), SPEC, folder, ["pool"], quantile=0.1, batch_size=8, use_cache=False, **kw)
    for _ in d.run():
        pass
    return d.result


def test_a_centre_crop_counts_the_part_of_the_mask_the_model_sees(tmp_path):
    """Tall 48 x 32 images, centre-cropped to 32 x 32, equal the same images cropped by hand."""
    tall = make_concepts(tmp_path / "tall", n=12, seed=8, size=(48, 32))
    cut = tmp_path / "cut"
    for sub in ("images", "masks"):
        (cut / sub).mkdir(parents=True)
        for f in sorted((tall / sub).glob("*.png")):
            cv2.imwrite(str(cut / sub / f.name), cv2.imread(str(f), cv2.IMREAD_UNCHANGED)[8:40])
    (cut / "labels.csv").write_text((tall / "labels.csv").read_text())
    a, b = _run(tall, fit="crop"), _run(cut)
    assert [u.to_dict() for u in a.layer("pool").units] == [u.to_dict() for u in b.layer("pool").units]
    assert [c["pixels"] for c in a.concepts] == [c["pixels"] for c in b.concepts]   # hidden rows not counted


def test_geometry_of_each_fit():
    g = mask_geometry((32, 32), (16, 16), SPEC)                  # the input's size: the whole mask
    assert g.canvas == (16, 16) and g.crop == (0, 0, 16, 16) and g.window == (0, 0, 16, 16)
    g = mask_geometry((48, 32), (48, 32), SPEC, "crop")           # rows 8..40 are seen
    assert g.crop == (8, 0, 40, 32) and g.canvas == (32, 32)
    g = mask_geometry((48, 32), (24, 16), SPEC, "crop")           # a half-size mask: rows 4..20
    assert g.crop == (4, 0, 20, 16) and g.canvas == (16, 16)
    g = mask_geometry((16, 32), (16, 32), SPEC, "letterbox")      # padded above and below by 8
    assert g.canvas == (32, 32) and g.window == (8, 0, 24, 32) and g.crop == (0, 0, 16, 32)
    g = mask_geometry((48, 32), (48, 32), SPEC, "stretch")
    assert g.canvas == (48, 32) and g.crop == (0, 0, 48, 32)


def test_a_mask_of_another_size_is_resized_to_its_image_and_said(tmp_path, capsys):
    from cnnvis_gui.cli import main
    big = make_concepts(tmp_path / "big", n=6, seed=9, mask_size=(64, 64))       # 32 x 32 images, 64 x 64 masks
    same = make_concepts(tmp_path / "same", n=6, seed=9)
    a, b = _run(big), _run(same)
    assert a.info["concept_set"]["masks_resized"] == 6 and b.info["concept_set"]["masks_resized"] == 0
    assert [u.to_dict() for u in a.layer("pool").units] == [u.to_dict() for u in b.layer("pool").units]
    net = ["--model", f"{tmp_path / 'n.py'}:Net", "--input-size", "32", "--device", "cpu", "--trust-code"]
    (tmp_path / "n.py").write_text("from torch import nn\nclass Net(nn.Sequential):\n    def __init__(self):\n"
                                   "        super().__init__(nn.Conv2d(3, 2, 3))\n")
    assert main(["dissect", *net, "--concepts", str(big), "--layer", "0", "--json", str(tmp_path / "o.json"),
                 "--no-cache"]) == 0
    assert "6 masks differed in size from their images and were resized nearest-neighbour" in capsys.readouterr().err
