"""What the notices and `cnnvis info` call each activation the rules meet (from a mutation run's survivors)."""
import torch
from torch import nn

from cnnvis_gui.core import Visualizer


class _Acts(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        # two ReLU6 and one Hardtanh(0, 7): a label that swapped the two would change the counts
        self.acts = nn.ModuleList([nn.ReLU6(), nn.Hardtanh(-1.0, 1.0), nn.Hardtanh(0.0, 7.0), nn.SELU(), nn.ELU(),
                                   nn.ReLU(), nn.Hardtanh(0.0, 6.0)])

    def forward(self, x):
        y = self.conv(x)
        return sum(a(y) for a in self.acts).mean((2, 3))


def test_relu6_selu_and_their_relatives_are_named_as_the_user_wrote_them():
    torch.manual_seed(0)
    frame = Visualizer(_Acts().eval()).forward(torch.randn(1, 3, 8, 8))
    assert frame.generalized_activations == {"ReLU6": 2, "Hardtanh": 2, "SELU": 1, "ELU": 1}
    assert frame.relu_calls == 1
    assert any(n.startswith("1 ELU, 2 Hardtanh, 2 ReLU6, 1 SELU activation calls: generalized rule")
               for n in frame.notices)


class _OneOfEach(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return (nn.functional.silu(y) * torch.sigmoid(y)).mean((2, 3))


def test_one_call_of_an_activation_is_named_in_the_singular():
    frame = Visualizer(_OneOfEach().eval()).forward(torch.randn(1, 3, 8, 8))
    assert frame.notices == [
        "1 SiLU activation call: generalized rule (guided relu(g)·f'(x) where x > 0, deconvnet relu(g); "
        "activations='relu-only' for the plain gradient)",
        "1 Sigmoid activation call uses the plain gradient (gates, not rectifiers: no deconvnet/guided rule)"]
