"""The malloc tuning: frames reuse freed memory instead of page-faulting it in again (core/allocator.py)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cnnvis_gui.core import allocator

SCRIPT = textwrap.dedent("""
    import ctypes, torch
    from cnnvis_gui.core.allocator import reuse_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2

    def feature_map():      # (bytes mmapped for a 24 MiB tensor, heap bytes left after it is freed)
        mapped0 = libc.mallinfo2().hblkhd
        t = torch.ones(6 << 20)
        mapped = libc.mallinfo2().hblkhd - mapped0
        del t
        return mapped, libc.mallinfo2().arena

    before = feature_map()
    state = reuse_freed_memory()
    after = feature_map()
    print(before[0], after[0], after[1], state, sep="|")
""")


def _glibc() -> bool:
    import ctypes
    try:
        return bool(ctypes.CDLL(None).gnu_get_libc_version)
    except (OSError, AttributeError):
        return False


@pytest.mark.skipif(not _glibc(), reason="the tuning is for glibc's malloc")
def test_feature_maps_come_from_the_heap_and_stay_there_after_the_tuning():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    assert out.returncode == 0, out.stderr
    mapped_before, mapped_after, heap_after, state = out.stdout.strip().split("|")
    assert state.startswith("freed memory reused (glibc")
    # untuned, a 24 MiB feature map is a fresh mmap (page-faulted in, unmapped on free); tuned, it
    # comes from the heap, which keeps it for the next frame
    assert int(mapped_before) >= 24 << 20 and int(mapped_after) == 0
    assert int(heap_after) >= 24 << 20


def test_system_malloc_on_request_and_one_answer_per_process(monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)
    assert allocator.reuse_freed_memory({"CNNVIS_MALLOC": "system"}) == "system malloc (CNNVIS_MALLOC=system)"
    assert allocator._state is None                       # nothing applied
    first = allocator.reuse_freed_memory({})
    assert allocator.reuse_freed_memory({"CNNVIS_MALLOC": "system"}) == first   # applied once: says so after
