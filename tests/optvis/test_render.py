"""The optimization loop on small models: it raises the objective, batches exactly, stops, and says what is wrong."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnvis_gui.core import CnnvisError, InputSpec
from cnnvis_gui.optvis import (LayerCapture, RenderParams, Renderer, channel, class_logit, diversity, neuron,
                               per_image, render, to_model_input)
from cnnvis_gui.optvis.render import ZERO_PATIENCE
from cnnvis_gui.optvis.objectives import gram_matrices

SPEC = InputSpec(3, 20, 24, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
FAST = RenderParams(max_iter=40, lr=0.08, jitter=2, scale=(0.95, 1.05), rotate=5)


class Small(nn.Module):
    def __init__(self, c=3):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(c, 6, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def read(model, layer, x, pre=False):
    """A layer's output (or input) for x, with a hook of the test's own."""
    seen = {}
    mod = dict(model.named_modules())[layer]
    h = (mod.register_forward_pre_hook(lambda m, a: seen.__setitem__("a", a[0].detach().clone())) if pre else
         mod.register_forward_hook(lambda m, a, o: seen.__setitem__("a", o.detach().clone())))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return seen["a"]


def random_inputs(spec, n=16):
    return to_model_input(torch.rand(n, *spec.shape, generator=torch.Generator().manual_seed(9)), spec)


def no_hooks_left(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _demo(name):
    from cnnvis_gui.models import demo, demo_samples
    from cnnvis_gui.sources import load_image
    lm = demo(name)
    samples = torch.stack([torch.from_numpy(lm.spec.to_array(load_image(p))) for p in demo_samples(name)])
    return lm, samples


@pytest.fixture(scope="module")
def shapes():
    return _demo("shapes")


@pytest.mark.parametrize("param", ["fourier", "maco", "pixel"])
def test_a_channel_rises_far_above_real_and_random_images(param, shapes):
    lm, samples = shapes
    m = lm.model
    res = render(m, lm.spec, channel("features.10", 5), params=FAST.replace(param=param))
    got = read(m, "features.10", res.x)[0, 5].mean()
    seen = read(m, "features.10", torch.cat([samples, random_inputs(lm.spec)]))[:, 5].mean((1, 2))
    assert got > (1.5 if param == "fourier" else 1.1) * seen.max() and got > 0    # pixels: the weakest
    # the reported value is the objective without transforms: the ReLU's input (pre-activation) here
    np.testing.assert_allclose(res.values[0], float(read(m, "features.10", res.x, pre=True)[0, 5].mean()),
                               rtol=1e-4, atol=1e-5)
    assert res.x.shape == (1, 3, 64, 64) and res.images[0].shape == (64, 64, 3) and res.images[0].dtype == np.uint8
    assert res.history.shape == (40, 1) and res.history[-5:].mean() > res.history[:5].mean()
    assert res.problem is None and not res.stopped and res.iterations == 40
    assert no_hooks_left(m) and not m.training


def test_classes_become_the_top_class_far_above_real_images(shapes):
    lm, samples = shapes
    with torch.no_grad():
        best_real = lm.model(samples).max(0).values
    for unit in (0, 2, 5, 8):
        res = render(lm.model, lm.spec, class_logit(unit), params=FAST.replace(max_iter=80))
        with torch.no_grad():
            out = lm.model(res.x)[0]
        assert int(out.argmax()) == unit and out[unit] > best_real[unit], (unit, out)


def test_a_gray_model_sees_its_class():
    lm, samples = _demo("glyphs")
    with torch.no_grad():
        best_real = lm.model(samples).max(0).values
    res = render(lm.model, lm.spec, class_logit(7), params=FAST)
    assert "1 channel independently" in res.description and res.images[0].shape == (28, 28, 3)
    with torch.no_grad():
        out = lm.model(res.x)[0]
    assert int(out.argmax()) == 7 and out[7] > best_real[7]


def test_several_units_in_one_batch_are_the_images_each_gives_alone():
    m = Small().eval()
    p = FAST.replace(max_iter=12)
    objs = [channel("relu2", 1), neuron("relu1", 4), class_logit(0)]
    together = render(m, SPEC, per_image(objs), seeds=[7, 8, 9], params=p)
    for i, o in enumerate(objs):
        alone = render(m, SPEC, o, seeds=[7 + i], params=p)
        diff = np.abs(together.images[i].astype(int) - alone.images[0].astype(int))
        assert diff.max() <= 1, (i, diff.max())
        np.testing.assert_allclose(together.values[i], alone.values[0], rtol=1e-3, atol=1e-4)


def test_seeds_reproduce_and_differ():
    m = Small().eval()
    p = FAST.replace(max_iter=5)
    a = render(m, SPEC, channel("relu2", 0), params=p)
    b = render(m, SPEC, channel("relu2", 0), params=p)
    c = render(m, SPEC, channel("relu2", 0), params=p.replace(seed=1))
    assert np.array_equal(a.images[0], b.images[0]) and not np.array_equal(a.images[0], c.images[0])


def test_stop_keeps_the_best_images_so_far():
    m = Small().eval()
    r = Renderer(m, SPEC, channel("relu2", 2), 2, FAST.replace(max_iter=500))
    steps = []
    for st in r.run(every=1):
        steps.append(st)
        if st.iteration == 6:
            r.stop()
    res = r.result
    assert res.stopped and res.iterations == 6 and len(res.images) == 2
    assert [s.iteration for s in steps] == [1, 2, 3, 4, 5, 6, 6]
    final = read(m, "relu2", res.x, pre=True)[:, 2].mean((1, 2))
    np.testing.assert_allclose(res.values, final.numpy(), rtol=1e-4, atol=1e-5)
    assert no_hooks_left(m)


@pytest.mark.parametrize("spec,words", [
    (InputSpec(1, 9, 17, mean=(0.5,), std=(0.25,)), "1 channel independently"),
    (InputSpec(5, 12, 10, scale=1.0), "5 channels independently"),
    (InputSpec(3, 16, 16, channel_order="BGR", mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), scale=1.0),
     "decorrelated colour"),
])
def test_any_channels_sizes_and_normalizations(spec, words):
    m = Small(spec.channels).eval()
    res = render(m, spec, neuron("relu2", 1), params=FAST.replace(max_iter=25))
    assert res.x.shape == (1,) + spec.shape and res.images[0].shape == (spec.height, spec.width, 3)
    assert words in res.description
    # what the optimizer reports is what the model reads from the saved image
    back = torch.from_numpy(spec.to_array(np.ascontiguousarray(res.images[0][..., ::-1])))[None]
    if spec.channels != 5:          # 5 channels are shown as their mean gray: not a round trip
        torch.testing.assert_close(back, res.x, rtol=0, atol=0.51 * 255 * spec.scale / min(spec.std))
    assert res.values[0] > res.history[0, 0]


def test_diversity_pulls_the_images_apart(shapes):
    m = shapes[0].model
    p = FAST.replace(max_iter=30)
    plain = render(m, shapes[0].spec, channel("features.10", 5), seeds=3, params=p)
    diverse = render(m, shapes[0].spec, channel("features.10", 5) - 2.0 * diversity("features.6"), seeds=3, params=p)

    def similarity(x):
        g = gram_matrices(read(m, "features.6", x)).flatten(1)
        s = g @ g.T
        return float((s.sum() - s.diagonal().sum()) / 6)
    assert similarity(diverse.x) < similarity(plain.x) - 0.01


# ---------------------------------------------------------------------------------------------- bad input
class Skips(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.big = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        if x.shape[-1] > 100:
            y = self.big(y)
        return y.mean((2, 3))


def test_a_layer_that_does_not_run_is_one_line():
    m = Skips().train()
    with pytest.raises(CnnvisError, match=r"^layer 'big' did not run in the forward pass") as e:
        render(m, SPEC, channel("big", 0), params=FAST)
    assert "\n" not in str(e.value) and no_hooks_left(m) and m.training


def test_a_unit_out_of_range_and_an_unknown_layer_are_one_line():
    m = Small()
    with pytest.raises(CnnvisError, match=r"unit 8 is out of range for layer 'relu2': it has 8 units \(0\.\.7\)"):
        render(m, SPEC, channel("relu2", 8), params=FAST)
    with pytest.raises(CnnvisError, match="unknown layer 'relu3'.*Did you mean"):
        render(m, SPEC, channel("relu3", 0), params=FAST)
    assert no_hooks_left(m)


class _NaNAfter(torch.autograd.Function):
    calls = 0

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        _NaNAfter.calls += 1
        return g * float("nan") if _NaNAfter.calls >= 4 else g


class NaNGrad(Small):
    def forward(self, x):
        return super().forward(_NaNAfter.apply(x))


def test_a_nan_gradient_stops_and_keeps_the_last_good_image():
    _NaNAfter.calls = 0
    m = NaNGrad().eval()
    r = Renderer(m, SPEC, channel("relu2", 0), 1, FAST)
    steps = list(r.run(every=1))
    res = r.result
    assert res.problem.startswith("the gradient became NaN or infinite at step 4: stopped there, keeping the images "
                                  "of step 3")
    assert res.iterations == 3 and np.isfinite(res.x.numpy()).all()
    assert [s.iteration for s in steps[:-1]] == [1, 2, 3]


class Rounded(Small):
    def forward(self, x):
        return super().forward(torch.round(x * 4) / 4)          # round's gradient is zero everywhere


def test_a_gradient_zero_everywhere_stops_with_one_line():
    res = render(Rounded().eval(), SPEC, channel("relu2", 0), params=FAST)
    assert res.problem.startswith(f"the gradient is zero everywhere for {ZERO_PATIENCE} steps in a row "
                                  f"(steps 1-{ZERO_PATIENCE})")
    assert res.iterations == ZERO_PATIENCE


class Detached(Small):
    def forward(self, x):
        with torch.no_grad():
            return super().forward(x)


def test_an_objective_without_a_gradient_is_one_line():
    for m in (Detached().eval(), Small().eval().requires_grad_(False)):
        if isinstance(m, Detached):
            with pytest.raises(CnnvisError, match=r"^cannot take a gradient of 'class 1 logit \+ 4 log p'"):
                render(m, SPEC, class_logit(1), params=FAST)
        else:                                          # frozen weights are fine: the image still has a gradient
            assert render(m, SPEC, class_logit(1), params=FAST.replace(max_iter=2)).iterations == 2


def test_a_model_whose_backward_fails_is_one_line():
    from tests.core.test_rules_views import _SecondInPlaceOnTheSameBase
    m = _SecondInPlaceOnTheSameBase().eval()
    with pytest.raises(CnnvisError, match=r"changes in place a tensor its backward needs") as e:
        render(m, InputSpec(3, 8, 8), class_logit(0), params=FAST)
    assert "\n" not in str(e.value) and no_hooks_left(m)


def test_a_model_that_returns_no_tensor():
    class Pair(Small):
        def forward(self, x):
            return super().forward(x), x
    with pytest.raises(CnnvisError, match="the model returns tuple, not a tensor"):
        render(Pair().eval(), SPEC, class_logit(0), params=FAST)


def test_capture_reads_relu_inputs_and_other_outputs_of_this_thread():
    m = Small().eval()
    x = random_inputs(SPEC, 2)
    with LayerCapture(m, ["relu1", "conv2", "output"]) as cap:
        out = cap.forward(x)
        torch.testing.assert_close(cap.values["relu1"], read(m, "conv1", x))   # the ReLU's input = conv1's output
        torch.testing.assert_close(cap.values["conv2"], read(m, "conv2", x))
        assert cap.values[""] is out
    assert no_hooks_left(m)


@pytest.mark.parametrize("bad,match", [(dict(max_iter=0), "max_iter"), (dict(lr=float("nan")), "lr"),
                                       (dict(param="cppn"), "cppn"), (dict(jitter=-1), "jitter")])
def test_bad_settings(bad, match):
    with pytest.raises(CnnvisError, match=match):
        RenderParams(**bad)


def test_adam_is_torch_optims_adam_step_for_step():
    from cnnvis_gui.optvis.adam import Adam
    torch.manual_seed(3)
    a = torch.randn(4, 5, dtype=torch.float64)
    b = a.clone().requires_grad_(True)
    ours, ref = Adam([a], lr=0.05), torch.optim.Adam([b], lr=0.05)
    for _ in range(20):
        g = torch.randn(4, 5, dtype=torch.float64) + 0.3
        ours.step([g])
        b.grad = g.clone()
        ref.step()
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-14)
