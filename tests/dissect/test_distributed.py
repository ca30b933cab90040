"""Done when: torchrun with 2 gloo ranks gives the same JSON as one process, and so do shards + merge.

One generated concept folder (48 images of 64 x 64, the shapes demo's input size), two layers of
the shapes demo, batches of 8: a one-process ``cnnvis dissect``, a torchrun run of 2 ranks, and 2
shards run twice (pass 1, merge for the thresholds, the tally, merge) must write the same JSON
apart from ``world_size`` and ``from_cache``.  A torchrun start costs seconds: module fixtures.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnvis_gui.cli import main

from .helpers import make_concepts

ROOT = Path(__file__).resolve().parents[2]
LAYERS = "features.10,features.14"
COMMON = ["--model", "shapes", "--device", "cpu", "--layer", LAYERS, "--quantile", "0.02", "--batch-size", "8", "-q"]
RUN_FIELDS = ("world_size", "from_cache")


def _needs_demo():
    if not (ROOT / "assets" / "models" / "shapes.pth").is_file():
        pytest.skip("the shapes demo checkpoint is not in the tree")


def _doc(path: Path) -> dict:
    d = json.loads(path.read_text())
    return {k: v for k, v in d.items() if k not in RUN_FIELDS}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    _needs_demo()
    t = tmp_path_factory.mktemp("dissect-dist")
    make_concepts(t / "concepts", n=48, seed=2, size=(64, 64))
    (t / "concepts" / "images" / "broken.png").write_bytes(b"not a png")       # skipped, listed
    (t / "concepts" / "masks" / "broken.png").write_bytes(b"not a png")
    return t


@pytest.fixture(scope="module")
def one_process(tmp):
    out = tmp / "one.json"
    assert main(["dissect", *COMMON, "--concepts", str(tmp / "concepts"), "--cache-dir", str(tmp / "c1"),
                 "--json", str(out)]) == 0
    return _doc(out)


def test_torchrun_with_two_ranks_writes_the_one_process_json(tmp, one_process):
    out = tmp / "tr.json"
    env = dict(os.environ, CNNVIS_CACHE_DIR=str(tmp / "c-tr"), PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "cnnvis_gui", "dissect", *COMMON, "--concepts", str(tmp / "concepts"), "--json", str(out)],
                       capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _doc(out) == one_process
    assert json.loads(out.read_text())["world_size"] == 2
    assert one_process["images"] == 48 and [s["path"] for s in one_process["skipped"]] == ["images/broken.png"]
    # rank 0 kept the merged result where a one-process run (the app) finds it
    from cnnvis_gui.dissect import load_dissection
    from cnnvis_gui.models import demo
    lm = demo("shapes", device="cpu")
    res = load_dissection(lm.model, lm.spec, tmp / "concepts", LAYERS.split(","), 0.02, cache_dir=tmp / "c-tr")
    assert res is not None and res.layer("features.14").units[3].iou == one_process["layers"][1]["units"][3]["iou"]


@pytest.mark.parametrize("budget", ["4G", "1K"])
def test_shards_and_merge_write_the_one_process_json(tmp, one_process, budget, capsys):
    """Exact (the maps kept) and streaming (past a 1 KB budget: the sketch merges exactly too)."""
    cache = tmp / f"c-sh-{budget}"
    parts = [tmp / f"part{budget}-{i}" for i in range(2)]
    shard = [*COMMON, "--concepts", str(tmp / "concepts"), "--cache-dir", str(cache), "--memory-budget", budget]
    for i, p in enumerate(parts):
        assert main(["dissect", *shard, "--shard", f"{i}/2", "--out", str(p)]) == 0
    out = tmp / f"merged-{budget}.json"
    assert main(["dissect", "merge", *map(str, reversed(parts)), "--json", str(out), "--cache-dir", str(cache)]) == 0
    thresholds = tmp / f"merged-{budget}.thresholds.json"
    assert thresholds.is_file() and not out.exists()
    for i, p in enumerate(parts):
        assert main(["dissect", *shard, "--shard", f"{i}/2", "--thresholds", str(thresholds), "--out", str(p)]) == 0
    assert main(["dissect", "merge", "--model", "shapes", "--device", "cpu", *map(str, parts), "--json", str(out),
                 "--cache-dir", str(cache)]) == 0
    if budget == "4G":
        assert _doc(out) == one_process
        # kept where a one-process run finds it: the model given to merge is the shards' own
        from cnnvis_gui.dissect import load_dissection
        from cnnvis_gui.models import demo
        lm = demo("shapes", device="cpu")
        res = load_dissection(lm.model, lm.spec, tmp / "concepts", LAYERS.split(","), 0.02, cache_dir=cache)
        assert res is not None and res.from_cache
        capsys.readouterr()
        assert main(["dissect", "merge", "--model", "glyphs", "--device", "cpu", *map(str, parts), "--json",
                     str(tmp / "other.json"), "--cache-dir", str(cache)]) == 2
        assert "is not the one the shards dissected" in capsys.readouterr().err
        assert not (tmp / "other.json").exists()
    else:                                                # streaming: the same as one streaming process
        single = tmp / "one-streaming.json"
        assert main(["dissect", *COMMON, "--concepts", str(tmp / "concepts"), "--memory-budget", "1K",
                     "--no-cache", "--json", str(single)]) == 0
        assert _doc(out) == _doc(single)
        assert _doc(out)["quantile_method"].startswith("streaming")
        for a, b in zip(_doc(single)["layers"][1]["units"], one_process["layers"][1]["units"]):
            assert a["threshold"] == pytest.approx(b["threshold"], rel=0.011)   # the sketch's stated bound
    capsys.readouterr()
    # parts of different dissections are refused, naming the difference
    other = tmp / f"other-{budget}"
    assert main(["dissect", *shard, "--quantile", "0.05", "--shard", "1/2", "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["dissect", "merge", str(parts[0]), str(other), "--json", str(tmp / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "different quantile Q (--quantile): 0.02 vs 0.05" in err and "Traceback" not in err
    assert not (tmp / "bad.json").exists()
