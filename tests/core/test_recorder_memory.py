"""What the recording keeps alive: a module's inputs only while they may be needed to recompute
its output (when that output is later overwritten in place); otherwise they are freed."""
import gc
import weakref

import torch
from torch import nn

from cnnvis_gui.core import Visualizer


class _BigFunctionalInput(nn.Module):
    """A large tensor made by functional code (no module returns it), read by a pool whose
    backward saves nothing of it: after the forward nothing in PyTorch holds it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.big = None

    def forward(self, x):
        h = self.conv(x).repeat(1, 64, 1, 1) * 2.0      # 256 channels, not a module's output
        self.big = weakref.ref(h)
        return self.pool(h).flatten(1)


def test_inputs_of_calls_never_overwritten_are_not_kept():
    torch.manual_seed(0)
    model = _BigFunctionalInput().eval()
    frame = Visualizer(model).forward(torch.randn(2, 3, 32, 32))
    assert frame.activations("pool").shape == (2, 256, 1, 1)       # the calls are built
    gc.collect()
    assert model.big() is None, "the recording keeps the pool's 2 MiB input alive"
    # the frame still answers everything about the pool's output
    assert frame.saliency("pool", 3, "guided").shape == (2, 3, 32, 32)
