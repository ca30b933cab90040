"""The atlas on channels-last and token layers (issue 25): units are features, hits are grid positions.

The top-k scan of a ConvNeXt-T layer (timm, random init) equals a brute-force pass that reads
every image's output in the model's own N x H x W x C layout; a ViT's token layer scans its 192
features on the 14 x 14 patch grid with the class token left out; crops use the hit's grid position.
"""
import numpy as np
import pytest
import torch

from cnnvis_gui.atlas import ActivationMaximizer, TopKScan, crop_hits
from cnnvis_gui.atlas.folders import list_images
from cnnvis_gui.atlas.optimize import layer_layout, unit_activation
from cnnvis_gui.core import CnnvisError, InputSpec
from cnnvis_gui.core.layouts import layout_key
from cnnvis_gui.sources import load_image

from .helpers import make_images, tiny_model

SPEC64 = InputSpec(3, 64, 64)          # ImageNet normalization; ConvNeXt-T maps of 16, 8, 4, 2


def _outputs(model, spec, folder, layers):
    """Every readable image's output of each layer, in the model's own layout -> {layer: N x ...}, paths."""
    files, _ = list_images(folder)
    xs, rels = [], []
    for rel, _, _ in files:
        try:
            xs.append(spec.to_array(load_image(folder / rel)))
            rels.append(rel)
        except Exception:  # noqa: BLE001 - the corrupt file
            pass
    acts = {}
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(lambda m, a, o, n=n: acts.__setitem__(n, o.detach().clone()))
             for n in layers]
    try:
        with torch.no_grad():
            model(torch.from_numpy(np.stack(xs)))
    finally:
        for h in hooks:
            h.remove()
    return acts, rels


def _run(scan):
    for _ in scan.run():
        pass
    return scan.result


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("layout-images")
    make_images(d, n=8, seed=3, size=(72, 80))
    return d


def test_convnext_atlas_equals_a_brute_force_scan(timm_net, folder, tmp_path):
    model = timm_net("convnext")
    layers = {"stages.1.blocks.0.mlp.fc1": "nhwc", "stages.2.blocks.1.norm": "nhwc", "stages.1.blocks.0": "nchw"}
    scan = TopKScan(model, SPEC64, folder, list(layers), k=3, batch_size=3, cache_dir=tmp_path)
    res = _run(scan)
    assert {n: lay.name for n, lay in scan.layouts.items()} == layers
    acts, rels = _outputs(model, SPEC64, folder, layers)
    for name, kind in layers.items():
        a = acts[name]
        maps = a.permute(0, 3, 1, 2) if kind == "nhwc" else a          # N x C x H x W, written out here
        t = res.layer(name)
        assert t.shape == tuple(maps.shape[1:]) and t.units == maps.shape[1]
        per_img, where = maps.flatten(2).max(dim=2)                      # N x C
        for unit in range(0, t.units, 37):
            hits = res.hits(name, unit)
            expect = torch.sort(per_img[:, unit], descending=True, stable=True)
            assert [rels.index(res.paths[h.image]) for h in hits] == expect.indices[:3].tolist()
            np.testing.assert_allclose([h.value for h in hits], expect.values[:3].numpy(), rtol=1e-5, atol=1e-6)
            for h in hits:
                i = rels.index(res.paths[h.image])
                assert (h.y, h.x) == divmod(int(where[i, unit]), maps.shape[3])
                # the position holds the value in the model's own layout
                v = a[i, h.y, h.x, unit] if kind == "nhwc" else a[i, unit, h.y, h.x]
                assert float(v) == pytest.approx(h.value, abs=1e-6)


def test_vit_token_layer_scan_and_crops(timm_net, folder, tmp_path):
    model = timm_net("vit")
    spec = InputSpec(3, 224, 224)
    layer = "blocks.3"
    scan = TopKScan(model, spec, folder, [layer], k=2, batch_size=4, cache_dir=tmp_path)
    res = _run(scan)
    t = res.layer(layer)
    assert t.shape == (192, 14, 14) and t.units == 192 and scan.layouts[layer].name == "tokens:1+14x14"
    acts, rels = _outputs(model, spec, folder, [layer])
    a = acts[layer]                                                     # N x 197 x 192
    unit = 100
    patches = a[:, 1:, unit]                                            # the class token is not on the map
    best = torch.sort(patches.amax(dim=1), descending=True, stable=True)
    hits = res.hits(layer, unit)
    assert [rels.index(res.paths[h.image]) for h in hits] == best.indices[:2].tolist()
    h = hits[0]
    assert float(a[rels.index(res.paths[h.image]), 1 + h.y * 14 + h.x, unit]) == pytest.approx(h.value, abs=1e-6)
    # the crop is the gradient support of that token's feature: it holds the hit's own 16 x 16 patch
    (c,) = crop_hits(model, spec, layer, unit, hits[:1], probes=0, method="gradient")
    assert c.box.contains(h.y * 16 + 8, h.x * 16 + 8)
    assert c.support[h.y * 16:(h.y + 1) * 16, h.x * 16:(h.x + 1) * 16].all()


def test_scan_refuses_a_layer_that_is_not_spatial(timm_net, folder, tmp_path):
    with pytest.raises(CnnvisError, match=r"cannot be scanned: its output is not spatial \(per-head token"):
        _run(TopKScan(timm_net("vit"), InputSpec(3, 224, 224), folder, ["blocks.0.attn.q_norm"], k=2,
                      cache_dir=tmp_path))


def test_cache_keys_keep_cnns_and_separate_layouts(timm_net):
    assert layout_key(tiny_model()) == {}                  # a CNN's atlas and optimization caches stay valid
    vit = timm_net("vit")
    assert layout_key(vit)["layouts"]["rules"] >= 1
    assert layout_key(vit, {"blocks.3": "nchw"}) != layout_key(vit)


def test_optimization_objective_reads_the_layout(timm_net):
    """The unit a maximizer pushes is the layer's feature on its grid (centre position, or the channel)."""
    model = timm_net("convnext")
    layer, unit = "stages.1.blocks.0.mlp.fc1", 300                      # N x 8 x 8 x 768 at 64 x 64
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        store = {}
        h = dict(model.named_modules())[layer].register_forward_hook(lambda m, a, o: store.__setitem__("o", o))
        model(x)
        h.remove()
    o = store["o"]
    lay = layer_layout(model, SPEC64, layer)
    assert lay.name == "nhwc"
    torch.testing.assert_close(unit_activation(model, SPEC64, layer, unit, x, "center"), o[:, 4, 4, unit])
    torch.testing.assert_close(unit_activation(model, SPEC64, layer, unit, x, (1, 6), lay), o[:, 1, 6, unit])
    torch.testing.assert_close(unit_activation(model, SPEC64, layer, unit, x, "channel", lay),
                               o[..., unit].flatten(1).mean(1))
    opt = ActivationMaximizer(model, SPEC64, layer, unit, max_iter=2, use_cache=False)
    steps = list(opt.run(every=1))
    assert opt.result.iterations == 2 and np.isfinite(steps[-1].activation)


def test_optvis_objectives_read_the_model_maps_layout(timm_net):
    """optvis: a neuron / channel of a ViT block is a feature on the 14 x 14 grid (the class token left out)."""
    from cnnvis_gui.core import Visualizer
    from cnnvis_gui.optvis.objectives import channel, neuron
    from cnnvis_gui.optvis.render import Renderer, RenderParams
    model = timm_net("vit")
    lay = Visualizer(model, InputSpec(3, 224, 224)).layout("blocks.5")
    a = torch.randn(2, 197, 192)
    torch.testing.assert_close(neuron("blocks.5", 7)({"blocks.5": a}, {"blocks.5": lay}), a[:, 1 + 7 * 14 + 7, 7])
    torch.testing.assert_close(neuron("blocks.5", 7, (2, 3))({"blocks.5": a}, {"blocks.5": lay}),
                               a[:, 1 + 2 * 14 + 3, 7])
    torch.testing.assert_close(channel("blocks.5", 9)({"blocks.5": a}, {"blocks.5": lay}), a[:, 1:, 9].mean(1))
    r = Renderer(model, InputSpec(3, 224, 224), channel("blocks.5", 9), params=RenderParams(max_iter=1))
    r._fill_layouts()
    assert r.layouts["blocks.5"].name == "tokens:1+14x14"
