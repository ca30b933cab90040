"""core.stops: the layers o / u step through on real architectures, and the first view."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cnnvis_gui.core import InputSpec, model_map
from cnnvis_gui.core.stops import first_layer, first_view, layer_stops

tv = pytest.importorskip("torchvision")


def vgg11_features_with_a_small_head():
    """torchvision's VGG-11 feature extractor (its max-pools and ReLUs) with a small classifier: VGG's own
    25088 x 4096 layer alone takes seconds to initialize on a loaded machine."""
    from torchvision.models.vgg import cfgs, make_layers
    return _VGGSmall(make_layers(cfgs["A"]))


class _VGGSmall(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.features, self.avgpool = features, nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 4))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@pytest.fixture(scope="module")
def maps():
    torch.manual_seed(0)
    nets = {"mobilenet_v2": tv.models.mobilenet_v2(), "resnet18": tv.models.resnet18(),
            "vgg11": vgg11_features_with_a_small_head(), "mobilenet_v3_small": tv.models.mobilenet_v3_small()}
    size = {"mobilenet_v2": 224}      # the others at 112: their stops and first views do not depend on it
    return {k: model_map(m.eval(), InputSpec(3, size.get(k, 112), size.get(k, 112))) for k, m in nets.items()}


def test_mobilenet_v2_steps_through_blocks_and_activated_convolutions(maps):
    mm = maps["mobilenet_v2"]
    stops = layer_stops(mm)
    assert len(mm) > 150 and len(stops) == 53
    # a conv -> BN -> ReLU6 block stands for its ReLU6; the linear projection conv and BatchNorms are not stops
    assert stops[:6] == ["features.0", "features.1.conv.0", "features.1", "features.2.conv.0", "features.2.conv.1",
                         "features.2"]
    assert stops[-3:] == ["features.17", "features.18", ""]
    assert not any(mm[n].type in ("BatchNorm2d", "Conv2d", "ReLU6", "Sequential", "Dropout") for n in stops)
    assert first_view(mm) == "features.13" and mm["features.13"].shape == (96, 14, 14)
    assert mm.default_layer == "features.18.0"        # the last conv: 1280 tiles of 7x7, before BN and ReLU6


def test_resnet18_vgg11_and_a_squeeze_excitation_net(maps):
    r = layer_stops(maps["resnet18"])
    assert r == ["relu", "maxpool", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1",
                 "layer4.0", "layer4.1", "avgpool", ""]
    assert first_view(maps["resnet18"]) == "layer3.1"
    v = layer_stops(maps["vgg11"])
    # relu after every conv (VGG's relu1_1 ...), the pools, and the classifier's ReLUs instead of its linears
    assert v[:3] == ["features.1", "features.2", "features.4"]
    assert v[-3:] == ["classifier.1", "classifier.4", ""]
    assert first_view(maps["vgg11"]) == "features.14"      # relu4_2, 512 x 14 x 14 at this size
    m3 = maps["mobilenet_v3_small"]
    s3 = layer_stops(m3)
    assert not any(".block.1.fc" in n or "SqueezeExcitation" == m3[n].type or n.endswith(".avgpool")
                   for n in s3 if n.startswith("features."))
    assert "features.1.block.0" in s3 and "features.1" in s3


class Flat(nn.Module):
    """No conv, no stop with a map: the first layer falls back to the map's default."""

    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def test_flat_network_falls_back():
    mm = model_map(Flat().eval(), InputSpec(1, 3, 4))
    assert first_view(mm) is None and first_layer(mm) == mm.default_layer == ""
    assert layer_stops(mm) == ["fc1", ""]


def test_demo_first_view_and_stops():
    from cnnvis_gui.models import demo
    lm = demo("shapes")
    mm = model_map(lm.model, lm.spec)
    assert first_view(mm) == "features.14"                 # the last ReLU with 8 x 8 maps
    assert layer_stops(mm)[:2] == ["features.2", "features.3"]
