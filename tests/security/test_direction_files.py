"""A direction file named in an objective (``features.10:dir=v.npy``) is data, read with a bound.

The command line (``cnnvis optimize --objective``) and the window's *Objective* field read it through
one function, :func:`cnnvis_gui.optvis.spec_text.read_direction`: ``allow_pickle=False`` (a pickled
object is refused, never run), a regular file of at most ``MAX_DIRECTION_BYTES``, and array headers
that may not declare more than that (a 200-byte file that declares 10^12 values is refused before
anything is allocated).  Each refusal is one line.
"""
import io
import os
import zipfile

import numpy as np
import pytest
import torch

from cnnvis_gui.core import CnnvisError
from cnnvis_gui.optvis.spec_text import MAX_DIRECTION_BYTES, parse_objective, read_direction


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)


def _refused(text, words):
    with pytest.raises(CnnvisError) as e:
        parse_objective(text, _Net())
    msg = str(e.value)
    assert words in msg and "\n" not in msg, msg
    return msg


def test_a_plain_vector_reads_from_npy_and_npz(tmp_path):
    np.save(tmp_path / "v.npy", np.array([1, 0, -0.5, 2], np.float64))
    np.savez_compressed(tmp_path / "v.npz", d=np.array([1, 0, -0.5, 2], np.float32))
    for name in ("v.npy", "v.npz"):
        np.testing.assert_array_equal(read_direction(tmp_path / name), [1, 0, -0.5, 2])
        assert parse_objective(f"conv:dir={tmp_path / name}", _Net()).layers == ("conv",)


def test_a_pickled_object_is_refused_and_never_run(tmp_path):
    ran = tmp_path / "ran"

    class Boom:
        def __reduce__(self):
            return (os.mkdir, (str(ran),))

    np.save(tmp_path / "p.npy", np.array([Boom()], dtype=object), allow_pickle=True)
    _refused(f"conv:dir={tmp_path / 'p.npy'}", "holds Python objects")
    buf = io.BytesIO()
    np.save(buf, np.array([Boom()], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "p.npz", "w") as z:
        z.writestr("d.npy", buf.getvalue())
    _refused(f"conv:dir={tmp_path / 'p.npz'}", "holds Python objects")
    assert not ran.exists()


def _declaring(shape) -> bytes:
    """A .npy header that declares ``shape`` float64 values, followed by 8 bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 8


def test_a_header_that_declares_too_much_is_refused_before_allocating(tmp_path):
    (tmp_path / "big.npy").write_bytes(_declaring((10 ** 12,)))
    msg = _refused(f"conv:dir={tmp_path / 'big.npy'}", "declares 8,000,000,000,000 bytes")
    assert f"{MAX_DIRECTION_BYTES:,}" in msg
    with zipfile.ZipFile(tmp_path / "big.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("d.npy", _declaring((10 ** 12,)))
    _refused(f"conv:dir={tmp_path / 'big.npz'}", "declares 8,000,000,000,000 bytes")


def test_a_file_past_the_bound_a_fifo_and_a_folder_are_refused_by_what_they_are(tmp_path):
    with open(tmp_path / "huge.npy", "wb") as f:
        f.truncate(MAX_DIRECTION_BYTES + 1)                   # sparse: no disk taken
    _refused(f"conv:dir={tmp_path / 'huge.npy'}", "more than the")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "f.npy")
        _refused(f"conv:dir={tmp_path / 'f.npy'}", "FIFO")      # not opened for reading: no hang
    (tmp_path / "d.npy").mkdir()
    _refused(f"conv:dir={tmp_path / 'd.npy'}", "is a folder")
    _refused(f"conv:dir={tmp_path / 'missing.npy'}", "not found")


def test_several_arrays_garbage_and_a_wrong_length_are_one_line(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.ones(4), b=np.ones(4))
    _refused(f"conv:dir={tmp_path / 'two.npz'}", "holds 2 arrays (a, b)")
    (tmp_path / "junk.npy").write_bytes(b"not an array at all")
    _refused(f"conv:dir={tmp_path / 'junk.npy'}", "cannot read the direction file")
