"""Integrated gradients, input x gradient and SmoothGrad against captum and written-out references."""
import math
import warnings

import pytest
import torch
import torch.nn as nn
import torchvision
from captum.attr import (InputXGradient, IntegratedGradients, NeuronGradient, NeuronIntegratedGradients)

from cnnvis_gui.core import CnnvisError, SALIENCY_METHODS, Visualizer, saliency
from cnnvis_gui.core.attribution import COPIES_PER_FORWARD, gauss_legendre


def _close(a, b, rel=1e-5):
    scale = max(float(b.abs().max()), 1e-12)
    err = float((a - b).abs().max())
    assert err <= rel * scale + 1e-8, f"max abs diff {err:.3g} vs scale {scale:.3g}"


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs).detach()


def _channel_sum(unit):
    return lambda o: o[:, unit].reshape(o.shape[0], -1).sum(1)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(1)
    return torchvision.models.resnet18(num_classes=10).eval()


class _Forwards:
    """Counts the model's forward calls and the batch size of each."""

    def __init__(self, model):
        self.sizes = []
        self.handle = model.register_forward_pre_hook(lambda m, a: self.sizes.append(a[0].shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_methods_are_listed():
    assert {"gradient", "deconvnet", "guided", "input-x-gradient", "integrated-gradients"} == set(SALIENCY_METHODS)


def test_gauss_legendre_is_captums_rule():
    from captum.attr._utils.approximation_methods import approximation_parameters
    sizes, alphas = approximation_parameters("gausslegendre")
    a, w = gauss_legendre(7)
    assert list(a) == alphas(7) and list(w) == sizes(7)
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-12)


def test_integrated_gradients_output_unit_equals_captum(resnet):
    x = torch.randn(1, 3, 64, 64)
    with _Forwards(resnet) as fw:
        ours = saliency(resnet, x, "fc", 3, "integrated-gradients", steps=32)
    ref = _quiet(IntegratedGradients(resnet).attribute, x, target=3, n_steps=32)
    assert float(ref.abs().max()) > 0
    _close(ours, ref)
    # batched: the recorded forward, then 32 scaled copies COPIES_PER_FORWARD at a time
    assert fw.sizes == [1] + [COPIES_PER_FORWARD] * (32 // COPIES_PER_FORWARD)


def test_integrated_gradients_layer_unit_and_baseline_equal_captum(resnet):
    x = torch.randn(1, 3, 64, 64)
    base = torch.full_like(x, 0.3)
    ours = saliency(resnet, x, "layer3", 7, "integrated-gradients", steps=12, baseline=0.3)
    ref = _quiet(NeuronIntegratedGradients(resnet, resnet.layer3).attribute, x,
                 neuron_selector=_channel_sum(7), baselines=base, n_steps=12)
    _close(ours, ref)
    # completeness (Sundararajan et al.): attributions sum to S(x) - S(baseline), up to the quadrature error
    with torch.no_grad():
        feats = {}
        h = resnet.layer3.register_forward_hook(lambda m, a, o: feats.setdefault(len(feats), o))
        resnet(torch.cat([x, base]))
        h.remove()
        s = feats[0][:, 7].sum(dim=(1, 2))
    assert abs(float(ours.sum()) - float(s[0] - s[1])) < 0.05 * abs(float(s[0] - s[1]))


def test_input_x_gradient_equals_captum_output_and_layer_unit(resnet):
    x = torch.randn(1, 3, 64, 64)
    _close(saliency(resnet, x, "fc", 5, "input-x-gradient"), _quiet(InputXGradient(resnet).attribute, x, target=5))
    ref = x * _quiet(NeuronGradient(resnet, resnet.layer2).attribute, x, neuron_selector=_channel_sum(9))
    _close(saliency(resnet, x, "layer2", 9, "input-x-gradient"), ref)


def test_frame_answers_every_sample_of_a_batch(resnet):
    x = torch.randn(2, 3, 64, 64)
    with Visualizer(resnet).forward(x) as frame:
        both = frame.saliency("layer4", 11, "integrated-gradients", steps=6)
        sg = frame.saliency("layer4", 11, "guided", smoothgrad=3, seed=4)
    for i in range(2):
        _close(both[i:i + 1], saliency(resnet, x[i:i + 1], "layer4", 11, "integrated-gradients", steps=6))
    assert sg.shape == x.shape and float(sg[0].abs().max()) > 0 and float(sg[1].abs().max()) > 0


def _total_variation(s):
    """Anisotropic total variation of |s| summed over channels, per unit of its L1 mass."""
    m = s.abs().sum(dim=1)[0]
    m = m / m.sum()
    return float((m[1:] - m[:-1]).abs().sum() + (m[:, 1:] - m[:, :-1]).abs().sum())


@pytest.mark.parametrize("method", ["gradient", "guided", "input-x-gradient"])
def test_smoothgrad_noise_zero_is_the_plain_method_exactly(resnet, method):
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(saliency(resnet, x, "layer3", 2, method, smoothgrad=10, noise=0),
                       saliency(resnet, x, "layer3", 2, method))


def test_smoothgrad_is_the_mean_over_seeded_noisy_copies(resnet):
    """Written out: copy i's noise is the i-th seeded draw; one batch-1 saliency per copy, averaged."""
    x = torch.randn(1, 3, 64, 64)
    n, level, seed = 5, 0.2, 123
    ours = saliency(resnet, x, "layer3", 4, "guided", smoothgrad=n, noise=level, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    eps = torch.stack([torch.randn(x.shape, generator=gen) for _ in range(n)]) * level * float(x.max() - x.min())
    ref = sum(saliency(resnet, x + eps[i], "layer3", 4, "guided") for i in range(n)) / n
    _close(ours, ref, rel=1e-4)
    again = saliency(resnet, x, "layer3", 4, "guided", smoothgrad=n, noise=level, seed=seed)
    assert torch.equal(ours, again)
    other = saliency(resnet, x, "layer3", 4, "guided", smoothgrad=n, noise=level, seed=seed + 1)
    assert not torch.equal(ours, other)


@pytest.mark.parametrize("method", ["gradient", "guided"])
def test_smoothgrad_is_smoother_than_the_raw_map(method):
    """The trained shapes demo on its star sample: total variation per unit of mass drops."""
    cv2 = pytest.importorskip("cv2")
    from cnnvis_gui.models.demos import demo, demo_samples
    lm = demo("shapes")
    img = cv2.cvtColor(cv2.imread(str(demo_samples("shapes")[3])), cv2.COLOR_BGR2RGB)
    x = lm.spec.to_tensor(img)
    raw = saliency(lm.model, x, "fc2", 3, method)
    smooth = saliency(lm.model, x, "fc2", 3, method, smoothgrad=16, noise=0.15, seed=0)
    assert _total_variation(smooth) < 0.95 * _total_variation(raw)


def test_smoothgrad_wraps_integrated_gradients(resnet):
    """Each noisy copy gets its own integrated gradients from the same baseline."""
    x = torch.randn(1, 3, 64, 64)
    gen = torch.Generator().manual_seed(7)
    eps = torch.stack([torch.randn(x.shape, generator=gen) for _ in range(2)]) * 0.1 * float(x.max() - x.min())
    ours = saliency(resnet, x, "fc", 2, "integrated-gradients", smoothgrad=2, noise=0.1, steps=5, seed=7)
    ref = sum(_quiet(IntegratedGradients(resnet).attribute, x + eps[i], target=2, n_steps=5) for i in range(2)) / 2
    _close(ours, ref, rel=1e-4)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(method="smooth"), "unknown method"),
    (dict(method="gradient", smoothgrad=-1), "smoothgrad"),
    (dict(method="gradient", smoothgrad=2.5), "smoothgrad"),
    (dict(method="gradient", smoothgrad=2, noise=float("nan")), "noise"),
    (dict(method="integrated-gradients", steps=0), "steps"),
    (dict(method="integrated-gradients", baseline=torch.zeros(2, 3, 5, 5)), "baseline"),
    (dict(method="integrated-gradients", baseline="black"), "baseline"),
    (dict(method="integrated-gradients", unit=99), "out of range"),
    (dict(method="gradient", smoothgrad=2, seed="x"), "seed"),
])
def test_bad_options_are_one_clear_error(kwargs, needle):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3))
    kwargs = dict(kwargs)
    unit = kwargs.pop("unit", 1)
    with pytest.raises(CnnvisError, match=needle):
        saliency(model, torch.randn(1, 3, 9, 9), "2", unit, **kwargs)
