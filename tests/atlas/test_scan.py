"""Top-k scan: equals a brute-force pass, cache hit/invalidation, resume, skipped files, OOM back-off."""
import os

import numpy as np
import pytest
import torch

from cnnvis_gui.atlas import TopKScan, load_scan, scan_folder
from cnnvis_gui.atlas.folders import list_images
from cnnvis_gui.core import CnnvisError
from cnnvis_gui.sources import load_image

from ..waits import CHILD_S
from .helpers import TINY_SPEC, make_images, tiny_model

LAYERS = ["features.1", "features.4", "output"]


def brute_force(model, spec, folder, layer_modules):
    """All activations of every readable image in one pass -> {layer: N x ...}, readable relative paths."""
    files, _ = list_images(folder)
    xs, rels = [], []
    for rel, _, _ in files:
        try:
            xs.append(spec.to_array(load_image(folder / rel)))
            rels.append(rel)
        except Exception:
            pass
    acts = {}
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(lambda m, a, o, n=n: acts.__setitem__(n, o.detach().clone()))
             for n in layer_modules if n]
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(np.stack(xs)))
    finally:
        for h in hooks:
            h.remove()
    acts[""] = out
    return acts, rels, [f[0] for f in files]


def run(scan):
    for _ in scan.run():
        pass
    return scan.result


def test_topk_equals_brute_force(image_folder, cache):
    model = tiny_model()
    res = run(TopKScan(model, TINY_SPEC, image_folder, LAYERS, k=5, batch_size=7))
    acts, rels, all_rels = brute_force(model, TINY_SPEC, image_folder, ["features.1", "features.4"])
    assert len(res.paths) == 41 and len(res.skipped) == 1 and res.skipped[0][0] == "b/broken.png"
    for layer in ["features.1", "features.4", ""]:
        a = acts[layer]
        flat = a.reshape(a.shape[0], a.shape[1], -1)
        per_img = flat.max(dim=2).values                    # N x C
        for unit in range(a.shape[1]):
            hits = res.hits(layer, unit)
            assert len(hits) == 5
            assert len({h.image for h in hits}) == 5         # distinct images
            expect = torch.sort(per_img[:, unit], descending=True, stable=True)
            np.testing.assert_allclose([h.value for h in hits], expect.values[:5].numpy(), rtol=1e-5, atol=1e-5)
            vals = expect.values.numpy()
            for j, h in enumerate(hits):
                # position really holds the value, in the named image
                i = rels.index(res.paths[h.image])
                v = a[i, unit, h.y, h.x] if a.ndim == 4 else a[i, unit]
                assert float(v) == pytest.approx(h.value, abs=1e-5)
                # the image is the brute-force one unless a near tie makes the order ambiguous
                gap = min(abs(vals[j] - vals[j - 1]) if j else np.inf, abs(vals[j] - vals[j + 1]))
                if gap > 1e-4:
                    assert rels[int(expect.indices[j])] == res.paths[h.image]


def test_json_and_fewer_images_than_k(tmp_path, cache):
    folder = tmp_path / "few"
    make_images(folder, n=3, bad=False)
    res = scan_folder(tiny_model(), TINY_SPEC, folder, "output", k=9)
    assert all(len(res.hits("output", u)) == 3 for u in range(5))
    d = res.to_dict()
    hits = d["layers"]["output"]["units"][0]["hits"]
    assert [h["value"] for h in hits] == sorted([h["value"] for h in hits], reverse=True)
    assert set(hits[0]) == {"path", "image", "y", "x", "value"}


class CountingModel(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_cache_hit_runs_no_model(image_folder, tmp_path):
    model = CountingModel(tiny_model())
    cdir = tmp_path / "explicit-cache"
    first = run(TopKScan(model, TINY_SPEC, image_folder, ["inner.features.4"], k=4, batch_size=16, cache_dir=cdir))
    assert model.calls > 0 and not first.from_cache
    model.calls = 0
    again = load_scan(model, TINY_SPEC, image_folder, ["inner.features.4"], k=4, cache_dir=cdir)
    assert again is not None and again.from_cache and model.calls == 0
    progress = list((s := TopKScan(model, TINY_SPEC, image_folder, ["inner.features.4"], k=4,
                                   cache_dir=cdir)).run())
    assert len(progress) == 1 and progress[0].from_cache and model.calls == 0
    np.testing.assert_array_equal(s.result.layer("inner.features.4").images, first.layer("inner.features.4").images)
    # a different spec is a different key: never the other spec's cache
    assert load_scan(model, TINY_SPEC.replace(fit="stretch"), image_folder, ["inner.features.4"], k=4,
                     cache_dir=cdir) is None


def test_env_var_sets_cache_dir(image_folder, cache):
    s = TopKScan(tiny_model(), TINY_SPEC, image_folder, ["output"], k=2)
    run(s)
    assert str(s.cache_path).startswith(str(cache)) and (s.cache_path / "result.npz").is_file()


def test_invalidation_on_weights_and_folder(image_folder, cache):
    model = tiny_model()
    run(TopKScan(model, TINY_SPEC, image_folder, ["features.4"], k=3))
    assert load_scan(model, TINY_SPEC, image_folder, ["features.4"], k=3) is not None
    with torch.no_grad():
        model.features[3].weight[0, 0, 0, 0] += 0.5          # changed weights
    assert load_scan(model, TINY_SPEC, image_folder, ["features.4"], k=3) is None
    assert load_scan(tiny_model(), TINY_SPEC, image_folder, ["features.4"], k=3) is not None
    make_images(image_folder / "new", n=2, seed=5, bad=False)   # changed folder (file added)
    assert load_scan(tiny_model(), TINY_SPEC, image_folder, ["features.4"], k=3) is None
    run(TopKScan(tiny_model(), TINY_SPEC, image_folder, ["features.4"], k=3))
    p = image_folder / "a" / "img001.png"                        # file rewritten
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    assert load_scan(tiny_model(), TINY_SPEC, image_folder, ["features.4"], k=3) is None


def test_resume_after_cancel_equals_uninterrupted(image_folder, tmp_path):
    model = tiny_model()
    ref = run(TopKScan(model, TINY_SPEC, image_folder, LAYERS, k=4, batch_size=6, use_cache=False))
    cdir = tmp_path / "c"
    s = TopKScan(model, TINY_SPEC, image_folder, LAYERS, k=4, batch_size=6, cache_dir=cdir)
    for p in s.run():
        if p.done >= 18:
            s.cancel()
    assert s.result is None and (s.cache_path / "partial.npz").is_file()
    # also: abandoning the generator (a crash of the consumer) checkpoints
    s2 = TopKScan(model, TINY_SPEC, image_folder, LAYERS, k=4, batch_size=6, cache_dir=cdir)
    gen = s2.run()
    first = next(gen)
    assert first.done == 24                                   # resumed after the 18 done (3 batches)
    gen.close()
    s3 = TopKScan(model, TINY_SPEC, image_folder, LAYERS, k=4, batch_size=6, cache_dir=cdir)
    steps = [p.done for p in s3.run()]
    assert steps[0] == 30 and steps[-1] == 41
    res = s3.result
    assert not (s3.cache_path / "partial.npz").exists()
    for name in res.layers:
        for attr in ("values", "images", "ys", "xs"):
            np.testing.assert_array_equal(getattr(res.layer(name), attr), getattr(ref.layer(name), attr))
    assert res.skipped == ref.skipped


class OOMModel(torch.nn.Module):
    def __init__(self, inner, limit):
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, []

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.sizes.append(x.shape[0])
        return self.inner(x)


def test_out_of_memory_halves_batch(image_folder, cache):
    model = OOMModel(tiny_model(), limit=5)
    s = TopKScan(model, TINY_SPEC, image_folder, ["output"], k=3, batch_size=32)
    res = run(s)
    assert s.batch_size <= 5 and max(model.sizes) <= 5
    ref = run(TopKScan(tiny_model(), TINY_SPEC, image_folder, ["output"], k=3, batch_size=64, use_cache=False))
    np.testing.assert_allclose(res.layer("output").values, ref.layer("output").values, rtol=1e-5, atol=1e-6)


def test_bad_layer_and_folder(image_folder, tmp_path, cache):
    with pytest.raises(CnnvisError, match="features"):
        TopKScan(tiny_model(), TINY_SPEC, image_folder, ["featurez.1"])
    with pytest.raises(CnnvisError, match="folder"):
        TopKScan(tiny_model(), TINY_SPEC, tmp_path / "nope", ["output"]).total
    empty = tmp_path / "junk"
    empty.mkdir()
    (empty / "x.png").write_bytes(b"zzz")
    with pytest.raises(CnnvisError, match="could be decoded"):
        run(TopKScan(tiny_model(), TINY_SPEC, empty, ["output"]))


def test_no_hooks_left(image_folder, cache):
    model = tiny_model()
    run(TopKScan(model, TINY_SPEC, image_folder, LAYERS, k=2))
    assert all(not m._forward_hooks for m in model.modules())


class Crash(torch.nn.Module):
    """Raises ``exc`` (or kills the process) on the n-th forward."""

    def __init__(self, inner, at, kill=False, exc=RuntimeError):
        super().__init__()
        self.inner, self.at, self.kill, self.exc, self.calls = inner, at, kill, exc, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.at:
            if self.kill:
                os._exit(3)
            raise self.exc("boom")
        return self.inner(x)


def test_error_mid_scan_leaves_no_hooks_and_resumes(image_folder, tmp_path):
    # an interrupt (not an exception of the model's forward, whose images are skipped instead; see
    # test_atlas_keys_faults.py) stops the scan
    model = Crash(tiny_model(), at=3, exc=KeyboardInterrupt)
    s = TopKScan(model, TINY_SPEC, image_folder, ["inner.features.4", "output"], k=3, batch_size=6,
                 cache_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt, match="boom"):
        run(s)
    assert all(not m._forward_hooks for m in model.modules())
    s2 = TopKScan(model, TINY_SPEC, image_folder, ["inner.features.4", "output"], k=3, batch_size=6,
                  cache_dir=tmp_path)
    assert next(s2.run()).done == 18                       # 2 batches were done before the error


def test_one_failing_forward_mid_scan_skips_nothing_it_can_retry(image_folder, tmp_path):
    """A batch whose forward raises once is retried image by image: every image goes through."""
    model = Crash(tiny_model(), at=3)
    res = run(TopKScan(model, TINY_SPEC, image_folder, ["inner.features.4"], k=3, batch_size=6, cache_dir=tmp_path))
    assert res.model_failures == []
    ref = run(TopKScan(Crash(tiny_model(), at=-1), TINY_SPEC, image_folder, ["inner.features.4"], k=3,
                       batch_size=6, use_cache=False))
    np.testing.assert_array_equal(res.layer("inner.features.4").images, ref.layer("inner.features.4").images)


def test_resume_after_kill(image_folder, tmp_path):
    """A process killed mid-scan (no cleanup runs) resumes from its last atomic checkpoint."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys, torch\n"
        "from tests.atlas.helpers import tiny_model, TINY_SPEC\n"
        "from tests.atlas.test_scan import Crash\n"
        "from cnnvis_gui.atlas import TopKScan\n"
        f"s = TopKScan(Crash(tiny_model(), at=5, kill=True), TINY_SPEC, {str(image_folder)!r}, ['inner.features.4'],"
        f" k=3, batch_size=6, cache_dir={str(tmp_path)!r}, checkpoint_every=0)\n"
        "for p in s.run():\n"
        "    pass\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=str(root), capture_output=True, text=True, timeout=CHILD_S)
    assert r.returncode == 3, r.stderr
    model = Crash(tiny_model(), at=-1)
    s = TopKScan(model, TINY_SPEC, image_folder, ["inner.features.4"], k=3, batch_size=6, cache_dir=tmp_path)
    assert list(s.cache_path.glob("*.tmp")) == []
    steps = [p.done for p in s.run()]
    assert steps[0] == 30                                   # 4 batches were checkpointed before the kill
    ref = run(TopKScan(Crash(tiny_model(), at=-1), TINY_SPEC, image_folder, ["inner.features.4"], k=3,
                       batch_size=6, use_cache=False))
    for attr in ("values", "images", "ys", "xs"):
        np.testing.assert_array_equal(getattr(s.result.layer("inner.features.4"), attr),
                                      getattr(ref.layer("inner.features.4"), attr))
