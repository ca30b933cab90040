"""The engine's small surface the way users meet it: unit indices and objectives as Python callers give
them, the messages of a failing or closed forward, the activation census, top units, CAMs of one call
of a reused module, the model map."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnvis_gui.core import (CnnvisError, InputSpec, ModelForwardError, Visualizer, cam, grad_cam, model_map,
                             saliency)


@pytest.fixture(scope="module")
def frame():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()
    f = Visualizer(net, InputSpec(3, 16, 16)).forward(torch.rand(1, 3, 16, 16))
    yield f
    f.close()


@pytest.mark.parametrize("unit", [np.int64(2), np.int32(2), np.array(2), torch.tensor(2)])
def test_numpy_and_tensor_unit_indices_are_integers(frame, unit):
    want = frame.saliency("2", 2, "gradient")
    assert torch.equal(frame.saliency("2", unit, "gradient"), want)
    assert torch.equal(frame.cam("2", unit, "0", "gradcam"), frame.cam("2", 2, "0", "gradcam"))


@pytest.mark.parametrize("unit", [True, np.bool_(True), 2.0, np.float64(2), "2", None, np.array([2])])
def test_non_integer_units_are_refused(frame, unit):
    with pytest.raises(CnnvisError, match="unit must be an integer"):
        frame.saliency("2", unit)


@pytest.mark.parametrize("objective", [None, 3, object(), ("a", "b")])
def test_bad_objective_is_a_project_error(frame, objective):
    with pytest.raises(CnnvisError, match="objective"):
        frame.saliency("2", 0, objective=objective)


def test_first_nonfinite_layer(frame):
    assert frame.first_nonfinite_layer() is None
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU()).eval()
    with torch.no_grad():
        net[2].bias[1] = float("inf")
    f = Visualizer(net, InputSpec(3, 12, 12)).forward(torch.rand(1, 3, 12, 12))
    try:
        assert f.first_nonfinite_layer() == "2"
    finally:
        f.close()


# ----------------------------------------------------------------------- what a failing model is told
class _Boom(nn.Module):
    def forward(self, *args):
        raise ValueError("boom")


class _FailsIn(nn.Module):
    """conv, then ``bad`` called with ``how``'s arguments: one tensor, two tensors, or no tensor."""

    def __init__(self, how):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bad = _Boom()
        self.how = how

    def forward(self, x):
        y = self.conv(x)
        if self.how == "one":
            return self.bad(y)
        if self.how == "two":
            return self.bad(y, y.mean((2, 3)))
        if self.how == "none":
            return self.bad(3)
        raise ValueError("boom")   # the model's own forward, outside any sub-module


_ADVICE = ("The model was given an input of shape 1x3x10x10; if that shape is not what the model was "
           "trained on, fix the input spec (channels, height, width); if it is, the model's own code "
           "failed on this input.")


@pytest.mark.parametrize("how,where", [
    ("one", " in module 'bad' (_Boom) on input 1x4x8x8"),
    ("two", " in module 'bad' (_Boom) on input 1x4x8x8, 1x4"),
    ("none", " in module 'bad' (_Boom) on input no tensor"),
    ("self", ""),
])
def test_a_failing_forward_is_one_message_naming_module_and_shapes(how, where):
    with pytest.raises(ModelForwardError) as ei:
        Visualizer(_FailsIn(how)).forward(torch.rand(1, 3, 10, 10))
    assert str(ei.value) == f"the model's forward pass failed{where}: ValueError: boom. {_ADVICE}"


def test_a_closed_frame_says_so():
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU()).eval()
    f = Visualizer(net).forward(torch.rand(1, 3, 8, 8))
    f.close()
    closed = r"^this frame was closed; run Visualizer\.forward again\.$"
    assert f.output is None
    for ask in (lambda: f.relu_calls, lambda: f.notices, f.first_nonfinite_layer,
                lambda: f.activations("1"), lambda: f.saliency("1", 0)):
        with pytest.raises(CnnvisError, match=closed):
            ask()


# ----------------------------------------------------------------------- the activation census
class _DictOut(nn.Module):
    """A ReLU only in the output (a dict or a tuple of tensors, as detection/segmentation models return)."""

    def __init__(self, kind):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.kind = kind

    def forward(self, x):
        y = F.relu(self.conv(x)).mean((2, 3))
        return {"logits": y} if self.kind == "dict" else (y, self.conv.bias)


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_relus_reached_only_from_a_dict_or_tuple_output_are_counted(kind):
    f = Visualizer(_DictOut(kind)).forward(torch.rand(1, 3, 8, 8))
    assert (f.relu_calls, f.functional_relu_calls) == (1, 1)
    assert not any("runs no ReLU" in n for n in f.notices)
    mm = Visualizer(_DictOut(kind), InputSpec(3, 8, 8)).model_map()
    assert (mm.relu_calls, mm.functional_relu_calls) == (1, 1)


class _GatedByAConstant(nn.Module):
    """An ``nn.ReLU`` module on a learned gate (not on the input's path) and one functional ReLU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gate = nn.Parameter(torch.ones(1, 4, 1, 1))
        self.act = nn.ReLU()

    def forward(self, x):
        return F.relu(self.conv(x)) * self.act(self.gate)


def test_relu_counts_module_and_functional_calls():
    f = Visualizer(_GatedByAConstant()).forward(torch.rand(1, 3, 8, 8))
    # the gate's ReLU never sees the input: it is not in the graph the rules run on
    assert (f.relu_calls, f.functional_relu_calls) == (1, 1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU()).eval()
    f = Visualizer(net).forward(torch.rand(1, 3, 8, 8))
    assert (f.relu_calls, f.functional_relu_calls) == (2, 0)
    part = Visualizer(net).forward(torch.rand(1, 3, 8, 8), layers=["1"])
    assert part.relu_calls == 2 and part.functional_relu_calls is None   # unknown: not every module recorded


def test_a_model_without_relu_is_told_the_rules_change_nothing():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh()).eval()
    f = Visualizer(net).forward(torch.rand(1, 3, 8, 8))
    assert f.relu_calls == 0
    assert "the model runs no ReLU: deconvnet and guided backprop equal the plain gradient" in f.notices


# ----------------------------------------------------------------------- top units
def test_top_units_rank_sample_0_by_max_or_mean():
    net = nn.Sequential(nn.Conv2d(1, 4, 1, bias=False)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0, 0.5, 2.0]).reshape(4, 1, 1, 1))
    x = torch.zeros(2, 1, 1, 3)
    x[0, 0, 0] = torch.tensor([-3.0, 0.0, 1.0])   # unit outputs w * x: max -> 3, 2, 0.5, 2; mean -> ...
    x[1] = 5.0                                     # sample 1 would rank the units 3, 0, 2, 1
    f = Visualizer(net).forward(x)
    a = f.activations("0")[0].reshape(4, -1).numpy()
    by_max = [int(i) for i in np.argsort(-a.max(1), kind="stable")]
    by_mean = [int(i) for i in np.argsort(-a.mean(1), kind="stable")]
    assert by_max[:2] != by_mean[:2]
    assert f.top_units("0", k=2) == by_max[:2]
    assert f.top_units("0", k=3, by="mean") == by_mean[:3]
    assert sorted(f.top_units("0", k=99)) == [0, 1, 2, 3]
    assert f.top_units("0", k=0) == [] and f.top_units("0", k=-2) == []
    wide = Visualizer(nn.Sequential(nn.Conv2d(1, 12, 1)).eval()).forward(torch.rand(1, 1, 2, 2))
    assert len(wide.top_units("0")) == 9          # by default the nine strongest (a 3 x 3 grid)


def test_top_units_of_one_call_of_a_reused_module():
    f = Visualizer(_SharedReLU()).forward(torch.rand(1, 3, 12, 12))
    for call in (0, 1):
        a = f.activations("relu", call)[0]
        want = [int(i) for i in torch.topk(a.reshape(a.shape[0], -1).amax(1), 3).indices]
        assert f.top_units("relu", k=3, call=call) == want
    assert f.top_units("relu", k=9, call=0) != f.top_units("relu", k=9, call=1)


# ----------------------------------------------------------------------- CAMs of one call
class _SharedReLU(nn.Module):
    """conv1 -> relu -> conv2 -> relu (the same ``nn.ReLU`` twice) -> pool -> fc; 'same' padding."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 3)
        self.eval()

    def forward(self, x):
        a = self.relu(self.conv1(x))
        return self.fc(self.relu(self.conv2(a)).mean((2, 3)))


def _grad_cam_reference(model, x, call, unit, objective):
    """Selvaraju et al. 2017 at conv1 for the shared ReLU's ``call``, written out (same size as x)."""
    A = model.conv1(x.clone().requires_grad_(True))
    r = [model.relu(A)]
    r.append(model.relu(model.conv2(r[0])))
    sel = r[call][:, unit]
    score = sel.sum() if objective == "sum" else sel.reshape(sel.shape[0], -1).amax(1).sum()
    (g,) = torch.autograd.grad(score, A)
    m = torch.relu((g.mean((2, 3), keepdim=True) * A).sum(1)).detach()
    return m / m.amax((1, 2), keepdim=True).clamp_min(1e-30)


@pytest.mark.parametrize("objective", ["sum", "max"])
def test_cams_of_each_call_of_a_reused_module_equal_the_reference(objective):
    model = _SharedReLU()
    x = torch.rand(1, 3, 12, 12)
    f = Visualizer(model).forward(x)
    assert f.default_cam_layer("relu", call=0) == "conv1" and f.default_cam_layer("relu") == "conv2"
    assert f.default_cam_layer("conv2") == "conv2"       # a conv layer is its own CAM layer
    for call in (0, 1):
        ref = _grad_cam_reference(model, x, call, 1, objective)
        assert float(ref.max()) == pytest.approx(1.0)
        torch.testing.assert_close(f.grad_cam("relu", 1, "conv1", objective, call=call), ref)
        torch.testing.assert_close(f.cam("relu", 1, "conv1", objective=objective, call=call), ref)
        guided = f.saliency("relu", 1, "guided", objective, call=call)
        torch.testing.assert_close(f.guided_grad_cam("relu", 1, "conv1", objective, call=call),
                                   guided * ref[:, None])
    torch.testing.assert_close(f.cam("relu", 1, "conv1"), f.grad_cam("relu", 1, "conv1"))   # the default
    one = _grad_cam_reference(model, x, 1, 1, objective)[0]
    torch.testing.assert_close(grad_cam(model, x, "relu", 1, "conv1", objective), one)
    torch.testing.assert_close(cam(model, x, "relu", 1, "conv1", "gradcam", objective), one)


# ----------------------------------------------------------------------- the model map
def test_model_map_is_listed_once_and_again_on_refresh():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    v = Visualizer(net, InputSpec(3, 8, 8))
    mm = v.model_map()
    assert v.model_map() is mm
    net.append(nn.Conv2d(4, 2, 1))
    assert "2" not in v.model_map()                      # listed at the first call
    again = v.model_map(refresh=True)
    assert again["2"].shape == (2, 6, 6) and again.default_layer == "2"
    with pytest.raises(CnnvisError, match=r"^model_map needs an InputSpec \(channels, height, width\) "
                                          r"for the probe forward\.$"):
        Visualizer(net).model_map()


class _OneAtATime(nn.Module):
    """Research code written for one image at a time: ``flatten()`` without a batch dimension."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten())


def test_a_model_written_for_one_image_at_a_time_is_mapped_and_explained():
    torch.manual_seed(0)
    net = _OneAtATime().eval()
    v = Visualizer(net, InputSpec(3, 8, 8))
    mm = v.model_map()                                   # the probe is one image, as the window's frames
    assert mm["conv"].shape == (4, 6, 6) and "fc" in mm.names()
    x = torch.randn(1, 3, 8, 8)
    g = v.forward(x).saliency("conv", 2, method="gradient")            # objective "sum" of unit 2
    xr = x.clone().requires_grad_(True)
    net.conv(xr)[0, 2].sum().backward()
    torch.testing.assert_close(g, xr.grad)


def test_model_map_of_a_float64_model_and_of_relu_only_rules():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Conv2d(4, 2, 3)).double().eval()
    mm = Visualizer(net, InputSpec(3, 8, 8)).model_map()
    assert mm["2"].shape == (2, 4, 4) and mm.generalized_activations == {"SiLU": 1}
    only = Visualizer(net, InputSpec(3, 8, 8), activations="relu-only").model_map()
    assert only.generalized_activations == {} and only.other_activations == {"SiLU": 1}


class _Mapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.split = _Halves()
        self.unused = nn.Linear(2, 2)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        a = self.features[1](self.features(x))      # features.1 runs twice
        a, _ = self.split(a)
        return self.head(a.mean((2, 3)))


class _Halves(nn.Module):
    def forward(self, x):
        return x, x


class _Long(nn.Module):
    """121 module calls, and a module that never runs."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(*[nn.Identity() for _ in range(120)])
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        return self.body(x)


def test_model_map_lists_every_module_as_the_cli_prints_it():
    mm = model_map(_Mapped(), InputSpec(3, 8, 8))
    assert len(mm) == 7 and [l.name for l in mm] == mm.names() == [n for n, _ in _Mapped().named_modules()]
    assert "head" in mm and "nothing" not in mm
    assert mm.visualizable_names() == ["", "features", "features.0", "features.1", "head"]
    assert [(l.display_name, l.depth, l.calls, l.is_conv) for l in mm] == [
        ("(model output)", 0, 1, False), ("features", 1, 1, False), ("features.0", 2, 1, True),
        ("features.1", 2, 2, False), ("split", 1, 1, False), ("unused", 1, 0, False), ("head", 1, 1, False)]
    # the order in which the modules start running (the first call's), never-run ones last
    order = {l.name: l.order for l in mm}
    assert order["features.0"] < order["features.1"] < order["split"] < order["head"] < order["unused"]
    # a container starts when its first sub-module does; the model when its first module does
    assert [order[n] for n in ("", "features", "features.0", "features.1", "split", "head")] == [0, 0, 0, 1, 4, 5]
    assert mm.default_layer == "features.0" and mm.output_name == ""
    assert mm["output"].name == mm["(model output)"].name == ""
    assert mm.describe().splitlines() == [
        "name                                     type                   output             layout            units calls",
        "(model output)                           _Mapped                2                  flat                  2     1",
        "features                                 Sequential             4x6x6              nchw                  4     1",
        "features.0                               Conv2d                 4x6x6              nchw                  4     1",
        "features.1                               ReLU                   4x6x6              nchw                  4     2",
        "split                                    _Halves                -                  -                     -     1"
        "  [returns a tuple, not a tensor]",
        "unused                                   Linear                 -                  -                     -     0"
        "  [not run in the forward pass]",
        "head                                     Linear                 2                  flat                  2     1",
    ]
    assert mm["unused"].visualizable is False and mm.default_cam_layer("features.1") == "features.0"
    with pytest.raises(CnnvisError) as ei:
        mm.default_cam_layer("unused")
    assert str(ei.value) == "layer 'unused' did not run in the forward pass; nothing to show."
    order = {l.name: l.order for l in model_map(_Long(), InputSpec(1, 1, 2))}
    assert order["unused"] > max(o for n, o in order.items() if n != "unused") == 119   # never ran: last
    nets = nn.Sequential(nn.Linear(3, 3))
    assert model_map(nets, InputSpec(1, 1, 3)).default_layer == ""    # no conv: the output


@pytest.mark.parametrize("n,more", [(8, ""), (9, " ...")])
def test_an_unknown_layer_name_lists_the_valid_ones(n, more):
    mm = model_map(nn.Sequential(*[nn.Conv2d(2, 2, 1) for _ in range(n)]), InputSpec(2, 4, 4))
    listed = ", ".join(repr(str(i)) for i in range(8))
    valid = f" Valid layers are names from model.named_modules(), e.g. {listed}{more} (or 'output' for the model output)."
    with pytest.raises(CnnvisError) as ei:
        mm["zzz"]
    assert str(ei.value) == "unknown layer 'zzz'." + valid
    with pytest.raises(CnnvisError) as ei:
        mm["7x"]
    assert str(ei.value) == "unknown layer '7x'. Did you mean: '7'?" + valid
    with pytest.raises(CnnvisError, match=r"^a layer is named by a string from model.named_modules\(\), got 3$"):
        mm[3]


def test_did_you_mean_offers_the_five_closest():
    net = nn.Sequential()
    for i in range(7):
        net.add_module(f"block{i}", nn.Conv2d(2, 2, 1))
    with pytest.raises(CnnvisError, match=r"Did you mean: ('block\d', ){4}'block\d'\? Valid"):
        model_map(net, InputSpec(2, 4, 4))["blockx"]


def test_gradient_at_one_call_of_a_reused_module():
    model = _SharedReLU()
    x = torch.rand(1, 3, 12, 12)
    f = Visualizer(model).forward(x)
    r0 = model.relu(model.conv1(x))
    out = model.fc(model.relu(model.conv2(r0)).mean((2, 3)))
    (ref,) = torch.autograd.grad(out[0, 2], r0)
    torch.testing.assert_close(f.gradient_at("relu", "fc", 2, at_call=0), ref)
    assert not torch.equal(f.gradient_at("relu", "fc", 2), ref)      # the last call's differs


# ----------------------------------------------------------------------- the one-call functions
class _SiLUNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.eval()

    def forward(self, x):
        return self.conv2(F.silu(self.conv1(x)))


def test_the_one_call_saliency_passes_every_argument_on():
    model = _SiLUNet()
    x = torch.rand(1, 3, 10, 10)
    with Visualizer(model).forward(x) as f:
        assert torch.equal(saliency(model, x, "conv2", 1), f.saliency("conv2", 1, "guided"))   # the default
        assert torch.equal(saliency(model, x, "conv2", 1, "gradient", "max"), f.saliency("conv2", 1, "gradient", "max"))
        ig = saliency(model, x, "conv2", 1, "integrated-gradients")
        torch.testing.assert_close(ig, f.saliency("conv2", 1, "integrated-gradients", steps=32), rtol=0, atol=0)
        assert not torch.equal(ig, f.saliency("conv2", 1, "integrated-gradients", steps=33))
        sg = saliency(model, x, "conv2", 1, "gradient", smoothgrad=2, seed=4)
        assert torch.equal(sg, f.saliency("conv2", 1, "gradient", smoothgrad=2, noise=0.15, seed=4))
        assert not torch.equal(sg, f.saliency("conv2", 1, "gradient", smoothgrad=2, noise=0.3, seed=4))
    with Visualizer(model, activations="relu-only").forward(x) as f:
        plain = saliency(model, x, "conv2", 1, activations="relu-only")
        assert torch.equal(plain, f.saliency("conv2", 1, "guided"))
        assert torch.equal(plain, f.saliency("conv2", 1, "gradient"))   # SiLU keeps the plain gradient
    assert not torch.equal(plain, saliency(model, x, "conv2", 1))


class _Odd(nn.Module):
    """Sub-modules whose outputs have no units: a 1-D tensor, integers, a tuple, None."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.total, self.argmax = _Call(lambda y: y.sum((1, 2, 3))), _Call(lambda y: y.argmax(1))
        self.pair, self.log = _Call(lambda y: (y, y)), _Call(lambda y: None)
        self.fill = _Call(lambda n: torch.full((1, 2, 3, 3), float(n)))     # called with a number

    def forward(self, x):
        y = self.conv(x)
        self.total(y), self.argmax(y), self.pair(y), self.log(y)
        return y + self.fill(3)[:, :1].mean()


class _Call(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, y):
        return self.fn(y)


def test_the_map_says_why_a_layer_has_no_units():
    mm = model_map(_Odd(), InputSpec(3, 8, 8))
    assert {n: mm[n].reason for n in ("total", "argmax", "pair", "log", "conv")} == {
        "total": "output is a 1-D tensor; units need a batch and a channel/feature axis",
        "argmax": "output dtype torch.int64 is not floating point",
        "pair": "returns a tuple, not a tensor",
        "log": "returns None, not a tensor",
        "conv": None}
    assert [mm[n].units for n in ("total", "argmax", "pair", "log", "conv", "fill")] == [None, None, None, None, 4, 2]
    with Visualizer(_Odd()).forward(torch.rand(1, 3, 8, 8)) as f:
        with pytest.raises(CnnvisError, match=r"^layer 'argmax' \(_Call\) is not visualizable: output dtype "
                                              r"torch\.int64 is not floating point\.$"):
            f.saliency("argmax", 0)


# ----------------------------------------------------------------------- every refusal, word for word
class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.relu, self.fc, self.unused = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(4, 3), nn.Linear(2, 2)
        self.eval()

    def forward(self, x):
        return self.fc(self.relu(self.relu(self.conv(x))).mean((2, 3)))


@pytest.fixture(scope="module")
def twice():
    torch.manual_seed(0)
    model = _Twice()
    full = Visualizer(model, InputSpec(3, 8, 8)).forward(torch.rand(1, 3, 8, 8))
    part = Visualizer(model).forward(torch.rand(1, 3, 8, 8), layers=["conv", "relu"])
    return model, full, part


def _scripted():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # torch.jit.script is deprecated, but users still have such models
        return torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3)))


_NOT_RECORDED = ("was not recorded in this frame: it recorded only 'conv', 'relu'; pass every layer you will "
                 "ask for in Visualizer.forward(x, layers=[...]).")
_RANGE = "layer 'relu' ran 2 time(s) per forward; call must be in 0..1 (or -1 for the last)."


@pytest.mark.parametrize("ask,message", [
    (lambda m, f, p: Visualizer(3), "Visualizer needs a torch.nn.Module, got int"),
    (lambda m, f, p: Visualizer(m, activations="some"), "activations must be one of 'all', 'relu-only', got 'some'"),
    (lambda m, f, p: Visualizer(m).forward(torch.zeros(1, 3, 8, 8, dtype=torch.int64)),
     "the input must be a float tensor, got dtype torch.int64"),
    (lambda m, f, p: Visualizer(m).forward(torch.zeros(3)),
     "the input needs a batch axis: got shape (3,), expected N x C x H x W"),
    (lambda m, f, p: Visualizer(m).forward("x"),
     "the input must be a torch.Tensor (N x C x H x W), got str; convert frames with InputSpec.to_tensor."),
    (lambda m, f, p: f.saliency("unused", 0), "layer 'unused' did not run in the forward pass; nothing to show."),
    (lambda m, f, p: p.saliency("fc", 0), "layer 'fc' " + _NOT_RECORDED),
    (lambda m, f, p: p.saliency("output", 0), "layer 'output' " + _NOT_RECORDED),
    (lambda m, f, p: f.saliency("cnv", 0), "unknown layer 'cnv'. Did you mean: 'conv'? Valid layers are names "
     "from model.named_modules(), e.g. 'conv', 'relu', 'fc' (or 'output' for the model output)."),
    (lambda m, f, p: p.saliency("cnv", 0), "unknown layer 'cnv'. Did you mean: 'conv'? Valid layers are names "
     "from model.named_modules(), e.g. 'conv', 'relu', 'fc', 'unused' (or 'output' for the model output)."),
    (lambda m, f, p: Visualizer(m).forward(torch.rand(1, 3, 8, 8), layers=["output"]).activations("conv"),
     "layer 'conv' was not recorded in this frame: it recorded only 'output'; pass every layer you will "
     "ask for in Visualizer.forward(x, layers=[...])."),
    (lambda m, f, p: Visualizer(_scripted()), "TorchScript models cannot be visualized: hooks and the backprop "
     "rules cannot reach inside a scripted graph. Load the eager model instead."),
    (lambda m, f, p: f.saliency("relu", 0, call=2), _RANGE),
    (lambda m, f, p: f.activations("relu", call="a"), _RANGE),
    (lambda m, f, p: f.saliency("conv", 4), "unit 4 is out of range for layer 'conv': it has 4 units (0..3)."),
    (lambda m, f, p: f.saliency("conv", -1), "unit -1 is out of range for layer 'conv': it has 4 units (0..3)."),
    (lambda m, f, p: f.saliency("output", 3), "unit 3 is out of range for layer 'output': it has 3 units (0..2)."),
    (lambda m, f, p: f.saliency("conv", 0, objective="mean"),
     "unknown objective 'mean'; choose one of sum, activation, max or a (y, x) position."),
    (lambda m, f, p: f.saliency("conv", 0, objective=None),
     "objective must be one of sum, activation, max or a (y, x) position, got None."),
    (lambda m, f, p: f.saliency("conv", 0, objective=(1,)),
     "layer 'conv' has per-unit shape (6, 6); a position needs 2 coordinate(s), got (1,)."),
    (lambda m, f, p: f.saliency("conv", 0, objective=(6, 0)),
     "position (6, 0) is outside layer 'conv''s (6, 6) map (y must be in 0..5)."),
    (lambda m, f, p: f.saliency("conv", 0, objective=(0, -1)),
     "position (0, -1) is outside layer 'conv''s (6, 6) map (x must be in 0..5)."),
    (lambda m, f, p: f.saliency("fc", 0, objective=(0,)),
     "layer 'fc' has per-unit shape (); a position needs 0 coordinate(s), got (0,)."),
    (lambda m, f, p: f.gradient_at("conv", "fc", 0, "lrp"),
     "unknown method 'lrp'; choose one of gradient, deconvnet, guided."),
])
def test_every_refusal_says_what_is_wrong_in_one_line(twice, ask, message):
    with pytest.raises(CnnvisError) as ei:
        ask(*twice)
    assert str(ei.value) == message


def test_a_position_in_a_3d_layer_names_the_depth_axis():
    net = nn.Sequential(nn.Conv3d(1, 2, 1)).eval()
    with Visualizer(net).forward(torch.rand(1, 1, 2, 3, 4)) as f:
        with pytest.raises(CnnvisError) as ei:
            f.saliency("0", 0, objective=(2, 0, 0))
        assert str(ei.value) == "position (2, 0, 0) is outside layer '0''s (2, 3, 4) map (d must be in 0..1)."
        with pytest.raises(CnnvisError, match=r"\(x must be in 0\.\.3\)\.$"):
            f.saliency("0", 0, objective=(1, 2, 4))
        assert float(f.saliency("0", 1, "gradient", objective=(1, 2, 3)).abs().sum()) > 0


def test_the_probe_and_the_input_go_to_the_models_device():
    # the meta device stands in for a GPU: the input goes there and the frame's tensors stay there
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).to("meta")
    v = Visualizer(net, InputSpec(3, 8, 8))
    assert v.device == torch.device("meta")
    assert v.model_map()["1"].shape == (4, 6, 6)
    with v.forward(torch.rand(1, 3, 8, 8)) as f:
        assert f.input.device.type == "meta" and f.saliency("1", 0).device.type == "meta"


# ----------------------------------------------------------------------- defaults, timings, no dependence
def test_frame_saliency_defaults_and_call_reach_the_attribution_methods():
    f = Visualizer(_SharedReLU()).forward(torch.rand(1, 3, 12, 12))
    assert torch.equal(f.saliency("relu", 1, "integrated-gradients"),
                       f.saliency("relu", 1, "integrated-gradients", steps=32))
    assert torch.equal(f.saliency("relu", 1, "gradient", smoothgrad=2, seed=1),
                       f.saliency("relu", 1, "gradient", smoothgrad=2, noise=0.15, seed=1))
    for call in (0, 1):   # input x gradient of one call of the reused ReLU (Shrikumar et al. 2016)
        torch.testing.assert_close(f.saliency("relu", 1, "input-x-gradient", call=call),
                                   f.input * f.saliency("relu", 1, "gradient", call=call))


class _Clock:
    """A stand-in for ``time``: perf_counter advances 0.25 s per reading."""

    def __init__(self):
        self.t = 10.0

    def perf_counter(self):
        self.t += 0.25
        return self.t


class _Leaf(nn.Module):
    def forward(self, x):   # depends on nothing the model was given, but requires grad
        return torch.ones(x.shape[0], 2, 3, 3, requires_grad=True) * 2


class _Unreached(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.gate = nn.Parameter(torch.ones(1, 2, 1, 1))
        self.act = nn.ReLU()
        self.leaf = _Leaf()

    def forward(self, x):
        return self.conv(x) * self.act(self.gate) + self.leaf(x)


def test_forward_and_backward_times_are_milliseconds(monkeypatch):
    from cnnvis_gui.core import engine
    monkeypatch.setattr(engine, "time", _Clock())
    f = Visualizer(_Unreached()).forward(torch.rand(1, 3, 5, 5))
    assert f.forward_ms == 250.0 and f.last_backward_ms == 0.0      # no backward yet
    f.saliency("conv", 0, "gradient")
    assert f.last_backward_ms == 250.0


@pytest.mark.parametrize("layer", ["act", "leaf"])
def test_a_layer_the_input_does_not_reach_has_zero_saliency(layer):
    x = torch.rand(1, 3, 5, 5)
    with Visualizer(_Unreached()).forward(x) as f:
        f.saliency("conv", 0, "gradient")
        for method in ("gradient", "guided"):
            assert torch.equal(f.saliency(layer, 1, method), torch.zeros_like(x))
        if layer == "act":
            assert f.last_backward_ms == 0.0     # nothing to run backward through


def test_the_notice_says_why_an_activation_keeps_the_plain_gradient():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sigmoid(), nn.Conv2d(4, 2, 1), nn.SiLU()).eval()
    x = torch.rand(1, 3, 6, 6)
    plain = "use the plain gradient"
    with Visualizer(net).forward(x) as f:    # Sigmoid is a gate; SiLU gets the generalized rule
        assert [n for n in f.notices if plain in n or "uses the plain" in n] == [
            "1 Sigmoid activation call uses the plain gradient (gates, not rectifiers: no deconvnet/guided rule)"]
    with Visualizer(net, activations="relu-only").forward(x) as f:
        assert [n for n in f.notices if plain in n] == [
            "1 SiLU, 1 Sigmoid activation calls use the plain gradient (deconvnet/guided rules apply to ReLUs only)"]


def test_the_max_objective_is_each_samples_own_maximum():
    model = _SiLUNet()
    x = torch.rand(2, 3, 10, 10)
    x[1] *= 0.1                      # sample 1's maxima are far below sample 0's
    with Visualizer(model).forward(x) as f:
        both = f.saliency("conv2", 1, "gradient", "max")
    for i in range(2):
        with Visualizer(model).forward(x[i:i + 1]) as one:
            torch.testing.assert_close(both[i:i + 1], one.saliency("conv2", 1, "gradient", "max"))
        assert float(both[i].abs().sum()) > 0


def test_integrated_gradients_start_from_the_given_baseline():
    # completeness (Sundararajan et al. 2017): the attributions sum to S(x) - S(baseline)
    model = _SiLUNet()
    x = torch.rand(1, 3, 10, 10)
    b = 0.5 * x

    def s(t):
        with torch.no_grad():
            return float(model(t)[:, 1].sum())

    with Visualizer(model).forward(x) as f:
        ig = f.saliency("conv2", 1, "integrated-gradients", baseline=b)
    assert float(ig.sum()) == pytest.approx(s(x) - s(b), rel=1e-4, abs=1e-6)


def test_layers_named_for_recording():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    x = torch.rand(1, 3, 6, 6)
    with Visualizer(net).forward(x, layers="1") as f:          # one name as a string
        assert f.activations("1").shape == (1, 4, 4, 4)
        with pytest.raises(CnnvisError, match="'2' was not recorded in this frame: it recorded only '1';"):
            f.activations("2")
    with pytest.raises(CnnvisError) as ei:
        Visualizer(net).forward(x, layers=["1", "3"])
    assert str(ei.value) == ("unknown layer '3'. Valid layers are names from model.named_modules(), "
                             "e.g. '0', '1', '2' (or 'output' for the model output).")


def test_a_model_of_flat_features_needs_no_spec():
    mlp = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    x = torch.rand(2, 5)
    with Visualizer(mlp).forward(x) as f:
        g = f.saliency("2", 1, "gradient")
    with torch.no_grad():
        w = mlp[2].weight[1:2] * (mlp[0](x) > 0)          # d out_1 / d h, through the ReLU's mask
    torch.testing.assert_close(g, w @ mlp[0].weight.detach())
