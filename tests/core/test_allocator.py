"""The malloc tuning: frames reuse freed memory instead of page-faulting it in again (core/allocator.py)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cnnvis_gui.core import allocator

from ..waits import CHILD_S

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
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=CHILD_S,
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
    assert first.startswith("freed memory reused (glibc") or not _glibc()    # this interpreter's own C library
    assert allocator.reuse_freed_memory({"CNNVIS_MALLOC": "system"}) == first   # applied once: says so after


class _FakeLibc:
    """A glibc stand-in: records mallopt calls and answers ``answers`` (1 = accepted)."""

    def __init__(self, answers=(1, 1), glibc=True):
        self.calls, self.answers = [], list(answers)
        outer = self

        class Fn:
            def __init__(self, f):
                self.f, self.restype, self.argtypes = f, None, None

            def __call__(self, *a):
                return self.f(*a)
        self.mallopt = Fn(lambda option, value: (outer.calls.append((option, value)), outer.answers.pop(0))[1])
        if glibc:
            self.gnu_get_libc_version = Fn(lambda: b"9.99")


def test_the_tuning_asks_glibc_for_32_mib_heap_blocks_and_no_trimming(monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)
    libc = _FakeLibc()
    state = allocator.reuse_freed_memory({"CNNVIS_MALLOC": ""}, libc)
    assert state == "freed memory reused (glibc 9.99 malloc: blocks up to 32 MiB from the heap, kept after use)"
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3                       # glibc's malloc.h
    assert libc.calls == [(M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 2 ** 31 - 1)]
    import ctypes
    assert libc.mallopt.argtypes == [ctypes.c_int, ctypes.c_int] and libc.gnu_get_libc_version.restype is ctypes.c_char_p


@pytest.mark.parametrize("answers,calls", [((0, 1), 1), ((1, 0), 2)])
def test_a_refused_mallopt_is_reported(monkeypatch, answers, calls):
    monkeypatch.setattr(allocator, "_state", None)
    libc = _FakeLibc(answers)
    assert allocator.reuse_freed_memory({}, libc) == "system malloc (glibc 9.99 refused mallopt)"
    assert len(libc.calls) == calls                                   # the second is not tried after a refusal


def test_not_glibc_and_the_environment(monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)
    assert allocator.reuse_freed_memory({}, _FakeLibc(glibc=False)) == "system malloc (not glibc)"
    assert allocator._state == "system malloc (not glibc)"
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setenv("CNNVIS_MALLOC", " System ")
    libc = _FakeLibc()
    assert allocator.reuse_freed_memory(None, libc) == "system malloc (CNNVIS_MALLOC=system)" and libc.calls == []
    monkeypatch.delenv("CNNVIS_MALLOC")
    assert allocator.reuse_freed_memory(None, libc).startswith("freed memory reused") and len(libc.calls) == 2
