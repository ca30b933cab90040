"""Done when: on a network whose units detect colours and a generated concept folder, every unit's
label, IoU (1e-4) and threshold equal the brute-force numpy reference of the paper's definition."""
import cv2
import numpy as np
import pytest
import torch

from cnnvis_gui.dissect import Dissection

from .helpers import COLOURS, SHAPES, SPEC, colour_net, make_concepts
from .reference import activations, bilinear, dissect_reference

NAMES = {c[0]: (c[1], c[2]) for c in COLOURS} | {s[0]: (s[1], s[2]) for s in SHAPES}


@pytest.fixture(scope="module")
def concepts(tmp_path_factory):
    return make_concepts(tmp_path_factory.mktemp("dissect") / "concepts", n=24, seed=3)


def _reference(folder, layer, q, batch=8):
    files = sorted((folder / "images").glob("*.png"))
    x = torch.from_numpy(np.stack([SPEC.to_array(cv2.imread(str(f))) for f in files]))
    acts = activations(colour_net(), [x[i:i + batch] for i in range(0, len(x), batch)], layer)
    images = [{"maps": [cv2.imread(str(folder / "masks" / f.name), cv2.IMREAD_UNCHANGED)], "scalars": [],
               "annotated": {"color", "shape"}} for f in files]
    return dissect_reference(acts, images, NAMES, ["color", "shape"], q)


@pytest.mark.parametrize("q", [0.1, 0.005])
def test_every_unit_equals_the_brute_force_reference(concepts, tmp_path, q):
    d = Dissection(colour_net(), SPEC, concepts, ["pool", "relu"], quantile=q, batch_size=8,
                   cache_dir=tmp_path / "cache")
    for _ in d.run():
        pass
    res = d.result
    assert res.images == 24 and res.method == "exact"
    for layer in ("pool", "relu"):                       # a 16 x 16 map upsampled, and one at the mask's size
        ref = _reference(concepts, layer, q)
        got = res.layer(layer).units
        assert len(got) == 5
        for u, (name, iou, threshold) in zip(got, ref["units"]):
            assert u.threshold == threshold                # np.quantile's own float32, to the bit
            assert u.concept == name
            assert u.iou == pytest.approx(iou, abs=1e-4)
        # the whole table, through each unit's top 3
        for u in got:
            for cname, v in u.top:
                j = [NAMES[i][0] for i in ref["ids"]].index(cname)
                assert v == pytest.approx(ref["iou"][u.unit, j], abs=1e-4)
    if q == 0.1:                                         # the colour detectors are found
        assert [u.concept for u in res.layer("pool").units[:4]] == ["red", "green", "blue", "yellow"]
        assert all(u.interpretable for u in res.layer("pool").units[:4])


def test_the_reference_upsampling_is_pytorchs():
    a = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    t = torch.nn.functional.interpolate(torch.from_numpy(a)[None, None], size=(13, 11), mode="bilinear",
                                        align_corners=False)[0, 0].numpy()
    assert np.allclose(bilinear(a, 13, 11), t, atol=1e-6)


class Shift(torch.nn.Module):
    """Adds a fixed map (ColourNet's jitter), in whatever layout its input has."""

    def __init__(self, jitter):
        super().__init__()
        self.register_buffer("jitter", jitter.clone())

    def forward(self, x):
        return x + self.jitter


class ChannelsLast(torch.nn.Module):
    """ColourNet's first layer computed channels-last: a Linear over the features of an N x H x W x 3
    tensor (the model map reads its output, and the shift's after it, as nhwc)."""

    def __init__(self):
        super().__init__()
        ref = colour_net()
        self.lin = torch.nn.Linear(3, 5)
        with torch.no_grad():
            self.lin.weight.copy_(ref.conv.weight[:, :, 0, 0])
            self.lin.bias.copy_(ref.conv.bias)
        self.shift = Shift(ref.jitter.permute(0, 2, 3, 1))
        self.head = torch.nn.Linear(5, 2)

    def forward(self, x):
        f = self.shift(self.lin(x.permute(0, 2, 3, 1)))             # N x H x W x 5
        return self.head(f.mean((1, 2)))


class JitteredConv(torch.nn.Module):
    """The same numbers channels first: the conv plus the jitter, as one module's output."""

    def __init__(self):
        super().__init__()
        self.ref = colour_net()

    def forward(self, x):
        return self.ref.conv(x) + self.ref.jitter


def test_a_channels_last_layer_is_read_through_its_layout(concepts, tmp_path):
    from cnnvis_gui.core import model_map
    last = ChannelsLast().eval()
    assert model_map(last, SPEC)["shift"].layout.kind == "nhwc"
    wrapped = torch.nn.Sequential()
    wrapped.add_module("layer", JitteredConv())
    a = Dissection(last, SPEC, concepts, ["shift"], quantile=0.1, batch_size=8, use_cache=False)
    b = Dissection(wrapped.eval(), SPEC, concepts, ["layer"], quantile=0.1, batch_size=8, use_cache=False)
    for d in (a, b):
        for _ in d.run():
            pass
    assert a.grids["shift"] == (5, 32, 32)
    got, want = a.result.layer("shift").units, b.result.layer("layer").units
    assert [u.concept for u in got] == [u.concept for u in want]
    for u, v in zip(got, want):
        assert u.threshold == pytest.approx(v.threshold, rel=1e-5) and u.iou == pytest.approx(v.iou, abs=1e-3)
