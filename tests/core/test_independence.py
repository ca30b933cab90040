"""Input-independent backprop pictures, decided from the graph (core.independence) and checked by measuring.

Every verdict here is checked against what the pictures do: two different inputs give exactly the
same picture when (and only when) the frame says the method is input-independent.  The real
pretrained MobileNetV2 on two real photos is the case of the issue (deconvnet: correlation 1.0,
difference 0); a max-pool VGG-style net must not get the notice.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnvis_gui import cli
from cnnvis_gui.core import Visualizer

METHODS = ("deconvnet", "guided", "gradient")


def _cbr(cin, cout, act=nn.ReLU6):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), act())


def _bn_stats(model):
    """Non-trivial running statistics, so eval-mode BatchNorm is a real affine map."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


class MobileLike(nn.Module):
    """conv-BN-ReLU6 blocks, a residual addition, a mean and a linear layer: no switches."""

    def __init__(self, act=nn.ReLU6):
        super().__init__()
        self.stem = _cbr(3, 8, act)
        self.block = nn.Sequential(_cbr(8, 8, act), nn.Conv2d(8, 8, 1))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.block(x)
        return self.head(x.mean((2, 3)))


class VGGLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.classifier = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class SEGate(MobileLike):
    """Squeeze-and-excitation: the feature map times a sigmoid of itself (both depend on the input)."""

    def __init__(self):
        super().__init__(nn.ReLU)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        x = self.stem(x)
        x = x * torch.sigmoid(self.fc(x.mean((2, 3))))[:, :, None, None]
        return self.head(x.mean((2, 3)))


class UNetLike(nn.Module):
    """Average pooling, bilinear upsampling, concatenation, functional and in-place-on-a-view ReLUs."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        a = F.relu(self.a(x))
        b = F.interpolate(F.relu(self.b(F.avg_pool2d(a, 2))), scale_factor=2, mode="bilinear")
        y = torch.cat([a, b], 1) / 2.0
        y[:, :3].relu_()
        return self.head(y.mean((2, 3)))


class Normalized(MobileLike):
    """Divides by the input's own norm: the backward reads the forward."""

    def forward(self, x):
        x = self.stem(x)
        return self.head((x / (x.norm(dim=1, keepdim=True) + 1)).mean((2, 3)))


class LayerNormed(MobileLike):
    def forward(self, x):
        x = F.layer_norm(self.stem(x), (16,))
        return self.head(x.mean((2, 3)))


def _pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, 16, 16, generator=g), torch.rand(1, 3, 16, 16, generator=g) * 3 - 1


def _measured_same(vis, layer, unit, method, objective="sum") -> bool:
    x1, x2 = _pair()
    a = vis.forward(x1).saliency(layer, unit, method, objective)
    b = vis.forward(x2).saliency(layer, unit, method, objective)
    assert float(a.abs().max()) > 0, "a blank picture proves nothing"
    return torch.equal(a, b)


CASES = [  # (model, activations, layer, expected input-independent methods)
    (MobileLike, "all", "", {"deconvnet"}),
    (MobileLike, "all", "block", {"deconvnet"}),
    (MobileLike, "relu-only", "", set()),              # ReLU6 keeps the plain gradient there
    (lambda: MobileLike(nn.Hardswish), "all", "", {"deconvnet"}),
    (lambda: MobileLike(nn.SiLU), "all", "", {"deconvnet"}),
    (VGGLike, "all", "", set()),                       # max-pool switches
    (VGGLike, "all", "features.1", {"deconvnet"}),     # before the first max-pool there is none
    (VGGLike, "all", "features.0", set(METHODS)),      # a linear path: the filter itself
    (SEGate, "all", "", set()),
    (UNetLike, "all", "", {"deconvnet"}),
    (Normalized, "all", "", set()),
    (LayerNormed, "all", "", set()),
]


@pytest.mark.parametrize("make, activations, layer, expected", CASES)
def test_verdict_matches_the_measured_pictures(make, activations, layer, expected):
    torch.manual_seed(0)
    model = _bn_stats(make())
    vis = Visualizer(model, activations=activations)
    frame = vis.forward(_pair()[0])
    for method in METHODS:
        notice = frame.input_independent(layer, 1, method)
        same = _measured_same(vis, layer, 1, method)
        assert (notice is not None) == same == (method in expected), (method, notice, same)
        if notice is not None:
            assert "input-independent" in notice and repr(layer or "output") in notice
    network = frame.deconvnet_notice          # about the whole network: deconvnet from its output
    assert (network is not None) == (frame.input_independent("", 1, "deconvnet") is not None)
    assert (network in frame.notices) if network else not any("input-independent" in n for n in frame.notices)


def test_objectives_that_read_the_forward_are_not_input_independent():
    model = _bn_stats(MobileLike())
    vis = Visualizer(model)
    frame = vis.forward(_pair()[0])
    assert frame.input_independent("block", 2, "deconvnet", (3, 4)) is not None     # a fixed position
    assert _measured_same(vis, "block", 2, "deconvnet", (3, 4))
    for objective in ("max", "activation"):   # the seed is the unit's maximum / its own value
        assert frame.input_independent("block", 2, "deconvnet", objective) is None
        assert not _measured_same(vis, "block", 2, "deconvnet", objective)
    # methods that multiply by the input or weigh activations are never flagged
    for method in ("input-x-gradient", "integrated-gradients", "gradcam"):
        assert frame.input_independent("", 1, method) is None


def test_torchvision_vgg11_has_no_notice_and_resnet18_neither():
    pytest.importorskip("torchvision")
    from .test_stops import vgg11_features_with_a_small_head
    import torchvision as tv
    for make in (vgg11_features_with_a_small_head, lambda: tv.models.resnet18(num_classes=4)):
        model = make().eval()
        frame = Visualizer(model).forward(torch.randn(1, 3, 32, 32))
        assert frame.deconvnet_notice is None
        assert not any("input-independent" in n for n in frame.notices)
        assert frame.input_independent("", 1, "deconvnet") is None


def _photo(realnet, name):
    return realnet.spec.to_tensor(realnet.photo(name))


def test_real_mobilenet_v2_deconvnet_is_the_same_for_a_cat_and_a_coffee(realnet):
    vis = Visualizer(realnet.model, realnet.spec)
    cat, coffee = vis.forward(_photo(realnet, "chelsea")), vis.forward(_photo(realnet, "coffee"))
    assert realnet.labels[int(cat.output.argmax())] in ("Egyptian cat", "tabby", "tiger cat")
    notice = cat.deconvnet_notice
    assert notice in cat.notices and "input-independent" in notice and "35 ReLU6" in notice
    assert "guided backprop" in notice and "gradient" in notice
    unit = realnet.label_index("Egyptian cat")
    for layer, u, other in (("", unit, "guided"), ("features.10", 7, "gradient")):
        a, b = cat.saliency(layer, u, "deconvnet"), coffee.saliency(layer, u, "deconvnet")
        assert torch.equal(a, b)                                     # max difference 0
        assert cat.input_independent(layer, u, "deconvnet") is not None
        g1, g2 = cat.saliency(layer, u, other), coffee.saliency(layer, u, other)   # the others see the photo
        corr = np.corrcoef(g1.flatten().numpy(), g2.flatten().numpy())[0, 1]
        assert corr < 0.5
        assert cat.input_independent(layer, u, "guided") is None and cat.input_independent(layer, u, "gradient") is None
    for method in ("gradcam", "scorecam", "eigencam", "input-x-gradient"):   # the CAMs read the activations
        assert cat.input_independent("", unit, method) is None
    c1, c2 = cat.cam("", unit, method="gradcam"), coffee.cam("", unit, method="gradcam")
    assert not torch.allclose(c1, c2, atol=0.05)


def test_export_says_it_for_deconvnet_only(realnet_env, tmp_path, capsys):
    img = tmp_path / "cat.png"
    cv2.imwrite(str(img), realnet_env.photo("chelsea"))
    model = ["--model", "torchvision:mobilenet_v2", "--pretrained", "IMAGENET1K_V1", "--input", str(img),
             "--layer", "output", "--units", "285", "--quiet", "--threads", "1"]
    assert cli.main(["export", *model, "--method", "deconvnet,guided", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "input-independent" in ln]
    assert len(lines) == 1 and lines[0].startswith("cnnvis: warning: deconvnet of 'output' is input-independent")
    assert "guided backprop or the gradient" in lines[0]
    assert cli.main(["export", *model, "--method", "guided", "--out", str(tmp_path / "b")]) == 0
    assert "input-independent" not in capsys.readouterr().err
