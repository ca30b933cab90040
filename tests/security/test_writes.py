"""Writes stay where the user pointed, whole or not at all (issue 24: "writes outside where the user pointed,
torn or false saves").  Files outside the output folder and files written before are compared byte for byte."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cnnvis_gui.cli import main
from tests.atlas.helpers import make_images
from tests.cli.test_cli import _env
from tests.waits import CHILD_S

REPO = Path(__file__).resolve().parents[2]
SHAPES = ["--model", "shapes", "--device", "cpu"]


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _limited(args, fsize: int, cwd=None, env=None):
    """``python -m cnnvis_gui ARGS`` with a file size limit: writes past ``fsize`` bytes fail (EFBIG) as on a full disk."""
    return subprocess.run([sys.executable, "-m", "cnnvis_gui", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env or _env(), timeout=CHILD_S,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize)))


# ---------------------------------------------------------------------------- export
def test_export_writes_inside_out_whatever_the_input_is_called(tmp_path, capsys):
    """``Path('...png').stem == '..'``: the picture folder must not become --out/.. (which holds a victim)."""
    data = tmp_path / "data"
    data.mkdir()
    img = np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)
    for name in ("...png", "..png", ".png"):
        cv2.imwrite(str(data / "x.png"), img)
        (data / "x.png").rename(data / name)
    out = tmp_path / "work" / "out"
    out.mkdir(parents=True)
    victim = tmp_path / "work" / "input.png"             # what --out/../input.png would replace
    victim.write_bytes(b"the user's own file")
    outside = _snapshot(tmp_path / "work") | {"../data/" + k: v for k, v in _snapshot(data).items()}
    for name in ("...png", "..png", ".png"):
        assert main(["export", *SHAPES, "--input", str(data / name), "--layer", "features.0", "--units", "0",
                     "--out", str(out), "-q"]) == 0, capsys.readouterr().err
    assert victim.read_bytes() == b"the user's own file"
    assert {k: v for k, v in _snapshot(tmp_path / "work").items() if not k.startswith("out/")} == \
        {k: v for k, v in outside.items() if not k.startswith("../")}
    folders = sorted(p.name for p in out.iterdir())
    assert folders and all(p.resolve().parent == out.resolve() for p in out.iterdir())
    assert all(not name.startswith(".") for name in folders), folders


def test_export_on_a_full_disk_keeps_every_earlier_file_and_says_so(tmp_path):
    img = tmp_path / "cat.png"
    cv2.imwrite(str(img), np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8))
    out = tmp_path / "out"
    cmd = ["export", *SHAPES, "--input", img, "--layer", "features.0", "--units", "0-3", "--raw", "--out", out, "-q"]
    assert main([str(a) for a in cmd]) == 0
    before = _snapshot(out)
    # a second run with other maps, under a file size limit the raw .npz cannot fit in
    r = _limited([*cmd, "--method", "gradient"], fsize=max(len(v) for k, v in before.items() if k.endswith(".png")) + 1)
    assert r.returncode == 1, r.stderr
    lines = [s for s in r.stderr.strip().splitlines() if not s.startswith("cnnvis: warning: ")]
    assert len(lines) == 1 and lines[0].startswith("cnnvis: error: cannot write '") and "Traceback" not in r.stderr
    assert "the file is larger than allowed" in lines[0] and "the earlier file, if any, is unchanged" in lines[0]
    after = _snapshot(out)
    assert after["cat/raw.npz"] == before["cat/raw.npz"]           # the failed write left it byte for byte
    assert not [k for k in after if k.endswith(".tmp")]
    for k, v in after.items():                                    # every file whole: the old one or a new one
        if k.endswith(".png"):
            assert cv2.imdecode(np.frombuffer(v, np.uint8), cv2.IMREAD_UNCHANGED) is not None, k


# ---------------------------------------------------------------------------- atlas merge
@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    t = tmp_path_factory.mktemp("shards")
    make_images(t / "im", n=16, seed=2, bad=False)
    dirs = [t / f"s{i}" for i in range(2)]
    for i, d in enumerate(dirs):
        assert main(["atlas", *SHAPES, "--images", str(t / "im"), "--layer", "features.3", "--top", "2",
                     "--batch-size", "4", "--shard", f"{i}/2", "--cache-dir", str(t / "shard-cache"), "-q",
                     "--out", str(d)]) == 0
    return t, dirs


def _copy_parts(dirs, to: Path) -> list:
    out = []
    for d in dirs:
        c = to / d.name
        c.mkdir(parents=True)
        for f in d.iterdir():
            (c / f.name).write_bytes(f.read_bytes())
        out.append(c)
    return out


def _merge(parts, out, cache, *extra):
    return main(["atlas", "merge", *SHAPES, *map(str, parts), "--no-montage", "--cache-dir", str(cache), "-q",
                 *extra, "--out", str(out)])


def test_a_part_cannot_steer_the_cache_path(shards, tmp_path, capsys):
    t, dirs = shards
    parts = _copy_parts(dirs, tmp_path / "parts")
    cache = tmp_path / "box" / "cache"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "result.npz").write_bytes(b"precious")
    (victim / "meta.json").write_bytes(b"{}")
    for p in parts:                       # cache/scan-<key> with key x/../../../victim is tmp_path/victim
        meta = json.loads((p / "atlas-part.json").read_text())
        meta["scan_key"] = "x/../../../victim"
        (p / "atlas-part.json").write_text(json.dumps(meta))
    assert _merge(parts, tmp_path / "out", cache) == 0, capsys.readouterr().err
    assert (victim / "result.npz").read_bytes() == b"precious" and (victim / "meta.json").read_bytes() == b"{}"
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "parts" not in p.parts]
    assert all(cache in p.parents or (tmp_path / "out") in p.parents or victim in p.parents for p in written)
    keys = [p.name for p in cache.iterdir()]
    assert len(keys) == 1 and keys[0].startswith("scan-") and len(keys[0]) == 5 + 24
    # ... and it is where a one-process scan of the same folder looks
    from cnnvis_gui.atlas import load_scan
    from cnnvis_gui.models import demo
    lm = demo("shapes", device="cpu")
    res = load_scan(lm.model, lm.spec, (t / "im").resolve(), ["features.3"], k=2, cache_dir=cache)
    assert res is not None and res.from_cache


def _poison(part: Path, change) -> None:
    """Rewrite a part's arrays with ``change(arrays) -> {name: array}`` (a hand-edited or crafted part)."""
    with np.load(part / "atlas-part.npz") as z:
        d = {k: z[k] for k in z.files}
    d.update(change(d))
    np.savez(part / "atlas-part.npz", **d)


def test_parts_that_do_not_fit_the_model_merge_nothing_into_the_cache(shards, tmp_path, capsys):
    t, dirs = shards
    cases = {
        # 3 units for a layer the model gives 16 (with a shape that agrees with itself)
        "units": lambda d: dict(v0=d["v0"][:3], i0=d["i0"][:3], y0=d["y0"][:3], x0=d["x0"][:3],
                                s0=np.array([3, *d["s0"][1:]], np.int64)),
        # a whole layer of the wrong map size
        "map": lambda d: dict(s0=np.array([d["s0"][0], d["s0"][1] * 4, d["s0"][2] * 4], np.int64)),
        # a hit outside the map
        "position": lambda d: dict(y0=np.full(d["y0"].shape, 10 ** 6, np.int32)),
    }
    words = {"units": "has output shape 3x", "map": "has output shape", "position": "positions outside"}
    for name, poison in cases.items():
        parts = _copy_parts(dirs, tmp_path / name)
        for p in parts:
            _poison(p, poison)
        cache = tmp_path / f"cache-{name}"
        capsys.readouterr()
        assert _merge(parts, tmp_path / f"out-{name}", cache) == 2
        err = capsys.readouterr().err
        assert words[name] in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not cache.exists() or not list(cache.rglob("*.npz")), name
        assert not (tmp_path / f"out-{name}" / "atlas.json").exists()


def test_a_merge_without_the_model_is_not_cached(shards, tmp_path, capsys):
    _, dirs = shards
    cache = tmp_path / "cache"
    assert main(["atlas", "merge", *map(str, dirs), "--no-montage", "--cache-dir", str(cache),
                 "--out", str(tmp_path / "out")]) == 0
    assert "not cached (give the model options to check the parts against the model)" in capsys.readouterr().out
    assert not cache.exists() or not list(cache.rglob("*.npz"))


def test_a_full_cache_disk_names_the_cache_folder_and_the_way_out(tmp_path):
    make_images(tmp_path / "im", n=12, seed=4, bad=False)
    cache = tmp_path / "cache"
    env = dict(_env(), CNNVIS_CACHE_DIR=str(cache))
    r = _limited(["atlas", *SHAPES, "--images", tmp_path / "im", "--layer", "features.14", "--top", "3",
                  "--no-montage", "-q", "--out", tmp_path / "out"], fsize=2000, env=env)
    assert r.returncode == 1, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("cnnvis: error: cannot write '") and str(cache) in line
    assert (f"the atlas cache is kept in '{cache}': free some space there, point --cache-dir or CNNVIS_CACHE_DIR at "
            f"another folder, or run with --no-cache") in line
    assert not list(cache.rglob("*.tmp")) and not list(cache.rglob("result.npz"))


# ---------------------------------------------------------------------------- the window
def test_window_saves_are_atomic_and_failures_are_reported(qtbot, window, tmp_path, monkeypatch):
    from PyQt5 import QtWidgets

    from cnnvis_gui.core import files
    from tests.core.test_files import _FailingFile
    from tests.waits import idle

    idle(qtbot, window)
    npz = window.save_npz(tmp_path / "a.npz")
    before = npz.read_bytes()
    real = files.os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: _FailingFile(real(fd, mode), 64))   # the disk fills
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", lambda *a, **k: (str(npz), ""))
    monkeypatch.setattr(QtWidgets.QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path / "png"))
    window.saver.save_npz_dialog()
    assert npz.read_bytes() == before                                     # the earlier .npz is whole
    assert "save: cannot write" in window.status_text() and "no space left" in window.status_text()
    window.saver.save_pngs_dialog()
    text = window.status_text()
    assert "saved" not in text.replace("were saved", "").replace("was saved", "") and "none was saved" in text
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".npz"]
