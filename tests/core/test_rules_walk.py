"""The rules' walk of the autograd graph reaches every ReLU, however the graph shares nodes."""
import pytest
import torch
from torch import nn

from cnnvis_gui.core import Visualizer

from .test_engine import _DeconvRef, _GuidedRef, _close


class _SharedNode(nn.Module):
    """``out = d + (y + relu(y))``: y's node is reached twice before it is visited (directly and
    through relu(y)), while the branch d still waits in the walk; d's ReLU must get the rule too."""

    def __init__(self):
        super().__init__()
        self.conv_y = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_d = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = nn.Sigmoid()

    def forward(self, x, relu=torch.relu):
        y = relu(self.conv_y(x))
        d = relu(self.conv_d(x) - 0.1)
        out = d + (y + relu(y))
        return (self.gate(out) * self.gate(out - 1.0)).mean((2, 3))      # two gate calls


@pytest.mark.parametrize("method,ref", [("guided", _GuidedRef), ("deconvnet", _DeconvRef)])
def test_every_relu_behind_a_node_reached_twice_gets_the_rule(method, ref):
    torch.manual_seed(2)
    model = _SharedNode().eval()
    x = torch.randn(1, 3, 9, 9)
    frame = Visualizer(model).forward(x)
    xr = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(model(xr, ref.apply)[0, 1], xr)
    _close(frame.saliency("output", 1, method), want)
    assert frame.relu_calls == 3
    assert frame.other_activations == {"Sigmoid": 2}
