"""Attention rollout (Abnar & Zuidema 2020) against the paper's formula on attention maps read directly.

The reference switches timm's fused attention off on a copy of the ViT, so that every block's
attention probabilities pass through its ``attn_drop`` module, hooks them there, and writes the
rollout out: mean over heads, 0.5 A + 0.5 I, rows renormalized, the product over the layers, the
class token's row over the 14 x 14 patch tokens.  Ours recomputes the same probabilities from the
recorded queries and keys of the unmodified (fused) model.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from cnnvis_gui.core import CnnvisError, InputSpec, Visualizer


def _reference(model, x, residual=0.5, layers=12):
    ref = copy.deepcopy(model)
    maps = []
    hooks = []
    for blk in ref.blocks:
        blk.attn.fused_attn = False
        hooks.append(blk.attn.attn_drop.register_forward_hook(lambda m, a, o: maps.append(o.detach().double())))
    with torch.no_grad():
        ref(x)
    for h in hooks:
        h.remove()
    assert len(maps) == 12 and maps[0].shape == (x.shape[0], 3, 197, 197)
    R = torch.eye(197, dtype=torch.float64).expand(x.shape[0], 197, 197)
    for A in maps[:layers]:                    # the paper's rollout at layer i: the first i layers
        A = residual * A.mean(dim=1) + (1 - residual) * torch.eye(197, dtype=torch.float64)
        A = A / A.sum(dim=-1, keepdim=True)
        R = A @ R
    m = R[:, 0, 1:].reshape(-1, 1, 14, 14).float()
    m = F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return m / m.amax(dim=(1, 2), keepdim=True)


def test_attention_rollout_equals_the_papers_formula(timm_map):
    model, vis = timm_map("vit")
    x = torch.randn(2, 3, 224, 224)
    with vis.forward(x) as frame:
        ours = frame.attention_rollout()
        ours_09 = frame.attention_rollout(residual=0.9)
    ref = _reference(model, x)
    assert ours.shape == (2, 224, 224) and float(ref.max()) == pytest.approx(1.0)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours_09, _reference(model, x, 0.9), rtol=1e-4, atol=1e-5)


def test_rollout_as_a_cam_of_a_unit_rolls_out_the_layers_before_it(timm_map):
    """``cam(method="rollout")``: the paper's rollout at the last attention layer before the unit, the same map
    for every unit of a layer (class-agnostic); the model's output gets every layer."""
    model, vis = timm_map("vit")
    x = torch.randn(1, 3, 224, 224)
    with vis.forward(x) as frame:
        out = frame.cam("", 281, method="rollout")
        torch.testing.assert_close(out, frame.attention_rollout(), rtol=0, atol=0)
        at5 = frame.cam("blocks.5", 100, method="rollout")
        torch.testing.assert_close(frame.cam("blocks.5", 7, method="rollout"), at5, rtol=0, atol=0)
        inside = frame.cam("blocks.5.attn.proj", 0, method="rollout")   # after block 5's attention probabilities
        qkv = frame.cam("blocks.5.attn.qkv", 0, method="rollout")       # before them
    torch.testing.assert_close(out, _reference(model, x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(at5, _reference(model, x, layers=6), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(inside, at5, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(qkv, _reference(model, x, layers=5), rtol=1e-4, atol=1e-5)
    assert float((at5 - _reference(model, x, layers=5)).abs().max()) > 1e-4     # one layer more is another map


def test_rollout_errors_name_the_reason(timm_map):
    _, vis = timm_map("vit")
    with vis.forward(torch.randn(1, 3, 224, 224)) as frame:
        with pytest.raises(CnnvisError, match="no attention layer runs before 'blocks.0.norm1'"):
            frame.cam("blocks.0.norm1", 0, method="rollout")
        with pytest.raises(CnnvisError, match="unit 192 is out of range"):
            frame.cam("blocks.3", 192, method="rollout")
        with pytest.raises(CnnvisError, match="rollout reads every attention layer"):
            frame.cam("", 0, "blocks.3", method="rollout")
    with vis.forward(torch.randn(1, 3, 224, 224), layers=["blocks.3"]) as frame:
        with pytest.raises(CnnvisError, match="was not recorded in this frame"):
            frame.cam("blocks.3", 0, method="rollout")


def test_attention_rollout_needs_attention_layers():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    with Visualizer(net).forward(torch.randn(1, 3, 8, 8)) as frame:
        with pytest.raises(CnnvisError, match="attention rollout needs attention layers"):
            frame.attention_rollout()
        with pytest.raises(CnnvisError, match="attention rollout needs attention layers .* this model has none"):
            frame.cam("1", 0, method="rollout")
