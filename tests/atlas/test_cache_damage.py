"""Damaged atlas cache files (result.npz, partial.npz) are no cache: a fresh scan, one notice, no crash.

A disk that filled up, a copy cut short, a file from another version: the user asked for an
atlas and must get the right one (the same as an uncached scan), told in one line that the
cache was damaged and rebuilt.
"""
import io
import zipfile

import numpy as np
import pytest

from cnnvis_gui.atlas import TopKScan, load_scan

from .helpers import TINY_SPEC, make_images, run_scan, tiny_model

LAYERS = ["features.4", "output"]


@pytest.fixture
def folder(tmp_path):
    f = tmp_path / "imgs"
    make_images(f, n=14, bad=False)
    return f


def _scan(folder, cdir, **kw):
    kw.setdefault("k", 3)
    kw.setdefault("batch_size", 4)
    return TopKScan(tiny_model(), TINY_SPEC, folder, LAYERS, cache_dir=cdir, **kw)


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _assert_same(res, ref):
    for name in LAYERS:
        name = "" if name == "output" else name
        for attr in ("values", "images", "ys", "xs"):
            np.testing.assert_array_equal(getattr(res.layer(name), attr), getattr(ref.layer(name), attr))


def _valid_arrays(folder, tmp_path):
    """The arrays of a good result.npz of this scan (to damage one by one)."""
    s = _scan(folder, tmp_path / "good")
    run_scan(s)
    with np.load(s.cache_path / "result.npz") as z:
        return {k: z[k] for k in z.files}


def _damages(good: dict) -> dict:
    n = int(good["next_index"])
    wrong_shape = dict(good, v0=good["v0"][:, :2])                       # k columns disagree
    bad_image = dict(good, i0=np.where(good["i0"] >= 0, good["i0"] + n, good["i0"]))   # beyond the listing
    no_layer = {k: v for k, v in good.items() if not k.endswith("1")}     # a layer missing
    whole = _npz_bytes(**good)
    return {
        "empty": b"",
        "garbage": b"\x00not a zip file\xff" * 40,
        "truncated": whole[: len(whole) // 2],
        "pickled": _npz_bytes(**dict(good, v0=np.array([object()], dtype=object))),
        "wrong shape": _npz_bytes(**wrong_shape),
        "image out of range": _npz_bytes(**bad_image),
        "layer missing": _npz_bytes(**no_layer),
        "negative index": _npz_bytes(**dict(good, next_index=np.array(-4, np.int64))),
        "crc": _corrupt_member(whole),
    }


def _corrupt_member(data: bytes) -> bytes:
    """A zip whose first member's bytes were flipped after writing (a CRC mismatch on read)."""
    zin = zipfile.ZipFile(io.BytesIO(data))
    info = zin.infolist()[0]
    raw = bytearray(data)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for j in range(start + 10, start + 40):
        raw[j] ^= 0xFF
    return bytes(raw)


def test_damaged_result_npz_is_rescanned_with_a_notice(folder, tmp_path):
    good = _valid_arrays(folder, tmp_path)
    ref = run_scan(TopKScan(tiny_model(), TINY_SPEC, folder, LAYERS, k=3, batch_size=4, use_cache=False))
    for what, data in _damages(good).items():
        cdir = tmp_path / what.replace(" ", "_")
        s = _scan(folder, cdir)
        s.cache_path.mkdir(parents=True)
        (s.cache_path / "result.npz").write_bytes(data)
        assert load_scan(tiny_model(), TINY_SPEC, folder, LAYERS, k=3, cache_dir=cdir) is None, what
        res = run_scan(s)
        assert res is not None and not res.from_cache, what
        _assert_same(res, ref)
        assert len(s.notices) == 1 and "damaged" in s.notices[0] and "result.npz" in s.notices[0], (what, s.notices)
        # the damaged file was replaced: the next open is a cache hit without a notice
        again = _scan(folder, cdir)
        assert again.cached() is not None and again.notices == [], what


def test_damaged_partial_npz_starts_over_with_a_notice(folder, tmp_path):
    good = _valid_arrays(folder, tmp_path)
    ref = run_scan(TopKScan(tiny_model(), TINY_SPEC, folder, LAYERS, k=3, batch_size=4, use_cache=False))
    damages = _damages(dict(good, next_index=np.array(8, np.int64)))
    for what, data in damages.items():
        cdir = tmp_path / ("p_" + what.replace(" ", "_"))
        s = _scan(folder, cdir)
        s.cache_path.mkdir(parents=True)
        (s.cache_path / "partial.npz").write_bytes(data)
        steps = [p.done for p in s.run()]
        assert steps[0] == 4, (what, steps)          # from the start: nothing of the damaged state is used
        _assert_same(s.result, ref)
        assert len(s.notices) == 1 and "partial.npz" in s.notices[0], (what, s.notices)


def test_a_good_partial_still_resumes_without_a_notice(folder, tmp_path):
    cdir = tmp_path / "c"
    s = _scan(folder, cdir)
    for p in s.run():
        if p.done >= 8:
            s.cancel()
    s2 = _scan(folder, cdir)
    assert [p.done for p in s2.run()][0] == 12 and s2.notices == []


def test_cli_atlas_says_the_cache_was_damaged_in_one_line(tmp_path, monkeypatch, capsys):
    from pathlib import Path
    if not (Path(__file__).resolve().parents[2] / "assets" / "models" / "glyphs.pth").is_file():
        pytest.skip("the glyphs demo checkpoint is not in the tree")
    from cnnvis_gui.cli import main
    cdir = tmp_path / "cache"
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(cdir))
    make_images(tmp_path / "im", n=6, bad=False)
    argv = ["atlas", "--model", "glyphs", "--device", "cpu", "--images", str(tmp_path / "im"), "--layer", "output",
            "--top", "2", "--no-montage", "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 0
    first = (tmp_path / "out" / "atlas.json").read_text()
    [result] = list(cdir.rglob("result.npz"))
    result.write_bytes(result.read_bytes()[:100])
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnvis: note: the atlas cache file") and "damaged" in err[0], err
    assert (tmp_path / "out" / "atlas.json").read_text() == first


def test_the_notice_says_what_is_wrong(folder, tmp_path):
    good = _valid_arrays(folder, tmp_path)
    cases = [("result.npz", dict(good, next_index=np.array(5, np.int64)), "covers 5 of 14 images"),
             ("partial.npz", dict(good, next_index=np.array(20, np.int64)), "stopped at image 20 outside 0..14"),
             ("partial.npz", dict(good, next_index=np.array(-1, np.int64)), "stopped at image -1 outside 0..14"),
             ("result.npz", dict(good, v0=good["v0"][:, :2]), "arrays of shape (%d, 2) for k=3" % len(good["v0"])),
             ("result.npz", dict(good, i0=good["i0"] + 100), "image indices outside the 14 images"),
             ("result.npz", dict(good, y0=good["y0"] - 50), "negative positions"),
             ("result.npz", dict(good, s0=good["s0"][1:]), "shape"),
             ("result.npz", dict(good, skipped_reasons=np.array(["x"])), "skipped files is inconsistent")]
    for i, (name, arrays, words) in enumerate(cases):
        s = _scan(folder, tmp_path / f"n{i}")
        s.cache_path.mkdir(parents=True)
        (s.cache_path / name).write_bytes(_npz_bytes(**arrays))
        run_scan(s)
        assert len(s.notices) == 1 and words in s.notices[0], (words, s.notices)


def test_a_partial_from_before_the_first_image_is_no_damage(folder, tmp_path):
    """A checkpoint at image 0 (nothing decoded yet: no layers) is a valid, empty start."""
    s = _scan(folder, tmp_path / "z")
    s.cache_path.mkdir(parents=True)
    (s.cache_path / "partial.npz").write_bytes(_npz_bytes(
        next_index=np.array(0, np.int64), skipped_paths=np.array([], dtype=str),
        skipped_reasons=np.array([], dtype=str)))
    assert [p.done for p in s.run()][0] == 4 and s.notices == []
