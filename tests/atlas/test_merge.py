"""Shards of a top-k scan and their exact merge (``atlas.merge``), in process with the tiny model.

The reference for the merge is a brute force written out here: per unit, every image's value,
sorted by value descending then listing index ascending, first k.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnvis_gui.atlas import merge as M
from cnnvis_gui.atlas.distributed import world_from_env
from cnnvis_gui.atlas.scan import TopKScan, shard_range
from cnnvis_gui.core import CnnvisError

from ..waits import CHILD_S
from .helpers import TINY_SPEC, make_images, run_scan, tiny_model

ROOT = Path(__file__).resolve().parents[2]


def brute_topk(values: np.ndarray, images: np.ndarray, k: int):
    """values: units x n (one value per image), images: n listing indices -> (v, im) units x k, padded."""
    units = values.shape[0]
    out_v = np.full((units, k), -np.inf, np.float32)
    out_i = np.full((units, k), -1, np.int64)
    for u in range(units):
        order = sorted(range(values.shape[1]), key=lambda j: (-values[u, j], images[j]))
        order = [j for j in order if values[u, j] > -np.inf][:k]
        out_v[u, :len(order)] = values[u, order]
        out_i[u, :len(order)] = images[order]
    return out_v, out_i


@pytest.mark.parametrize("seed", range(4))
def test_merge_topk_equals_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    units, n, k = 7, 60, 5
    values = rng.integers(0, 4, (units, n)).astype(np.float32)        # many ties
    values[rng.random((units, n)) < 0.1] = -np.inf                    # NaN activations become -inf
    images = np.arange(n)
    cuts = np.sort(rng.choice(np.arange(1, n), size=int(rng.integers(1, 6)), replace=False))
    bounds = [0, *cuts.tolist(), n]
    tables = []
    for a, b in zip(bounds, bounds[1:]):
        v, im = brute_topk(values[:, a:b], images[a:b], k)
        tables.append((v, im, np.zeros_like(im, np.int32), im.astype(np.int32) % 3))
    rng.shuffle(tables)                                                # the merge does not need them in order
    v, im, _, x = M.merge_topk(tables, k)
    ev, ei = brute_topk(values, images, k)
    assert np.array_equal(im, ei) and np.array_equal(v, ev)
    assert np.array_equal(x[im >= 0], (im[im >= 0] % 3))                # positions travel with their image


def test_shard_range_is_whole_batches_that_tile_the_listing():
    for total in (0, 1, 7, 64, 200, 201, 1000):
        for count in (1, 2, 3, 5):
            for batch in (1, 4, 64):
                ranges = [shard_range(total, i, count, batch) for i in range(count)]
                assert ranges[0][0] == 0 and ranges[-1][1] == total
                assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
                assert all(a % batch == 0 and (b % batch == 0 or b == total) for a, b in ranges)
                sizes = [b - a for a, b in ranges]
                assert max(sizes) - min(sizes) <= batch         # as even as whole batches allow
    assert shard_range(200, 0, 2, 64) == (0, 128) and shard_range(200, 1, 2, 64) == (128, 200)
    with pytest.raises(CnnvisError):
        shard_range(10, 2, 2, 4)


def _folder_with_duplicates(root):
    """Images with exact duplicates spread over the listing: equal activations in different shards."""
    paths = make_images(root, n=24, seed=3, bad=True)
    for j, p in enumerate(paths[:6]):
        shutil.copy(p, root / "a" / f"zz_copy{j:02d}.png")          # listed last, ties with an early image
    return root


def _parts(folder, cache, count, batch=4, k=3, model=None, layers=("features.3", "output"), only=None):
    parts = []
    for i in (range(count) if only is None else [only]):
        s = TopKScan(model or tiny_model(), TINY_SPEC, folder, list(layers), k=k, batch_size=batch,
                     cache_dir=cache, shard=(i, count))
        run_scan(s)
        parts.append(M.part_from_scan(s, "tiny"))
        parts[-1].label = f"part{i}"
    return parts if only is None else parts[0]


@pytest.mark.parametrize("count", [2, 3])
def test_shards_merge_to_the_one_process_scan(tmp_path, count):
    folder = _folder_with_duplicates(tmp_path / "im")
    whole = run_scan(TopKScan(tiny_model(), TINY_SPEC, folder, ["features.3", "output"], k=3, batch_size=4,
                              cache_dir=tmp_path / "c1"))
    parts = _parts(folder, tmp_path / "c2", count)
    assert sum(b - a for a, b in (p.range for p in parts)) == len(whole.paths)
    layers, skipped, ranges, meta = M.merge_parts(list(reversed(parts)))
    assert skipped == whole.skipped and ranges == [p.range for p in parts]
    for name, t in whole.layers.items():
        m = layers[name]
        for a in ("values", "images", "ys", "xs"):
            assert np.array_equal(getattr(m, a), getattr(t, a)), (name, a)
    # the duplicates really tie: some unit holds an image and its copy, the first-listed one first
    out = whole.layers["features.3"]
    copies = {whole.paths.index(p) for p in whole.paths if "zz_copy" in p}
    assert any(set(out.images[u]) & copies for u in range(out.units))


def test_parts_round_trip_through_files(tmp_path):
    folder = _folder_with_duplicates(tmp_path / "im")
    parts = _parts(folder, tmp_path / "c", 2)
    for i, p in enumerate(parts):
        M.write_part(tmp_path / f"p{i}", p)
    back = [M.read_part(tmp_path / f"p{i}") for i in range(2)]
    a, b = M.merge_parts(parts), M.merge_parts(back)
    assert a[1] == b[1] and a[2] == b[2]
    # the skipped file keeps its reason through the part files (what atlas.json shows the user)
    assert ("b/broken.png", "'broken.png' could not be decoded as an image (corrupt or unsupported format)") in b[1]
    for name in a[0]:
        assert np.array_equal(a[0][name].values, b[0][name].values)
        assert np.array_equal(a[0][name].images, b[0][name].images)
        assert a[0][name].shape == b[0][name].shape
    # a damaged part is refused with one line, never merged
    z = dict(np.load(tmp_path / "p1" / M.PART_NPZ))
    z["i0"] = z["i0"].copy()
    z["i0"][0, 0] = 0                                            # an image of the other slice
    np.savez(tmp_path / "p1" / M.PART_NPZ, **z)
    with pytest.raises(CnnvisError, match="damaged or incomplete part .*outside the part's slice"):
        M.read_part(tmp_path / "p1")
    # a part that stopped before the end of its slice is not a finished part
    z = dict(np.load(tmp_path / "p0" / M.PART_NPZ))
    z["next_index"] = np.asarray(int(z["next_index"]) - 1)
    np.savez(tmp_path / "p0" / M.PART_NPZ, **z)
    with pytest.raises(CnnvisError, match="damaged or incomplete part .*covers"):
        M.read_part(tmp_path / "p0")
    (tmp_path / "p1" / M.PART_NPZ).write_bytes(b"truncated")
    with pytest.raises(CnnvisError, match="damaged or incomplete part"):
        M.read_part(tmp_path / "p1")


def test_an_empty_slice_is_a_part_without_layers(tmp_path):
    folder = tmp_path / "im"
    make_images(folder, n=6, bad=False)
    parts = _parts(folder, tmp_path / "c", 4, batch=4)        # 2 batches for 4 slices: two are empty
    assert [p.range for p in parts] == [(0, 0), (0, 4), (4, 4), (4, 6)]
    assert parts[0].layers == {} and parts[1].layers
    whole = run_scan(TopKScan(tiny_model(), TINY_SPEC, folder, ["features.3", "output"], k=3, batch_size=4,
                              use_cache=False))
    layers = M.merge_parts(parts)[0]
    assert np.array_equal(layers[""].images, whole.layers[""].images)       # "" = the model output


def test_mismatched_parts_are_refused_naming_the_difference(tmp_path):
    folder = _folder_with_duplicates(tmp_path / "im")
    p0, p1 = _parts(folder, tmp_path / "c", 2)
    k5 = _parts(folder, tmp_path / "c", 2, k=5, only=1)
    other_w = _parts(folder, tmp_path / "c", 2, model=tiny_model(seed=1), only=1)
    other_layers = _parts(folder, tmp_path / "c", 2, layers=("output",), only=1)
    other = tmp_path / "other"
    make_images(other, n=24, seed=3, bad=True)
    other_folder = _parts(other, tmp_path / "c", 2, only=1)
    for part, words in ((k5, "different k (--top): 3 vs 5"), (other_w, "different model weights"),
                        (other_layers, "different layers"), (other_folder, "different image folder")):
        with pytest.raises(CnnvisError, match=r"cannot merge part0 and part1: ") as e:
            M.merge_parts([p0, part])
        assert words in str(e.value)
    with pytest.raises(CnnvisError, match="shard 1/2 missing"):
        M.merge_parts([p0])
    with pytest.raises(CnnvisError, match="both shard 0/2"):
        M.merge_parts([p0, p0])
    with pytest.raises(CnnvisError, match=r"number of shards"):
        M.merge_parts([p0, _parts(folder, tmp_path / "c", 3, only=1)])
    with pytest.raises(CnnvisError, match="has no readable atlas-part.json"):
        M.read_part(tmp_path)
    assert M.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(CnnvisError, match="--shard"):
            M.parse_shard(bad)


def test_a_stopped_shard_resumes_from_its_checkpoint(tmp_path):
    folder = tmp_path / "im"
    make_images(folder, n=40, bad=False)
    kw = dict(k=3, batch_size=4, cache_dir=tmp_path / "c", shard=(1, 2), checkpoint_every=0.0)
    s = TopKScan(tiny_model(), TINY_SPEC, folder, ["features.3"], **kw)
    assert s.range == (20, 40)
    it = s.run()
    seen = [next(it).done, next(it).done]
    it.close()                                   # stopped (a kill loses at most the batch since the checkpoint)
    assert seen == [4, 8] and s.result is None
    s2 = TopKScan(tiny_model(), TINY_SPEC, folder, ["features.3"], **kw)
    progress = [p.done for p in s2.run()]
    assert progress[0] == 12 and progress[-1] == 20           # continued after image 28, not from 20
    fresh = run_scan(TopKScan(tiny_model(), TINY_SPEC, folder, ["features.3"], **dict(kw, cache_dir=None),
                              use_cache=False))
    assert np.array_equal(s2.result.layers["features.3"].images, fresh.layers["features.3"].images)
    assert s2.result.ranges == [(20, 40)] and s2.result.images_per_rank == [20]


KILLED_SHARD = """
import os, sys
from tests.atlas.helpers import TINY_SPEC, tiny_model
from cnnvis_gui.atlas.scan import TopKScan
s = TopKScan(tiny_model(), TINY_SPEC, sys.argv[1], ["features.3"], k=3, batch_size=4, cache_dir=sys.argv[2],
             shard=(1, 2), checkpoint_every=0.0)
for p in s.run():
    if p.done == 8:
        os._exit(9)                  # killed: no finally, no checkpoint on the way out
"""


def test_a_killed_shard_resumes_from_its_last_checkpoint(tmp_path):
    folder = tmp_path / "im"
    make_images(folder, n=40, bad=False)
    r = subprocess.run([sys.executable, "-c", KILLED_SHARD, str(folder), str(tmp_path / "c")], cwd=str(ROOT),
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=CHILD_S)
    assert r.returncode == 9, r.stderr
    s = TopKScan(tiny_model(), TINY_SPEC, folder, ["features.3"], k=3, batch_size=4, cache_dir=tmp_path / "c",
                 shard=(1, 2))
    progress = [p.done for p in s.run()]
    assert progress[0] == 12 and progress[-1] == 20      # from the checkpoint written before progress 8
    fresh = run_scan(TopKScan(tiny_model(), TINY_SPEC, folder, ["features.3"], k=3, batch_size=4,
                              use_cache=False, shard=(1, 2)))
    for a in ("values", "images", "ys", "xs"):
        assert np.array_equal(getattr(s.result.layers["features.3"], a), getattr(fresh.layers["features.3"], a))


def test_world_from_env():
    assert world_from_env({}) is None
    assert world_from_env({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) is None
    w = world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (w.rank, w.size, w.local_rank, w.main) == (3, 4, 1, False) and str(w) == "rank 3 of 4"
    with pytest.raises(CnnvisError):
        world_from_env({"RANK": "4", "WORLD_SIZE": "4"})
