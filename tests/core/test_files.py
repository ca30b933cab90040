"""The one atomic writer (core/files.py): whole files or none, the earlier file kept byte for byte when a
write fails (a writer that fails mid-way, a file size limit in a subprocess), nothing outside the folder."""
from __future__ import annotations

import os
import resource
import subprocess
import sys

import numpy as np
import pytest

from cnnvis_gui.core import files
from cnnvis_gui.core.files import (WriteError, atomic_save_npz, atomic_write_bytes, atomic_write_image,
                                   file_name_part, output_path)

from ..waits import CHILD_S


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_write_replaces_the_file_whole_with_the_umask_mode(tmp_path):
    p = tmp_path / "a.bin"
    atomic_write_bytes(p, b"first")
    atomic_write_bytes(p, b"second, longer")
    assert p.read_bytes() == b"second, longer"
    assert (p.stat().st_mode & 0o777) == 0o666 & ~files._umask()
    assert _leftovers(tmp_path) == []


class _FailingFile:
    """An open file whose writes fail after ``budget`` bytes with ENOSPC, as on a full disk."""

    def __init__(self, f, budget):
        self.f, self.budget = f, budget

    def write(self, data):
        if len(data) > self.budget:
            self.f.write(bytes(data[:self.budget]))
            raise OSError(28, "No space left on device")
        self.budget -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False


def test_a_disk_that_fills_mid_write_keeps_the_earlier_file_byte_for_byte(tmp_path, monkeypatch):
    p = tmp_path / "raw.npz"
    atomic_save_npz(p, a=np.arange(1000))
    before = p.read_bytes()
    real = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: _FailingFile(real(fd, mode), 100))
    with pytest.raises(WriteError) as e:
        atomic_save_npz(p, a=np.arange(5000))
    msg = str(e.value)
    assert "no space left on the device" in msg and str(tmp_path) in msg and "unchanged" in msg
    assert "\n" not in msg and e.value.path == p and e.value.errno == 28
    assert p.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_a_file_size_limit_in_a_real_process_keeps_the_earlier_file(tmp_path):
    """RLIMIT_FSIZE: the kernel refuses the write (EFBIG) like a full disk; the real writer, no mocks."""
    p = tmp_path / "result.npz"
    p.write_bytes(b"E" * 3000)
    code = ("import sys\nfrom cnnvis_gui.core.files import atomic_write_bytes, WriteError\n"
            "try:\n    atomic_write_bytes(sys.argv[1], b'N' * 20000)\n"
            "except WriteError as e:\n    print(e)\n    sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=CHILD_S,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000)))
    assert r.returncode == 3, r.stderr
    assert "larger than allowed" in r.stdout and str(p) in r.stdout
    assert p.read_bytes() == b"E" * 3000
    assert _leftovers(tmp_path) == []


def test_targets_that_are_not_regular_files_are_refused_not_replaced(tmp_path):
    d = tmp_path / "out.png"
    d.mkdir()
    with pytest.raises(WriteError, match="is a folder"):
        atomic_write_bytes(d, b"x")
    assert d.is_dir()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(WriteError, match="not a regular file"):
        atomic_write_bytes(fifo, b"x")
    assert not fifo.is_file() and fifo.exists()


def test_a_read_only_folder_says_so(tmp_path, monkeypatch):
    def ro(*a, **k):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(files.tempfile, "mkstemp", ro)
    with pytest.raises(WriteError, match="read-only file system; choose another folder"):
        atomic_write_bytes(tmp_path / "a", b"x")
    with pytest.raises(WriteError, match="read-only file system; run with --no-cache"):
        atomic_write_bytes(tmp_path / "a", b"x", hint="run with --no-cache")


def test_images_are_encoded_by_extension_and_a_bad_one_is_a_write_error(tmp_path):
    import cv2
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200                               # red
    atomic_write_image(tmp_path / "a.png", rgb)
    back = cv2.imread(str(tmp_path / "a.png"))
    assert back.shape == (4, 5, 3) and back[0, 0].tolist() == [0, 0, 200]     # BGR on disk
    with pytest.raises(WriteError, match="cannot encode"):
        atomic_write_image(tmp_path / "a.nosuchformat", rgb)
    assert not (tmp_path / "a.nosuchformat").exists()


@pytest.mark.parametrize("name,want", [("..", "item"), (".", "item"), ("...", "item"), ("a/b", "a_b"),
                                       ("../../etc/passwd", "_.._etc_passwd"), ("\x1b[2Kx", "__2Kx"),
                                       ("ok-name_1.png", "ok-name_1.png"), ("", "item"), (".hidden", "hidden")])
def test_file_name_parts_never_leave_their_folder(tmp_path, name, want):
    part = file_name_part(name)
    assert part == want
    assert output_path(tmp_path, part).resolve().parent == tmp_path.resolve()


@pytest.mark.parametrize("bad", ["..", ".", "", "a/b", "/etc/passwd", "a\\b", "x\x00y"])
def test_output_path_refuses_anything_but_a_plain_name(tmp_path, bad):
    with pytest.raises(WriteError, match="not a plain file name"):
        output_path(tmp_path, "ok", bad)
