"""Objectives against their formulas written out (Lucid's channel / neuron / direction / diversity)."""
import numpy as np
import pytest
import torch

from cnnvis_gui.core import CnnvisError
from cnnvis_gui.optvis import channel, class_logit, direction, diversity, neuron, per_image
from cnnvis_gui.optvis.objectives import gram_matrices, unit_map

torch.manual_seed(0)
A = torch.randn(3, 5, 4, 6, dtype=torch.float64)          # N x C x H x W
Z = torch.randn(3, 10, dtype=torch.float64)               # N x classes
ACTS = {"conv": A, "": Z}


def test_channel_is_the_mean_over_positions():
    want = [float(np.mean(A[i, 2].numpy())) for i in range(3)]
    np.testing.assert_allclose(channel("conv", 2)(ACTS).numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(channel("", 7)(ACTS).numpy(), Z[:, 7].numpy())       # a flat layer: the value


def test_neuron_centre_and_position():
    np.testing.assert_allclose(neuron("conv", 1)(ACTS).numpy(), A[:, 1, 2, 3].numpy())       # 4 x 6: centre (2, 3)
    np.testing.assert_allclose(neuron("conv", 4, (0, 5))(ACTS).numpy(), A[:, 4, 0, 5].numpy())
    np.testing.assert_allclose(neuron("", 3)(ACTS).numpy(), Z[:, 3].numpy())
    with pytest.raises(CnnvisError, match=r"position \(4, 0\) is outside the 4x6 map of layer 'conv'\.$"):
        neuron("conv", 0, (4, 0))(ACTS)
    with pytest.raises(CnnvisError, match="flat"):
        neuron("", 0, (1, 1))(ACTS)


def test_channels_last_and_token_layouts_give_the_same_units():
    """Objectives read a layer through the model map's Layout (core.layouts): the same unit either way."""
    from cnnvis_gui.core.layouts import Layout
    nhwc = {"conv": A.permute(0, 2, 3, 1)}                                       # N x H x W x C
    cls = torch.randn(3, 1, 5, dtype=torch.float64)
    tokens = {"conv": torch.cat([cls, A.flatten(2).transpose(1, 2)], dim=1)}    # N x (1 + H*W) x C
    lays = {"nhwc": Layout("nhwc", (4, 6, 5)), "tokens": Layout("tokens", (25, 5), prefix=1, grid=(4, 6))}
    for acts, lay in ((nhwc, lays["nhwc"]), (tokens, lays["tokens"])):
        np.testing.assert_allclose(channel("conv", 3)(acts, {"conv": lay}).numpy(), channel("conv", 3)(ACTS).numpy())
        torch.testing.assert_close(unit_map(acts["conv"], "conv", lay), unit_map(A))
        np.testing.assert_allclose(neuron("conv", 2, (1, 4))(acts, {"conv": lay}).numpy(), A[:, 2, 1, 4].numpy())
        np.testing.assert_allclose(neuron("conv", 2)(acts, {"conv": lay}).numpy(), A[:, 2, 2, 3].numpy())
    with pytest.raises(CnnvisError, match="does not have the per-sample shape"):
        channel("conv", 0)(ACTS, {"conv": lays["nhwc"]})


def test_unit_out_of_range_is_one_line():
    with pytest.raises(CnnvisError, match=r"unit 5 is out of range for layer 'conv': it has 5 units \(0\.\.4\)"):
        channel("conv", 5)(ACTS)
    with pytest.raises(CnnvisError, match=r"unit 10 is out of range for layer 'output': it has 10 units"):
        class_logit(10)(ACTS)


def test_class_logit_adds_the_log_probability():
    z = Z.numpy()
    logp = z[:, 4] - np.log(np.exp(z).sum(axis=1))
    np.testing.assert_allclose(class_logit(4)(ACTS).numpy(), z[:, 4] + 4 * logp, rtol=1e-6)   # the default: 4
    np.testing.assert_allclose(class_logit(4, probability_weight=0.5)(ACTS).numpy(), z[:, 4] + 0.5 * logp, rtol=1e-6)
    np.testing.assert_allclose(class_logit(4, probability_weight=0)(ACTS).numpy(), z[:, 4])


def test_direction_is_the_mean_projection():
    v = torch.randn(5, dtype=torch.float64)
    want = [np.mean([float(A[i, :, y, x] @ v) for y in range(4) for x in range(6)]) for i in range(3)]
    np.testing.assert_allclose(direction("conv", v)(ACTS).numpy(), want, rtol=1e-5)
    with pytest.raises(CnnvisError, match="3 entries but layer 'conv' has 5 channels"):
        direction("conv", [1, 2, 3])(ACTS)


def test_diversity_is_lucids_gram_penalty():
    """Lucid: grams G_i = F_i^T F_i (F_i: positions x channels), each l2-normalized; the penalty is
    sum_i sum_{j != i} <G_i, G_j> / N."""
    n = A.shape[0]
    grams = []
    for i in range(n):
        f = A[i].reshape(5, -1).T.numpy()                       # positions x channels
        g = f.T @ f
        grams.append(g / np.sqrt((g * g).sum()))
    total = sum(sum(float((grams[i] * grams[j]).sum()) for j in range(n) if j != i) for i in range(n)) / n
    got = diversity("conv")(ACTS)
    np.testing.assert_allclose(float(got.sum()), total, rtol=1e-10)
    per = [sum(float((grams[i] * grams[j]).sum()) for j in range(n) if j != i) / n for i in range(n)]
    np.testing.assert_allclose(got.numpy(), per, rtol=1e-10)
    np.testing.assert_allclose(gram_matrices(A)[1].numpy(), grams[1], rtol=1e-10)
    assert not diversity("conv").separable and channel("conv", 0).separable
    assert not (channel("conv", 0) - 0.1 * diversity("conv")).separable
    assert float(diversity("conv")({"conv": A[:1]})[0]) == 0.0         # one image: nothing to differ from


def test_with_diversity_scales_the_penalty_by_the_objectives_size():
    from cnnvis_gui.optvis import with_diversity
    a = channel("conv", 1)
    got = with_diversity(a, "conv", 0.5)(ACTS)
    torch.testing.assert_close(got, a(ACTS) - 0.5 * a(ACTS).abs().mean() * diversity("conv")(ACTS))
    # ten times the activations: ten times the objective, the same trade-off
    torch.testing.assert_close(with_diversity(a, "conv", 0.5)({"conv": 10 * A}), 10 * got)
    # the scale is held constant for the gradient: the penalty's gradient is |objective| x diversity's
    x = A.clone().requires_grad_(True)
    g, = torch.autograd.grad(with_diversity(a, "conv", 0.5)({"conv": x}).sum(), x)
    y = A.clone().requires_grad_(True)
    k = float(a({"conv": A}).abs().mean())
    h, = torch.autograd.grad((a({"conv": y}) - 0.5 * k * diversity("conv")({"conv": y})).sum(), y)
    torch.testing.assert_close(g, h)
    assert not with_diversity(a, "conv", 0.5).separable


def test_objectives_compose():
    a, b = channel("conv", 0), neuron("conv", 1)
    got = (a + 2 * b - 0.5 * a - 1.0)(ACTS)
    want = 0.5 * a(ACTS) + 2 * b(ACTS) - 1.0
    torch.testing.assert_close(got, want)
    torch.testing.assert_close((-a)(ACTS), -a(ACTS))
    torch.testing.assert_close((3 - a)(ACTS), 3 - a(ACTS))
    torch.testing.assert_close(sum([a, b])(ACTS), a(ACTS) + b(ACTS))
    assert (a + class_logit(2)).layers == ("conv", "")
    assert "conv channel 0" in repr(a - b)


def test_per_image_gives_each_image_its_own_objective():
    objs = [channel("conv", 0), class_logit(3, 0), neuron("conv", 2, (1, 1))]
    got = per_image(objs)(ACTS)
    want = torch.stack([objs[0](ACTS)[0], objs[1](ACTS)[1], objs[2](ACTS)[2]])
    torch.testing.assert_close(got, want)
    with pytest.raises(CnnvisError, match="2 objectives for a batch of 3"):
        per_image(objs[:2])(ACTS)
