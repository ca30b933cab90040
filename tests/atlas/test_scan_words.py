"""Every line the top-k scan shows a user, word for word, and its public helpers' plumbing.

Progress lines, cache notices, the errors for an empty folder / nothing decoded / a missing layer,
the reasons recorded for images the model raised on, which errors stop a scan, ``atlas.json``'s
keys (``AtlasScan.to_dict``), ``store_result`` (a merged result where a one-process scan finds it)
and the arguments of ``scan_folder`` / ``load_scan``.  The expected texts are written out here,
not built by the product's own helpers (found by mutation testing: ``tools/mutation.sh atlas/scan.py``).
"""
import json
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_gui.atlas import TopKScan, load_scan, scan_folder
from cnnvis_gui.atlas.results import AtlasScan, LayerTopK, ScanProgress
from cnnvis_gui.atlas.scan import shard_range
from cnnvis_gui.atlas.state import nothing_decoded_error, store_result
from cnnvis_gui.core import CnnvisError, ModelForwardError
from cnnvis_gui.sources import load_image

from .helpers import TINY_SPEC, make_images, tiny_model, run_scan

EXTS = ".png, .jpg, .jpeg, .bmp, .tif, .webp..."
MF = "the model's forward raised"


# ----------------------------------------------------------------------------- progress line
def test_progress_line_word_for_word():
    assert ScanProgress(10, 40, 12.345, 2.6, 0, 8).describe() == "10/40 images, 12.3 images/s, ETA 3 s"
    assert ScanProgress(40, 40, 7.0, None, 2, 8).describe() == "40/40 images, 7.0 images/s, 2 skipped"
    assert ScanProgress(3, 9, 0.0, 0.0, 1, 8).describe() == "3/9 images, 0.0 images/s, ETA 0 s, 1 skipped"


# ----------------------------------------------------------------------------- messages
def test_empty_folder_messages_word_for_word(tmp_path, cache):
    d = tmp_path / "empty"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "data.csv").write_text("1,2")
    with pytest.raises(CnnvisError) as e:
        TopKScan(tiny_model(), TINY_SPEC, d, ["features.4"]).total
    assert str(e.value) == f"no images in folder '{d}' or its sub-folders (looked for {EXTS}); found 1 other file."
    with pytest.raises(CnnvisError) as e:
        TopKScan(tiny_model(), TINY_SPEC, d, ["features.4"], recursive=False).total
    assert str(e.value) == f"no images in folder '{d}' (looked for {EXTS})."
    (d / "a.txt").write_text("x")
    (d / "b.txt").write_text("x")
    with pytest.raises(CnnvisError) as e:
        TopKScan(tiny_model(), TINY_SPEC, d, ["features.4"], recursive=False).total
    assert str(e.value) == f"no images in folder '{d}' (looked for {EXTS}); found 2 other files."


def test_nothing_decoded_errors_word_for_word():
    e = nothing_decoded_error("/x/im", 1, [("a.png", "cannot decode")])
    assert type(e) is CnnvisError
    assert str(e) == "none of the 1 image file in '/x/im' could be decoded: a.png: cannot decode."
    e = nothing_decoded_error("/x/im", 1, [("a.png", "not an image file.")])     # one full stop, not two
    assert str(e) == "none of the 1 image file in '/x/im' could be decoded: a.png: not an image file."
    e = nothing_decoded_error("/x/im", 2, [])
    assert type(e) is CnnvisError and str(e) == "none of the 2 image files in '/x/im' could be decoded."
    skipped = [("z.png", "cannot decode"), ("b.png", f"{MF} ValueError: too bright"), ("c.png", f"{MF} KeyError")]
    e = nothing_decoded_error("/x/im", 3, skipped)
    assert isinstance(e, ModelForwardError)
    assert str(e) == ("the model's forward raised on all 2 decodable images of '/x/im' (first: b.png: the model's "
                      "forward raised ValueError: too bright); check the input spec against what the model was "
                      "trained on.")
    e = nothing_decoded_error("/x/im", 2, skipped[:2])
    assert str(e) == ("the model's forward raised on all 1 decodable image of '/x/im' (first: b.png: the model's "
                      "forward raised ValueError: too bright); check the input spec against what the model was "
                      "trained on.")


def test_an_unknown_fit_is_refused_before_any_image_is_read(tmp_path):
    make_images(tmp_path / "im", n=2, bad=False)
    with pytest.raises(CnnvisError) as e:
        TopKScan(tiny_model(), TINY_SPEC, tmp_path / "im", ["features.4"], fit="pad")
    assert str(e.value) == "fit must be one of crop, stretch, letterbox, got 'pad'."


def test_missing_layer_message_and_output_alias():
    """``layer("output")`` is the model output only when no module is called ``output``."""
    def table(name, v):
        return LayerTopK(name, np.full((1, 1), v, np.float32), np.zeros((1, 1), np.int64),
                         np.zeros((1, 1), np.int32), np.zeros((1, 1), np.int32), (1,))
    res = AtlasScan(Path("/im"), ["a.png"], {"output": table("output", 1.0), "": table("", 2.0)}, 1, TINY_SPEC)
    assert res.layer("output").values[0, 0] == 1.0 and res.layer("").values[0, 0] == 2.0
    assert res.hits("output", 0)[0].value == 1.0
    alias = AtlasScan(Path("/im"), ["a.png"], {"fc": table("fc", 3.0), "": table("", 4.0)}, 1, TINY_SPEC)
    assert alias.layer("output").values[0, 0] == 4.0
    with pytest.raises(CnnvisError) as e:
        alias.layer("conv9")
    assert str(e.value) == "this atlas has no layer 'conv9'; it has 'fc', ''."


def test_shard_index_message():
    with pytest.raises(CnnvisError) as e:
        shard_range(10, 3, 3, 4)
    assert str(e.value) == "shard 3/3: the index must be 0..2."


def test_damaged_cache_notices_word_for_word(tmp_path):
    make_images(tmp_path / "im", n=4, bad=False)
    s = TopKScan(tiny_model(), TINY_SPEC, tmp_path / "im", ["features.4"], k=2, cache_dir=tmp_path / "c")
    s.cache_path.mkdir(parents=True)
    for name in ("result.npz", "partial.npz"):
        (s.cache_path / name).write_bytes(b"not a zip")
    run_scan(s)
    assert s.notices == [
        f"the atlas cache file '{s.cache_path / 'result.npz'}' is damaged (not a readable .npz file); scanning again.",
        f"the atlas cache file '{s.cache_path / 'partial.npz'}' is damaged (not a readable .npz file); "
        "the scan starts over."]


# ----------------------------------------------------------------------------- the model raising
class Fussy(nn.Module):
    """The tiny net, but its forward raises on a white image (two-line message), a black one (no
    message) and a green one (a plain RuntimeError, which is no out-of-memory)."""

    def __init__(self):
        super().__init__()
        self.net = tiny_model()

    def forward(self, x):
        m = x.flatten(2).mean(2)                                  # N x 3, normalized, RGB
        if (m > 1.5).all(1).any():
            raise ValueError("too bright\nsecond line of the message")
        if (m < -1.5).all(1).any():
            raise ValueError()
        if ((m[:, 1] > 1.5) & (m[:, 0] < -1.5)).any():
            raise RuntimeError("  no green, please  ")
        return self.net(x)


def test_images_the_model_raises_on_are_skipped_with_their_reason(tmp_path, cache):
    folder = tmp_path / "im"
    make_images(folder, n=6, bad=False)
    for name, bgr in (("white", (250, 250, 250)), ("black", (5, 5, 5)), ("green", (5, 250, 5))):
        cv2.imwrite(str(folder / f"{name}.png"), np.full((40, 36, 3), bgr, np.uint8))
    s = TopKScan(Fussy(), TINY_SPEC, folder, ["net.features.4"], k=2, batch_size=16)
    res = run_scan(s)
    assert dict(res.model_failures) == {"white.png": f"{MF} ValueError: too bright",
                                        "black.png": f"{MF} ValueError",
                                        "green.png": f"{MF} RuntimeError: no green, please"}
    assert s.batch_size == 16                        # a plain RuntimeError is not an out-of-memory
    bad = {res.paths.index(p) for p in ("white.png", "black.png", "green.png")}
    assert not bad & set(res.layer("net.features.4").images.ravel().tolist())


def test_a_file_whose_loader_raises_without_words_is_skipped_with_the_error_type(tmp_path, cache, monkeypatch):
    import cnnvis_gui.atlas.sweep as scan_mod       # the scans' shared decoding
    make_images(tmp_path / "im", n=3, bad=False)
    cv2.imwrite(str(tmp_path / "im" / "huge.png"), np.zeros((40, 36, 3), np.uint8))
    real = scan_mod.load_image

    def loader(path):
        if Path(path).name == "huge.png":
            raise MemoryError()                          # a decoder out of memory says nothing more
        return real(path)

    monkeypatch.setattr(scan_mod, "load_image", loader)
    res = run_scan(TopKScan(tiny_model(), TINY_SPEC, tmp_path / "im", ["features.4"], k=2, batch_size=4))
    assert res.skipped == [("huge.png", "MemoryError")]


class Failing(nn.Module):
    def __init__(self, message):
        super().__init__()
        self.net, self.message = tiny_model(), message

    def forward(self, x):
        raise RuntimeError(self.message)


@pytest.mark.parametrize("message", ["CUDA error: device-side assert triggered",
                                     "CUDA out of memory. Tried to allocate 2.00 GiB"])
def test_device_errors_stop_the_scan_instead_of_skipping_images(tmp_path, cache, message):
    make_images(tmp_path / "im", n=4, bad=False)
    s = TopKScan(Failing(message), TINY_SPEC, tmp_path / "im", ["net.features.4"], k=2, batch_size=4)
    with pytest.raises(RuntimeError) as e:
        run_scan(s)
    assert str(e.value) == message and not isinstance(e.value, CnnvisError)


# ----------------------------------------------------------------------------- atlas.json
def test_to_dict_word_for_word():
    conv = LayerTopK("conv", np.array([[3.5, 1.25], [2.0, -np.inf]], np.float32), np.array([[1, 0], [2, -1]]),
                     np.array([[0, 2], [1, 0]], np.int32), np.array([[3, 1], [0, 0]], np.int32), (2, 4, 5))
    out = LayerTopK("", np.array([[0.5, 0.25]], np.float32), np.array([[0, 2]]), np.zeros((1, 2), np.int32),
                    np.zeros((1, 2), np.int32), (1,))
    skipped = [("d/x.png", "cannot decode"), ("c.png", f"{MF} ValueError: no")]
    res = AtlasScan(Path("/im"), ["a.png", "b/b.png", "c2.png"], {"conv": conv, "": out}, 2, TINY_SPEC,
                    skipped, ranges=[(0, 2), (2, 4)])
    doc = res.to_dict()
    assert doc == {
        "folder": "/im", "images": 3, "k": 2, "spec": TINY_SPEC.to_dict(),
        "skipped": [{"path": "d/x.png", "reason": "cannot decode"}, {"path": "c.png", "reason": f"{MF} ValueError: no"}],
        "model_failed": 1, "world_size": 2, "images_per_rank": [2, 2],
        "layers": {
            "conv": {"shape": [2, 4, 5], "units": [
                {"unit": 0, "hits": [{"path": "/im/b/b.png", "image": 1, "y": 0, "x": 3, "value": 3.5},
                                     {"path": "/im/a.png", "image": 0, "y": 2, "x": 1, "value": 1.25}]},
                {"unit": 1, "hits": [{"path": "/im/c2.png", "image": 2, "y": 1, "x": 0, "value": 2.0}]}]},
            "output": {"shape": [1], "units": [
                {"unit": 0, "hits": [{"path": "/im/a.png", "image": 0, "y": 0, "x": 0, "value": 0.5},
                                     {"path": "/im/c2.png", "image": 2, "y": 0, "x": 0, "value": 0.25}]}]}}}
    json.dumps(doc)                                          # JSON-able as it is


# ----------------------------------------------------------------------------- store_result
def test_store_result_is_found_by_a_one_process_scan(tmp_path):
    make_images(tmp_path / "im", n=5)                        # + one corrupt file (skipped)
    layers = ["features.4", "output"]
    ref = run_scan(TopKScan(tiny_model(), TINY_SPEC, tmp_path / "im", layers, k=3, use_cache=False))
    assert ref.skipped
    scan = TopKScan(tiny_model(), TINY_SPEC, tmp_path / "im", layers, k=3, cache_dir=tmp_path / "c")
    path = store_result(tmp_path / "c", scan.key, scan.layers, ref.layers, len(ref.paths), ref.skipped,
                        {"merged_from": 2})
    assert path == tmp_path / "c" / f"scan-{scan.key}" == scan.cache_path
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "result.npz"]
    meta = json.loads((path / "meta.json").read_text())
    assert set(meta) == {"merged_from", "finished"} and meta["merged_from"] == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", meta["finished"]), meta
    got = scan.cached()
    assert got is not None and got.from_cache and scan.notices == []
    assert got.skipped == ref.skipped and got.paths == ref.paths and list(got.layers) == list(ref.layers)
    for name, t in ref.layers.items():
        g = got.layers[name]
        for attr in ("values", "images", "ys", "xs"):
            np.testing.assert_array_equal(getattr(g, attr), getattr(t, attr))
        assert g.shape == t.shape


# ----------------------------------------------------------------------------- scan_folder / load_scan
def test_scan_folder_and_load_scan_pass_their_arguments_on(tmp_path, monkeypatch):
    folder = tmp_path / "im"
    make_images(folder, n=12)                                # in sub-folders a/ and b/, + a corrupt b/broken.png
    for i in range(4):
        cv2.imwrite(str(folder / f"top{i}.png"), np.full((36, 36, 3), 40 * i, np.uint8))
    elsewhere = tmp_path / "env-cache"
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(elsewhere))
    c = tmp_path / "c"
    model, layers = tiny_model(), ["features.4"]

    seen = []
    res = scan_folder(model, TINY_SPEC, folder, layers, cache_dir=c, progress=seen.append)   # k=9, batches of 64
    assert seen and all(isinstance(p, ScanProgress) for p in seen)
    assert [(p.done, p.total, p.batch_size, p.skipped, p.from_cache) for p in seen] == [(17, 17, 64, 1, False)]
    assert all(len(res.hits("features.4", u)) == 9 for u in range(12)) and not res.from_cache
    assert not elsewhere.exists()                            # the cache went where it was told
    with pytest.raises(Exception) as e:
        load_image(folder / "b" / "broken.png")
    assert res.skipped == [("b/broken.png", str(e.value))]      # the loader's own words
    s = TopKScan(model, TINY_SPEC, folder, layers, use_cache=False)                        # k=9, batches of 64
    assert [p.batch_size for p in s.run()] == [64] and all(len(s.result.hits("features.4", u)) == 9 for u in range(12))
    again = load_scan(model, TINY_SPEC, folder, layers, cache_dir=c)                         # k=9 too
    assert again is not None and again.from_cache
    seen = []
    assert scan_folder(model, TINY_SPEC, folder, layers, cache_dir=c, progress=seen.append).from_cache
    assert [(p.done, p.total, p.images_per_s, p.eta_s, p.skipped, p.batch_size, p.from_cache) for p in seen] == \
        [(17, 17, 0.0, 0.0, 1, 64, True)]
    assert seen[0].describe() == "17/17 images, 0.0 images/s, ETA 0 s, 1 skipped"

    seen = []
    top = scan_folder(model, TINY_SPEC, folder, layers, k=3, batch_size=3, cache_dir=c, use_cache=False,
                      recursive=False, progress=seen.append)
    assert top.paths == ["top0.png", "top1.png", "top2.png", "top3.png"]
    assert [(p.done, p.batch_size) for p in seen] == [(3, 3), (4, 3)]
    assert all(len(top.hits("features.4", u)) == 3 for u in range(12))
    assert load_scan(model, TINY_SPEC, folder, layers, k=3, cache_dir=c, recursive=False) is None   # not cached
    scan_folder(model, TINY_SPEC, folder, layers, k=3, cache_dir=c, recursive=False)
    assert load_scan(model, TINY_SPEC, folder, layers, k=3, cache_dir=c, recursive=False) is not None
    assert load_scan(model, TINY_SPEC, folder, layers, k=3, cache_dir=c) is None        # another scan (recursive)


def test_damaged_result_notices_word_for_word(tmp_path):
    """What is wrong with a damaged result.npz, in the notice's own words (also for a shard's slice)."""
    make_images(tmp_path / "im", n=14, bad=False)
    layers = ["features.4", "output"]

    def scan(d, **kw):
        return TopKScan(tiny_model(), TINY_SPEC, tmp_path / "im", layers, k=3, batch_size=4, cache_dir=tmp_path / d,
                        **kw)
    s = scan("good")
    run_scan(s)
    with np.load(s.cache_path / "result.npz") as z:
        good = {key: z[key] for key in z.files}
    units = len(good["v0"])
    k2 = dict(good, **{f"{a}0": good[f"{a}0"][:, :2] for a in "viyx"})          # consistently k=2, not 3
    cases = [({}, dict(k2), f"layer 0: arrays of shape ({units}, 2) for k=3"),
             ({}, {key: v for key, v in good.items() if key[1:] not in ("0", "1")}, "it has 0 of 2 layers"),
             ({}, {key: v for key, v in good.items() if key[1:] != "1"}, "it has 1 of 2 layers"),
             ({}, dict(good, skipped_reasons=np.array(["x"])), "its list of skipped files is inconsistent"),
             ({"shard": (1, 2)}, dict(good, next_index=np.array(10, np.int64)), "it covers 2 of 6 images"),
             ({"shard": (1, 2)}, dict(good, next_index=np.array(16, np.int64)), "it covers 8 of 6 images"),
             ({}, dict(good, i0=good["i0"].astype(np.float64)), "layer 0: wrong array types"),
             ({}, dict(good, v0=good["v0"].astype(np.int64)), "layer 0: wrong array types"),
             ({}, dict(good, s0=good["s0"][None]), f"layer 0: shape [{good['s0'].tolist()}] for {units} units"),
             ({}, dict(good, s0=good["s0"][1:]), f"layer 0: shape {good['s0'][1:].tolist()} for {units} units"),
             ({}, dict(good, i0=np.where(good["i0"] == good["i0"][0, 0], -2, good["i0"])),
              "layer 0: image indices outside the 14 images"),
             ({}, dict(good, i0=np.where(good["i0"] == good["i0"][0, 0], 14, good["i0"])),
              "layer 0: image indices outside the 14 images")]
    for i, (kw, arrays, why) in enumerate(cases):
        s = scan(f"d{i}", **kw)
        s.cache_path.mkdir(parents=True)
        np.savez(s.cache_path / "result.npz", **arrays)
        res = run_scan(s)
        assert s.notices == [f"the atlas cache file '{s.cache_path / 'result.npz'}' is damaged ({why}); "
                             "scanning again."], (why, s.notices)
        assert all(len(res.hits(name, u)) == 3 for name in res.layers for u in range(2))


def test_a_result_that_passes_the_checks_but_cannot_be_read_is_scanned_again(tmp_path, monkeypatch):
    """The last guard of ``TopKScan.cached``: arrays that fail while being turned into an atlas
    (after every check passed) are a damaged cache with its notice, never a crash."""
    import cnnvis_gui.atlas.scan as scan_mod
    make_images(tmp_path / "im", n=4, bad=False)

    def scan():
        return TopKScan(tiny_model(), TINY_SPEC, tmp_path / "im", ["features.4"], k=2, cache_dir=tmp_path / "c")
    first = run_scan(scan())

    def unreadable(*a, **kw):
        raise ValueError("unexpected array layout")
    s = scan()
    with monkeypatch.context() as m:
        m.setattr(scan_mod, "state_from_arrays", unreadable)
        assert s.cached() is None
    assert s.notices == [f"the atlas cache file '{s.cache_path / 'result.npz'}' is damaged (unexpected array "
                         "layout); scanning again."]
    again = scan().cached()
    assert again is not None and again.from_cache and again.paths == first.paths


def test_fewer_images_than_k_is_a_good_cache(tmp_path):
    """A unit with fewer hits than k (image -1) is no damage: the second scan comes from the cache."""
    make_images(tmp_path / "im", n=2, bad=False)
    scans = [TopKScan(tiny_model(), TINY_SPEC, tmp_path / "im", ["features.4"], k=3, cache_dir=tmp_path / "c")
             for _ in range(2)]
    first, again = run_scan(scans[0]), run_scan(scans[1])
    meta = json.loads((scans[0].cache_path / "meta.json").read_text())
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", meta.pop("finished")), meta
    assert meta == {"folder": str(tmp_path / "im"), "layers": ["features.4"], "k": 3, "images": 2, "skipped": 0,
                    "spec": TINY_SPEC.to_dict(), "model": "TinyNet"}
    assert (first.layer("features.4").images[:, 2] == -1).all()
    assert again.from_cache and scans[1].notices == [] and again.hits("features.4", 0) == first.hits("features.4", 0)
    assert [t.name for t in again.layers.values()] == ["features.4"] == [t.name for t in first.layers.values()]
    assert (first.k, first.ranges, first.world_size, first.key) == (3, [], 1, scans[0].key)
    assert (again.k, again.ranges, again.key) == (3, [], scans[1].key) and scans[0].key == scans[1].key
    for t in (first.layer("features.4"), again.layer("features.4")):
        assert (t.values.dtype, t.images.dtype, t.ys.dtype, t.xs.dtype) == (np.float32, np.int64, np.int32, np.int32)


class Slow(nn.Module):
    """The tiny net, ``seconds`` slower per forward (a stand-in for a big model)."""

    def __init__(self, seconds):
        super().__init__()
        self.net, self.seconds = tiny_model(), seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return self.net(x)


def test_checkpoints_rate_eta_and_timings(tmp_path):
    """The partial file on disk while scanning, and the measured images/s and ETA of a resumed scan."""
    make_images(tmp_path / "im", n=16, bad=False)

    def scan(seconds, **kw):
        return TopKScan(Slow(seconds), TINY_SPEC, tmp_path / "im", ["net.features.4"], k=2, batch_size=4,
                        cache_dir=tmp_path / "c", **kw)
    s = scan(0.0, checkpoint_every=1000.0)
    partial = s.cache_path / "partial.npz"
    it = s.run()
    assert next(it).done == 4 and not partial.exists()            # no checkpoint before checkpoint_every
    assert next(it).done == 8
    s.cancel()
    assert list(it) == [] and s.result is None
    with np.load(partial) as z:
        assert int(z["next_index"]) == 8                           # stopping checkpoints where it stopped
    s, seen = scan(0.3, checkpoint_every=0.0), []
    t0 = time.perf_counter()
    for p in s.run():
        seen.append((p, time.perf_counter() - t0))
        if p.done < p.total:
            with np.load(partial) as z:
                assert int(z["next_index"]) == p.done and "v0" in z.files
    assert [p.done for p, _ in seen] == [12, 16] and not partial.exists()
    for j, (p, outer) in enumerate(seen):
        assert (p.done - 8) / outer <= p.images_per_s <= (p.done - 8) / (0.3 * (j + 1))   # this run's images only
        assert p.eta_s == pytest.approx((p.total - p.done) / p.images_per_s)
    assert 0.6 <= s.forward_s and 0.0 <= s.wait_s and s.forward_s + s.wait_s <= seen[-1][1]
    slow = TopKScan(Slow(1.05), TINY_SPEC, tmp_path / "im", ["net.features.4"], k=2, batch_size=1, use_cache=False)
    it = slow.run()
    p = next(it)
    it.close()
    assert p.images_per_s < 1 and p.eta_s == pytest.approx(15 / p.images_per_s)          # under 1 image/s too
