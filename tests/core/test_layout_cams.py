"""CAMs at token and channels-last layers (issue 25) against the papers' formulas written out.

Grad-CAM (Selvaraju et al. 2017) at a ViT block is the formula on the patch tokens reshaped to the
14 x 14 grid -- the computation pytorch-grad-cam asks every user to write as a ``reshape_transform``:

    def reshape_transform(tensor, height=14, width=14):
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

Here it is written out once more, from a plain forward hook and autograd, with no code of ours, and
pytorch-grad-cam itself (the ``grad-cam`` wheel, in the test extra) gives the same map.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnvis_gui.core import CnnvisError, InputSpec, Visualizer


def _close(a, b, rel=1e-5):
    scale = max(float(b.abs().max()), 1e-12)
    err = float((a - b).abs().max())
    assert err <= rel * scale + 1e-7, f"max abs diff {err:.3g} vs scale {scale:.3g}"


def reshape_transform(tensor, prefix=1, height=14, width=14):
    """pytorch-grad-cam's ViT reshape (its tutorial's, with the prefix count as a parameter)."""
    result = tensor[:, prefix:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def reference_cam(model, cam_layer, x, score, reshape, method="gradcam"):
    """Grad-CAM / HiResCAM / LayerCAM from a forward hook: A and dS/dA in the model's layout, reshaped."""
    store = {}
    h = dict(model.named_modules())[cam_layer].register_forward_hook(lambda m, a, o: store.__setitem__("A", o))
    try:
        out = model(x)
    finally:
        h.remove()
    (g,) = torch.autograd.grad(score(out), store["A"])
    A, g = reshape(store["A"].detach()), reshape(g)
    if method == "gradcam":
        cam = (g.mean(dim=(2, 3), keepdim=True) * A).sum(1, keepdim=True)
    elif method == "hirescam":
        cam = (g * A).sum(1, keepdim=True)
    else:  # layercam
        cam = (g.clamp(min=0) * A).sum(1, keepdim=True)
    cam = F.interpolate(torch.relu(cam), size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, cam / peak, torch.zeros_like(cam))


@pytest.mark.parametrize("net,prefix,cam_layer", [("vit", 1, "blocks.10"), ("vit", 1, "blocks.11.norm1"),
                                                   ("deit", 2, "blocks.8.mlp.fc1")])
def test_grad_cam_of_a_class_at_a_vit_block_is_the_formula_on_the_patch_grid(timm_map, net, prefix, cam_layer):
    model, vis = timm_map(net)
    x = torch.randn(1, 3, 224, 224)
    cls = 281
    with vis.forward(x) as frame:
        ours = frame.grad_cam("", cls, cam_layer=cam_layer)
        ours_hires = frame.cam("", cls, cam_layer=cam_layer, method="hirescam")
    ref = reference_cam(model, cam_layer, x.clone(), lambda o: o[:, cls].sum(),
                        lambda t: reshape_transform(t, prefix))
    assert ours.shape == (1, 224, 224) and float(ref.max()) == pytest.approx(1.0)
    _close(ours, ref)
    _close(ours_hires, reference_cam(model, cam_layer, x.clone(), lambda o: o[:, cls].sum(),
                                     lambda t: reshape_transform(t, prefix), "hirescam"))


def test_default_vit_cam_layer_is_before_the_last_attention(timm_map):
    """With no CAM layer given, a ViT's class gets Grad-CAM at the last block's norm1 (not all zero)."""
    model, vis = timm_map("vit")
    x = torch.randn(1, 3, 224, 224)
    with vis.forward(x) as frame:
        assert frame.default_cam_layer("") == "blocks.11.norm1" == vis.model_map().default_cam_layer("")
        ours = frame.grad_cam("", 3)
        # after the last attention only the class token reaches the head: no gradient on the patches
        assert not frame.gradient_at("norm", "", 3)[:, 1:].any()
    ref = reference_cam(model, "blocks.11.norm1", x.clone(), lambda o: o[:, 3].sum(), reshape_transform)
    assert float(ours.max()) == pytest.approx(1.0)
    _close(ours, ref)


@pytest.mark.parametrize("net,cam_layer,method", [("convnext", "stages.3.blocks.2.norm", "gradcam"),
                                                  ("swin", "layers.3.blocks.1.norm2", "layercam")])
def test_cams_at_channels_last_layers(timm_map, net, cam_layer, method):
    model, vis = timm_map(net)
    x = torch.randn(1, 3, 224, 224)
    lay = vis.model_map().layout(cam_layer)
    if lay.kind == "nhwc":
        reshape = lambda t: t.permute(0, 3, 1, 2)                     # noqa: E731
    else:
        reshape = lambda t: reshape_transform(t, 0, *lay.grid)        # noqa: E731
    with vis.forward(x, layers=["", cam_layer]) as frame:
        ours = frame.cam("", 9, cam_layer=cam_layer, method=method)
    _close(ours, reference_cam(model, cam_layer, x.clone(), lambda o: o[:, 9].sum(), reshape, method))


def test_cam_at_a_layer_with_no_map_says_so(timm_map):
    _, vis = timm_map("swin")
    with vis.forward(torch.randn(1, 3, 224, 224), layers=["", "layers.0.blocks.0.attn"]) as frame:
        with pytest.raises(CnnvisError, match=r"a CAM needs a layer whose units have an H x W map .*\(layout other: "
                                              r"the first axis \(64 for 1 sample\) is not the batch"):
            frame.grad_cam("", 1, cam_layer="layers.0.blocks.0.attn")


class _TinyViT(nn.Module):
    """4 x 4 patches of an 16 x 16 input, a class token, one attention, a class-token head."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.norm = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.mlp = nn.Linear(8, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)
        n = self.norm(t)
        t = t + self.attn(n, n, n, need_weights=False)[0]
        t = t + self.mlp(t)
        return self.head(t[:, 0])


def test_score_cam_and_eigen_cam_on_tokens():
    """Score-CAM's masks come from the patch grid; the unit's score reads the layout too."""
    torch.manual_seed(0)
    model = _TinyViT().eval()
    vis = Visualizer(model, InputSpec(3, 16, 16))
    mm = vis.model_map()
    assert mm["norm"].layout_name == "tokens:1+4x4" and mm["mlp"].layout_name == "tokens:1+4x4"
    x = torch.randn(2, 3, 16, 16)
    with vis.forward(x) as frame:
        score = frame.cam("mlp", 3, cam_layer="norm", method="scorecam")
        eigen = frame.cam("", 0, cam_layer="norm", method="eigencam")
    A = reshape_transform(model.norm(torch.cat([model.cls.expand(2, -1, -1),
                                                model.patch(x).flatten(2).transpose(1, 2)], 1)).detach(), 1, 4, 4)
    up = F.interpolate(A, size=(16, 16), mode="bilinear", align_corners=False)
    lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
    masks = (up - lo) / (hi - lo)
    scores = torch.empty(2, 8)
    for k in range(8):
        store = {}
        h = model.mlp.register_forward_hook(lambda m, a, o: store.__setitem__("o", o))
        with torch.no_grad():
            model(x * masks[:, k:k + 1])
        h.remove()
        scores[:, k] = store["o"][:, 1:, 3].sum(1)                     # the unit's sum over its patch tokens
    w = torch.softmax(scores, dim=1)
    cam = torch.relu((w[:, :, None, None] * A).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    _close(score, cam / cam.amax(dim=(1, 2), keepdim=True), rel=1e-4)
    assert eigen.shape == (2, 16, 16) and float(eigen.max()) == pytest.approx(1.0)


def test_grad_cam_at_a_vit_block_equals_pytorch_grad_cam(timm_net):
    """pytorch-grad-cam 1.5.7 (its ViT tutorial: target layer blocks[-1].norm1, the reshape_transform
    above) gives the same map.  It min-max scales where we divide by the maximum: compared min-max scaled."""
    gradcam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    import copy
    model = copy.deepcopy(timm_net("vit"))          # pytorch-grad-cam's backward leaves .grad on the weights
    x = torch.randn(2, 3, 224, 224)
    classes = [281, 7]
    with gradcam.GradCAM(model=model, target_layers=[model.blocks[-1].norm1],
                         reshape_transform=reshape_transform) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(c) for c in classes]))
    vis = Visualizer(model, InputSpec(3, 224, 224))
    for i, c in enumerate(classes):
        with vis.forward(x[i:i + 1]) as frame:
            ours = frame.grad_cam("", c)[0]                 # the default CAM layer: blocks.11.norm1
        ours = (ours - ours.min()) / (ours.max() - ours.min())
        assert float(theirs[i].max()) == pytest.approx(1.0, abs=1e-5)
        _close(ours, theirs[i], rel=2e-4)
