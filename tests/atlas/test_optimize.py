"""Activation maximization: far above random and sample inputs, bounded pixels, any shape, cache, stop."""
import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_gui.atlas.optimize import (PRESETS, ActivationMaximizer, maximize, random_input,
                                       unit_activation)
from cnnvis_gui.core import CnnvisError, InputSpec
from cnnvis_gui.sources import load_image


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
            for p in (PRESETS[i] for i in (1, 2, 3, 4))]
    assert rows == [(0, 0.5, 4, 50, 0), (0.3, 0, 0, 20, 0), (0.0001, 1.0, 4, 0, 0), (0, 0.5, 4, 0, 90)]


@pytest.mark.parametrize("preset", [1, 2, 3, 4])
def test_conv_unit_far_above_random_and_samples(preset, tmp_path):
    lm, samples = _demo()
    layer, unit = "features.10", 5
    res = maximize(lm.model, lm.spec, layer, unit, preset=preset, cache_dir=tmp_path, max_iter=60)
    rnd = unit_activation(lm.model, lm.spec, layer, unit, random_input(lm.spec, 8))
    smp = unit_activation(lm.model, lm.spec, layer, unit, samples)
    ref = max(float(rnd.max()), float(smp.max()))
    assert res.activation > 3 * ref and res.activation > 0
    # the pixels stay what real images map to: the image round-trips through the spec
    back = torch.from_numpy(lm.spec.to_array(res.image[..., ::-1].copy()))
    assert torch.allclose(back, res.x[0], atol=0.5 / 255 / 0.25 + 1e-4)


def test_output_class_far_above_random_and_samples(tmp_path):
    lm, samples = _demo()
    res = maximize(lm.model, lm.spec, "output", 3, preset=1, cache_dir=tmp_path, max_iter=80)
    rnd = unit_activation(lm.model, lm.spec, "output", 3, random_input(lm.spec, 8))
    smp = unit_activation(lm.model, lm.spec, "output", 3, samples)
    assert res.activation > 3 * max(float(rnd.max()), float(smp.max()), 1.0)


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
        rnd = unit_activation(m, spec, layer, 2, random_input(spec, 8), target)
        assert res.x.shape == (1, 1, 10, 14) and res.image.shape == (10, 14, 3)
        assert res.history[-1] > res.history[0]
        if target != "channel":     # the channel mean of one random conv: noise is hard to beat here
            assert res.activation > float(rnd.max())
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
