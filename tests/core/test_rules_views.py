"""In-place activations applied to *views* (slices of one feature map), several of each kind.

Autograd hides such an activation inside a CopySlices node.  Each slice must get exactly the
rule its activation gets out of place (ReLU: the rule; LeakyReLU/ELU: the generalized rule in
``activations="all"``, the plain gradient in ``"relu-only"``; Sigmoid/Hardswish: the plain
gradient always), and the notices must count every call.  The reference below applies each
activation out of place with the rule written out by hand.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnvis_gui.core import CnnvisError, InputSpec, Visualizer
from cnnvis_gui.core.rules import GraphRules, RuleBox, activation_notices

from .test_engine import _RefActivation as _Rule   # f forward; deconvnet relu(g), guided relu(g) f'(x) [x > 0]


# (kind, what the forward calls in place on a view, the out-of-place f); each on a view of its own
# conv's output (channels 1..2 of 4): a second in-place op on the same base would change the view
# the first one saved, and then no backward runs at all (tested below)
_ACTS = [
    ("ReLU", lambda v: v.relu_(), F.relu),
    ("ReLU", lambda v: F.relu(v, inplace=True), F.relu),
    ("LeakyReLU", lambda v: F.leaky_relu_(v, 0.1), lambda t: F.leaky_relu(t, 0.1)),
    ("LeakyReLU", lambda v: F.leaky_relu(v, 0.2, inplace=True), lambda t: F.leaky_relu(t, 0.2)),
    ("ELU", lambda v: F.elu_(v), F.elu),
    ("Sigmoid", lambda v: v.sigmoid_(), torch.sigmoid),     # saves its result: still a gate
    ("Hardswish", lambda v: F.hardswish(v, inplace=True), F.hardswish),
    ("Hardswish", lambda v: F.hardswish(v, inplace=True), F.hardswish),
]


class _ActivationsOnViews(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 4, 3) for _ in _ACTS])
        self.fc = nn.Linear(len(_ACTS) * 4 * 6 * 6, 4)

    def forward(self, x, rule_of=None):
        outs = []
        for conv, (kind, call, f) in zip(self.convs, _ACTS):
            y = conv(x)
            if rule_of is None:
                call(y[:, 1:3])
            else:   # the reference: the activation out of place, its backward by the rule its kind gets
                y = torch.cat([y[:, :1], _Rule.apply(y[:, 1:3], f, rule_of(kind)), y[:, 3:]], 1)
            outs.append(y)
        return self.fc(torch.flatten(torch.cat(outs, 1), 1))


def _rule_of(method, activations):
    generalized = {"ReLU"} if activations == "relu-only" else {"ReLU", "LeakyReLU", "ELU"}
    return lambda kind: method if kind in generalized else "gradient"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(11)
    model = _ActivationsOnViews().double().eval()
    with torch.no_grad():      # float64 weights that float32 cannot hold: a float32 step would show
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model


@pytest.mark.parametrize("activations", ["all", "relu-only"])
def test_each_view_gets_its_rule_and_every_call_is_counted(model, activations):
    torch.manual_seed(3)
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    frame = Visualizer(model, activations=activations).forward(x)
    for method in ("guided", "deconvnet", "gradient"):
        xr = x.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(model(xr, _rule_of(method, activations))[0, 1], xr)
        got = frame.saliency("output", 1, method)
        assert got.dtype == torch.float64
        # float64 end to end: a scratch tensor of another dtype would show here
        assert float((got - ref).abs().max()) <= 1e-12 * float(ref.abs().max()), (method, activations)
    plain = frame.saliency("output", 1, "gradient")
    assert float((frame.saliency("output", 1, "guided") - plain).abs().max()) > 1e-3 * float(plain.abs().max())

    assert frame.relu_calls == 2
    if activations == "all":
        assert frame.generalized_activations == {"LeakyReLU": 2, "ELU": 1}
        assert frame.other_activations == {"Sigmoid": 1, "Hardswish": 2}
    else:
        assert frame.generalized_activations == {}
        assert frame.other_activations == {"LeakyReLU": 2, "ELU": 1, "Sigmoid": 1, "Hardswish": 2}
    if activations == "all":
        assert frame.notices == [
            "1 ELU, 2 LeakyReLU activation calls: generalized rule (guided relu(g)·f'(x) where x > 0, deconvnet "
            "relu(g); activations='relu-only' for the plain gradient)",
            "2 Hardswish, 1 Sigmoid activation calls use the plain gradient (gates, not rectifiers: no "
            "deconvnet/guided rule)"]
    else:
        assert frame.notices == ["1 ELU, 2 Hardswish, 2 LeakyReLU, 1 Sigmoid activation calls use the plain "
                                 "gradient (deconvnet/guided rules apply to ReLUs only)"]


class _SecondInPlaceOnTheSameBase(nn.Module):
    """ELU in place on one slice, then ReLU in place on another slice of the same tensor: the
    second write changes the view the ELU saved, so plain PyTorch cannot run this backward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        F.elu_(y[:, :2])
        y[:, 2:].relu_()
        return y.mean((2, 3))


def test_a_model_that_changes_a_saved_tensor_shows_activations_and_says_why_no_gradient():
    torch.manual_seed(0)
    model = _SecondInPlaceOnTheSameBase().eval()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        model(x.clone().requires_grad_(True))[0, 0].backward()       # PyTorch itself cannot
    vis = Visualizer(model, InputSpec(3, 8, 8))
    assert "conv" in vis.model_map()                            # the model map builds
    frame = vis.forward(x)
    with torch.no_grad():
        assert torch.equal(frame.activations("conv"), model.conv(x))    # as the conv returned it
        assert torch.equal(frame.activations("output"), model(x))
    assert (frame.relu_calls, frame.generalized_activations, frame.other_activations) == (1, {"ELU": 1}, {})
    (line,) = [n for n in frame.notices if "in place" in n]
    assert "output 0 of Elu1" in line and "inplace=False" in line and "\n" not in line
    for method in ("gradient", "guided", "deconvnet"):
        with pytest.raises(CnnvisError, match=r"changes in place a tensor its backward needs \(output 0 of Elu1"):
            frame.saliency("output", 0, method)
    with pytest.raises(CnnvisError, match="changes in place"):
        frame.cam("output", 0, "conv")


# ------------------------------------------------ a ReLU whose node did not save its view (other torch builds)
class _FakeNode:
    next_functions = ()

    def __init__(self):
        self.hooks = []

    def register_hook(self, hook):
        self.hooks.append(hook)


class ReluBackward0(_FakeNode):      # the name autograd gives it; no ``_saved_result``
    pass


class CopySlices(_FakeNode):
    def __init__(self):
        super().__init__()
        self._wrapped_node = ReluBackward0()


@pytest.mark.parametrize("n,notice", [
    (1, "1 in-place ReLU call on a view of another tensor keeps the plain gradient"),
    (3, "3 in-place ReLU calls on a view of another tensor keep the plain gradient")])
def test_a_relu_on_a_view_the_rule_cannot_reach_is_counted_and_named(n, notice):
    """On this torch every ReLU node saves its view; a build whose node does not keeps the plain
    gradient there, and the notice says how many such calls there were."""
    rules = GraphRules(RuleBox("guided"), "all")
    nodes = [CopySlices() for _ in range(n)]
    rules.visit(nodes)
    assert all(node.hooks == [] for node in nodes)     # nothing to locate the region with: no hook
    assert (rules.relu_nodes, rules.relu_on_views, rules.relu_calls) == (0, n, n)
    assert activation_notices(rules) == [notice]


def test_what_autograds_inplace_error_names():
    """The part of autograd's message that names the tensor, else "a saved tensor"; other errors: None."""
    from cnnvis_gui.core.errors import stale_saved_tensor
    real = ("one of the variables needed for gradient computation has been modified by an inplace operation: "
            "[torch.FloatTensor [2, 3]], which is output 0 of ReluBackward0, is at version 1; expected version 0 "
            "instead. Hint: enable anomaly detection")
    assert stale_saved_tensor(RuntimeError(real)) == "output 0 of ReluBackward0"
    assert stale_saved_tensor(RuntimeError("a tensor was modified by an inplace operation")) == "a saved tensor"
    assert stale_saved_tensor(RuntimeError("which is output 1 of Elu, modified by an inplace operation")) == \
        "output 1 of Elu"
    assert stale_saved_tensor(RuntimeError("CUDA out of memory")) is None
