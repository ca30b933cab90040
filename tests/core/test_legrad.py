"""LeGrad (Bousselham et al. 2024) against the paper's formula on attention maps read directly, and torchcam.

The reference switches timm's fused attention off on a copy of the ViT, so that every block's post-softmax
attention probabilities ``A^l`` pass through its ``attn_drop`` module and stay in the graph, and writes the
paper out: per block l the layer-wise score ``s^l = head(norm(Z^l))[c]`` (the model's own head read on the
block's tokens), ``∂s^l/∂A^l`` by autograd, relu, mean over heads and query tokens, the patch keys on the
14 x 14 grid, mean over the layers, bilinear upsampling and min-max scaling.  Ours never materializes
``A^l``: it takes ``(∂s^l/∂O^l) Vᵀ`` from the unmodified (fused) model's recorded graph.

torchcam 0.5's ``LeGrad`` (in the test extra) only takes torchvision ViTs (``nn.MultiheadAttention``): the
same random-init ViT-Ti is copied weight by weight into torchvision's ``VisionTransformer`` and explained
there with the class-token head as its ``score_projection``.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnvis_gui.core import ATTENTION_CAMS, CAM_METHODS, CnnvisError, LAYER_CAMS, Visualizer, cam


def _minmax(m):
    lo = m.amin(dim=(1, 2), keepdim=True)
    return (m - lo) / (m.amax(dim=(1, 2), keepdim=True) - lo)


def _reference(model, x, cls, prefix):
    """The paper's LeGrad, written out on materialized attention maps."""
    ref = copy.deepcopy(model)
    attn, tokens, hooks = {}, {}, []
    for i, blk in enumerate(ref.blocks):
        blk.attn.fused_attn = False
        hooks.append(blk.attn.attn_drop.register_forward_hook(lambda m, a, o, i=i: attn.__setitem__(i, o)))
        hooks.append(blk.register_forward_hook(lambda m, a, o, i=i: tokens.__setitem__(i, o)))
    ref(x.clone().requires_grad_(True))
    for h in hooks:
        h.remove()
    L = len(ref.blocks)
    E = 0
    for i in range(L):
        s = ref.forward_head(ref.norm(tokens[i]))[:, cls].sum()          # s^l: the head on block l's tokens
        (dA,) = torch.autograd.grad(s, attn[i], retain_graph=True)        # N x heads x T x T
        E = E + dA.clamp(min=0).mean(dim=(1, 2))                           # relu, mean over heads and queries
    E = (E / L)[:, prefix:].reshape(-1, 1, 14, 14)
    up = F.interpolate(E, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return _minmax(up)


@pytest.mark.parametrize("net,prefix", [("vit", 1), ("deit", 2)])
def test_legrad_equals_the_papers_formula(timm_map, net, prefix):
    model, vis = timm_map(net)
    x = torch.randn(2, 3, 224, 224)
    with vis.forward(x) as frame:
        ours = frame.cam("", 281, method="legrad")
        assert frame.recorded_layers is None
    ref = _reference(model, x, 281, prefix)
    assert ours.shape == (2, 224, 224) and float(ours.min()) == 0.0 and float(ours.max()) == 1.0
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=2e-5)
    assert float((ours[0] - ours[1]).abs().max()) > 0.05        # each sample its own map
    assert ATTENTION_CAMS == ("rollout", "legrad") and CAM_METHODS == LAYER_CAMS + ATTENTION_CAMS


def test_legrad_of_the_head_is_legrad_of_the_output_and_the_class_matters(timm_map):
    model, vis = timm_map("vit")
    x = torch.randn(1, 3, 224, 224)
    with vis.forward(x) as frame:
        out = frame.cam("", 7, method="legrad")
        torch.testing.assert_close(frame.cam("head", 7, method="legrad"), out, rtol=0, atol=0)
        other = frame.cam("", 8, method="legrad")
    assert float((out - other).abs().max()) > 0.05
    torch.testing.assert_close(cam(model, x, "", 7, method="legrad"), out[0], rtol=1e-5, atol=1e-6)


def _torchvision_copy(model):
    """timm's ViT-Ti/16 as torchvision's VisionTransformer, weight by weight (the same function)."""
    from torchvision.models.vision_transformer import VisionTransformer
    tv = VisionTransformer(image_size=224, patch_size=16, num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768)
    sd = {"conv_proj.weight": model.patch_embed.proj.weight, "conv_proj.bias": model.patch_embed.proj.bias,
          "class_token": model.cls_token, "encoder.pos_embedding": model.pos_embed,
          "encoder.ln.weight": model.norm.weight, "encoder.ln.bias": model.norm.bias,
          "heads.head.weight": model.head.weight, "heads.head.bias": model.head.bias}
    for i, blk in enumerate(model.blocks):
        p = f"encoder.layers.encoder_layer_{i}."
        for ours, theirs in (("norm1", "ln_1"), ("norm2", "ln_2"), ("attn.qkv", "self_attention.in_proj_"),
                             ("attn.proj", "self_attention.out_proj"), ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.3")):
            mod = blk.get_submodule(ours)
            sep = "" if theirs.endswith("_") else "."
            sd[p + theirs + sep + "weight"] = mod.weight
            sd[p + theirs + sep + "bias"] = mod.bias
    tv.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=True)
    return tv.eval()


def test_legrad_equals_torchcam(timm_map):
    methods = pytest.importorskip("torchcam.methods")
    model, vis = timm_map("vit")
    tv = _torchvision_copy(model)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(tv(x), model(x), rtol=1e-4, atol=1e-5)
    with vis.forward(x) as frame:
        ours = frame.cam("", 281, method="legrad")

    def class_token_head(tokens):          # timm's readout: norm, then the class token, then the head
        return tv.heads(tv.encoder.ln(tokens[:, 0]))

    with methods.LeGrad(tv, list(tv.encoder.layers), score_projection=class_token_head) as extractor:
        tv(x.clone().requires_grad_(True))
        theirs = extractor(281)[0]                    # N x 14 x 14, min-max scaled on the grid
    # bilinear weights sum to 1, so min-max after upsampling is the same for any positive affine rescaling
    theirs = _minmax(F.interpolate(theirs[:, None], size=(224, 224), mode="bilinear", align_corners=False)[:, 0])
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-4)


def test_legrad_needs_a_class_and_attention(timm_map):
    _, vis = timm_map("vit")
    with vis.forward(torch.randn(1, 3, 224, 224)) as frame:
        with pytest.raises(CnnvisError, match="LeGrad maps the model's output classes only .* not units of 'blocks.5'"):
            frame.cam("blocks.5", 3, method="legrad")
        with pytest.raises(CnnvisError, match="unit 1000 is out of range"):
            frame.cam("", 1000, method="legrad")
        with pytest.raises(CnnvisError, match="not a CAM layer"):
            frame.cam("", 3, cam_layer="blocks.5", method="legrad")
        # the reasons, asked before anything runs (the window greys a pane with them; export checks first)
        assert frame.cam_unavailable("", "legrad") is None and frame.cam_unavailable("head", "legrad") is None
        assert "not units of 'blocks.5'" in frame.cam_unavailable("blocks.5", "legrad")
        assert frame.cam_unavailable("blocks.5", "rollout") is None
        assert "no attention layer runs before 'blocks.0.norm1'" in frame.cam_unavailable("blocks.0.norm1", "rollout")
        assert frame.cam_unavailable("blocks.0.norm1", "gradcam") is None
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    with Visualizer(net).forward(torch.randn(1, 3, 8, 8)) as frame:
        with pytest.raises(CnnvisError, match="LeGrad needs attention layers .* this model has none"):
            frame.cam("", 0, method="legrad")
        for method in ("rollout", "legrad"):
            assert frame.cam_unavailable("3", method).endswith("needs attention layers that expose their queries "
                                                               "and keys (timm's Attention with q_norm / k_norm: "
                                                               "ViT, DeiT); this model has none.")
