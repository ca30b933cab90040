"""Input x gradient, integrated gradients and SmoothGrad on batches, written out with autograd.

A small float64 network keeps every comparison exact to rounding: the references draw the same
seeded noise (copy s is the s-th ``torch.randn`` of a generator seeded with ``seed``, scaled by
``noise`` times each sample's own range), take plain autograd gradients of the unit's objective
and combine them as each paper does.  The batches are chosen so that copies and integration
points cross the batched forwards' boundaries.
"""
import numpy as np
import pytest
import torch
import torch.nn as nn

from cnnvis_gui.core import CnnvisError, Visualizer
from cnnvis_gui.core import saliency
from cnnvis_gui.core.attribution import (COPIES_PER_FORWARD, DEFAULT_NOISE, DEFAULT_STEPS, MAX_SMOOTHGRAD, MAX_STEPS,
                                         _NoisyCopies, attribute, check_options)

UNIT = 2


def _model(dtype=torch.float64):
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3)).to(dtype).eval()


def _input(dtype=torch.float64):
    """Two samples whose ranges differ tenfold: the noise follows each sample's own range."""
    g = torch.Generator().manual_seed(11)
    x = torch.rand(2, 2, 7, 6, generator=g, dtype=torch.float64)
    x[1] = x[1] * 10.0 - 3.0
    return x.to(dtype)


def _grad(model, x):
    """d/dx of each sample's sum over positions of output channel UNIT (plain autograd)."""
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[:, UNIT].sum(), x)
    return g


def _noisy(x, n, level, seed):
    gen = torch.Generator().manual_seed(seed)
    rng = (x.reshape(len(x), -1).amax(1) - x.reshape(len(x), -1).amin(1)).reshape(-1, 1, 1, 1)
    return [x + torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x.dtype) * level * rng
            for _ in range(n)]


def _integrated(model, x, b, steps):
    """(x - b) * sum_k w_k grad(b + a_k (x - b)), Gauss-Legendre on [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    total = torch.zeros_like(x)
    for a, w in zip((nodes + 1) / 2, weights / 2):
        total += float(w) * _grad(model, b + float(a) * (x - b))
    return (x - b) * total


def _ours(model, x, method, **kw):
    with Visualizer(model).forward(x) as frame:
        return frame.saliency("2", UNIT, method, **kw)


@pytest.mark.parametrize("n", [1, 5])
def test_smoothgrad_input_x_gradient_multiplies_each_noisy_copy_by_its_own_gradient(n):
    model, x = _model(), _input()
    ours = _ours(model, x, "input-x-gradient", smoothgrad=n, noise=0.2, seed=3)
    ref = sum(c * _grad(model, c) for c in _noisy(x, n, 0.2, 3)) / n
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    grad_only = _ours(model, x, "gradient", smoothgrad=n, noise=0.2, seed=3)
    torch.testing.assert_close(grad_only, sum(_grad(model, c) for c in _noisy(x, n, 0.2, 3)) / n,
                               rtol=1e-10, atol=1e-12)


def test_input_x_gradient_without_noise_is_x_times_the_gradient():
    model, x = _model(), _input()
    ref = x * _grad(model, x)
    for kw in ({}, dict(smoothgrad=4, noise=0.0), dict(smoothgrad=0, noise=0.3)):
        torch.testing.assert_close(_ours(model, x, "input-x-gradient", **kw), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("baseline", [None, 0.25, "array", "tensor32"])
def test_integrated_gradients_on_a_batch_with_each_kind_of_baseline(baseline):
    """A number, a numpy array broadcast over the batch and space, or a float32 tensor (cast to the
    model's dtype) all give the written-out quadrature from that baseline."""
    model, x = _model(), _input()
    per_channel = np.array([0.5, -1.0]).reshape(1, 2, 1, 1)
    given = {None: None, 0.25: 0.25, "array": per_channel,
             "tensor32": torch.from_numpy(per_channel).float()}[baseline]
    b = {None: torch.zeros_like(x), 0.25: torch.full_like(x, 0.25)}.get(
        baseline, torch.from_numpy(per_channel).float().double().expand_as(x))
    steps = 5                                   # 2 samples x 5 points: batches of 4 copies cut the path
    ours = _ours(model, x, "integrated-gradients", steps=steps, baseline=given)
    torch.testing.assert_close(ours, _integrated(model, x, b, steps), rtol=1e-10, atol=1e-12)


def test_smoothgrad_of_integrated_gradients_on_a_batch():
    model, x = _model(), _input()
    n, steps, b = 3, 3, torch.full_like(x, -0.5)
    ours = _ours(model, x, "integrated-gradients", smoothgrad=n, noise=0.1, steps=steps, baseline=-0.5, seed=9)
    ref = sum(_integrated(model, c, b, steps) for c in _noisy(x, n, 0.1, 9)) / n
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_forwards_are_batched_and_results_keep_the_models_dtype():
    model, x = _model(torch.float32), _input(torch.float32)
    sizes = []
    h = model.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
    try:
        ours = _ours(model, x, "integrated-gradients", steps=6, baseline=0.1)
        sg = _ours(model, x, "gradient", smoothgrad=3, noise=0.1, seed=0)
    finally:
        h.remove()
    per = COPIES_PER_FORWARD // 2                               # copies of the 2 samples per forward
    assert per == 4 and sizes == [2, 8, 4, 2, 6]                # frame, 6 points as 4 + 2, frame, 3 copies
    assert ours.dtype == sg.dtype == torch.float32
    torch.testing.assert_close(ours.double(), _integrated(model.double(), x.double(), torch.full_like(x.double(), 0.1), 6),
                               rtol=1e-4, atol=1e-5)


def test_seeds():
    """The same seed repeats; no seed draws fresh noise each time."""
    model, x = _model(), _input()
    a, b = (_ours(model, x, "gradient", smoothgrad=2, seed=4) for _ in range(2))
    assert torch.equal(a, b)
    c, d = (_ours(model, x, "gradient", smoothgrad=2) for _ in range(2))
    assert not torch.equal(c, d)


def test_option_bounds_and_their_messages():
    check_options(MAX_SMOOTHGRAD, 0.0, MAX_STEPS, 0)
    check_options(0, 0.15, 1, None)
    for kwargs, message in [
        (dict(smoothgrad=MAX_SMOOTHGRAD + 1), "smoothgrad is the number of noisy copies, an integer in "
                                              f"0..{MAX_SMOOTHGRAD} (0: off); got {MAX_SMOOTHGRAD + 1}"),
        (dict(smoothgrad=True), "got True"),
        (dict(noise=-0.1), "noise is the SmoothGrad noise level (std as a fraction of the input's range), "
                           "a number >= 0 such as 0.15; got -0.1"),
        (dict(noise=float("inf")), "got inf"),
        (dict(noise=False), "got False"),
        (dict(steps=MAX_STEPS + 1), f"steps is the number of integrated-gradients points, an integer in "
                                    f"1..{MAX_STEPS}; got {MAX_STEPS + 1}"),
        (dict(steps=2.0), "got 2.0"),
        (dict(steps=True), "got True"),
        (dict(seed=True), "seed must be an integer or None, got True"),
        (dict(seed=1.5), "got 1.5"),
    ]:
        with pytest.raises(CnnvisError) as e:
            check_options(**kwargs)
        assert message in str(e.value), (kwargs, str(e.value))


@pytest.mark.parametrize("baseline,message", [
    (torch.zeros(3, 2, 7, 6), "baseline of shape (3, 2, 7, 6) does not broadcast to the input's (2, 2, 7, 6)"),
    (torch.zeros(2, 2, 7, 6, dtype=torch.int64), "baseline must be None (zeros), a number or a float tensor "
                                                  "shaped like the input; got Tensor"),
    (True, "got bool"),
    ([0.0, 1.0], "got list"),
])
def test_bad_baselines_are_one_clear_error(baseline, message):
    with pytest.raises(CnnvisError) as e:
        _ours(_model(), _input(), "integrated-gradients", steps=2, baseline=baseline)
    assert str(e.value).endswith(message) and str(e.value).startswith("baseline")


def test_an_unknown_method_names_the_known_ones():
    with Visualizer(_model()).forward(_input()) as frame:
        with pytest.raises(CnnvisError) as e:
            attribute(frame, "2", UNIT, "smoothgrad")
    assert str(e.value) == ("unknown method 'smoothgrad'; choose one of gradient, deconvnet, guided, "
                            "input-x-gradient, integrated-gradients.")


def test_a_frame_not_recorded_by_a_visualizer_cannot_run_extra_forwards():
    model, x = _model(), _input()
    with Visualizer(model).forward(x) as frame:
        frame.visualizer = None
        with pytest.raises(CnnvisError) as e:
            frame.saliency("2", UNIT, "gradient", smoothgrad=2)
        assert str(e.value) == "this frame was not recorded by a Visualizer; it cannot run extra forwards."


def test_defaults_are_the_documented_ones_everywhere():
    """SmoothGrad's noise 0.15 and 32 integration points (the README's defaults) in every entry point."""
    import inspect
    assert (DEFAULT_NOISE, DEFAULT_STEPS) == (0.15, 32)
    for fn in (check_options, attribute, Visualizer(_model()).forward(_input()).saliency, saliency):
        p = inspect.signature(fn).parameters
        assert (p["noise"].default, p["steps"].default) == (DEFAULT_NOISE, DEFAULT_STEPS), fn
    assert inspect.signature(check_options).parameters["smoothgrad"].default == 0
    check_options()


def test_smoothgrad_noise_does_not_depend_on_torchs_default_dtype():
    """The noise is drawn in float32 whatever torch's default dtype, so a seed repeats."""
    model, x = _model(torch.float32), _input(torch.float32)
    a = _ours(model, x, "gradient", smoothgrad=3, seed=8)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        b = _ours(model, x, "gradient", smoothgrad=3, seed=8)
    finally:
        torch.set_default_dtype(old)
    assert torch.equal(a, b)


def test_noisy_copies_are_released_once_used():
    copies = _NoisyCopies(torch.arange(4.0).reshape(1, 1, 2, 2), 0.5, 1)
    first, third = copies[0].clone(), copies[2]
    assert sorted(copies.kept) == [0, 1, 2] and not torch.equal(first, third)
    copies.release(0)
    copies.release(1)
    assert sorted(copies.kept) == [2] and torch.equal(copies[2], third)


def test_many_samples_go_one_copy_per_forward():
    """A batch larger than COPIES_PER_FORWARD runs one copy of it per forward, never two."""
    model = _model()
    x = torch.rand(COPIES_PER_FORWARD + 1, 2, 7, 6, dtype=torch.float64)
    sizes = []
    h = model.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
    try:
        _ours(model, x, "gradient", smoothgrad=2, seed=0)
    finally:
        h.remove()
    assert sizes == [len(x)] * 3


def test_a_float64_baseline_for_a_float32_model_is_cast():
    model, x = _model(torch.float32), _input(torch.float32)
    b64 = torch.full((1, 2, 1, 1), 0.1, dtype=torch.float64)
    ours = _ours(model, x, "integrated-gradients", steps=3, baseline=b64)
    assert ours.dtype == torch.float32
    assert torch.equal(ours, _ours(model, x, "integrated-gradients", steps=3, baseline=b64.float()))


class _Shared(nn.Module):
    """``conv`` runs twice with the same weights; call 0 sees the input, call 1 its tanh."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.tanh(self.conv(x)))


@pytest.mark.parametrize("method", ["gradient", "input-x-gradient", "integrated-gradients"])
def test_smoothgrad_of_the_first_call_of_a_shared_layer(method):
    model, x = _Shared().double().eval(), _input()
    with Visualizer(model).forward(x) as frame:
        ours = frame.saliency("conv", 1, method, call=0, smoothgrad=2, noise=0.1, steps=2, seed=5)

    def grad(c):
        c = c.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model.conv(c)[:, 1].sum(), c)          # call 0 only
        return g

    ref = torch.zeros_like(x)
    nodes, weights = np.polynomial.legendre.leggauss(2)
    for c in _noisy(x, 2, 0.1, 5):
        if method == "gradient":
            ref += grad(c)
        elif method == "input-x-gradient":
            ref += c * grad(c)
        else:
            ref += c * sum(float(w) / 2 * grad(float(a + 1) / 2 * c) for a, w in zip(nodes, weights))
    torch.testing.assert_close(ours, ref / 2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["gradient", "deconvnet", "guided", "input-x-gradient"])
def test_without_noise_the_answer_comes_from_the_recorded_frame(method):
    """``attribute`` itself (the core's public function) with its defaults: no new forward, the
    frame's own saliency of the chosen call (here the first call of a shared layer)."""
    model, x = _Shared().double().eval(), _input()
    with Visualizer(model).forward(x) as frame:
        sizes = []
        h = model.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
        try:
            ours = attribute(frame, "conv", 1, method, call=0)
            again = attribute(frame, "conv", 1, method, "sum", 0, smoothgrad=3, noise=0.0)
        finally:
            h.remove()
        rule = "gradient" if method == "input-x-gradient" else method
        plain = frame.saliency("conv", 1, rule, "sum", 0)
    assert sizes == []
    want = x * plain if method == "input-x-gradient" else plain
    assert torch.equal(ours, want) and torch.equal(again, want)
    if method == "gradient":
        c = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model.conv(c)[:, 1].sum(), c)
        torch.testing.assert_close(ours, g, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["input-x-gradient", "integrated-gradients", "guided"])
def test_noisy_copies_are_kept_only_while_their_batch_is_in_use(monkeypatch, method):
    """Memory does not grow with the number of copies: at most one forward's worth is alive."""
    import cnnvis_gui.core.attribution as attribution
    peak = {"kept": 0}

    class Counting(attribution._NoisyCopies):
        def __getitem__(self, s):
            out = super().__getitem__(s)
            peak["kept"] = max(peak["kept"], len(self.kept))
            return out

    monkeypatch.setattr(attribution, "_NoisyCopies", Counting)
    model, x = _model(), _input()
    _ours(model, x, method, smoothgrad=12, noise=0.1, steps=3, seed=1)
    per = COPIES_PER_FORWARD // len(x)
    assert 0 < peak["kept"] <= per + 1, peak
