"""``cnnvis atlas`` past one process, end to end: torchrun (gloo, CPU), ``--shard I/N`` + ``atlas merge``.

The reference is the one-process ``cnnvis atlas`` run on the same ~200 generated images and two
layers: the torchrun atlas and the merged shards must be identical to it (hits, values, boxes,
montage bytes), apart from ``world_size`` / ``images_per_rank``.  A torchrun start costs
seconds, so each run is a module-scoped fixture shared by the assertions.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnvis_gui.cli import main

from ..waits import CHILD_S
from .helpers import make_images

ROOT = Path(__file__).resolve().parents[2]
LAYERS = "features.10,features.14"
COMMON = ["--model", "shapes", "--device", "cpu", "--layer", LAYERS, "--top", "4", "--batch-size", "32", "-q"]
RUN_FIELDS = ("world_size", "images_per_rank", "from_cache")

FAILING_NET = '''
import os

import torch
from torch import nn


class Net(nn.Module):
    """The same weights on every rank; a batch's forward raises a fatal error on rank 1."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        if os.environ.get("RANK") == "1" and x.shape[0] > 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated on rank 1)")
        return self.conv(x)
'''


def _needs_demo():
    if not (ROOT / "assets" / "models" / "shapes.pth").is_file():
        pytest.skip("the shapes demo checkpoint is not in the tree")


def _torchrun(args, tmp, timeout=CHILD_S):
    env = dict(os.environ, CNNVIS_CACHE_DIR=str(tmp / "cache-torchrun"), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cnnvis_gui", "atlas", *args]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=timeout)
    return r, time.monotonic() - t0


def _doc(out: Path) -> dict:
    return json.loads((out / "atlas.json").read_text())


def _same_atlas(a: dict, b: dict) -> None:
    assert {k: v for k, v in a.items() if k not in RUN_FIELDS} == {k: v for k, v in b.items() if k not in RUN_FIELDS}


def _cached_like_one_process(tmp, cache, reference: dict) -> None:
    """The merged scan is in the cache where a one-process scan (the app, ``load_scan``) looks."""
    from cnnvis_gui.atlas import load_scan
    from cnnvis_gui.models import demo

    lm = demo("shapes", device="cpu")
    res = load_scan(lm.model, lm.spec, (tmp / "im").resolve(), LAYERS.split(","), k=4, cache_dir=cache)
    assert res is not None and res.from_cache
    doc = res.to_dict()
    for layer in LAYERS.split(","):
        ref = reference["layers"][layer]["units"]
        assert [u["hits"] for u in doc["layers"][layer]["units"]] == \
            [[{k: v for k, v in h.items() if k != "box"} for h in u["hits"]] for u in ref]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    _needs_demo()
    t = tmp_path_factory.mktemp("dist")
    make_images(t / "im", n=200, seed=5)              # + one corrupt file: 201 listed, 1 skipped
    return t


@pytest.fixture(scope="module")
def one_process(tmp):
    out = tmp / "one"
    assert main(["atlas", *COMMON, "--images", str(tmp / "im"), "--units", "0", "--cache-dir", str(tmp / "c1"),
                 "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def torchrun_run(tmp):
    out = tmp / "tr"
    r, _ = _torchrun([*COMMON, "--images", str(tmp / "im"), "--units", "0", "--out", str(out)], tmp)
    return r, out


@pytest.fixture(scope="module")
def shards(tmp):
    dirs = [tmp / f"s{i}" for i in range(2)]
    for i, d in enumerate(dirs):
        assert main(["atlas", *COMMON, "--images", str(tmp / "im"), "--shard", f"{i}/2",
                     "--cache-dir", str(tmp / "c2"), "--out", str(d)]) == 0
    return dirs


def test_torchrun_atlas_equals_the_one_process_atlas(one_process, torchrun_run):
    r, out = torchrun_run
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _doc(one_process), _doc(out)
    _same_atlas(a, b)
    assert a["world_size"] == 1 and a["images_per_rank"] == [201]
    assert b["world_size"] == 2 and len(b["images_per_rank"]) == 2
    assert min(b["images_per_rank"]) > 0 and sum(b["images_per_rank"]) == 201
    assert all(len(u["hits"]) == 4 for u in b["layers"]["features.14"]["units"])
    for layer in LAYERS.split(","):
        m = b["layers"][layer]["units"][0]["montage"]
        assert (out / m).read_bytes() == (one_process / m).read_bytes()       # rank 0 cropped the same hits
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["atlas.json", "features.10/unit_0000.png", "features.14/unit_0000.png"]
    _cached_like_one_process(out.parent, out.parent / "cache-torchrun", a)


def test_shards_and_merge_equal_the_one_process_atlas(tmp, one_process, shards, capsys):
    out = tmp / "merged"
    capsys.readouterr()
    assert main(["atlas", "merge", "--model", "shapes", "--device", "cpu", *map(str, reversed(shards)),
                 "--units", "0", "--cache-dir", str(tmp / "c3"), "--out", str(out)]) == 0
    a, b = _doc(one_process), _doc(out)
    _same_atlas(a, b)
    assert b["world_size"] == 2 and b["images_per_rank"] == [96, 105]      # whole batches of 32: 3 and 4
    m = b["layers"]["features.10"]["units"][0]["montage"]
    assert (out / m).read_bytes() == (one_process / m).read_bytes()
    # without the model (no montages) the hits are the same too
    _cached_like_one_process(tmp, tmp / "c3", a)
    assert main(["atlas", "merge", *map(str, shards), "--no-montage", "--no-cache", "--out", str(tmp / "merged2")]) == 0
    c = _doc(tmp / "merged2")
    assert [u["hits"] for u in c["layers"]["features.14"]["units"]] == \
        [[{k: v for k, v in h.items() if k != "box"} for h in u["hits"]] for u in a["layers"]["features.14"]["units"]]


def test_merge_refuses_parts_of_different_scans(tmp, shards, capsys):
    other = tmp / "s1-k3"
    assert main(["atlas", *COMMON, "--top", "3", "--images", str(tmp / "im"),
                 "--shard", "1/2", "--cache-dir", str(tmp / "c2"), "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["atlas", "merge", str(shards[0]), str(other), "--no-montage", "--no-cache",
                 "--out", str(tmp / "bad")]) == 2
    err = capsys.readouterr().err
    assert "cannot merge" in err and "different k (--top): 4 vs 3" in err and "Traceback" not in err
    assert not (tmp / "bad" / "atlas.json").exists()
    # the montages need the model the parts were scanned with
    assert main(["atlas", "merge", "--model", "glyphs", "--device", "cpu", *map(str, shards), "--units", "0",
                 "--no-cache", "--out", str(tmp / "bad")]) == 2
    err = capsys.readouterr().err
    assert "is not the one the parts were scanned with" in err and "(--model shapes --device cpu)" in err
    assert main(["atlas", "merge", str(shards[0]), "--no-montage", "--no-cache", "--out", str(tmp / "bad")]) == 2
    assert "shard 1/2 missing" in capsys.readouterr().err


def test_a_failing_rank_ends_the_run_in_bounded_time(tmp):
    (tmp / "failnet.py").write_text(FAILING_NET)
    r, _ = _torchrun(["--model", f"{tmp / 'failnet.py'}:Net", "--input-size", "32", "--device", "cpu",
                      "--images", str(tmp / "im"), "--layer", "conv", "--batch-size", "32", "--no-montage",
                      "--out", str(tmp / "failed")], tmp, timeout=CHILD_S)
    assert r.returncode != 0                     # it ended by itself (a hung rank would hit CHILD_S: TimeoutExpired)
    assert "rank 1 of 2 failed" in r.stderr and "simulated on rank 1" in r.stderr
    assert not (tmp / "failed" / "atlas.json").exists()
