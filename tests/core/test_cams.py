"""The CAM family against references written out from each paper's formula."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from cnnvis_gui.core import ATTENTION_CAMS, CAM_METHODS, LAYER_CAMS, CnnvisError, Visualizer, cam, grad_cam


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(1)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def shapes():
    """The trained shapes demo and two of its samples (1 x 3 x 64 x 64 each)."""
    cv2 = pytest.importorskip("cv2")
    from cnnvis_gui.models.demos import demo, demo_samples
    lm = demo("shapes")
    paths = demo_samples("shapes")
    xs = [lm.spec.to_tensor(cv2.cvtColor(cv2.imread(str(paths[i])), cv2.COLOR_BGR2RGB)) for i in (3, 9)]
    return lm.model, xs


def _activations_and_gradient(model, x, cam_module, score):
    """A and dS/dA at ``cam_module`` with a plain forward hook (float64 for the reference)."""
    store = {}

    def hook(m, args, out):
        store["A"] = out
        out.retain_grad()

    h = cam_module.register_forward_hook(hook)
    try:
        out = model(x.clone().requires_grad_(True))
    finally:
        h.remove()
    A = store["A"]
    (g,) = torch.autograd.grad(score(out), A)
    return A.detach().double()[0].numpy(), g.double()[0].numpy()


def _reference_map(method, A, g):
    """h x w map before relu, written from each paper (numpy, float64)."""
    if method == "gradcam":      # Selvaraju et al. 2017, eq. 1-2
        w = g.mean(axis=(1, 2))
        return np.einsum("k,kij->ij", w, A)
    if method == "hirescam":     # Draelos & Carin 2020: element-wise gradient x activation
        return (g * A).sum(axis=0)
    if method == "layercam":     # Jiang et al. 2021, eq. 4-5
        return (np.maximum(g, 0) * A).sum(axis=0)
    if method == "xgradcam":     # Fu et al. 2020, eq. 9
        w = np.array([(A[k] * g[k]).sum() / A[k].sum() if A[k].sum() != 0 else 0.0 for k in range(len(A))])
        return np.einsum("k,kij->ij", w, A)
    if method == "gradcam++":    # Chattopadhay et al. 2018, eq. 19 with Y = exp(S)
        w = np.zeros(len(A))
        for k in range(len(A)):
            for i in range(A.shape[1]):
                for j in range(A.shape[2]):
                    gk = g[k, i, j]
                    den = 2 * gk ** 2 + A[k].sum() * gk ** 3
                    alpha = gk ** 2 / den if den != 0 else 0.0
                    w[k] += alpha * max(gk, 0.0)
        return np.einsum("k,kij->ij", w, A)
    if method == "eigencam":     # Muhammad & Yeasin 2020: projection on the first right singular vector
        M = A.reshape(len(A), -1).T
        _, _, vt = np.linalg.svd(M, full_matrices=False)
        p = M @ vt[0]
        return (p if p.sum() >= 0 else -p).reshape(A.shape[1:])
    raise AssertionError(method)


def _upsampled(m, size):
    t = torch.from_numpy(np.maximum(m, 0))[None, None]
    up = F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0]
    return (up / up.max()).numpy() if float(up.max()) > 0 else up.numpy()


def _corr(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_every_method_is_listed():
    assert LAYER_CAMS == ("gradcam", "hirescam", "xgradcam", "layercam", "gradcam++", "scorecam", "eigencam")
    assert CAM_METHODS == LAYER_CAMS + ATTENTION_CAMS == LAYER_CAMS + ("rollout", "legrad")   # tests/core/test_legrad.py


@pytest.mark.parametrize("layer,unit,cam_layer", [("fc", 3, "layer3"), ("fc", 6, "layer4"),
                                                  ("layer4", 40, "layer3.1.conv2")])
def test_gradient_cams_and_eigencam_equal_the_papers(resnet, layer, unit, cam_layer):
    x = torch.randn(1, 3, 96, 96)
    modules = dict(resnet.named_modules())
    if layer == "fc":
        score = lambda out: out[:, unit].sum()
    else:
        feats = {}
        modules[layer].register_forward_hook(lambda m, a, o: feats.__setitem__("o", o))
        score = lambda out: feats["o"][:, unit].sum()
    try:
        A, g = _activations_and_gradient(resnet, x, modules[cam_layer], score)
    finally:
        modules[layer]._forward_hooks.clear()
    with Visualizer(resnet).forward(x) as frame:
        for method in ("gradcam", "hirescam", "xgradcam", "layercam", "gradcam++", "eigencam"):
            ours = frame.cam(layer, unit, cam_layer, method=method)[0]
            ref = _upsampled(_reference_map(method, A, g), (96, 96))
            assert ours.shape == (96, 96) and float(ours.min()) >= 0 and float(ours.max()) == pytest.approx(1.0)
            assert _corr(ours, ref) >= 0.99, method
            assert np.abs(ours.numpy() - ref).max() < 1e-3, method


def test_gradcam_is_grad_cam_exactly(resnet):
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(cam(resnet, x, "fc", 2), grad_cam(resnet, x, "fc", 2))
    assert torch.equal(cam(resnet, x, "layer4", 5, "layer2", method="gradcam"), grad_cam(resnet, x, "layer4", 5, "layer2"))


def test_methods_differ(shapes):
    model, xs = shapes
    with Visualizer(model).forward(xs[0]) as frame:
        maps = {m: frame.cam("fc2", 3, "features.10", method=m) for m in LAYER_CAMS}   # a CNN: no attention
    names = list(maps)
    assert all(float(m.max()) == pytest.approx(1.0) for m in maps.values())
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert float((maps[a] - maps[b]).abs().max()) > 1e-3, (a, b)


def test_gradient_cams_need_no_new_forward(resnet):
    x = torch.randn(1, 3, 64, 64)
    calls = []
    h = resnet.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        with Visualizer(resnet).forward(x) as frame:
            for m in ("gradcam", "hirescam", "xgradcam", "layercam", "gradcam++", "eigencam"):
                frame.cam("fc", 1, method=m)
    finally:
        h.remove()
    assert calls == [1]


def _objective_value(o, objective):
    """The unit's objective on one sample's C x ... output, written out: what the saliency differentiates."""
    if objective == "sum":
        return float(o.sum())
    if objective == "activation":
        return float(0.5 * (o.double() ** 2).sum())
    if objective == "max":
        return float(o.max())
    return float(o[tuple(objective)])


def _score_cam_reference(model, x, layer_module, cam_module, unit, objective="sum"):
    """Wang et al. 2020, Algorithm 1, one masked forward per channel (batch 1), float64 weights."""
    with torch.no_grad():
        store = {}
        h = cam_module.register_forward_hook(lambda m, a, o: store.__setitem__("A", o.clone()))
        model(x)
        h.remove()
        A = store["A"][0]
        H, W = x.shape[-2:]
        scores, kept = [], []
        for k in range(A.shape[0]):
            up = F.interpolate(A[k][None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0]
            if float(up.max()) == float(up.min()):
                continue
            mask = (up - up.min()) / (up.max() - up.min())
            out = {}
            h = layer_module.register_forward_hook(lambda m, a, o: out.__setitem__("o", o.clone()))
            model(x * mask)
            h.remove()
            scores.append(_objective_value(out["o"][0, unit], objective))
            kept.append(k)
        s = np.array(scores)
        alpha = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        return np.einsum("k,kij->ij", alpha, A[kept].double().numpy())


@pytest.mark.parametrize("layer,unit,cam_layer", [("fc2", 3, "features.10"), ("features.12", 9, "features.6")])
def test_scorecam_equals_the_paper_with_batched_forwards(shapes, layer, unit, cam_layer):
    model, xs = shapes
    x = xs[0]
    modules = dict(model.named_modules())
    ref = _upsampled(_score_cam_reference(model, x, modules[layer], modules[cam_layer], unit), (64, 64))
    assert ref.max() == 1.0
    calls = []
    h = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        ours = cam(model, x, layer, unit, cam_layer, method="scorecam")
    finally:
        h.remove()
    assert _corr(ours, ref) >= 0.99
    assert np.abs(ours.numpy() - ref).max() < 1e-3
    with Visualizer(model).forward(x) as frame:
        channels = frame.activations(cam_layer).shape[1]
    assert calls[0] == 1 and max(calls[1:]) == 16 and len(calls) - 1 <= -(-channels // 16)   # batches of 16


@pytest.mark.parametrize("objective", ["max", "activation", (3, 5)])
def test_scorecam_scores_each_masked_input_by_the_chosen_objective(shapes, objective):
    """Score-CAM's score of a masked input is the unit's objective (the one its saliency differentiates),
    not always the sum: each objective against the paper's algorithm with the objective written out."""
    model, xs = shapes
    x = xs[1]
    modules = dict(model.named_modules())
    ref = _upsampled(_score_cam_reference(model, x, modules["features.12"], modules["features.6"], 9, objective),
                     (64, 64))
    ours = cam(model, x, "features.12", 9, "features.6", method="scorecam", objective=objective)
    assert np.abs(ours.numpy() - ref).max() < 1e-3, objective
    summed = cam(model, x, "features.12", 9, "features.6", method="scorecam")
    assert np.abs(ours.numpy() - summed.numpy()).max() > 1e-2          # the objective matters here


def test_eigencam_ignores_the_unit_and_zero_gradients_give_zero_maps(resnet):
    x = torch.randn(1, 3, 64, 64)
    with Visualizer(resnet).forward(x) as frame:
        assert torch.equal(frame.cam("fc", 1, "layer3", method="eigencam"),
                           frame.cam("fc", 7, "layer3", method="eigencam"))
        # layer4 runs after layer2's activations: the gradient of layer2's unit there is zero
        for m in ("gradcam", "hirescam", "xgradcam", "layercam", "gradcam++"):
            assert float(frame.cam("layer2", 1, "layer4", method=m).abs().max()) == 0.0


def test_frame_cam_on_a_batch_matches_each_sample(shapes):
    model, xs = shapes
    x = torch.cat(xs)
    with Visualizer(model).forward(x) as frame:
        both = {m: frame.cam("fc2", 2, "features.10", method=m) for m in ("gradcam++", "scorecam", "eigencam")}
    for m, maps in both.items():
        for i in range(2):
            single = cam(model, xs[i], "fc2", 2, "features.10", method=m)
            assert float(single.max()) == 1.0
            assert float((maps[i] - single).abs().max()) < 1e-4, m


@pytest.mark.parametrize("kwargs,needle", [
    (dict(method="gradcam+"), "unknown CAM method"),
    (dict(method="scorecam", unit=99), "out of range"),
    (dict(method="layercam", cam_layer="fc"), "N x C x H x W"),
    (dict(method="eigencam", cam_layer="nope"), "unknown layer"),
])
def test_bad_requests_are_one_clear_error(resnet, kwargs, needle):
    kwargs = dict(kwargs)
    unit = kwargs.pop("unit", 1)
    with pytest.raises(CnnvisError, match=needle):
        cam(resnet, torch.randn(1, 3, 32, 32), "fc", unit, **kwargs)


def test_no_conv_layer_before_the_unit():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(CnnvisError, match="no convolutional layer"):
        cam(model, torch.randn(1, 3, 2, 2), "1", 0, method="hirescam")


class _RefusesZeros(nn.Module):
    """Conv net in training mode (BatchNorm) whose forward raises on an input with an exact zero."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if self.refuse and bool((x == 0).any()):
            raise ValueError("no zeros please")
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


@pytest.mark.parametrize("refuse", [False, True])
def test_scorecam_leaves_the_model_as_it_was(refuse):
    model = _RefusesZeros().train()
    model.refuse = refuse
    stats = model.bn.running_mean.clone()
    x = torch.rand(1, 3, 12, 12) + 0.5
    if refuse:
        with pytest.raises(CnnvisError, match="masked input: ValueError: no zeros please"):
            cam(model, x, "fc", 1, "conv", method="scorecam")
    else:
        assert float(cam(model, x, "fc", 1, "conv", method="scorecam").max()) == 1.0
    assert all(m.training for m in model.modules())
    assert torch.equal(model.bn.running_mean, stats)                  # eval mode during every forward
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


class _Moody(nn.Module):
    """The unit's layer ``head`` is skipped, or returns a tuple, when the input holds an exact zero
    (every Score-CAM masked input does: each mask is 0 at its channel's minimum)."""

    def __init__(self, mood):
        super().__init__()
        self.mood = mood
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = _TupleOnZeros() if mood == "tuple" else nn.Linear(4, 2)

    def forward(self, x):
        f = torch.relu(self.conv(x)).mean(dim=(2, 3))
        if self.mood == "skip" and bool((x == 0).any()):
            return f[:, :2]
        out = self.head(f if self.mood == "skip" else torch.cat([f, (x == 0).any().reshape(1, 1).expand(len(f), 1)], 1))
        return out[0] if isinstance(out, tuple) else out


class _TupleOnZeros(nn.Module):
    def forward(self, f):
        return (f[:, :4],) if bool(f[:, 4].any()) else f[:, :4]


@pytest.mark.parametrize("mood,needle", [
    ("skip", "^Score-CAM: the unit's layer did not run on the masked inputs as it did on the frame's input "
             ".*choose another CAM method.$"),
    ("tuple", "^Score-CAM: the unit's layer did not return a tensor for a masked input.$"),
])
def test_scorecam_on_a_layer_that_behaves_differently_on_masked_inputs(mood, needle):
    model = _Moody(mood).eval()
    x = torch.rand(1, 3, 8, 8) + 0.5
    assert float(cam(model, x, "head", 1, "conv", method="gradcam").max()) == 1.0
    with pytest.raises(CnnvisError, match=needle):
        cam(model, x, "head", 1, "conv", method="scorecam")


def test_unit_scores_of_each_objective():
    """The objective's value per sample, written out; ``sum`` is the default."""
    from cnnvis_gui.core.cams import unit_scores
    a = torch.arange(2 * 3 * 2 * 2, dtype=torch.float64).reshape(2, 3, 2, 2) - 10.0
    sel = a[:, 1]
    assert torch.equal(unit_scores(a, 1), sel.sum(dim=(1, 2)))
    assert torch.equal(unit_scores(a, 1, "activation"), 0.5 * (sel ** 2).sum(dim=(1, 2)))
    assert torch.equal(unit_scores(a, 1, "max"), sel.amax(dim=(1, 2)))
    assert torch.equal(unit_scores(a, 1, (1, 0)), sel[:, 1, 0])
    assert torch.equal(unit_scores(a.reshape(2, 12), 5), a.reshape(2, 12)[:, 5])      # a linear layer's unit
