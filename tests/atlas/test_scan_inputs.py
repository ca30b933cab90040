"""What a top-k scan reads and how it copes: the listing (order, hidden, linked, unreadable entries),
layer names, argument checks, the out-of-memory back-off and the image-by-image retry, and the
cache key (shards, folders).  References: the listing written out by hand, the model's own formula,
scans of a folder without the failing images (found by ``tools/mutation.sh atlas/scan.py``).
"""
import os
import shutil
import threading

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_gui.atlas import TopKScan, scan_folder
from cnnvis_gui.atlas.folders import list_images
from cnnvis_gui.atlas.scan import resolve_layers
from cnnvis_gui.core import CnnvisError

from .helpers import TINY_SPEC, make_images, run_scan, tiny_model
from .test_scan import OOMModel
from .test_scan_words import Fussy


def _png(path, value=128, size=(36, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(value).integers(0, 255, size + (3,), dtype=np.uint8)
    cv2.imwrite(str(path), img)


# ----------------------------------------------------------------------------- the listing
def test_listing_order_hidden_linked_and_unreadable_entries(tmp_path, monkeypatch):
    root, ext = tmp_path / "im", tmp_path / "ext"
    for name in ("img2.png", "img10.png", "img1.png", ".hidden.png", ".git/x.png", "sub/img3.png", "locked/z.png"):
        _png(root / name)
    _png(ext / "e1.png")
    _png(ext / "target.png")
    (root / "notes.txt").write_text("x")
    os.symlink(ext, root / "linked")                        # a linked folder is followed
    os.symlink(ext / "target.png", root / "link.png")       # so is a linked file
    os.symlink(root / "nowhere.png", root / "a-broken.png")  # a broken link is no file: left out, not counted
    os.symlink("b-loop.png", root / "b-loop.png")           # a link loop cannot be read: counted as other,
    os.symlink("c-loop.png", root / "c-loop.png")           # each one, and the entries after them are listed
    real = os.scandir

    def scandir(d):                                         # a fixed order (the odd entries first), and one
        if os.path.basename(d) == "locked":                 # folder the user may not read
            raise PermissionError(13, "Permission denied", str(d))
        return sorted(real(d), key=lambda e: e.name)
    monkeypatch.setattr(os, "scandir", scandir)
    files, others = list_images(root)
    assert [f[0] for f in files] == ["img1.png", "img2.png", "img10.png", "link.png", "linked/e1.png",
                                     "linked/target.png", "sub/img3.png"]
    assert others == 3                                      # notes.txt and the two loops
    assert [f[1] for f in files] == [(root / f[0]).stat().st_size for f in files]
    assert [f[2] for f in files] == [(root / f[0]).stat().st_mtime_ns for f in files]
    top, others = list_images(root, recursive=False)
    assert [f[0] for f in top] == ["img1.png", "img2.png", "img10.png", "link.png"] and others == 3


def test_linked_folders_are_listed_once_and_links_back_up_the_tree_end(tmp_path):
    """``up -> ..`` links listed every image about 40 times each (until the path was too long);
    two of them multiplied that into a listing that never finished."""
    root, ext = tmp_path / "im", tmp_path / "ext"
    for name in ("a/x.png", "b/y.png", "top.png"):
        _png(root / name)
    _png(ext / "e.png")
    for d in ("a", "b"):
        os.symlink("..", root / d / "up")                  # back to the root: twice
    os.symlink(root / "a", root / "alias")                  # a second name of a listed folder
    os.symlink(root / "a", root / "0-alias")               # ... found first by name: the real one still wins
    os.symlink(ext, root / "ext1")                         # a folder outside, linked twice:
    os.symlink(ext, root / "ext2")                         # listed once, under the first link
    os.symlink(root, ext / "back")                         # and it links back to the root
    files, others = list_images(root)
    assert [f[0] for f in files] == ["a/x.png", "b/y.png", "ext1/e.png", "top.png"] and others == 0
    assert list_images(root, recursive=False)[0] == [files[-1]]


# ----------------------------------------------------------------------------- layers and arguments
class NamedOutput(nn.Module):
    """A model with a module called ``output`` whose result is not the model's output (2 x it + 1)."""

    def __init__(self):
        super().__init__()
        self.net = tiny_model()
        self.output = nn.Linear(5, 3)

    def forward(self, x):
        return self.output(self.net(x)) * 2 + 1


def test_a_module_called_output_is_that_module(tmp_path, cache):
    model = NamedOutput()
    assert resolve_layers(model, TINY_SPEC, "output") == ["output"]
    assert resolve_layers(model, TINY_SPEC, ["output", "", "output"]) == ["output", ""]
    assert resolve_layers(tiny_model(), TINY_SPEC, ["output", "features.4", ""]) == ["", "features.4"]
    with pytest.raises(CnnvisError) as e:
        resolve_layers(model, TINY_SPEC, [])
    assert str(e.value) == "choose at least one layer to scan."
    make_images(tmp_path / "im", n=6, bad=False)
    res = run_scan(TopKScan(model, TINY_SPEC, tmp_path / "im", ["output", ""], k=3))
    np.testing.assert_allclose(res.layer("output").values * 2 + 1, res.layer("").values, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(res.layer("output").images, res.layer("").images)


def test_scan_arguments_are_checked_word_for_word(tmp_path, cache):
    make_images(tmp_path / "im", n=3, bad=False)
    cases = [({"k": 0}, "k must be at least 1, got 0."), ({"batch_size": 0}, "batch_size must be at least 1, got 0."),
             ({"shard": (2, 2)}, "shard 2/2: use I/N with N >= 1 and 0 <= I < N."),
             ({"shard": (0, 0)}, "shard 0/0: use I/N with N >= 1 and 0 <= I < N."),
             ({"shard": (-1, 2)}, "shard -1/2: use I/N with N >= 1 and 0 <= I < N.")]
    for kw, msg in cases:
        with pytest.raises(CnnvisError) as e:
            TopKScan(tiny_model(), TINY_SPEC, tmp_path / "im", ["features.4"], **kw)
        assert str(e.value) == msg
    s = TopKScan(tiny_model(), TINY_SPEC, tmp_path / "im", ["features.4"], k=1, batch_size=1, shard=(0, 1), workers=1)
    assert s.result is None
    assert [(p.done, p.batch_size) for p in s.run()] == [(1, 1), (2, 1), (3, 1)]
    assert s.result.ranges == [(0, 3)] and all(len(s.result.hits("features.4", u)) == 1 for u in range(12))
    cancel = threading.Event()
    cancel.set()
    assert scan_folder(tiny_model(), TINY_SPEC, tmp_path / "im", ["features.4"], batch_size=1, use_cache=False,
                       cancel=cancel) is None


# ----------------------------------------------------------------------------- out of memory, failing images
def _same_hits(res, ref, layers):
    """The same (path, y, x) per unit and rank, and the same values (to float rounding)."""
    for name in layers:
        a, b = res.layer(name), ref.layer(name)
        for u in range(a.units):
            pa = [(res.paths[i], y, x) for i, y, x in zip(a.images[u], a.ys[u], a.xs[u]) if i >= 0]
            pb = [(ref.paths[i], y, x) for i, y, x in zip(b.images[u], b.ys[u], b.xs[u]) if i >= 0]
            assert pa == pb, (name, u)
        np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)


LAYERS = ["inner.features.4", "inner.features.7", "output"]


@pytest.mark.parametrize("n, limit, batch, final", [(40, 5, 32, 4), (6, 1, 4, 1)])
def test_out_of_memory_halves_the_batch_and_keeps_every_hit(tmp_path, cache, n, limit, batch, final):
    image_folder = tmp_path / "im"
    make_images(image_folder, n=n, bad=False)                # e.g. batches of 32 and 8: 32 -> 16 -> 8 -> 4
    model = OOMModel(tiny_model(), limit=limit)
    s = TopKScan(model, TINY_SPEC, image_folder, LAYERS, k=3, batch_size=batch)
    sizes = [p.batch_size for p in s.run()]
    assert s.batch_size == final and sizes[-1] == final and set(model.sizes) == {final}   # halves, not 1 by 1
    ref = run_scan(TopKScan(OOMModel(tiny_model(), limit=10 ** 6), TINY_SPEC, image_folder, LAYERS, k=3,
                            batch_size=final, use_cache=False))
    _same_hits(s.result, ref, ["inner.features.4", "inner.features.7", ""])


@pytest.mark.parametrize("batch", [1, 2, 16])
def test_images_the_model_raises_on_leave_the_other_hits_exact(tmp_path, cache, batch):
    folder, clean = tmp_path / "im", tmp_path / "clean"
    make_images(folder, n=5, bad=False)                     # in batches of 2, one holds b/img004 and black
    shutil.copytree(folder, clean)
    for name, bgr in (("black", (5, 5, 5)), ("green", (5, 250, 5)), ("white", (250, 250, 250))):
        cv2.imwrite(str(folder / f"{name}.png"), np.full((40, 36, 3), bgr, np.uint8))
    layers = ["net.features.4", "net.features.7", "output"]
    res = run_scan(TopKScan(Fussy(), TINY_SPEC, folder, layers, k=3, batch_size=batch))
    assert dict(res.model_failures) == {"white.png": "the model's forward raised ValueError: too bright",
                                        "black.png": "the model's forward raised ValueError",
                                        "green.png": "the model's forward raised RuntimeError: no green, please"}
    ref = run_scan(TopKScan(Fussy(), TINY_SPEC, clean, layers, k=3, batch_size=batch, use_cache=False))
    _same_hits(res, ref, ["net.features.4", "net.features.7", ""])


# ----------------------------------------------------------------------------- the cache key
def test_each_shard_and_each_folder_has_its_own_cache(tmp_path):
    make_images(tmp_path / "im", n=14, bad=False)
    c = tmp_path / "c"
    parts = [TopKScan(tiny_model(), TINY_SPEC, tmp_path / "im", ["features.4"], k=2, batch_size=4, cache_dir=c,
                      shard=(i, 2)) for i in range(2)]
    assert [[(p.done, p.total, p.from_cache) for p in s.run()] for s in parts] == \
        [[(4, 8, False), (8, 8, False)], [(4, 6, False), (6, 6, False)]]
    assert [s.result.ranges for s in parts] == [[(0, 8)], [(8, 14)]] and [s.notices for s in parts] == [[], []]
    assert set(parts[1].result.layer("features.4").images.ravel()) <= set(range(8, 14))
    # the same file names, sizes and times in another folder, other pixels: another atlas
    a, b = tmp_path / "a", tmp_path / "b"
    for d, v in ((a, 10), (b, 200)):
        for i in range(3):
            _png(d / f"{i}.bmp", value=v + i)
            os.utime(d / f"{i}.bmp", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    assert list_images(a)[0] == list_images(b)[0]
    ra = run_scan(TopKScan(tiny_model(), TINY_SPEC, a, ["features.4"], k=2, cache_dir=c))
    rb = run_scan(TopKScan(tiny_model(), TINY_SPEC, b, ["features.4"], k=2, cache_dir=c))
    assert not rb.from_cache and not np.array_equal(ra.layer("features.4").values, rb.layer("features.4").values)
    assert run_scan(TopKScan(tiny_model(), TINY_SPEC, a, ["features.4"], k=2, cache_dir=c)).from_cache


def test_a_shard_where_nothing_decodes_is_an_empty_part(tmp_path):
    make_images(tmp_path / "im", n=4, bad=False)
    for i in range(4):
        (tmp_path / "im" / f"z{i}.png").write_bytes(b"not an image")
    part = run_scan(TopKScan(tiny_model(), TINY_SPEC, tmp_path / "im", ["features.4"], k=2, batch_size=4,
                             use_cache=False, shard=(1, 2)))
    assert part.layers == {} and [p for p, _ in part.skipped] == [f"z{i}.png" for i in range(4)]
    assert part.ranges == [(4, 8)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_scan_resumed_equals_the_cpu_scan(tmp_path):
    """On CUDA the batch, the top-k state and a resumed partial all live on the model's device."""
    make_images(tmp_path / "im", n=12)
    layers = ["features.4", "output"]
    ref = run_scan(TopKScan(tiny_model(), TINY_SPEC, tmp_path / "im", layers, k=3, batch_size=4, use_cache=False))

    def scan():
        return TopKScan(tiny_model().cuda(), TINY_SPEC, tmp_path / "im", layers, k=3, batch_size=4,
                        cache_dir=tmp_path / "c")
    s = scan()
    it = s.run()
    assert next(it).done == 4
    s.cancel()
    list(it)
    s = scan()
    assert [p.done for p in s.run()] == [8, 12, 13]                  # resumed from the partial at 4
    _same_hits(s.result, ref, ["features.4", ""])


class _IntFirst(nn.Module):
    """Its first parameter (or buffer) is an integer counter; the input dtype comes from the float ones."""

    def __init__(self, buffers_only=False, dtype=torch.float32):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        w = torch.randn(4, 3, 3, 3, generator=g, dtype=dtype)
        if buffers_only:
            self.register_buffer("steps", torch.tensor([3]))
            self.register_buffer("w", w)
        else:
            self.steps = nn.Parameter(torch.tensor([3]), requires_grad=False)
            self.w = nn.Parameter(w)
        self.conv = nn.Identity()

    def forward(self, x):
        return self.conv(torch.nn.functional.conv2d(x, self.w))


@pytest.mark.parametrize("model", [_IntFirst(), _IntFirst(buffers_only=True), _IntFirst(True, torch.float64),
                                   nn.Sequential(nn.MaxPool2d(2), nn.ReLU())], ids=["param", "buffer", "f64", "none"])
def test_the_input_follows_the_models_float_weights(tmp_path, model):
    """A model's input dtype: its first float parameter's or buffer's (an integer counter first says
    nothing), else float32.  (The scan once took float32 from an integer first tensor: a float64
    model whose first buffer is a counter failed on every image.)"""
    make_images(tmp_path / "im", n=3, bad=False)
    layer = "conv" if isinstance(model, _IntFirst) else "1"
    res = run_scan(TopKScan(model.eval(), TINY_SPEC, tmp_path / "im", [layer], k=2, use_cache=False))
    assert res.skipped == [] and all(len(res.hits(layer, u)) == 2 for u in range(res.layer(layer).units))


class _Signal(nn.Module):
    """A 1-D layer (N x C x L: the tiny net's map as rows) and a 2-unit score that is NaN on a white image."""

    def __init__(self):
        super().__init__()
        self.net = tiny_model()
        self.rows = nn.Flatten(2)
        self.score = nn.Identity()

    def forward(self, x):
        m = x.flatten(1).mean(1)
        s = self.score(torch.stack([torch.where(m > 1.5, torch.full_like(m, float("nan")), -1 - m), -2 - m], 1))
        return self.rows(self.net.features(x)).mean(2) + s[:, :1]


def test_a_one_d_layer_and_nan_activations_against_brute_force(tmp_path):
    """(y, x) of an N x C x L layer is (0, position); a NaN activation ranks below every number."""
    from cnnvis_gui.sources import load_image
    folder = tmp_path / "im"
    make_images(folder, n=4, bad=False)
    cv2.imwrite(str(folder / "white.png"), np.full((40, 36, 3), 250, np.uint8))
    model = _Signal().eval()
    res = run_scan(TopKScan(model, TINY_SPEC, folder, ["rows", "score"], k=3, batch_size=2, use_cache=False))
    rels = [f[0] for f in list_images(folder)[0]]
    x = torch.from_numpy(np.stack([TINY_SPEC.to_array(load_image(folder / r)) for r in rels]))
    with torch.no_grad():
        rows = model.rows(model.net.features(x))                               # N x 12 x 256
        m = x.flatten(1).mean(1)
        score = torch.stack([torch.where(m > 1.5, torch.full_like(m, -np.inf), -1 - m), -2 - m], 1)
    for layer, acts in (("rows", rows), ("score", score[:, :, None])):
        best, where = acts.max(dim=2)                                          # first maximum, like the scan
        for u in range(acts.shape[1]):
            order = sorted(range(len(rels)), key=lambda i: (-float(best[i, u]), i))[:3]
            want = [(rels[i], 0, int(where[i, u]), float(best[i, u])) for i in order]
            got = [(res.paths[h.image], h.y, h.x, h.value) for h in res.hits(layer, u)]
            assert [g[:3] for g in got] == [w[:3] for w in want], (layer, u)
            np.testing.assert_allclose([g[3] for g in got], [w[3] for w in want], rtol=1e-5, atol=1e-6)
    assert "white.png" not in [res.paths[h.image] for h in res.hits("score", 0)]


def test_the_fit_argument_is_the_specs_fit(tmp_path):
    """``TopKScan(fit=...)`` frames every image like a spec with that fit (non-square images: it matters)."""
    make_images(tmp_path / "im", n=6, bad=False)                 # 36 x 40 images
    layers = ["features.1"]

    def hits(spec, **kw):
        res = run_scan(TopKScan(tiny_model(), spec, tmp_path / "im", layers, k=3, use_cache=False, **kw))
        return [[(h.image, h.y, h.x, h.value) for h in res.hits("features.1", u)] for u in range(8)]
    stretch = hits(TINY_SPEC, fit="stretch")
    assert stretch == hits(TINY_SPEC.replace(fit="stretch")) != hits(TINY_SPEC.replace(fit="crop"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_gray_model_gets_its_own_dtype_and_every_fit(tmp_path, dtype):
    """A one-channel model (decoded through ``InputSpec.to_array``, not the batched colour path)
    gets ``fit=`` and its parameters' dtype: its hits are brute force on ``spec.to_array(image, fit)``."""
    from cnnvis_gui.core import InputSpec
    from cnnvis_gui.sources import load_image
    make_images(tmp_path / "im", n=5, bad=False)                 # 36 x 40 colour images, read as gray
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 5, stride=3), nn.ReLU()).eval().to(dtype)
    spec = InputSpec(channels=1, height=24, width=24, mean=(0.5,), std=(0.25,))
    for fit in ("stretch", "letterbox", "crop"):
        res = run_scan(TopKScan(net, spec, tmp_path / "im", ["0"], k=2, use_cache=False, fit=fit))
        x = torch.from_numpy(np.stack([spec.to_array(load_image(tmp_path / "im" / p), fit) for p in res.paths]))
        with torch.no_grad():
            out = net[0](x.to(dtype))
        w = out.shape[-1]
        best, where = out.flatten(2).max(dim=2)
        for u in range(4):
            order = sorted(range(len(res.paths)), key=lambda i: (-float(best[i, u]), i))[:2]
            want = [(i, int(where[i, u]) // w, int(where[i, u]) % w, float(best[i, u])) for i in order]
            got = [(h.image, h.y, h.x, h.value) for h in res.hits("0", u)]
            assert [g[:3] for g in got] == [w_[:3] for w_ in want], (fit, u)
            np.testing.assert_allclose([g[3] for g in got], [w_[3] for w_ in want], rtol=1e-6)


class _Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.net, self.unused = tiny_model(), nn.ReLU()

    def forward(self, x):
        return self.net(x)


def test_a_layer_that_does_not_run_is_named(tmp_path, cache):
    make_images(tmp_path / "im", n=2, bad=False)
    with pytest.raises(CnnvisError) as e:
        run_scan(TopKScan(_Unused(), TINY_SPEC, tmp_path / "im", ["unused", ""], k=1))
    assert str(e.value) == "layer(s) 'unused' did not run in the forward pass; choose layers that run."


class _FatalAlone(nn.Module):
    """A batch raises an ordinary error; the image-by-image retry then hits a device error."""

    def forward(self, x):
        if x.shape[0] > 1:
            raise ValueError("batch")
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


@pytest.mark.parametrize("batch", [1, 3])
def test_a_device_error_stops_the_scan_at_any_batch_size(tmp_path, cache, batch):
    make_images(tmp_path / "im", n=3, bad=False)
    with pytest.raises(RuntimeError, match="CUDA error: an illegal memory access"):
        run_scan(TopKScan(_FatalAlone(), TINY_SPEC, tmp_path / "im", [""], k=1, batch_size=batch))
