"""Receptive-field probes: one probe forward shared by every layer; N x C x L hits use their position."""
import numpy as np
import torch
from torch import nn

from cnnvis_gui.atlas import TopKScan
from cnnvis_gui.atlas.crops import Box, ReceptiveFields

from .helpers import TINY_SPEC, make_images, tiny_model


def test_one_probe_forward_for_all_layers(tmp_path):
    model = tiny_model()
    rf = ReceptiveFields(model, TINY_SPEC, probes=4)
    calls = []
    real = rf.vis.forward
    rf.vis.forward = lambda x: calls.append(x.shape[0]) or real(x)
    try:
        supports = {layer: rf.probe_support(layer, 1, 2, 3) for layer in ("features.1", "features.4", "features.7")}
        assert calls == [4]                     # one batched forward of the 4 probes, kept once
        assert rf._probe_frame is not None
        # the shared frame answers each layer exactly as a frame of its own would
        for layer, sup in supports.items():
            own = ReceptiveFields(model, TINY_SPEC, probes=4)
            try:
                np.testing.assert_array_equal(own.probe_support(layer, 1, 2, 3), sup)
            finally:
                own.close()
        assert supports["features.1"].sum() < supports["features.4"].sum() < supports["features.7"].sum()
    finally:
        rf.close()
    assert rf._probe_frame is None


class SeqNet(nn.Module):
    """Image -> per-pixel features -> a sequence N x C x (H*W) -> Conv1d over the sequence."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.pix = nn.Conv2d(3, 4, 1)
        self.seq = nn.Conv1d(4, 5, 3, padding=1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        s = self.seq(torch.relu(self.pix(x)).flatten(2))
        return self.fc(s.mean(2))


def test_sequence_layer_crop_uses_the_hit_position(tmp_path):
    make_images(tmp_path / "im", n=6, bad=False)
    model = SeqNet().eval()
    s = TopKScan(model, TINY_SPEC, tmp_path / "im", ["seq"], k=2, use_cache=False)
    for _ in s.run():
        pass
    rf = ReceptiveFields(model, TINY_SPEC, probes=2)
    try:
        checked = 0
        for unit in range(5):
            for hit in s.result.hits("seq", unit):
                c = rf.crops("seq", unit, hit)
                assert hit.y == 0 and 0 <= hit.x < 32 * 32
                row, col = divmod(hit.x, 32)
                assert c.box.contains(row, col)
                # positions x-1 .. x+1 of the flattened image: at most 3 pixels, on at most 2 rows
                assert c.support.sum() <= 3 and c.box.height <= 2 and c.box != Box(0, 0, 32, 32)
                checked += 1
        assert checked >= 5
    finally:
        rf.close()
