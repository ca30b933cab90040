"""The pickle scanner names the global that would really run, whatever strings a file pushes first.

Every hostile pickle here is written by hand (:mod:`.hostile_pickles`) and would call
``posix.system("touch MARKER")``.  A positive control unpickles it for real and sees the
marker appear; the loader must refuse the same bytes, name ``posix.system`` first, not name
the decoys, and leave no marker.
"""
from __future__ import annotations

import pickle
import pickletools

import pytest

from cnnvis_gui.models import UntrustedPickleError, read_weights
from cnnvis_gui.models.pickle_scan import COMPUTED_NAME, scan_globals

from .hostile_pickles import BUILDERS, as_legacy_file, as_zip_checkpoint, su


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_the_hostile_pickle_really_runs_its_command(tmp_path, name):
    """Positive control: the bytes are a working exploit (else the refusals below prove nothing)."""
    marker = tmp_path / "RAN"
    pickle.loads(BUILDERS[name](marker))
    assert marker.exists()


@pytest.mark.parametrize("container", [as_legacy_file, as_zip_checkpoint], ids=["legacy", "zip"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_the_refusal_names_posix_system_not_the_decoys(tmp_path, name, container):
    marker = tmp_path / "PWNED"
    p = container(tmp_path / "evil.pth", BUILDERS[name](marker))
    if name.startswith("proto0") and container is as_legacy_file:
        # a protocol-0 pickle is text: refused as a text file, never unpickled, trusted or not
        for trust in (False, True):
            with pytest.raises(Exception, match="is a text file"):
                read_weights(p, trust_pickle=trust)
        assert not marker.exists()
        return
    with pytest.raises(UntrustedPickleError) as ei:
        read_weights(p)
    assert not marker.exists(), "the pickle ran"
    e = ei.value
    assert e.globals[0] == "posix.system", e.globals
    msg = str(e)
    assert "refers to posix.system" in msg and "numpy.dtype" not in msg and "numpy.core" not in msg


def test_scan_follows_the_memo_exactly(tmp_path):
    data = BUILDERS["memo_decoy"](tmp_path / "m")
    scan = scan_globals(data)
    assert scan.globals == ["posix.system"] and scan.complete and scan.pickles == 1
    # what the old scan reported: the last two strings of the byte stream before STACK_GLOBAL
    strings = [a for op, a, _ in pickletools.genops(data) if op.name == "SHORT_BINUNICODE"]
    assert strings[-3:-1] == ["numpy", "dtype"]


def test_protocol_2_builtins_are_named_as_python_3_resolves_them():
    data = b"\x80\x02c__builtin__\neval\nq\x00X\x03\x00\x00\x001+1q\x01\x85q\x02Rq\x03."
    assert pickle.loads(data) == 2
    assert scan_globals(data).globals == ["builtins.eval"]


def test_a_computed_name_is_reported_as_such():
    # module name = str("posix") built by a call: STACK_GLOBAL takes a value the scan cannot know
    data = (b"\x80\x04cbuiltins\nstr\n" + su("posix") + b"\x85R" + su("system") + b"\x93" + su("true")
            + b"\x85R.")
    assert pickle.loads(data) == 0
    scan = scan_globals(data)
    assert scan.globals == ["builtins.str", COMPUTED_NAME]


@pytest.mark.parametrize("data,stopped", [
    (b"\x80\x04" + su("posix") + b"h\x07.", "memo key 7"),          # BINGET of nothing: the real one raises too
    (b"\x80\x04(\x93.", "underflow"),                               # STACK_GLOBAL with only a MARK
    (b"\x80\x04" + su("a") + su("b") + b"(\x93.", "underflow"),     # the names below a MARK are out of reach
    (b"\x80\x04\x82\xf1.", "extension code"),                      # an unregistered EXT1
])
def test_scan_stops_where_the_unpickler_raises(data, stopped):
    with pytest.raises(Exception):
        pickle.loads(data)
    scan = scan_globals(data)
    assert stopped in scan.stopped and not scan.complete and scan.globals == []


def test_scan_of_a_prefix_says_it_is_truncated(tmp_path):
    data = BUILDERS["memo_decoy"](tmp_path / "m")
    scan = scan_globals(data[:20], more_data=True)
    assert scan.truncated and not scan.complete


def test_real_checkpoints_scan_to_their_tensor_globals(tmp_path):
    import torch
    from torch import nn
    sd = nn.Conv2d(3, 4, 3).state_dict()
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "zip.pth")
    torch.save(sd, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    from cnnvis_gui.models.pickles import _classify_pickle
    for name in ("zip.pth", "legacy.pth"):
        kind, scan = _classify_pickle(tmp_path / name)
        assert kind == "broken" and scan.complete            # "broken": no Python objects beyond tensors
        assert "torch._utils._rebuild_tensor_v2" in scan.globals and "collections.OrderedDict" in scan.globals
    assert _classify_pickle(tmp_path / "legacy.pth")[1].pickles == 5


@pytest.mark.parametrize("data,names", [
    (b"c ollections\nOrderedDict\n)R.", [" ollections.OrderedDict"]),      # a space in a name (fuzz finding)
    ("cmodul\u00e9\nx\n0cposix\nsystem\n.".encode(), ["modul\u00e9.x", "posix.system"]),   # UTF-8 names
    (b"cposix\nsystem\np00012\n0g12\n.", ["posix.system"]),                  # a PUT index with leading zeros
])
def test_text_arguments_are_read_as_the_unpickler_reads_them(data, names):
    assert scan_globals(data).globals == names


def test_every_data_pkl_of_a_zip_is_scanned(tmp_path):
    """A crafted zip may list a harmless data.pkl first; torch reads the one under the first folder."""
    import zipfile
    from .hostile_pickles import memo_decoy
    p = tmp_path / "two.pth"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/version", "3\n")
        z.writestr("decoy/data.pkl", b"\x80\x02cnumpy\ndtype\n.")
        z.writestr("archive/data.pkl", memo_decoy(tmp_path / "PWNED"))
    from cnnvis_gui.models.pickles import _classify_pickle
    kind, scan = _classify_pickle(p)
    assert kind == "objects" and "posix.system" in scan.globals
    with pytest.raises(UntrustedPickleError) as ei:
        read_weights(p)
    assert ei.value.globals[0] == "posix.system" and not (tmp_path / "PWNED").exists()
