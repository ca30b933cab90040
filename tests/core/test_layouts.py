"""Feature-map layouts (issue 25): channels-last and token maps found, shown and used.

The four modern networks of the issue (timm, random init) list the right units and grids at every
block; a unit's gradient equals autograd of that feature summed over its H x W positions with the
prefix tokens left out, written out here from a plain forward hook.
"""
import pytest
import torch
import torch.nn as nn
import torchvision

from cnnvis_gui.core import CnnvisError, InputSpec, Visualizer, model_map
from cnnvis_gui.core.layouts import Layout, fit_layout, parse_layout


def _close(a, b):
    scale = max(float(b.abs().max()), 1e-12)
    err = float((a - b).abs().max())
    assert err <= 1e-5 * scale + 1e-7, f"max abs diff {err:.3g} vs scale {scale:.3g}"


def _hooked_output(model, layer, x):
    """The layer's output (graph-connected to ``x``) from a plain forward hook: the reference."""
    store = {}
    h = dict(model.named_modules())[layer].register_forward_hook(lambda m, a, o: store.__setitem__("o", o))
    try:
        model(x)
    finally:
        h.remove()
    return store["o"]


def _reference_grad(model, layer, x, select):
    return _reference_grads(model, layer, x, [select])[0]


def _reference_grads(model, layer, x, selects):
    """autograd of each ``select(output)`` w.r.t. ``x``: one plain forward, one backward each."""
    xr = x.clone().requires_grad_(True)
    o = _hooked_output(model, layer, xr)
    return [torch.autograd.grad(sel(o), xr, retain_graph=True)[0] for sel in selects]


# ----------------------------------------------------------------------- units and grids at every block
STAGES = {"convnext": [(96, 56), (192, 28), (384, 14), (768, 7)], "swin": [(96, 56), (192, 28), (384, 14), (768, 7)]}


def test_convnext_units_and_grids_at_every_block(timm_map):
    model, vis = timm_map("convnext")
    mm = vis.model_map()
    for i, (c, hw) in enumerate(STAGES["convnext"]):
        for j, _ in enumerate(model.stages[i].blocks):
            block = f"stages.{i}.blocks.{j}"
            assert (mm[block].layout_name, mm[block].units, mm[block].map_shape) == ("nchw", c, (hw, hw))
            for inner, units in (("norm", c), ("mlp.fc1", 4 * c), ("mlp.act", 4 * c), ("mlp", c)):
                info = mm[f"{block}.{inner}"]
                assert (info.layout_name, info.units, info.map_shape) == ("nhwc", units, (hw, hw)), info
    # the example: N x 14 x 14 x 1536 is 1536 units on a 14 x 14 grid, not 14 units
    fc1 = mm["stages.2.blocks.0.mlp.fc1"]
    assert fc1.shape == (14, 14, 1536) and fc1.units == 1536 and fc1.visualizable
    assert mm["stages.1.downsample.0"].layout_name == "nchw"          # timm's LayerNorm2d: channels first
    assert mm.default_layer == "norm_pre" and mm.default_cam_layer("") == "norm_pre"


def test_swin_units_and_grids_at_every_block(timm_map):
    model, vis = timm_map("swin")
    mm = vis.model_map()
    for i, (c, hw) in enumerate(STAGES["swin"]):
        for j, _ in enumerate(model.layers[i].blocks):
            block = f"layers.{i}.blocks.{j}"
            assert (mm[block].layout_name, mm[block].units, mm[block].map_shape) == ("nhwc", c, (hw, hw))
            for inner in ("norm1", "drop_path1"):
                assert (mm[f"{block}.{inner}"].layout_name, mm[f"{block}.{inner}"].units) == ("nhwc", c)
            for inner, units in (("norm2", c), ("mlp.fc1", 4 * c), ("mlp", c)):
                info = mm[f"{block}.{inner}"]
                assert (info.layout_name, info.units, info.map_shape) == (f"tokens:0+{hw}x{hw}", units, (hw, hw))
            attn = mm[f"{block}.attn"]
            if hw > 7:      # window attention: samples x windows on the first axis -- shown, not spatial
                assert attn.layout_name == "other" and not attn.visualizable and attn.units is None
                assert "not the batch" in attn.reason and "window" in attn.reason
            else:           # one 7 x 7 window covers the whole map: its tokens are the grid
                assert attn.layout_name == "tokens:0+7x7"
    assert mm["layers.2.blocks.1"].shape == (14, 14, 384) and mm["layers.2.blocks.1"].units == 384
    assert mm["patch_embed.proj"].layout_name == "nchw" and mm["norm"].layout_name == "nhwc"
    assert mm.default_cam_layer("") == "norm"


@pytest.mark.parametrize("net,prefix", [("vit", 1), ("deit", 2)])
def test_token_networks_units_and_grids_at_every_block(timm_map, net, prefix):
    model, vis = timm_map(net)
    mm = vis.model_map()
    for j, _ in enumerate(model.blocks):
        for inner, units in (("", 192), (".norm1", 192), (".attn", 192), (".mlp.fc1", 768), (".mlp.act", 768)):
            info = mm[f"blocks.{j}{inner}"]
            assert (info.layout_name, info.units, info.map_shape) == (f"tokens:{prefix}+14x14", units, (14, 14))
            assert info.layout.prefix == prefix
        q = mm[f"blocks.{j}.attn.q_norm"]      # N x heads x tokens x dims: shown, not spatial
        assert not q.visualizable and "heads" in q.reason
    assert mm["patch_embed"].layout_name == "tokens:0+14x14" and mm["patch_embed.proj"].layout_name == "nchw"
    assert mm["head"].layout_name == "flat" and mm["head"].units == 1000
    # the class token is all the head reads after the last attention: the CAM layer is before it
    assert mm.default_cam_layer("") == "blocks.11.norm1"


def test_model_map_describes_the_layout_column(timm_map):
    _, vis = timm_map("vit")
    rows = vis.model_map().describe().splitlines()
    assert rows[0].split()[:6] == ["name", "type", "output", "layout", "units", "calls"]
    row = next(r for r in rows if r.startswith("blocks.5 "))
    assert row.split()[2:5] == ["197x192", "tokens:1+14x14", "192"]
    q = next(r for r in rows if r.startswith("blocks.5.attn.q_norm "))
    assert "[not spatial: per-head token features: 3 heads x 197 tokens x 64]" in q


# ----------------------------------------------------------------------- the unit's gradient
@pytest.mark.parametrize("net,layer,unit,prefix", [
    ("vit", "blocks.5", 100, 1), ("deit", "blocks.3", 7, 2), ("swin", "layers.2.blocks.1.norm2", 5, 0),
    ("convnext", "stages.2.blocks.0.mlp.fc1", 1000, None)])
def test_unit_gradient_is_autograd_of_the_feature_summed_over_its_grid(timm_map, net, layer, unit, prefix):
    model, vis = timm_map(net)
    x = torch.randn(1, 3, 224, 224)
    with vis.forward(x, layers=[layer]) as frame:
        ours = frame.saliency(layer, unit, "gradient")
    if prefix is None:
        ref = _reference_grad(model, layer, x, lambda o: o[..., unit].sum())        # channels last
    else:
        ref = _reference_grad(model, layer, x, lambda o: o[:, prefix:, unit].sum())  # prefix tokens excluded
    assert float(ref.abs().max()) > 0
    _close(ours, ref)


def test_each_sample_gets_its_own_objective_on_a_token_layer(timm_map):
    model, vis = timm_map("vit")
    x = torch.randn(2, 3, 224, 224)
    with vis.forward(x, layers=["blocks.2.mlp.fc1"]) as frame:
        ours = frame.saliency("blocks.2.mlp.fc1", 700, "gradient")
    ref = _reference_grad(model, "blocks.2.mlp.fc1", x, lambda o: o[:, 1:, 700].sum())
    _close(ours, ref)
    _close(ours[1:], _reference_grad(model, "blocks.2.mlp.fc1", x[1:], lambda o: o[:, 1:, 700].sum()))


def test_token_objectives_position_prefix_max_activation(timm_map):
    model, vis = timm_map("deit")
    x = torch.randn(1, 3, 224, 224)
    layer, k = "blocks.4", 33
    refs = _reference_grads(model, layer, x, [
        lambda o: o[:, 2 + 3 * 14 + 5, k].sum(), lambda o: o[:, 0, k].sum(), lambda o: o[:, 1, k].sum(),
        lambda o: o[:, 2:, k].amax(dim=1).sum(), lambda o: 0.5 * (o[:, 2:, k] ** 2).sum()])
    with vis.forward(x) as frame:
        # a (y, x) position is on the 14 x 14 grid, after the 2 prefix tokens
        _close(frame.saliency(layer, k, "gradient", objective=(3, 5)), refs[0])
        # the prefix tokens are their own positions: the class token (0) and the distillation token (1)
        _close(frame.saliency(layer, k, "gradient", objective=("prefix", 0)), refs[1])
        _close(frame.saliency(layer, k, "gradient", objective=("prefix", 1)), refs[2])
        _close(frame.saliency(layer, k, "gradient", objective="prefix:1"), refs[2])
        _close(frame.saliency(layer, k, "gradient", objective="max"), refs[3])
        _close(frame.saliency(layer, k, "gradient", objective="activation"), refs[4])
        # the unit's map and its prefix tokens, read through the layout
        a = frame.activations(layer)
        assert a.shape == (1, 198, 192)
        maps = frame.unit_maps(layer)
        assert maps.shape == (1, 192, 14, 14) and torch.equal(maps[0, k, 3, 5], a[0, 2 + 3 * 14 + 5, k])
        assert torch.equal(frame.prefix_tokens(layer)[0, k], a[0, :2, k])
        assert frame.top_units(layer, 3) == torch.topk(a[0, 2:].amax(dim=0), 3).indices.tolist()
        with pytest.raises(CnnvisError, match=r"prefix token 2 is not in layer 'blocks.4': its prefix tokens are 0..1"):
            frame.saliency(layer, k, "gradient", objective=("prefix", 2))
        with pytest.raises(CnnvisError, match=r"position \(14, 0\) is outside layer 'blocks.4''s \(14, 14\) map"):
            frame.saliency(layer, k, "gradient", objective=(14, 0))
        with pytest.raises(CnnvisError, match=r"it has 192 units \(0..191\)"):
            frame.saliency(layer, 197, "gradient")
        with pytest.raises(CnnvisError, match=r"has no units to choose: its output is not spatial \(per-head"):
            frame.saliency("blocks.4.attn.q_norm", 0, "gradient")


def test_overwritten_token_output_seeds_through_the_layout():
    """An output a later in-place op overwrote gets the objective's gradient written through its layout."""

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 4, stride=4)
            self.cls = nn.Parameter(torch.randn(1, 1, 8))
            self.norm = nn.LayerNorm(8)
            self.fc = nn.Linear(8, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)
            y = self.fc(self.norm(t))
            y += t                                          # fc's output overwritten in place
            return self.head(y[:, 0])

    torch.manual_seed(0)
    model = Tokens().eval()
    vis = Visualizer(model, InputSpec(3, 16, 16))
    assert vis.model_map()["fc"].layout_name == "tokens:1+4x4"
    x = torch.randn(1, 3, 16, 16)
    with vis.forward(x) as frame:
        for obj, sel in [("sum", lambda o: o[:, 1:, 2].sum()), ((1, 2), lambda o: o[:, 1 + 1 * 4 + 2, 2].sum()),
                         ("max", lambda o: o[:, 1:, 2].amax(1).sum()), (("prefix", 0), lambda o: o[:, 0, 2].sum())]:
            xr = x.clone().requires_grad_(True)
            store = {}
            h = model.fc.register_forward_hook(lambda m, a, o: store.__setitem__("o", o.clone()))
            model(xr)
            h.remove()
            (ref,) = torch.autograd.grad(sel(store["o"]), xr)
            _close(frame.saliency("fc", 2, "gradient", objective=obj), ref)


# ----------------------------------------------------------------------- overrides
def test_layout_overrides_are_checked_against_the_shape(timm_net):
    vit = timm_net("vit")
    vis = Visualizer(vit, InputSpec(3, 224, 224), layouts={"blocks.5": "tokens:1+14x14", "blocks.6": "nchw"})
    mm = vis.model_map()
    assert mm["blocks.5"].layout.source == "set by the user" and mm["blocks.5"].units == 192
    assert mm["blocks.6"].layout_name == "nchw" and mm["blocks.6"].units == 197   # the user's reading: 197 units
    with pytest.raises(CnnvisError) as ei:
        Visualizer(vit, InputSpec(3, 224, 224), layouts={"blocks.5": "tokens:2+14x14"}).model_map()
    assert str(ei.value) == ("layout 'tokens:2+14x14' does not fit layer 'blocks.5': its output is N x 197 x 192, "
                             "the layout needs N x (2 + 196) x C (2 + 14*14 = 198 tokens, the output has 197).")
    with pytest.raises(CnnvisError, match=r"layout 'nhwc' does not fit layer 'blocks.5': its output is N x 197 x 192, "
                                          r"the layout needs N x H x W x C"):
        Visualizer(vit, InputSpec(3, 224, 224), layouts={"blocks.5": "nhwc"}).model_map()
    with pytest.raises(CnnvisError, match=r"unknown layer 'block.5'. Did you mean: 'blocks.5'"):
        Visualizer(vit, layouts={"block.5": "nchw"})
    with pytest.raises(CnnvisError, match=r"unknown layout 'tokens:1\+14'; a layout is nchw \(channels first\)"):
        Visualizer(vit, layouts={"blocks.5": "tokens:1+14"})
    # a frame without a map reads the override from the layer's own output, no probe needed
    with Visualizer(vit, layouts={"blocks.5": "tokens:1+14x14"}).forward(torch.randn(1, 3, 224, 224),
                                                                         layers=["blocks.5"]) as frame:
        assert frame.layout("blocks.5").name == "tokens:1+14x14"
    # window attention's first axis mixes samples and windows: no layout gives it units
    swin = timm_net("swin")
    with pytest.raises(CnnvisError, match=r"its output's first axis is not the batch"):
        Visualizer(swin, InputSpec(3, 224, 224), layouts={"layers.0.blocks.0.attn": "tokens:0+7x7"}).model_map()


def test_parse_and_fit_layout():
    assert parse_layout("tokens:1+14x14") == ("tokens", 1, (14, 14))
    assert parse_layout(" Tokens: 7X9 ") == ("tokens", 0, (7, 9))
    assert parse_layout("NHWC") == ("nhwc", 0, ())
    for bad in ("tokens", "tokens:1+0x4", "nhcw", "", "tokens:a+4x4"):
        with pytest.raises(CnnvisError):
            parse_layout(bad)
    lay = fit_layout("tokens:2+3x4", (14, 5))
    assert (lay.units, lay.map_shape, lay.unit_shape, lay.name) == (5, (3, 4), (5, 3, 4), "tokens:2+3x4")
    with pytest.raises(CnnvisError, match="the layout needs N x F"):
        fit_layout("flat", (3, 4), "x")


# ----------------------------------------------------------------------- views
def test_views_are_views_and_invert():
    t = torch.randn(2, 1 + 3 * 4, 5, requires_grad=True)
    lay = Layout("tokens", (13, 5), 1, (3, 4))
    v = lay.to_nchw(t)
    assert v.shape == (2, 5, 3, 4) and v.data_ptr() == t[:, 1:].data_ptr()          # no copy
    assert torch.equal(v[1, 2, 2, 3], t[1, 1 + 2 * 4 + 3, 2])
    assert torch.equal(lay.from_nchw(v.detach(), lay.prefix_tokens(t).detach()), t.detach())
    nhwc = Layout("nhwc", (3, 4, 5))
    a = torch.randn(2, 3, 4, 5)
    assert torch.equal(nhwc.to_nchw(a), a.permute(0, 3, 1, 2)) and torch.equal(nhwc.from_nchw(nhwc.to_nchw(a)), a)
    nchw = Layout("nchw", (5, 3, 4))
    b = torch.randn(2, 5, 3, 4)
    assert nchw.to_nchw(b) is b and nchw.prefix_tokens(b) is None
    with pytest.raises(CnnvisError, match="does not have the per-sample shape 5x3x4"):
        nchw.to_nchw(torch.randn(2, 5, 3, 3))
    assert Layout("other", (3,), reason="why").units is None


# ----------------------------------------------------------------------- detection on small networks
class _PermuteMLP(nn.Module):
    """A research-code block: conv, permute, Linear on channels-last, permute back (no LayerNorm)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 10)
        self.act = nn.GELU()
        self.back = nn.Linear(10, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        y = self.conv(x).permute(0, 2, 3, 1)
        y = self.back(self.act(self.fc(y))).permute(0, 3, 1, 2)
        return self.head(y.mean((2, 3)))


class _LinearOverHeight(nn.Module):
    """Research code mixing rows: conv, transpose(2, 3), a Linear over H, transpose back (no module permutes)."""

    def __init__(self, h):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(h, h)
        self.act = nn.ReLU()
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        y = self.act(self.fc(self.conv(x).transpose(2, 3))).transpose(2, 3)
        return self.head(y.mean((2, 3)))


class _LinearOverWidthChannelsInTheMiddle(nn.Module):
    """Research code: conv, permute(0, 2, 1, 3) (N x H x C x W), a Linear over W, permute back."""

    def __init__(self, w):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(w, w)
        self.act = nn.ReLU()
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        y = self.act(self.fc(self.conv(x).permute(0, 2, 1, 3))).permute(0, 2, 1, 3)
        return self.head(y.mean((2, 3)))


class _ChannelsFirstNorm(nn.Module):
    """ConvNeXt's official LayerNorm: data_format says where the channels are."""

    def __init__(self, c, data_format):
        super().__init__()
        self.data_format = data_format
        self.w = nn.Parameter(torch.ones(c))

    def forward(self, x):
        if self.data_format == "channels_first":
            return x * self.w[:, None, None]
        return x * self.w


class _Conv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 5, 3)
        self.act = nn.ReLU()
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.act(self.conv(x.flatten(2))).mean(2))


def test_detection_on_small_networks():
    mm = model_map(_PermuteMLP(), InputSpec(3, 8, 10))
    assert [(mm[n].layout_name, mm[n].units, mm[n].map_shape) for n in ("conv", "fc", "act", "back")] == [
        ("nchw", 6, (8, 10)), ("nhwc", 10, (8, 10)), ("nhwc", 10, (8, 10)), ("nhwc", 6, (8, 10))]
    assert mm.default_layer == "back"
    # a Linear on a transposed channels-first map mixes positions: its units stay the 6 channels (the view
    # shares the conv's memory, the channel axis is still axis 1), not the 8 rows its last axis holds
    mm = model_map(_LinearOverHeight(8), InputSpec(3, 8, 10))
    assert [(mm[n].layout_name, mm[n].units, mm[n].map_shape) for n in ("conv", "fc", "act")] == [
        ("nchw", 6, (8, 10)), ("nchw", 6, (10, 8)), ("nchw", 6, (10, 8))]
    assert "channels stay first" in mm["fc"].layout.source
    # channels moved to a middle axis (N x H x C x W) before a Linear over W: no layout reads them, so the
    # Linear's output (and the ReLU after it) is not spatial, with the reason -- not 10 columns read as units
    mm = model_map(_LinearOverWidthChannelsInTheMiddle(10), InputSpec(3, 8, 10))
    assert [(mm[n].layout_name, mm[n].layout.spatial) for n in ("conv", "fc", "act")] == [
        ("nchw", True), ("other", False), ("other", False)]
    assert "middle axis" in mm["fc"].layout.reason and "axis 2" in mm["fc"].layout.source
    net = nn.Sequential(nn.Conv2d(3, 4, 3), _ChannelsFirstNorm(4, "channels_first"))
    assert model_map(net, InputSpec(3, 6, 6))["1"].layout_name == "nchw"
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(2), _Transpose(), _ChannelsFirstNorm(4, "channels_last"))
    mm = model_map(net, InputSpec(3, 6, 6))
    assert mm["3"].layout_name == "tokens:0+6x6" and mm["3"].units == 4       # the conv's 6 x 6 map as tokens
    mm = model_map(_Conv1d(), InputSpec(3, 4, 4))                               # 1-D maps stay channels first
    assert (mm["conv"].layout_name, mm["conv"].units, mm["conv"].map_shape) == ("nchw", 5, (14,))


class _Transpose(nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


def test_cnns_are_read_as_before():
    """Every layer of a CNN: channels first (or flat) with the units it always had, and no view copies."""
    torch.manual_seed(0)
    for model in (torchvision.models.resnet18(num_classes=10), torchvision.models.mobilenet_v3_small(num_classes=10)):
        vis = Visualizer(model.eval(), InputSpec(3, 64, 64))
        mm = vis.model_map()
        for info in mm:
            if info.visualizable:
                assert info.layout_name in ("nchw", "flat") and info.units == info.shape[0], info
        with vis.forward(torch.randn(1, 3, 64, 64), layers=["layer3" if hasattr(model, "layer3") else "features.5"]) as f:
            name = next(iter(f.recorded_layers))
            assert f.unit_maps(name).data_ptr() == f.activations(name).data_ptr()
