"""The engine against independent references: captum for module ReLUs, hand-written rules otherwise."""
import copy
import gc
import weakref

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from captum.attr import NeuronDeconvolution, NeuronGradient, NeuronGuidedBackprop

from cnnvis_gui.core import (CnnvisError, InputSpec, ModelForwardError, Visualizer, grad_cam,
                             model_map, saliency)

CAPTUM = {"gradient": NeuronGradient, "deconvnet": NeuronDeconvolution, "guided": NeuronGuidedBackprop}


def _close(a, b, scale=None):
    scale = scale if scale is not None else max(float(b.abs().max()), 1e-12)
    err = float((a - b).abs().max())
    assert err <= 1e-5 * scale + 1e-7, f"max abs diff {err:.3g} vs scale {scale:.3g}"


def _captum(model, layer, unit, method, x, objective="sum"):
    mod = dict(model.named_modules())[layer]
    if objective == "sum":
        sel = lambda o: o[:, unit].reshape(o.shape[0], -1).sum(1)
    else:  # a position
        sel = (unit,) + tuple(objective)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CAPTUM[method](model, mod).attribute(x.clone(), neuron_selector=sel).detach()


# ----------------------------------------------------------------------- reference models
@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(1)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(2)
    return torchvision.models.vgg11(num_classes=10).eval()


@pytest.mark.parametrize("method", ["gradient", "deconvnet", "guided"])
@pytest.mark.parametrize("layer,unit", [("layer2", 5), ("layer3.1.conv1", 7), ("layer1.0.bn2", 3),
                                        ("layer4", 100), ("fc", 4)])
def test_resnet18_matches_captum(resnet, method, layer, unit):
    x = torch.randn(1, 3, 64, 64)
    ours = saliency(resnet, x, layer, unit, method)
    ref = _captum(resnet, layer, unit, method, x)
    assert ours.shape == x.shape
    assert float(ref.abs().max()) > 0
    _close(ours, ref)


@pytest.mark.parametrize("method", ["gradient", "deconvnet", "guided"])
def test_vgg11_matches_captum_sum_and_position(vgg, method):
    x = torch.randn(1, 3, 64, 64)
    frame = Visualizer(vgg).forward(x)
    for layer, unit in [("features.8", 11), ("features.18", 200), ("classifier.6", 2)]:
        _close(frame.saliency(layer, unit, method), _captum(vgg, layer, unit, method, x))
    _close(frame.saliency("features.8", 11, method, objective=(3, 5)),
           _captum(vgg, "features.8", 11, method, x, objective=(3, 5)))


def test_methods_really_differ(resnet):
    x = torch.randn(1, 3, 64, 64)
    f = Visualizer(resnet).forward(x)
    g, d, gb = (f.saliency("layer3", 2, m) for m in ("gradient", "deconvnet", "guided"))
    assert float((g - gb).abs().max()) > 1e-3 * float(g.abs().max())
    assert float((d - gb).abs().max()) > 1e-3 * float(d.abs().max())


# ----------------------------------------------------------------------- functional ReLUs
class _GuidedRef(torch.autograd.Function):
    """Independent guided-backprop ReLU for the references in this file."""

    @staticmethod
    def forward(ctx, x):
        y = x.clamp(min=0)
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.clamp(min=0) * (x > 0).to(g.dtype)


class _DeconvRef(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        return g.clamp(min=0)


class _RefReLU(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn.apply(x)


def _swap_relus(model, fn):
    for name, child in model.named_children():
        if isinstance(child, nn.ReLU):
            setattr(model, name, _RefReLU(fn))
        else:
            _swap_relus(child, fn)
    return model


def test_densenet_functional_relu_is_reached():
    """DenseNet-121 calls F.relu before its classifier: module hooks miss it, we must not."""
    torch.manual_seed(3)
    model = torchvision.models.densenet121(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    unit = 6
    ours = saliency(model, x, "classifier", unit, "guided")
    module_only = _captum(model, "classifier", unit, "guided", x)

    # Independent reference: every nn.ReLU swapped for a guided Function, and the
    # forward written out so the functional ReLU gets the rule too.
    ref_model = _swap_relus(copy.deepcopy(model), _GuidedRef)
    xr = x.clone().requires_grad_(True)
    feats = ref_model.features(xr)
    out = ref_model.classifier(torch.flatten(F.adaptive_avg_pool2d(_GuidedRef.apply(feats), 1), 1))
    (ref,) = torch.autograd.grad(out[:, unit].sum(), xr)

    _close(ours, ref)
    diff = float((module_only - ref).abs().max())
    assert diff > 1e-3 * float(ref.abs().max()), "a module-hook-only implementation should differ here"


class _EveryReLU(nn.Module):
    """All the ways research code spells ReLU, plus activations that keep the plain gradient."""

    def __init__(self, relu_factory=lambda: nn.ReLU(inplace=True)):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        self.relu = relu_factory()            # called twice
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.c3 = nn.Conv2d(6, 6, 3, padding=1)
        self.act = nn.GELU()
        self.fc = nn.Linear(6 * 7 * 7, 5)
        self.use_functional = True

    def relu_fn(self, x, how):
        return {"F": lambda t: F.relu(t), "Fi": lambda t: F.relu(t, inplace=True),
                "torch": torch.relu, "method": lambda t: t.relu(),
                "method_": lambda t: t.relu_()}[how](x)

    def forward(self, x, relu_fn=None):
        rf = relu_fn or self.relu_fn
        x = self.relu(self.c1(x))
        x = F.max_pool2d(x, 2)
        y = self.c2(x)
        y = rf(y, "F")
        y = rf(y, "method")
        y = self.relu(y + x)
        z = self.c3(y)
        z = rf(z, "Fi")
        z = rf(z, "torch")
        z2 = z.clone()
        rf(z2, "method_")           # in place, result not rebound
        z = self.act(F.max_pool2d(z2, 2) + 0.1)
        return self.fc(torch.flatten(z, 1))


def _every_relu_reference(model, x, unit, fn):
    ref_model = _swap_relus(copy.deepcopy(model), fn)
    xr = x.clone().requires_grad_(True)

    # Rewrite the forward with explicit reference ReLUs (in-place semantics kept by rebinding).
    m = ref_model
    h = m.relu(m.c1(xr))
    h = F.max_pool2d(h, 2)
    y = fn.apply(fn.apply(m.c2(h)))
    y = m.relu(y + h)
    z = fn.apply(fn.apply(m.c3(y)))
    z2 = fn.apply(z.clone())
    z = m.act(F.max_pool2d(z2, 2) + 0.1)
    out = m.fc(torch.flatten(z, 1))
    (g,) = torch.autograd.grad(out[:, unit].sum(), xr)
    return g


@pytest.mark.parametrize("method,fn", [("guided", _GuidedRef), ("deconvnet", _DeconvRef)])
def test_every_relu_spelling_gets_the_rule(method, fn):
    torch.manual_seed(4)
    model = _EveryReLU().eval()
    x = torch.randn(1, 1, 28, 28)
    # the reference keeps GELU's plain gradient: the rules at ReLUs only (the generalized rules
    # past ReLU are checked in test_rules_past_relu_*)
    vis = Visualizer(model, InputSpec(1, 28, 28), activations="relu-only")
    frame = vis.forward(x)
    ours = frame.saliency("fc", 2, method)
    ref = _every_relu_reference(model, x, 2, fn)
    _close(ours, ref)
    # 2 module calls of self.relu + 5 functional spellings
    assert frame.relu_calls == 7 and frame.functional_relu_calls == 5
    assert any("GELU" in n and "plain gradient" in n for n in frame.notices)
    mm = vis.model_map()
    assert mm["relu"].calls == 2 and mm.relu_calls == 7


def test_plain_gradient_equals_autograd_on_every_relu_net():
    model = _EveryReLU().eval()
    x = torch.randn(2, 1, 28, 28)
    ours = saliency(model, x, "c3", 4, "gradient")
    xr = x.clone().requires_grad_(True)
    acts = {}
    h = model.c3.register_forward_hook(lambda m, a, o: acts.__setitem__("c3", o.clone()))
    # clone: the in-place F.relu overwrites c3's output afterwards
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    # Reference through a functional rewrite without in-place ops.
    h1 = F.max_pool2d(F.relu(model.c1(xr)), 2)
    y = F.relu(F.relu(model.c2(h1)) + h1)
    c3 = model.c3(y)
    (ref,) = torch.autograd.grad(c3[:, 4].sum(), xr)
    _close(ours, ref)
    assert torch.allclose(Visualizer(model).forward(x).activations("c3"), acts["c3"])


# ----------------------------------------------------------------------- shapes and channels
class _GrayNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3), nn.ReLU())
        self.head = nn.Linear(16 * 11 * 11, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


@pytest.mark.parametrize("method", ["gradient", "deconvnet", "guided"])
def test_grayscale_28x28_matches_captum(method):
    model = _GrayNet().eval()
    x = torch.randn(1, 1, 28, 28)
    ours = saliency(model, x, "features.3", 9, method)
    assert ours.shape == (1, 1, 28, 28)
    _close(ours, _captum(model, "features.3", 9, method, x))
    _close(saliency(model, x, "head", 3, method), _captum(model, "head", 3, method, x))


@pytest.mark.parametrize("method", ["gradient", "guided"])
def test_non_square_97x131(resnet, method):
    x = torch.randn(1, 3, 97, 131)
    vis = Visualizer(resnet, InputSpec(3, 97, 131))
    mm = vis.model_map()
    assert mm["layer1"].shape == (64, 25, 33) and mm["layer1"].units == 64
    frame = vis.forward(x)
    s = frame.saliency("layer2", 1, method)
    assert s.shape == (1, 3, 97, 131)
    _close(s, _captum(resnet, "layer2", 1, method, x))
    cam = frame.grad_cam("fc", 1)
    assert cam.shape == (1, 97, 131)


# ----------------------------------------------------------------------- objectives
def test_objectives():
    model = _GrayNet().eval()
    x = torch.randn(1, 1, 28, 28)
    frame = Visualizer(model).forward(x)
    xr = x.clone().requires_grad_(True)
    a = model.features[:4](xr)[:, 5]  # conv output before the (out-of-place) ReLU

    (ref_act,) = torch.autograd.grad(a, xr, grad_outputs=a.detach(), retain_graph=True)
    _close(frame.saliency("features.3", 5, "gradient", "activation"), ref_act)

    flat = a.reshape(-1)
    i = int(flat.argmax())
    (ref_max,) = torch.autograd.grad(flat[i], xr, retain_graph=True)
    _close(frame.saliency("features.3", 5, "gradient", "max"), ref_max)

    (ref_pos,) = torch.autograd.grad(a[0, 4, 7], xr, retain_graph=True)
    pos = frame.saliency("features.3", 5, "gradient", (4, 7))
    _close(pos, ref_pos)
    # a single position has a compact receptive field: 5x5 for two 3x3 convs and a pool -> 6x6
    nz = pos[0, 0].abs() > 0
    rows, cols = nz.any(1).nonzero().flatten(), nz.any(0).nonzero().flatten()
    assert rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8

    with pytest.raises(CnnvisError, match="objective"):
        frame.saliency("features.3", 5, "gradient", "median")
    with pytest.raises(CnnvisError, match=r"outside .* map"):
        frame.saliency("features.3", 5, "gradient", (40, 1))


def test_batch_gives_per_sample_gradients():
    model = _GrayNet().eval()
    x = torch.randn(3, 1, 28, 28)
    batch = saliency(model, x, "head", 7, "guided")
    for i in range(3):
        _close(batch[i:i + 1], saliency(model, x[i:i + 1], "head", 7, "guided"))


# ----------------------------------------------------------------------- one forward per frame
class _Counting(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.forwards = 0

    def forward(self, x):
        self.forwards += 1
        return self.inner(x)


def test_one_forward_many_requests_and_memory_released():
    model = _Counting(_GrayNet()).eval()
    vis = Visualizer(model, InputSpec(1, 28, 28))
    frame = vis.forward(torch.randn(1, 1, 28, 28))
    results = [frame.saliency("inner.features.3", u, m) for u in range(4) for m in ("gradient", "guided")]
    frame.grad_cam("inner.head", 2)
    frame.activations("inner.features.0")
    assert model.forwards == 1
    assert not torch.equal(results[0], results[2])
    ref = weakref.ref(frame._calls["inner.features.3"][0].value)
    del frame, results
    gc.collect()
    assert ref() is None, "dropping the frame must release its activations and graph"


# ----------------------------------------------------------------------- hygiene
def _hook_state(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
             len(getattr(m, "_backward_pre_hooks", {})), len(m._forward_hooks_always_called))
            for m in model.modules()]


def _check_untouched(model, before_out, x, flags, training, hooks):
    assert _hook_state(model) == hooks
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == training
    assert all(p.grad is None for p in model.parameters())
    assert torch._C._len_torch_function_stack() == 0
    with torch.no_grad():
        assert torch.equal(model(x), before_out)


def test_hygiene_after_success(resnet):
    model = copy.deepcopy(resnet)
    model.train()
    model.layer1.requires_grad_(False)
    model.layer2[0].train(False)
    x = torch.randn(2, 3, 64, 64)
    flags = [p.requires_grad for p in model.parameters()]
    training = [m.training for m in model.modules()]
    hooks = _hook_state(model)
    model.eval()
    with torch.no_grad():
        before = model(x)
    for m, t in zip(model.modules(), training):
        m.training = t
    frame = Visualizer(model).forward(x)
    frame.saliency("layer3", 1, "guided")
    frame.grad_cam("fc", 3)
    frame.gradient_at("layer2", "fc", 3)
    assert [m.training for m in model.modules()] == training
    model.eval()
    training_eval = [m.training for m in model.modules()]
    _check_untouched(model, before, x, flags, training_eval, hooks)


class _Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU(inplace=True)
        self.bad = nn.Linear(7, 2)

    def forward(self, x):
        return self.bad(torch.flatten(self.relu(self.conv(x)), 1))


def test_hygiene_after_forward_raises_and_error_names_layer():
    model = _Exploding().train()
    x = torch.randn(1, 3, 10, 10)
    flags = [p.requires_grad for p in model.parameters()]
    hooks = _hook_state(model)
    with pytest.raises(ModelForwardError) as ei:
        Visualizer(model).forward(x)
    msg = str(ei.value)
    assert "'bad' (Linear)" in msg and "1x256" in msg and "1x3x10x10" in msg
    assert _hook_state(model) == hooks
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert torch._C._len_torch_function_stack() == 0
    with pytest.raises(ModelForwardError):
        Visualizer(model, InputSpec(3, 10, 10)).model_map()
    assert _hook_state(model) == hooks


# ----------------------------------------------------------------------- errors and the map
class _Tupled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.split = _Split()
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        a, b = self.split(self.conv(x))
        return a + b


class _Split(nn.Module):
    def forward(self, x):
        return x[:, :2], x[:, 2:]


def test_model_map_and_errors(resnet):
    mm = model_map(resnet, InputSpec(3, 64, 64))
    assert mm["layer1.0.relu"].calls == 2
    assert mm[""].units == 10 and mm["output"].units == 10
    assert mm["fc"].shape == (10,) and mm["layer4"].shape == (512, 2, 2)
    assert mm.default_layer == "layer4.1.conv2"
    assert len(mm.names()) == len(list(resnet.named_modules()))

    t = model_map(_Tupled(), InputSpec(3, 8, 8))
    assert not t["split"].visualizable and "tuple" in t["split"].reason
    assert not t["unused"].visualizable and "not run" in t["unused"].reason
    frame = Visualizer(_Tupled()).forward(torch.randn(1, 3, 8, 8))
    with pytest.raises(CnnvisError, match="not visualizable.*tuple"):
        frame.saliency("split", 0)

    f = Visualizer(resnet, InputSpec(3, 64, 64)).forward(torch.randn(1, 3, 64, 64))
    with pytest.raises(CnnvisError, match=r"Did you mean: 'layer4'"):
        f.saliency("layr4", 0)
    with pytest.raises(CnnvisError, match=r"512 units \(0\.\.511\)"):
        f.saliency("layer4", 512)
    with pytest.raises(CnnvisError, match="unknown method"):
        f.saliency("layer4", 0, "lrp")
    with pytest.raises(CnnvisError, match=r"N x 3 x 64 x 64"):
        Visualizer(resnet, InputSpec(3, 64, 64)).forward(torch.randn(1, 3, 32, 32))
    with pytest.raises(CnnvisError, match="torch.Tensor"):
        Visualizer(resnet).forward([[1.0]])
    with pytest.raises(CnnvisError, match="ran 2 time"):
        f.activations("layer1.0.relu", call=2)
    # a layer called twice: both calls are recorded separately
    assert not torch.equal(f.activations("layer1.0.relu", 0), f.activations("layer1.0.relu", 1))


# ----------------------------------------------------------------------- Grad-CAM
def test_grad_cam_matches_reference(resnet):
    x = torch.randn(1, 3, 64, 64)
    store = {}
    h = resnet.layer3.register_forward_hook(lambda m, a, o: store.__setitem__("A", o))
    try:
        xr = x.clone().requires_grad_(True)
        out = resnet(xr)
    finally:
        h.remove()
    A = store["A"]
    (g,) = torch.autograd.grad(out[0, 3], A)
    ref = torch.relu((g.mean((2, 3), keepdim=True) * A).sum(1, keepdim=True))
    assert float(ref.detach().max()) > 0
    ref = F.interpolate(ref, size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
    ref = ref / ref.max()
    ours = grad_cam(resnet, x, "fc", 3, "layer3")
    assert ours.shape == (64, 64) and float(ours.min()) >= 0 and float(ours.max()) == pytest.approx(1.0)
    _close(ours, ref.detach(), scale=1.0)

    frame = Visualizer(resnet).forward(x)
    ggc = frame.guided_grad_cam("fc", 3, "layer3")
    _close(ggc, frame.saliency("fc", 3, "guided") * ours[None, None])
    assert frame.default_cam_layer("fc") == "layer4.1.conv2"
    assert frame.default_cam_layer("layer2.0.bn1") == "layer2.0.conv1"


def test_model_map_names_the_cam_layer_a_full_frame_would(resnet):
    """The window records only the layers it shows: it asks the model map for the CAM layer,
    which must be the one a frame recording every module chooses, for every layer."""
    from cnnvis_gui.core import InputSpec

    vis = Visualizer(resnet, spec=InputSpec(3, 64, 64))
    frame = vis.forward(torch.randn(1, 3, 64, 64))
    mm = vis.model_map()
    names = mm.visualizable_names()
    assert len(names) > 50
    assert [mm.default_cam_layer(n) for n in names] == [frame.default_cam_layer(n) for n in names]
    assert mm.default_cam_layer("conv1") == "conv1" and mm.default_cam_layer("bn1") == "conv1"
    assert mm.default_cam_layer("layer3.1.relu") == "layer3.1.conv2"      # reused: its last call's
    with pytest.raises(CnnvisError, match="unknown layer"):
        mm.default_cam_layer("layer9")


def test_grad_cam_all_zero_stays_zero():
    model = _GrayNet().eval()
    with torch.no_grad():
        model.head.weight[3].zero_()
    cam = grad_cam(model, torch.randn(1, 1, 28, 28), "head", 3, "features.3")
    assert cam.shape == (28, 28) and torch.count_nonzero(cam) == 0 and not torch.isnan(cam).any()


def test_gradient_at_layer(resnet):
    x = torch.randn(1, 3, 64, 64)
    frame = Visualizer(resnet).forward(x)
    store = {}
    h = resnet.layer2.register_forward_hook(lambda m, a, o: store.__setitem__("A", o))
    try:
        out = resnet(x.clone().requires_grad_(True))
    finally:
        h.remove()
    (ref,) = torch.autograd.grad(out[0, 3], store["A"])
    _close(frame.gradient_at("layer2", "fc", 3, "gradient"), ref)
    # a layer after the target gets zeros, not an error
    assert torch.count_nonzero(frame.gradient_at("layer4", "layer2", 0)) == 0


def test_parameter_gradients_are_never_computed(resnet):
    """Backward passes go to the input (or a layer) only: no parameter gradient is ever formed."""
    model = copy.deepcopy(resnet)
    fired = []
    handles = [p.register_hook(lambda g, n=n: fired.append(n)) for n, p in model.named_parameters()]
    try:
        frame = Visualizer(model).forward(torch.randn(1, 3, 64, 64))
        for m in ("gradient", "deconvnet", "guided"):
            frame.saliency("fc", 1, m)
        frame.grad_cam("fc", 1)
        frame.gradient_at("layer2", "layer3", 0)
        # control: a plain backward to the loss would have reached them
        out = model(torch.randn(1, 3, 64, 64))
        assert not fired
        out.sum().backward()
        assert fired
    finally:
        for h in handles:
            h.remove()


def test_forwards_in_other_threads_are_not_recorded():
    """A scan thread running the same model while a frame records must not leak into the frame."""
    import threading

    model = _GrayNet().eval()
    started, release = threading.Event(), threading.Event()

    class _Gate(nn.Module):
        def forward(self, x):
            started.set()
            assert release.wait(10)
            return x

    model.features.insert(0, _Gate())
    x = torch.randn(1, 1, 28, 28)
    result = {}
    t = threading.Thread(target=lambda: result.__setitem__("frame", Visualizer(model).forward(x)))
    t.start()
    assert started.wait(10)
    for _ in range(3):  # another thread's forwards while the frame is recording
        with torch.no_grad():
            model.features[1:](torch.randn(1, 1, 28, 28))
    release.set()
    t.join(10)
    frame = result["frame"]
    mm = frame.model_map
    assert mm["features.1"].calls == 1 and mm["head"].calls == 1
    _close(frame.saliency("head", 2, "guided"), saliency(model, x, "head", 2, "guided"))


class _ViewThenInplace(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.how = how
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        y = self.conv(x)
        if self.how == "flatten_relu_":
            z = torch.flatten(y, 1).relu_()
        elif self.how == "view_iadd":
            z = y.view(1, -1)
            z += 1.0
            z = F.relu(z)
        else:  # slice assignment
            y[:, :2] = 0
            z = torch.flatten(y, 1)
        return self.fc(z)


@pytest.mark.parametrize("how", ["flatten_relu_", "view_iadd", "setitem"])
def test_inplace_write_through_a_view_keeps_the_recorded_layer(how):
    torch.manual_seed(5)
    model = _ViewThenInplace(how).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        true_conv = model.conv(x)
    frame = Visualizer(model).forward(x)
    assert torch.allclose(frame.activations("conv"), true_conv)
    # gradient at the conv layer equals autograd's on the pre-overwrite tensor
    xr = x.clone().requires_grad_(True)
    store = {}
    h = model.conv.register_forward_hook(lambda m, a, o: store.__setitem__("A", o.clone()))
    try:
        y = model.conv(xr)
        A = y.clone()
        out = model.fc(torch.flatten(F.relu(A), 1) if how == "flatten_relu_" else
                       (F.relu(A.view(1, -1) + 1.0) if how == "view_iadd" else
                        torch.flatten(torch.cat([torch.zeros_like(A[:, :2]), A[:, 2:]], 1), 1)))
    finally:
        h.remove()
    (ref,) = torch.autograd.grad(out[0, 2], A)
    _close(frame.gradient_at("conv", "output", 2), ref)


class _UsesTheOldTensor(nn.Module):
    """Relies on in-place side effects: results only right if in-place ops really write in place."""

    def __init__(self, how):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 3)
        self.how = how
        self.forwards = 0

    def forward(self, x):
        self.forwards += 1
        y = self.bn(self.conv(x))
        if self.how == "module_result_ignored":
            self.relu(y)                 # y itself is expected to be rectified
        elif self.how == "alias_after_iadd":
            alias = y
            y += 1.0                     # alias must see the +1
            y = alias
        else:                            # a view taken before the in-place op
            v = y[:, :2]
            y = torch.relu_(y)
            y = torch.cat([v, y[:, 2:]], 1)
        return self.fc(y.mean((2, 3)))


@pytest.mark.parametrize("how", ["module_result_ignored", "alias_after_iadd", "view_before"])
def test_code_relying_on_inplace_side_effects_is_still_exact(how):
    torch.manual_seed(6)
    model = _UsesTheOldTensor(how).eval()
    with torch.no_grad():
        model.bn.running_mean.normal_()
    x = torch.randn(1, 3, 10, 10)
    with torch.no_grad():
        true_out = model(x)
        true_bn = model.bn(model.conv(x))
    vis = Visualizer(model)
    model.forwards = 0
    frame = vis.forward(x)
    assert model.forwards == 1
    assert torch.allclose(frame.output, true_out, atol=1e-6)
    assert torch.allclose(frame.activations("bn"), true_bn, atol=1e-6)  # recorded before the overwrite
    # gradients still exact (plain rule = autograd on the eager model)
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(model(xr)[0, 1], xr)
    _close(frame.saliency("output", 1, "gradient"), ref)


def test_resnet_records_pre_relu_values_of_in_place_relus(resnet):
    model = _Counting(resnet)
    vis = Visualizer(model)
    x = torch.randn(1, 3, 64, 64)
    frame = vis.forward(x)
    assert model.forwards == 1
    with torch.no_grad():
        assert torch.allclose(frame.output, resnet(x), atol=1e-5)
        bn1 = resnet.layer1[0].bn1(resnet.layer1[0].conv1(resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))))
    assert float(bn1.min()) < 0
    assert torch.allclose(frame.activations("inner.layer1.0.bn1"), bn1, atol=1e-5)


# ----------------------------------------------------------------------- the recorder (references, recompute)
def _global_hooks():
    from torch.nn.modules import module as _m
    return (len(_m._global_forward_hooks), len(_m._global_forward_pre_hooks),
            len(_m._global_forward_hooks_always_called))


def test_no_global_hook_left_and_gc_restored():
    import gc as _gc
    model = _Exploding()
    before = _global_hooks()
    assert _gc.isenabled()
    with pytest.raises(ModelForwardError):
        Visualizer(model).forward(torch.randn(1, 3, 10, 10))
    assert _global_hooks() == before and _gc.isenabled()
    Visualizer(_GrayNet().eval()).forward(torch.randn(1, 1, 28, 28)).saliency("head", 1)
    assert _global_hooks() == before and _gc.isenabled()


def _recorded_by_hooks(model, x, names):
    """Reference: every named module's output, cloned when the module returns (hooks on a plain forward)."""
    store = {}
    mods = dict(model.named_modules())
    hs = [mods[n].register_forward_hook(lambda m, a, o, n=n: store.setdefault(n, []).append(o.detach().clone()))
          for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hs:
            h.remove()
    return store


def test_overwritten_outputs_are_recomputed_bit_for_bit(resnet):
    """bn1/bn2/bn3 of every block are overwritten by in-place ReLUs and ``out += identity``;
    their values come back from their modules, exactly, without another model forward."""
    model = _Counting(resnet)
    x = torch.randn(1, 3, 64, 64)
    frame = Visualizer(model).forward(x)
    names = [n for n in frame._calls if n.startswith("inner.layer") and n.split(".")[-1] in ("bn1", "bn2", "bn3")]
    over = [n for n in names if frame._calls[n][-1].overwritten]
    assert len(over) == len(names) == 16
    ref = _recorded_by_hooks(resnet, x, [n[len("inner."):] for n in names])
    for n in names:
        assert torch.equal(frame.activations(n), ref[n[len("inner."):]][0]), n
    assert model.forwards == 1


class _InplaceModuleOverwritten(nn.Module):
    """An in-place module whose output a later op overwrites: its input is gone, so its value
    must come from a second recorded forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.Hardswish(inplace=True)
        self.fc = nn.Linear(4, 3)
        self.forwards = 0

    def forward(self, x):
        self.forwards += 1
        y = self.act(self.conv(x))
        y *= 2.0
        y += 0.5
        return self.fc(y.mean((2, 3)))


@pytest.mark.parametrize("objective", ["sum", "activation", "max", (2, 3)])
def test_overwritten_output_objectives_and_gradients_are_exact(objective):
    torch.manual_seed(7)
    model = _InplaceModuleOverwritten().eval()
    x = torch.randn(1, 3, 10, 10)
    frame = Visualizer(model).forward(x)
    assert frame._calls["act"][0].overwritten and frame._calls["conv"][0].overwritten
    # reference: the same computation without in-place ops
    xr = x.clone().requires_grad_(True)
    c = model.conv(xr)
    a = F.hardswish(c)
    out = model.fc((a * 2.0 + 0.5).mean((2, 3)))
    assert torch.equal(frame.activations("conv"), c.detach())          # recomputed from its input
    assert model.forwards == 1
    assert torch.allclose(frame.activations("act"), a.detach())         # needs a second forward
    assert model.forwards == 2
    sel = a[:, 1]
    if objective == "sum":
        obj = sel.sum()
    elif objective == "activation":
        obj = 0.5 * (sel * sel).sum()
    elif objective == "max":
        obj = sel.reshape(1, -1).amax(1).sum()
    else:
        obj = sel[0, 2, 3]
    (ref,) = torch.autograd.grad(obj, xr, retain_graph=True)
    _close(frame.saliency("act", 1, "gradient", objective), ref)
    (ref_at,) = torch.autograd.grad(out[0, 2], c)
    _close(frame.gradient_at("conv", "output", 2), ref_at)


def test_overwritten_output_max_objective_splits_ties_per_sample():
    torch.manual_seed(7)
    model = _InplaceModuleOverwritten().eval()
    x = torch.randn(2, 3, 10, 10)
    x[0] = 1.0     # a uniform image: every position ties for the max; sample 1 has one maximum of its own
    frame = Visualizer(model).forward(x)
    assert frame._calls["act"][0].overwritten
    xr = x.clone().requires_grad_(True)
    a = F.hardswish(model.conv(xr))[:, 1]
    (ref,) = torch.autograd.grad(a.reshape(2, -1).amax(1).sum(), xr)   # amax splits ties evenly
    _close(frame.saliency("act", 1, "gradient", "max"), ref)


class _ReLUOnAView(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)
        self.how = how

    def forward(self, x, ref=None):
        y = self.conv(x)
        if self.how == "flatten":
            z = torch.flatten(y, 1).relu_() if ref is None else ref.apply(torch.flatten(y, 1))
        elif ref is None:  # channels 1..2 rectified in place through a slice
            y[:, 1:3].relu_()
            z = torch.flatten(y, 1)
        else:
            z = torch.flatten(torch.cat([y[:, :1], ref.apply(y[:, 1:3]), y[:, 3:]], 1), 1)
        return self.fc(z)


@pytest.mark.parametrize("how", ["flatten", "slice"])
@pytest.mark.parametrize("method,fn", [("guided", _GuidedRef), ("deconvnet", _DeconvRef)])
def test_in_place_relu_on_a_view_gets_the_rule(how, method, fn):
    """Autograd hides such a ReLU inside a CopySlices node; the rule still reaches it."""
    torch.manual_seed(5)
    model = _ReLUOnAView(how).eval()
    x = torch.randn(1, 3, 8, 8)
    frame = Visualizer(model).forward(x)
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(model(xr, fn)[0, 2], xr)
    _close(frame.saliency("output", 2, method), ref)
    # conv, ReLU, linear: no max-pool switch, so the only notice is deconvnet's (core.independence)
    assert frame.relu_calls == 1 and frame.notices == [frame.deconvnet_notice] and "input-independent" in frame.notices[0]
    assert float((frame.saliency("output", 2, "gradient") - ref).abs().max()) > 1e-4 * float(ref.abs().max())


# ----------------------------------------------------------------------- rules past ReLU (issue 13)
class _RefActivation(torch.autograd.Function):
    """Reference rule at an activation f: deconvnet relu(g); guided relu(g) * f'(x) * [x > 0];
    gradient g * f'(x).  f'(x) is autograd's derivative of f at x (f is pointwise)."""

    @staticmethod
    def forward(ctx, x, f, rule):
        ctx.save_for_backward(x)
        ctx.f, ctx.rule = f, rule
        return f(x.clone())

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if ctx.rule == "deconvnet":
            return g.clamp(min=0), None, None
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            (df,) = torch.autograd.grad(ctx.f(xx).sum(), xx)
        if ctx.rule == "gradient":
            return g * df, None, None
        return g.clamp(min=0) * df * (x > 0).to(g.dtype), None, None


class _MixedActivations(nn.Module):
    """SiLU, GELU, LeakyReLU, PReLU and ELU, each as a module and as a function, some in place, and a ReLU."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(2 if i == 0 else 6, 6, 3, padding=1) for i in range(8)])
        self.silu = nn.SiLU()
        self.gelu = nn.GELU()
        self.leaky = nn.LeakyReLU(0.1, inplace=True)
        self.prelu = nn.PReLU(6, init=0.3)
        self.elu = nn.ELU(inplace=True)
        self.prelu_w = nn.Parameter(torch.full((6,), 0.2))
        self.fc = nn.Linear(6 * 7 * 7, 5)

    def acts(self):
        """name -> (what the forward calls, the out-of-place f the reference differentiates)."""
        return {
            "silu_m": (self.silu, F.silu), "gelu_f": (F.gelu, F.gelu),
            "leaky_m": (self.leaky, lambda t: F.leaky_relu(t, 0.1)),
            "prelu_f": (lambda t: F.prelu(t, self.prelu_w), lambda t: F.prelu(t, self.prelu_w)),
            "elu_m": (self.elu, F.elu), "silu_f": (F.silu, F.silu), "gelu_m": (self.gelu, F.gelu),
            "leaky_f": (lambda t: F.leaky_relu(t, 0.2, inplace=True), lambda t: F.leaky_relu(t, 0.2)),
            "prelu_m": (self.prelu, lambda t: F.prelu(t, self.prelu.weight)),
            "elu_f": (lambda t: F.elu(t, 0.5), lambda t: F.elu(t, 0.5)), "relu": (F.relu, F.relu),
        }

    def forward(self, x, ref=None):
        acts = self.acts()

        def act(name, t):
            call, f = acts[name]
            return call(t) if ref is None else _RefActivation.apply(t, f, ref(name))

        c = self.convs
        h = act("silu_m", c[0](x))
        h = act("gelu_f", c[1](h))
        h = act("leaky_m", c[2](h))
        h = act("prelu_f", c[3](h))
        h = act("elu_m", c[4](h))
        h = F.max_pool2d(h, 2)
        h = act("silu_f", c[5](h)) + act("gelu_m", c[6](h))
        h = act("leaky_f", h)
        h = act("prelu_m", h)
        h = act("relu", act("elu_f", c[7](h)))
        return self.fc(torch.flatten(h, 1))


@pytest.mark.parametrize("method", ["guided", "deconvnet", "gradient"])
@pytest.mark.parametrize("activations", ["all", "relu-only"])
def test_rules_past_relu_match_the_reference(method, activations):
    torch.manual_seed(11)
    model = _MixedActivations().eval()
    with torch.no_grad():
        model.prelu.weight.uniform_(0.05, 0.5)
    x = torch.randn(2, 2, 14, 14)
    frame = Visualizer(model, activations=activations).forward(x)

    def rule(name):
        return method if (activations == "all" or name == "relu") else "gradient"

    for layer, unit, objective in [("fc", 3, "sum"), ("convs.4", 2, "sum"), ("convs.7", 5, (2, 3))]:
        xr = x.clone().requires_grad_(True)
        store = {}
        mod = dict(model.named_modules())[layer]
        h = mod.register_forward_hook(lambda m, a, o: store.__setitem__("o", o))
        try:
            model(xr, ref=rule)
        finally:
            h.remove()
        sel = store["o"][:, unit]
        obj = sel.sum() if objective == "sum" else sel[(slice(None),) + objective].sum()
        (ref,) = torch.autograd.grad(obj, xr)
        assert float(ref.abs().max()) > 0
        _close(frame.saliency(layer, unit, method, objective), ref)
    if activations == "all":
        assert frame.generalized_activations == {"SiLU": 2, "GELU": 2, "LeakyReLU": 2, "PReLU": 2, "ELU": 2}
        assert any("generalized rule" in n and "SiLU" in n for n in frame.notices)
        assert frame.other_activations == {}
    else:
        assert frame.generalized_activations == {}
        assert frame.other_activations == {"SiLU": 2, "GELU": 2, "LeakyReLU": 2, "PReLU": 2, "ELU": 2}
        assert any("plain gradient" in n and "ReLUs only" in n for n in frame.notices)
    assert frame.relu_calls == 1


def test_rules_past_relu_really_change_guided_and_keep_gates_plain():
    torch.manual_seed(12)
    model = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    general = Visualizer(model).forward(x)
    old = Visualizer(model, activations="relu-only").forward(x)
    assert general.generalized_activations.get("Hardswish", 0) > 0
    assert set(general.other_activations) == {"Hardsigmoid"}        # SE gates keep the plain gradient
    for m in ("guided", "deconvnet"):
        a, b = general.saliency("classifier.3", 1, m), old.saliency("classifier.3", 1, m)
        assert float((a - b).abs().max()) > 1e-3 * float(b.abs().max())
    assert torch.equal(general.saliency("classifier.3", 1, "gradient"), old.saliency("classifier.3", 1, "gradient"))
    mm = Visualizer(model, InputSpec(3, 64, 64)).model_map()
    assert mm.generalized_activations == general.generalized_activations


@pytest.mark.parametrize("method", ["gradient", "deconvnet", "guided"])
def test_relu_nets_are_bit_identical_under_both_switches(resnet, method):
    x = torch.randn(1, 3, 64, 64)
    a = Visualizer(resnet).forward(x).saliency("layer3", 4, method)
    b = saliency(resnet, x, "layer3", 4, method, activations="relu-only")
    assert torch.equal(a, b)
    with pytest.raises(CnnvisError, match="activations must be"):
        Visualizer(resnet, activations="everything")


_MORE_ACTIVATIONS = {
    "SELU": (nn.SELU(), F.selu), "CELU": (nn.CELU(0.7), lambda t: F.celu(t, 0.7)), "Mish": (nn.Mish(), F.mish),
    "Hardswish": (nn.Hardswish(), F.hardswish), "ReLU6": (nn.ReLU6(inplace=True), F.relu6),
    "Hardtanh": (lambda t: F.hardtanh(t, -1.0, 0.5), lambda t: F.hardtanh(t, -1.0, 0.5)),
    "Softplus": (nn.Softplus(beta=2.0), lambda t: F.softplus(t, beta=2.0)),
    "ELU": (lambda t: F.elu(t, inplace=True), F.elu), "Sigmoid": (torch.sigmoid, torch.sigmoid),
}


@pytest.mark.parametrize("label", sorted(_MORE_ACTIVATIONS))
@pytest.mark.parametrize("method", ["guided", "deconvnet"])
def test_rules_past_relu_for_every_listed_activation(label, method):
    torch.manual_seed(13)
    conv, fc = nn.Conv2d(1, 4, 3), nn.Linear(4 * 6 * 6, 3)
    call, f = _MORE_ACTIVATIONS[label]
    model = nn.Sequential(conv, _Lambda(call), nn.Flatten(), fc).eval()
    x = torch.randn(1, 1, 8, 8)
    frame = Visualizer(model).forward(x)
    gate = label == "Sigmoid"
    xr = x.clone().requires_grad_(True)
    out = fc(torch.flatten(_RefActivation.apply(conv(xr), f, "gradient" if gate else method), 1))
    (ref,) = torch.autograd.grad(out[:, 1].sum(), xr)
    assert float(ref.abs().max()) > 0
    _close(frame.saliency("3", 1, method), ref)
    counts = frame.other_activations if gate else frame.generalized_activations
    assert sum(counts.values()) == 1


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_recording_only_some_layers_gives_the_same_answers(resnet):
    model = _Counting(resnet)
    x = torch.randn(1, 3, 64, 64)
    vis = Visualizer(model)
    full = vis.forward(x)
    hooks = _hook_state(model)
    asked = ["inner.fc", "inner.layer1.0.bn1", "inner.layer4.1.conv2"]
    model.forwards = 0
    part = vis.forward(x, layers=asked)
    assert model.forwards == 1 and _hook_state(model) == hooks and _global_hooks() == (0, 0, 0)
    for layer in asked:
        assert torch.equal(part.activations(layer), full.activations(layer))       # bn1: recomputed
        for m in ("gradient", "deconvnet", "guided"):
            assert torch.equal(part.saliency(layer, 3, m), full.saliency(layer, 3, m))
    assert torch.equal(part.gradient_at("inner.layer1.0.bn1", "inner.fc", 2),
                       full.gradient_at("inner.layer1.0.bn1", "inner.fc", 2))
    assert torch.equal(part.grad_cam("inner.fc", 2), full.grad_cam("inner.fc", 2))   # cam layer: the recorded conv
    assert model.forwards == 1
    assert part.relu_calls == full.relu_calls and part.notices == full.notices
    assert [l.name for l in part.model_map] == ["inner.layer1.0.bn1", "inner.layer4.1.conv2", "inner.fc"]
    with pytest.raises(CnnvisError, match="'inner.layer2' was not recorded in this frame"):
        part.saliency("inner.layer2", 1)
    with pytest.raises(CnnvisError, match="Did you mean"):
        vis.forward(x, layers=["inner.layr2"])


def test_recorded_outputs_are_references_not_copies(resnet):
    """Memory: a frame keeps the very tensors the modules returned (the graph holds most of them
    anyway); only an output a later in-place op overwrote is recomputed, on demand."""
    returned = {}
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: returned.setdefault(n, o))
             for n, m in resnet.named_modules()]
    try:
        frame = Visualizer(resnet).forward(torch.randn(1, 3, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    kept = [n for n, cs in frame._calls.items() if cs and not cs[0].overwritten]
    assert len(kept) > 40
    for n in kept:
        assert frame._calls[n][0].value is returned[n], n
    assert all(frame._calls[n][0].value is not returned[n] for n, cs in frame._calls.items()
               if cs and cs[0].overwritten)


# ----------------------------------------------------------------------- recorder corners
class _Outsider(nn.Module):
    """Calls a module that is not one of its sub-modules (held in a plain list)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.helpers = [nn.ReLU()]

    def forward(self, x):
        return self.helpers[0](self.conv(x))


def test_modules_outside_the_model_are_not_recorded():
    model = _Outsider().eval()
    x = torch.randn(1, 3, 8, 8)
    with Visualizer(model).forward(x) as f:
        assert f.model_map.names() == ["", "conv"]
        assert f.relu_calls == 1
        _close(f.saliency("output", 1, "guided"), _captum(nn.Sequential(model.conv, nn.ReLU()), "1", 1, "guided", x))


class _TwoArgs(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)     # recomputed in eval mode: no dropout

    def forward(self, scale, a):
        return self.drop(a) * scale


class _TwoArgsOverwritten(nn.Module):
    """A two-input module (and a non-tensor argument) whose output a later in-place op overwrites,
    in a model left in training mode (the recorded values are eval mode's)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.add = _TwoArgs()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 3)
        self.forwards = 0

    def forward(self, x):
        y = self.bn(self.conv(x))
        self.forwards += 1
        s = self.add(2.0, y + self.drop(y))
        s.relu_()
        return self.fc(s.mean((2, 3)))


def test_an_overwritten_multi_input_output_is_recomputed_in_eval_mode_and_training_restored():
    torch.manual_seed(8)
    model = _TwoArgsOverwritten().train()
    with torch.no_grad():
        model.bn.running_mean.normal_()
    x = torch.randn(1, 3, 8, 8)
    with Visualizer(model).forward(x) as f:
        assert f._calls["add"][0].overwritten
        model.eval()
        with torch.no_grad():
            y = model.bn(model.conv(x))
            want = (y + y) * 2.0
        model.train()
        assert torch.equal(f.activations("add"), want)
        assert all(m.training for m in model.modules())
        assert model.forwards == 1          # recomputed from its (proven) inputs: no second forward


class _Halves(nn.Module):
    def forward(self, x):
        return x, x


class _Wandering(nn.Module):
    """Overwrites an in-place module's output (only a second recorded forward can recover it) and,
    unless ``how`` is "same", runs other modules, more modules or another shape the second time."""

    def __init__(self, how="swap"):
        super().__init__()
        self.a, self.b = nn.Hardswish(inplace=True), nn.Hardswish(inplace=True)
        self.conv = nn.Conv2d(3, 4, 3)
        self.pair = _Halves()
        self.n = 0
        self.how = how

    def forward(self, x):
        self.n += 1
        y, _ = self.pair(self.conv(x))
        second = self.n % 2 == 0
        if self.how == "swap":
            y = (self.b if second else self.a)(y)
        elif self.how == "more":
            y = self.b(self.a(y)) if second else self.a(y)
        elif self.how == "shape":
            y = self.a(y[..., 1:] if second else y)
        else:   # "same": the second forward repeats the first
            y = self.a(y)
        y *= 2.0
        return y


@pytest.mark.parametrize("how", ["swap", "more", "shape"])
def test_a_model_that_runs_other_modules_the_second_time_says_so(how):
    with Visualizer(_Wandering(how).eval()).forward(torch.randn(1, 3, 8, 8)) as f:
        with pytest.raises(CnnvisError) as ei:
            f.activations("a")
    assert str(ei.value) == ("the model ran different modules on the same input a second time; "
                             "overwritten outputs cannot be recovered")


def test_a_second_forward_recovers_an_overwritten_output_past_a_tuple():
    model = _Wandering("same").eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        want = F.hardswish(model.conv(x))
    with Visualizer(model).forward(x) as f:
        assert torch.equal(f.activations("a"), want) and model.n == 2
        assert torch.equal(f.activations("a"), want) and model.n == 2    # kept: asked again, no third forward


class _Times(nn.Module):
    def forward(self, t):
        return t * 1.5


class _FunctionalInputChanged(nn.Module):
    """A module's input comes from a functional op (no module produced it) and is changed after."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.times = _Times()

    def forward(self, x):
        t = self.conv(x) * 2
        c = self.times(t)
        t.add_(1.0)
        c.add_(1.0)
        return c + t


def test_an_overwritten_output_whose_input_no_module_made_comes_from_a_second_forward():
    model = _FunctionalInputChanged().eval()
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        want = model.conv(x) * 2 * 1.5
    with Visualizer(model).forward(x) as f:
        torch.testing.assert_close(f.activations("times"), want)


def test_gradient_at_a_layer_the_objective_does_not_reach_is_zeros():
    model = _Wandering("same").eval()
    with Visualizer(model).forward(torch.randn(1, 3, 8, 8)) as f:
        g = f.gradient_at("output", "conv", 1)
        assert g.shape == (1, 4, 6, 6) and not g.any()


class _BufferOnly(nn.Module):
    """No parameters: a fixed filter in a buffer (its dtype and device are the model's)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("index", torch.arange(2))           # an integer buffer says nothing
        self.register_buffer("k", torch.ones(2, 3, 3, 3, dtype=torch.float64) / 27)

    def forward(self, x):
        return F.relu(F.conv2d(x, self.k))


def test_a_model_without_parameters_takes_its_buffers_dtype():
    with Visualizer(_BufferOnly()).forward(torch.rand(1, 3, 6, 6)) as f:
        assert f.input.dtype == torch.float64 and f.activations("output").dtype == torch.float64
    assert Visualizer(nn.Sequential(nn.ReLU())).device == torch.device("cpu")
    with Visualizer(nn.Sequential(nn.ReLU())).forward(torch.rand(1, 3, 4, 4, dtype=torch.float64)) as f:
        assert f.input.dtype == torch.float32      # nothing to go by: float32 on the CPU


class _Scale(nn.Module):
    def forward(self, x, factor=1.0):
        return x * factor


class _KeywordOverwritten(nn.Module):
    """A module called with a keyword argument, its output then overwritten in place."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.scale = _Scale()
        self.forwards = 0

    def forward(self, x):
        self.forwards += 1
        y = self.scale(self.conv(x), factor=3.0)
        y += 1.0
        return y


@pytest.mark.parametrize("layers", [None, ["scale"]])
def test_keyword_arguments_are_recorded_for_recomputing(layers):
    torch.manual_seed(9)
    model = _KeywordOverwritten().eval()
    x = torch.randn(1, 3, 6, 6)
    with Visualizer(model).forward(x, layers=layers) as f:
        assert f._calls["scale"][0].overwritten
        with torch.no_grad():
            assert torch.equal(f.activations("scale"), model.conv(x) * 3.0)
        assert model.forwards == 1      # a number as keyword: recomputed from its input, no second forward


def test_a_failure_in_a_recorded_layer_is_named_when_only_some_layers_are_recorded():
    with pytest.raises(ModelForwardError, match=r"in module 'bad' \(Linear\) on input 1x256"):
        Visualizer(_Exploding()).forward(torch.randn(1, 3, 10, 10), layers=["conv", "bad"])


def test_a_hook_set_that_fails_half_way_through_registering_leaves_no_hook():
    from cnnvis_gui.core.hooks import HookSet
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())

    class _Half(HookSet):
        def register(self):
            self.handles.append(model[0].register_forward_hook(lambda *a: None))
            raise RuntimeError("second hook refused")

    with pytest.raises(RuntimeError, match="second hook refused"):
        with _Half():
            pass
    assert not model[0]._forward_hooks

    class _One(HookSet):
        def register(self):
            self.handles.append(model[1].register_forward_hook(lambda *a: None))

    with pytest.raises(ValueError, match="inside"):   # an error inside the block is not swallowed
        with _One():
            assert len(model[1]._forward_hooks) == 1
            raise ValueError("inside")
    assert not model[1]._forward_hooks


def test_a_second_forward_that_recovers_values_records_the_same_layers():
    torch.manual_seed(7)
    model = _InplaceModuleOverwritten().eval()
    x = torch.randn(1, 3, 10, 10)
    with torch.no_grad():
        want = F.hardswish(model.conv(x))
    with Visualizer(model).forward(x, layers=["act"]) as f:
        assert f._calls["act"][0].overwritten
        assert torch.allclose(f.activations("act"), want)
        assert model.forwards == 2          # the value came from a second recorded forward


class _WritesIntoItsInputWithoutGrad(nn.Module):
    def forward(self, x):
        if torch.is_grad_enabled():
            return x * 2
        return x.mul_(2)          # run again under no_grad it would overwrite the frame's recorded input


class _RerunWrites(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.twice = _WritesIntoItsInputWithoutGrad()

    def forward(self, x):
        y = self.twice(self.conv(x))
        y += 1.0
        return y


def test_a_module_that_writes_into_its_input_when_run_again_is_refused():
    with Visualizer(_RerunWrites().eval()).forward(torch.randn(1, 3, 6, 6)) as f:
        with pytest.raises(CnnvisError) as ei:
            f.activations("twice")
    assert str(ei.value) == ("module 'twice' wrote into its input when run again; its recorded output "
                             "cannot be recovered")


class _ConvReluChain(nn.Module):
    """conv -> ReLU(inplace) -> conv -> ReLU(inplace): each conv's output is overwritten by its ReLU,
    and the second conv's input is the first ReLU's in-place result (version 1, proven by that call)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3),
                                      nn.ReLU(inplace=True))
        self.forwards = 0

    def forward(self, x):
        self.forwards += 1
        return self.features(x)


def test_outputs_overwritten_by_in_place_relus_are_recomputed_from_proven_inputs():
    torch.manual_seed(10)
    model = _ConvReluChain().eval()
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        c0 = model.features[0](x)
        c2 = model.features[2](F.relu(c0))
    with Visualizer(model).forward(x) as f:
        assert f._calls["features.2"][0].overwritten
        assert torch.equal(f.activations("features.2"), c2) and torch.equal(f.activations("features.0"), c0)
        assert model.forwards == 1          # both recomputed module by module: no second forward


class _ChangedBeforeUse(nn.Module):
    """A functional result changed in place before a module uses it, the module's output overwritten."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.times = _Times()

    def forward(self, x):
        t = self.conv(x) * 2
        t.add_(1.0)
        c = self.times(t)
        c.add_(1.0)
        return c


def test_an_input_changed_before_use_by_no_module_still_gives_the_recorded_value():
    model = _ChangedBeforeUse().eval()
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        want = (model.conv(x) * 2 + 1.0) * 1.5
    with Visualizer(model).forward(x) as f:
        torch.testing.assert_close(f.activations("times"), want)
    mm = model_map(nn.Sequential(nn.Sequential(nn.Conv2d(3, 2, 1))), InputSpec(3, 4, 4))
    assert [(l.name, l.order) for l in mm] == [("", 0), ("0", 0), ("0.0", 0)]   # all start with the conv
