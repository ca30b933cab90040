"""Activation maximization: far above random and sample inputs, bounded pixels, any shape, cache, stop."""
import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_gui.atlas.optimize import (PRESETS, ActivationMaximizer, maximize, random_input,
                                       unit_activation)
from cnnvis_gui.core import CnnvisError, InputSpec
from cnnvis_gui.sources import load_image


def measured(model, layer, unit, x, target="center"):
    """The unit's activation for each input of ``x``, read here with a plain forward hook.

    Independent of the optimizer's own objective: a wrong unit, position or layer there makes
    the optimized image excite something else, and this baseline then fails the test.
    """
    seen = {}
    mod = model if layer in ("", "output") else dict(model.named_modules())[layer]
    h = mod.register_forward_hook(lambda m, a, o: seen.__setitem__("a", o.detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    a = seen["a"][:, unit]
    if a.ndim == 1:
        return a
    if target == "channel":
        return a.flatten(1).mean(1)
    y, x_ = (a.shape[1] // 2, a.shape[2] // 2) if target == "center" else target
    return a[:, y, x_]


def as_saved(spec, image):
    """The optimized image as the user saves it (8-bit RGB), back through the spec: 1 x C x H x W."""
    return torch.from_numpy(spec.to_array(np.ascontiguousarray(image[..., ::-1])))[None]


def _demo():
    try:
        from cnnvis_gui.models import demo, demo_samples
        lm = demo("shapes")
    except Exception as e:  # pragma: no cover - the demo checkpoint is part of the repository
        pytest.skip(f"demo model not available: {e}")
    samples = torch.stack([torch.from_numpy(lm.spec.to_array(load_image(p))) for p in demo_samples("shapes")])
    return lm, samples


def test_presets_are_the_papers_table():
    rows = [(p.decay, p.blur_radius, p.blur_every, p.small_norm_pct, p.px_abs_benefit_pct)
            for p in (PRESETS[f"yosinski-{i}"] for i in (1, 2, 3, 4))]
    assert rows == [(0, 0.5, 4, 50, 0), (0.3, 0, 0, 20, 0), (0.0001, 1.0, 4, 0, 0), (0, 0.5, 4, 0, 90)]


@pytest.mark.parametrize("preset", [1, 2, 3, 4])
def test_conv_unit_far_above_random_and_samples(preset, tmp_path):
    lm, samples = _demo()
    layer, unit = "features.10", 5
    res = maximize(lm.model, lm.spec, layer, unit, preset=preset, cache_dir=tmp_path, max_iter=60)
    rnd = measured(lm.model, layer, unit, random_input(lm.spec, 8))
    smp = measured(lm.model, layer, unit, samples)
    ref = max(float(rnd.max()), float(smp.max()))
    got = float(measured(lm.model, layer, unit, res.x)[0])
    assert got == pytest.approx(res.activation, rel=1e-4, abs=1e-5)      # the reported number is the unit's
    assert got > 3 * ref and got > 0
    assert float(measured(lm.model, layer, unit, as_saved(lm.spec, res.image))[0]) > 3 * ref
    # the optimizer's own measure agrees with the hook on every input
    np.testing.assert_allclose(unit_activation(lm.model, lm.spec, layer, unit, samples).numpy(), smp.numpy(),
                               rtol=1e-5, atol=1e-6)
    # the pixels stay what real images map to: the image round-trips through the spec
    back = torch.from_numpy(lm.spec.to_array(res.image[..., ::-1].copy()))
    assert torch.allclose(back, res.x[0], atol=0.5 / 255 / 0.25 + 1e-4)


def test_output_class_far_above_random_and_samples(tmp_path):
    lm, samples = _demo()
    res = maximize(lm.model, lm.spec, "output", 3, preset=1, cache_dir=tmp_path, max_iter=80)
    rnd = measured(lm.model, "output", 3, random_input(lm.spec, 8))
    smp = measured(lm.model, "output", 3, samples)
    got = float(measured(lm.model, "output", 3, res.x)[0])
    assert got == pytest.approx(res.activation, rel=1e-4, abs=1e-5)
    assert got > 3 * max(float(rnd.max()), float(smp.max()), 1.0)


class Gray(nn.Module):
    """1-channel non-square input, flat hidden layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(6 * 10 * 14, 4)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


def test_any_channels_and_size_and_targets(tmp_path):
    torch.manual_seed(1)
    m = Gray().eval()
    spec = InputSpec(channels=1, height=10, width=14, mean=(0.1,), std=(0.3,))
    # preset 2 has no blur: a 1-pixel blur would wipe out a 3 x 3 receptive field
    for layer, target in [("relu", "center"), ("relu", "channel"), ("relu", (2, 11)), ("output", "center")]:
        res = maximize(m, spec, layer, 2, target=target, preset=2, use_cache=False, max_iter=40)
        rnd = measured(m, layer, 2, random_input(spec, 8), target)
        got = float(measured(m, layer, 2, res.x, target)[0])
        assert got == pytest.approx(res.activation, rel=1e-4, abs=1e-5), (layer, target)
        assert res.x.shape == (1, 1, 10, 14) and res.image.shape == (10, 14, 3)
        assert res.history[-1] > res.history[0]
        if target != "channel":     # the channel mean of one random conv: noise is hard to beat here
            assert got > float(rnd.max())
    with pytest.raises(CnnvisError, match="out of range"):
        maximize(m, spec, "relu", 6, use_cache=False, max_iter=2)
    with pytest.raises(CnnvisError, match="outside"):
        maximize(m, spec, "relu", 0, target=(10, 0), use_cache=False, max_iter=2)
    with pytest.raises(CnnvisError, match="preset"):
        maximize(m, spec, "relu", 0, preset=7)


def test_cache_and_stop(tmp_path):
    torch.manual_seed(2)
    m = Gray().eval()
    spec = InputSpec(channels=1, height=10, width=14)
    calls = []
    h = m.register_forward_hook(lambda *a: calls.append(1))
    try:
        first = maximize(m, spec, "relu", 1, cache_dir=tmp_path, max_iter=20)
        assert calls and not first.from_cache
        calls.clear()
        again = maximize(m, spec, "relu", 1, cache_dir=tmp_path, max_iter=20)
        assert again.from_cache and not calls
        np.testing.assert_array_equal(again.x.numpy(), first.x.numpy())
        assert not maximize(m, spec, "relu", 1, cache_dir=tmp_path, max_iter=21).from_cache  # other params
        opt = ActivationMaximizer(m, spec, "relu", 0, cache_dir=tmp_path, max_iter=500)
        steps = []
        for st in opt.run(every=5):
            steps.append(st)
            if st.iteration >= 10:
                opt.stop()
        assert opt.result is not None and opt.result.iterations < 500
        assert not opt.cache_file.exists()
        assert all(s.image.dtype == np.uint8 for s in steps)
    finally:
        h.remove()


def test_a_model_whose_backward_cannot_run_gets_one_line(tmp_path):
    """ELU then ReLU in place on two slices of one tensor: PyTorch's own backward fails."""
    from tests.core.test_rules_views import _SecondInPlaceOnTheSameBase
    torch.manual_seed(0)
    m = _SecondInPlaceOnTheSameBase().eval()
    with pytest.raises(CnnvisError, match=r"changes in place a tensor its backward needs \(output 0 of Elu1") as e:
        maximize(m, InputSpec(channels=3, height=8, width=8), "output", 0, use_cache=False, max_iter=2)
    assert "\n" not in str(e.value)


def test_default_preset_is_feature_visualization_of_the_whole_channel(tmp_path):
    lm, samples = _demo()
    res = maximize(lm.model, lm.spec, "features.10", 5, cache_dir=tmp_path, max_iter=40)
    assert res.preset == "fourier" and res.target == "channel" and res.description.startswith("Fourier")
    got = float(measured(lm.model, "features.10", 5, res.x, "channel")[0])
    assert got == pytest.approx(res.activation, rel=1e-4, abs=1e-5)
    assert got > 1.5 * float(measured(lm.model, "features.10", 5, samples, "channel").max())
    assert maximize(lm.model, lm.spec, "features.10", 5, cache_dir=tmp_path, max_iter=40).from_cache
    with pytest.raises(CnnvisError, match="class_probability: not a setting of this preset"):
        maximize(lm.model, lm.spec, "features.10", 5, preset="yosinski-2", use_cache=False, class_probability=1.0)


def test_several_units_in_one_optimization_share_the_single_units_cache(tmp_path):
    from cnnvis_gui.atlas import ActivationMaximizer, optimize_units
    lm, _ = _demo()
    seen = []
    res = optimize_units(lm.model, lm.spec, "features.10", [1, 4, 6], batch=2, cache_dir=tmp_path, max_iter=15,
                         progress=lambda d, n: seen.append((d, n)))
    assert [r.unit for r in res] == [1, 4, 6] and seen == [(0, 3), (2, 3), (3, 3)]
    alone = ActivationMaximizer(lm.model, lm.spec, "features.10", 4, cache_dir=tmp_path, max_iter=15)
    hit = alone.cached()
    assert hit is not None and np.array_equal(hit.x.numpy(), res[1].x.numpy())
    fresh = maximize(lm.model, lm.spec, "features.10", 4, use_cache=False, max_iter=15)
    assert np.abs(fresh.image.astype(int) - res[1].image.astype(int)).max() <= 1
    again = optimize_units(lm.model, lm.spec, "features.10", [1, 4, 6, 7], batch=4, cache_dir=tmp_path, max_iter=15)
    assert [r.from_cache for r in again] == [True, True, True, False]
    for r in res:
        assert float(measured(lm.model, "features.10", r.unit, r.x, "channel")[0]) == pytest.approx(r.activation,
                                                                                                    rel=1e-4)


class NaNAfterThree(nn.Module):
    """A conv whose backward turns NaN from its fourth call on."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.calls = 0

    def forward(self, x):
        y = self.conv(x)
        if self.training is False and torch.is_grad_enabled():
            self.calls += 1
            if self.calls >= 4:
                y = y + 0 * torch.sqrt(-torch.ones_like(y))      # NaN in the backward (and the value)
        return y.mean((2, 3))


@pytest.mark.parametrize("preset", ["fourier", "yosinski-2"])
def test_a_run_that_ends_on_nan_keeps_its_last_good_image_and_is_not_cached(preset, tmp_path):
    spec = InputSpec(channels=3, height=12, width=12)
    res = maximize(NaNAfterThree().eval(), spec, "output", 1, preset=preset, cache_dir=tmp_path, max_iter=30)
    assert res.problem.startswith("the objective became NaN or infinite at step 4: stopped there, keeping the "
                                  "images of step 3")
    assert res.iterations == 3 and np.isfinite(res.x.numpy()).all() and not list(tmp_path.glob("optimize-*"))
    # the image kept is the one a run of 3 steps ends with (same model, same seed)
    three = maximize(NaNAfterThree().eval(), spec, "output", 1, preset=preset, use_cache=False, max_iter=3)
    assert three.problem is None
    np.testing.assert_array_equal(res.x.numpy(), three.x.numpy())


class RoundsItsInput(nn.Module):
    """A conv after ``round``: the output depends on the image, its gradient is zero everywhere."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(torch.round(x * 4) / 4).mean((2, 3))


@pytest.mark.parametrize("preset", ["fourier", "pixel", "yosinski-3"])
def test_a_gradient_zero_everywhere_says_so_for_every_preset_and_is_not_cached(preset, tmp_path):
    from cnnvis_gui.optvis.health import ZERO_PATIENCE
    m = RoundsItsInput().eval()
    res = maximize(m, InputSpec(channels=3, height=12, width=12), "output", 2, preset=preset, cache_dir=tmp_path,
                   max_iter=50)
    assert res.problem == (f"the gradient is zero everywhere for {ZERO_PATIENCE} steps in a row (steps "
                           f"1-{ZERO_PATIENCE}): the objective does not respond to the image (a dead unit, or a step "
                           f"such as round/argmax before it); stopped")
    assert res.iterations == ZERO_PATIENCE and len(res.history) == ZERO_PATIENCE
    assert res.image.dtype == np.uint8 and not list(tmp_path.glob("optimize-*"))
