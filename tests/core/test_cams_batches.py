"""Score-CAM and Eigen-CAM on batches with silent samples, on float64 models and on maps of any scale;
the gradient CAMs' divisions at sums of exactly one.

The CAM layer here is a 1 x 1 convolution with identity weights, so its activations are the input
itself and each case (a sample with no varying channel, an all-zero first sample, a map summing to
a small positive number) is built exactly.  Every expectation comes from the papers' algorithms as
written out in ``test_cams.py``, computed one sample at a time.
"""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnvis_gui.core import CnnvisError, Visualizer
from cnnvis_gui.core.cams import cam_from_gradients
from tests.core.test_cams import _reference_map, _score_cam_reference, _upsampled

H, W = 8, 10          # not square: rows and columns cannot be swapped unnoticed


class _IdentityCam(nn.Module):
    """``cam`` passes the input through (1 x 1 conv, identity weights); ``fc`` scores are O(1)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.cam = nn.Conv2d(3, 3, 1, bias=False)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.cam.weight.copy_(torch.eye(3)[:, :, None, None])

    def forward(self, x):
        return self.fc(torch.relu(self.conv(self.cam(x))).mean(dim=(2, 3)))


def _batch(dtype):
    """Sample 0 varies everywhere; sample 1 only in channel 0; sample 2 is constant (no location)."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 3, H, W, generator=g, dtype=torch.float64)
    x[1, 1], x[1, 2] = 0.7, 0.3
    x[2] = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)[:, None, None]
    return x.to(dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
@pytest.mark.parametrize("objective", ["sum", "activation"])
def test_scorecam_batch_with_silent_samples_in_the_models_dtype(dtype, tol, objective):
    """Each sample's map is its own Score-CAM: channels constant in one sample get no weight there
    even when they vary in another, and a sample with no varying channel gets an all-zero map."""
    model = _IdentityCam().to(dtype).eval()
    x = _batch(dtype)
    with Visualizer(model).forward(x) as frame:
        maps = frame.cam("fc", 1, "cam", method="scorecam", objective=objective)
    assert maps.dtype == dtype and maps.shape == (3, H, W)
    for i in (0, 1):
        ref = _upsampled(_score_cam_reference(model, x[i:i + 1], model.fc, model.cam, 1, objective), (H, W))
        assert ref.max() == 1.0 and ref.min() < 0.5
        np.testing.assert_allclose(maps[i].double().numpy(), ref, rtol=tol, atol=tol, err_msg=f"sample {i}")
    assert float(maps[2].abs().max()) == 0.0


def test_scorecam_activation_objective_is_half_the_square():
    """Scores of O(1): softmax(0.5 s^2) and softmax(s^2) differ, so the objective's factor shows."""
    model = _IdentityCam().double().eval()
    x = _batch(torch.float64)[:1]
    with Visualizer(model).forward(x) as frame:
        ours = frame.cam("fc", 0, "cam", method="scorecam", objective="activation")[0].numpy()
    ref = _upsampled(_score_cam_reference(model, x, model.fc, model.cam, 0, "activation"), (H, W))
    doubled = _upsampled(_score_cam_reference(model, x, model.fc, model.cam, 0, "sum"), (H, W))
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    assert np.abs(ref - doubled).max() > 1e-3


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
@pytest.mark.parametrize("scale", [1.0, 1e-3])
def test_eigencam_batch_after_an_all_zero_sample_in_the_models_dtype(dtype, tol, scale):
    """An all-zero first sample gets a zero map and the next ones are still computed; a map whose
    sum is a small positive number keeps its sign (scale 1e-3)."""
    model = _IdentityCam().to(dtype).eval()
    x = _batch(torch.float64)[:2].clone()
    x[0] = 0.0
    x[1] = (x[1] - 0.45) * scale          # signed, so the projection's sign is a real choice
    x = x.to(dtype)
    with Visualizer(model).forward(x) as frame:
        maps = frame.cam("fc", 1, "cam", method="eigencam")
    assert maps.dtype == dtype
    assert float(maps[0].abs().max()) == 0.0
    A = x[1].double().numpy()
    p = _reference_map("eigencam", A, None)
    assert 0 < p.sum() < (1 if scale < 1 else np.inf)     # at 1e-3 the sign rule works near zero
    np.testing.assert_allclose(maps[1].double().numpy(), _upsampled(p, (H, W)), rtol=tol, atol=tol)


def test_eigencam_sample_with_a_non_finite_activation_gets_a_zero_map():
    """inf/NaN in one sample's CAM layer (a diverged input) leaves that map blank, not an SVD error,
    and the other samples are unchanged."""
    model = _IdentityCam().double().eval()
    x = _batch(torch.float64)[:2].clone()
    x[0, 1, 2, 3] = float("inf")
    with Visualizer(model).forward(x) as frame:
        maps = frame.cam("fc", 1, "cam", method="eigencam")
    with Visualizer(model).forward(x[1:]) as frame:
        alone = frame.cam("fc", 1, "cam", method="eigencam")
    assert float(maps[0].abs().max()) == 0.0
    assert torch.equal(maps[1], alone[0])


def test_gradient_cams_where_a_channel_sums_to_one_or_the_gradcampp_denominator_is_one():
    """XGrad-CAM divides by sum_ij A (0 only where that sum is 0) and Grad-CAM++ by
    2 g^2 + sum_ab A g^3 (0 only where that is 0): sums of exactly 1 are ordinary values."""
    A = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    A[0, 0] = torch.tensor([[0.5, 0.25], [0.25, 0.0]])       # sums to 1
    A[0, 1] = torch.tensor([[4.0, 0.0], [0.0, 0.0]])          # sums to 4: with g = 0.5, 2 g^2 + 4 g^3 = 1
    A[0, 2] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    g = torch.tensor([[[0.3, -0.2], [0.7, 0.1]], [[0.5, 0.5], [-0.25, 0.0]], [[0.0, 0.2], [-0.1, 0.4]]],
                     dtype=torch.float64)[None]
    for method in ("xgradcam", "gradcam++", "gradcam", "hirescam", "layercam"):
        ours = cam_from_gradients(method, A, g)
        assert ours.shape == (1, 1, 2, 2)
        np.testing.assert_allclose(ours[0, 0].numpy(), _reference_map(method, A[0].numpy(), g[0].numpy()),
                                   rtol=1e-12, atol=1e-12, err_msg=method)


def test_cam_from_gradients_names_the_methods_it_knows():
    with pytest.raises(CnnvisError) as e:
        cam_from_gradients("scorecam", torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    assert str(e.value) == ("'scorecam' is not a gradient-based CAM; choose one of "
                            "gradcam, hirescam, xgradcam, layercam, gradcam++.")


class _Twice(nn.Module):
    """``block`` runs twice (shared weights): call 0 after ``conv1``, call 1 after ``conv2``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 1)

    def first_call(self, x):
        return self.block(torch.relu(self.conv1(x)))

    def forward(self, x):
        a = torch.relu(self.first_call(x))
        return torch.relu(self.block(torch.relu(self.conv2(a)))).mean(dim=(2, 3))


def test_cams_of_the_first_call_of_a_shared_layer():
    """``call=0`` is the unit in the layer's first call: a CAM at the shared layer itself reads that
    call's activations (it read the last call's, whose gradient is zero: a blank map), Grad-CAM
    differentiates that call's objective and Score-CAM scores it."""
    model = _Twice().double().eval()
    x = _batch(torch.float64)[:1]
    a1 = model.conv1(x).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model.block(torch.relu(a1))[:, 2].sum(), a1)
    A0 = model.first_call(x).detach()[0].numpy()
    one_hot = np.zeros_like(A0)
    one_hot[2] = 1.0                                     # d(sum of channel 2) / d(the layer's own output)
    with Visualizer(model).forward(x) as frame:
        assert frame.cam_call("block", "block", 0) == 0 and frame.cam_call("conv2", "block", 0) == -1
        own = frame.cam("block", 2, method="gradcam", call=0)[0]                # default: the layer itself
        np.testing.assert_allclose(own.numpy(), _upsampled(_reference_map("gradcam", A0, one_hot), (H, W)),
                                   rtol=1e-10, atol=1e-10)
        ours = frame.cam("block", 2, "conv1", method="gradcam", call=0)[0]
        late = frame.cam("block", 2, "conv2", method="gradcam", call=-1)[0]
        score = frame.cam("block", 2, "conv1", method="scorecam", call=0)[0]
        with pytest.raises(CnnvisError, match="call"):
            frame.cam("block", 2, "conv1", method="eigencam", call=2)
    A1 = model.conv1(x).detach()                         # Grad-CAM at conv1's output (before its relu)
    np.testing.assert_allclose(ours.numpy(), _upsampled(_reference_map("gradcam", A1[0].numpy(), g[0].numpy()), (H, W)),
                               rtol=1e-10, atol=1e-10)
    assert float(ours.max()) == 1.0 and float((ours - late).abs().max()) > 1e-3
    scores, kept = [], []
    with torch.no_grad():                               # Score-CAM (Wang et al. 2020) scoring the first call
        for k in range(A1.shape[1]):
            up = F.interpolate(A1[:, k:k + 1], size=(H, W), mode="bilinear", align_corners=False)[0, 0]
            if float(up.max()) > float(up.min()):
                mask = (up - up.min()) / (up.max() - up.min())
                scores.append(float(model.first_call(x * mask)[0, 2].sum()))
                kept.append(k)
    s = np.array(scores)
    alpha = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    ref = _upsampled(np.einsum("k,kij->ij", alpha, A1[0, kept].numpy()), (H, W))
    np.testing.assert_allclose(score.numpy(), ref, rtol=1e-10, atol=1e-10)


def test_scorecam_forwards_hold_at_most_the_batch_or_the_frame():
    """Masked inputs go SCORECAM_BATCH at a time, or one copy of a larger batch of samples."""
    from cnnvis_gui.core.cams import SCORECAM_BATCH
    model = _IdentityCam().eval()
    for n in (1, 3, 9, 20):
        x = torch.rand(n, 3, H, W)
        sizes = []
        with Visualizer(model).forward(x) as frame:
            h = model.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
            try:
                frame.cam("fc", 1, "cam", method="scorecam")
            finally:
                h.remove()
        assert max(sizes) <= max(n, SCORECAM_BATCH) and all(b % n == 0 for b in sizes), (n, sizes)
        assert sum(sizes) == 3 * n and max(sizes) == min(3, max(1, SCORECAM_BATCH // n)) * n, (n, sizes)


def test_scorecam_needs_a_frame_from_a_visualizer_and_unknown_methods_are_named():
    model = _IdentityCam().eval()
    with Visualizer(model).forward(torch.rand(1, 3, H, W)) as frame:
        with pytest.raises(CnnvisError) as e:
            frame.cam("fc", 1, "cam", method="gradcam+")
        assert str(e.value) == ("unknown CAM method 'gradcam+'; choose one of gradcam, hirescam, xgradcam, "
                                "layercam, gradcam++, scorecam, eigencam, rollout, legrad.")
        from cnnvis_gui.core.cams import frame_cam
        assert torch.equal(frame_cam(frame, "fc", 1, "cam"), frame.cam("fc", 1, "cam", "gradcam", "sum"))
        frame.visualizer = None
        with pytest.raises(CnnvisError) as e:
            frame.cam("fc", 1, "cam", method="scorecam")
        assert str(e.value) == "Score-CAM needs a frame recorded by a Visualizer (it runs masked forwards)."


class _SharedTanh(nn.Module):
    """One ``act`` module after ``conv1`` (call 0) and after ``conv2`` (call 1)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.conv1, self.conv2, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Tanh()

    def forward(self, x):
        return self.act(self.conv2(self.act(self.conv1(x)))).mean(dim=(2, 3))


def test_default_cam_layer_follows_the_call_of_a_shared_activation():
    model = _SharedTanh().double().eval()
    with Visualizer(model).forward(_batch(torch.float64)[:1]) as frame:
        assert (frame.default_cam_layer("act", 0), frame.default_cam_layer("act", -1)) == ("conv1", "conv2")
        first = frame.cam("act", 1, call=0)[0]
        assert torch.equal(first, frame.cam("act", 1, "conv1", call=0)[0]) and float(first.max()) == 1.0
        assert float((first - frame.cam("act", 1, call=-1)[0]).abs().max()) > 1e-3
