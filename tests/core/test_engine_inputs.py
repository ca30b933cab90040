"""Unit indices and objectives the way Python callers give them: numpy integers, None, bools."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_gui.core import CnnvisError, InputSpec, Visualizer


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
