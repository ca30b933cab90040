"""Top-k scan on what the square tests cannot see: non-square maps and exact ties across batches.

A user scanning a 48 x 32 model must get the position (y, x) in the map where the unit
really fired (a crop drawn at a transposed or wrapped position shows the wrong patch); and
the atlas must not depend on the batch size, the docstring's promise ("ties go to the image
listed first").  Every expectation here comes from a brute-force pass written out in the
test, never from the scan itself.
"""
import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_gui.atlas import TopKScan
from cnnvis_gui.atlas.folders import list_images
from cnnvis_gui.core import InputSpec
from cnnvis_gui.sources import load_image

from .helpers import make_images, run_scan, tiny_model


def all_activations(model, spec, folder, layers):
    """{layer: N x ... activations} of every image of ``folder`` (listing order), one forward."""
    files, _ = list_images(folder)
    x = torch.from_numpy(np.stack([spec.to_array(load_image(folder / rel)) for rel, _, _ in files]))
    acts = {}
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(lambda m, a, o, n=n: acts.__setitem__(n, o.detach().clone()))
             for n in layers if n]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    if "" in layers:
        acts[""] = out
    return acts, [f[0] for f in files]


def expected_hits(a: torch.Tensor, unit: int, k: int):
    """Brute force for one unit: [(image, y, x, value)] best first, ties to the lower image index,
    the position being the first maximum in row-major order (y, then x)."""
    n = a.shape[0]
    maps = a[:, unit].reshape(n, -1) if a.ndim > 2 else a[:, unit].reshape(n, 1)
    out = []
    for i in range(n):
        flat = maps[i].numpy()
        j = int(np.argmax(flat))                       # numpy: the first maximum
        y, x = (divmod(j, a.shape[3]) if a.ndim == 4 else (0, j))
        out.append((i, y, x, float(flat[j])))
    out.sort(key=lambda t: -t[3])                      # Python's sort is stable: ties keep image order
    return out[:k]


@pytest.mark.parametrize("hw", [(48, 32), (24, 40)])
def test_non_square_positions_equal_brute_force(tmp_path, hw):
    """A 48 x 32 (and a wide 24 x 40) input: every hit's (y, x) is where the unit peaks in that image."""
    h, w = hw
    spec = InputSpec(channels=3, height=h, width=w, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    folder = tmp_path / "imgs"
    make_images(folder, n=12, size=(h + 6, w + 4), bad=False)
    model = tiny_model()
    layers = ["features.1", "features.4", "features.7"]
    res = run_scan(TopKScan(model, spec, folder, layers, k=4, batch_size=5, use_cache=False))
    acts, paths = all_activations(model, spec, folder, layers)
    assert res.paths == paths
    for layer in layers:
        a = acts[layer]
        assert a.shape[2] != a.shape[3]                 # the maps really are non-square
        assert res.layer(layer).shape == tuple(a.shape[1:])
        for unit in range(a.shape[1]):
            want = expected_hits(a, unit, 4)
            got = [(hit.image, hit.y, hit.x) for hit in res.hits(layer, unit)]
            for (i, y, x, v), hit in zip(want, res.hits(layer, unit)):
                # the value the user is shown sits at the position the user is shown
                assert float(a[hit.image, unit, hit.y, hit.x]) == pytest.approx(hit.value, abs=1e-5)
                assert hit.value == pytest.approx(v, rel=1e-5, abs=1e-5)
            # exact images and positions wherever the maximum is unique
            for (i, y, x, v), g in zip(want, got):
                m = a[i, unit]
                if int((m == m.max()).sum()) == 1 and sum(1 for t in want if t[3] == v) == 1:
                    assert g == (i, y, x), (layer, unit)


class Saturated(nn.Module):
    """Clamped conv (``act``) and clamped linear (``out``) layers: many images reach exactly the same maximum."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.Hardtanh(0.0, 0.25)
        self.fc = nn.Linear(6, 3)
        self.out = nn.Hardtanh(-0.2, 0.2)

    def forward(self, x):
        a = self.act(self.conv(x))
        return self.out(self.fc(a.amax(dim=(2, 3))))


def _tie_folder(tmp_path):
    folder = tmp_path / "ties"
    make_images(folder, n=30, size=(20, 20), bad=False)
    return folder


@pytest.mark.parametrize("layer", ["act", "out"])
def test_ties_go_to_the_image_listed_first_whatever_the_batch_size(tmp_path, layer):
    spec = InputSpec(channels=3, height=16, width=16)
    folder = _tie_folder(tmp_path)
    model = Saturated().eval()
    acts, paths = all_activations(model, spec, folder, [layer])
    a = acts[layer]
    per_image = a.reshape(a.shape[0], a.shape[1], -1).amax(2)
    ties = [(per_image[:, u] == per_image[:, u].max()).sum() for u in range(a.shape[1])]
    assert max(ties) >= 5                            # the point of the model: many exact ties
    k = 9
    results = [run_scan(TopKScan(model, spec, folder, [layer], k=k, batch_size=bs, use_cache=False))
               for bs in (30, 8, 13)]
    for unit in range(a.shape[1]):
        want = [i for i, _, _, _ in expected_hits(a, unit, k)]
        for res in results:
            assert [h.image for h in res.hits(layer, unit)] == want, (unit, res.layer(layer).images[unit])
    for res in results[1:]:
        for attr in ("values", "images", "ys", "xs"):
            np.testing.assert_array_equal(getattr(res.layer(layer), attr), getattr(results[0].layer(layer), attr))


def test_resume_with_another_batch_size_equals_uninterrupted(tmp_path):
    """Stopped at batch size 7, resumed at 11 (e.g. after an OOM back-off or a setting change)."""
    spec = InputSpec(channels=3, height=16, width=16)
    folder = _tie_folder(tmp_path)
    model = Saturated().eval()
    ref = run_scan(TopKScan(model, spec, folder, ["act"], k=5, batch_size=30, use_cache=False))
    s = TopKScan(model, spec, folder, ["act"], k=5, batch_size=7, cache_dir=tmp_path / "c")
    for p in s.run():
        if p.done >= 14:
            s.cancel()
    assert s.result is None
    s2 = TopKScan(model, spec, folder, ["act"], k=5, batch_size=11, cache_dir=tmp_path / "c")
    steps = [p.done for p in s2.run()]
    assert steps[0] == 25                            # resumed after the 14 done
    for attr in ("values", "images", "ys", "xs"):
        np.testing.assert_array_equal(getattr(s2.result.layer("act"), attr), getattr(ref.layer("act"), attr))


def test_hits_name_their_file_and_check_the_unit(tmp_path):
    from cnnvis_gui.core import CnnvisError
    spec = InputSpec(channels=3, height=16, width=16)
    folder = _tie_folder(tmp_path)
    res = run_scan(TopKScan(Saturated().eval(), spec, folder, ["act"], k=3, use_cache=False))
    for u in range(6):
        for h in res.hits("act", u):
            assert h.path == folder / res.paths[h.image] and h.path.is_file()
    for bad in (6, -1, 100):
        with pytest.raises(CnnvisError, match=r"unit %d is out of range for layer 'act': it has 6 units \(0\.\.5\)"
                           % bad):
            res.hits("act", bad)
