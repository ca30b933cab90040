"""Inputs that used to crash or mislead: non-UTF-8 file names, camera -1, unreadable and damaged files.

Each crash case runs in a child process, so a segfault fails the test instead of killing pytest.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest

from cnnvis_gui import sources
from cnnvis_gui.sources import SourceError
from cnnvis_gui.sources import base

from ..waits import CHILD_S


def run_child(code: str):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, errors="replace",
                       timeout=CHILD_S, env=env)
    assert r.returncode >= 0, f"killed by signal {-r.returncode}: {r.stderr[-2000:]}"
    return r


def png_bytes(value=90, size=(16, 16)) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((*size, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def bad_name_folder(tmp_path, ext=".png"):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "ok.png").write_bytes(png_bytes())
    try:
        with open(os.path.join(os.fsencode(d), b"bad\xff" + ext.encode()), "wb") as f:
            f.write(png_bytes(200))
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    return d


def test_folder_with_a_non_utf8_name_is_read_through_bytes(tmp_path):
    d = bad_name_folder(tmp_path)
    r = run_child(f"from cnnvis_gui import sources\ns = sources.open({str(d)!r})\n"
                  f"print(s.count)\nf = s.seek(0)\nprint(int(f.mean()))\nprint(s.seek(1).mean() > 0)")
    assert r.returncode == 0, r.stderr
    count, first, _ = r.stdout.split()
    assert count == "2" and first == "200"   # 'bad\xff.png' sorts first and decodes to its pixels


def test_video_with_a_non_utf8_name_is_refused_by_name(tmp_path):
    d = bad_name_folder(tmp_path, ext=".avi")
    bad = os.path.join(os.fsencode(d), b"bad\xff.avi")
    r = run_child(f"import os\nfrom cnnvis_gui import sources\n"
                  f"try:\n    sources.open(os.fsdecode({bad!r}))\n"
                  f"except sources.SourceError as e:\n    print(e)\n")
    assert r.returncode == 0, r.stderr
    assert "not valid UTF-8" in r.stdout and "rename" in r.stdout


def test_negative_camera_index_is_an_error_not_a_segfault():
    r = run_child("from cnnvis_gui import sources\n"
                  "for w in (-1, '-1', -3, '-3'):\n"
                  "    try:\n        sources.open(w)\n    except sources.SourceError as e:\n        print(e)\n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 4 and all(f"camera index {w} is not valid" in ln for w, ln in zip((-1, -1, -3, -3), lines))


def test_unreadable_file_says_permission_denied(tmp_path, monkeypatch):
    p = tmp_path / "locked.png"
    p.write_bytes(png_bytes())

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(base, "open", denied, raising=False)   # root ignores chmod 000: simulate it
    for what in (p, tmp_path / "clip.mp4"):
        what.write_bytes(b"x" * 10) if not what.exists() else None
        with pytest.raises(SourceError, match="permission denied") as ei:
            sources.open(what)
        assert "neither an image nor a video" not in str(ei.value)


def test_damaged_png_is_refused_by_us_not_by_libpng(tmp_path):
    good = bytearray(png_bytes())
    bad = bytearray(good)
    i = bad.index(b"IDAT") + 8
    bad[i] ^= 0xFF
    (tmp_path / "crc.png").write_bytes(bytes(bad))
    (tmp_path / "cut.png").write_bytes(bytes(good[:len(good) - 20]))
    assert base._png_problem(np.frombuffer(bytes(good), np.uint8)) is None
    with pytest.raises(SourceError, match=r"corrupt PNG: bad checksum in its IDAT chunk"):
        sources.load_image(tmp_path / "crc.png")
    with pytest.raises(SourceError, match=r"corrupt PNG: the file is truncated"):
        sources.load_image(tmp_path / "cut.png")
    # the checker agrees with zlib on every chunk of a real file
    data = bytes(good)
    pos = 8
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        assert zlib.crc32(data[pos + 4:pos + 8 + n]) == int.from_bytes(data[pos + 8 + n:pos + 12 + n], "big")
        pos += 12 + n


def test_broken_inputs_leave_stderr_to_us(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(os.urandom(4000))
    bad = bytearray(png_bytes())
    bad[bad.index(b"IDAT") + 8] ^= 0xFF
    (tmp_path / "crc.png").write_bytes(bytes(bad))
    r = run_child("from cnnvis_gui import sources\n"
                  f"for w in ({str(tmp_path / 'junk.mp4')!r}, {str(tmp_path / 'crc.png')!r}):\n"
                  "    try:\n        sources.open(w)\n    except sources.SourceError as e:\n        print(e)\n")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2
    assert r.stderr == "", r.stderr    # no "moov atom not found", no "libpng error"
