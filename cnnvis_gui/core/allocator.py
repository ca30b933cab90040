"""Freed tensor memory is reused, not handed back to the kernel and faulted in again.

PyTorch's CPU tensors come straight from ``malloc`` (no caching allocator on the CPU).
glibc serves a block over its mmap threshold (128 KiB at start, raised on the fly up to
32 MiB) with a fresh ``mmap`` and trims freed memory at the top of its heap back to the
kernel; every new frame's feature maps and gradients then page-fault their memory in
again, zero-filled by the kernel, and how often depends on what ran before (in one run of
``benchmarks/bench_engine.py`` the same bare MobileNetV3-Large forward measured 18 or 32 ms by
case order alone).  With the tuning below, ``bench_engine.py`` against ``--system-malloc`` on a
quiet machine: a ResNet-50 forward + input gradient 283 -> 255 ms; MobileNetV3-Large unchanged
(its blocks already stayed under glibc's adaptive threshold).  PyTorch's performance guide
recommends jemalloc or tcmalloc for the same reason.

The tuning (``mallopt``): blocks up to 32 MiB come from malloc's heaps
(``M_MMAP_THRESHOLD``) and freed heap memory is kept for the next frame
(``M_TRIM_THRESHOLD``): the process keeps the heap its largest frame needed, bigger
blocks are mapped as before.  Only with glibc (Linux); elsewhere nothing changes.
``CNNVIS_MALLOC=system`` leaves malloc as it is.
"""
from __future__ import annotations

import ctypes
import os

__all__ = ["reuse_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_MAX = 32 << 20         # glibc's own ceiling for the mmap threshold (64-bit)
_TRIM = 2 ** 31 - 1          # mallopt takes an int: never trim below 2 GiB of free heap

_state: str | None = None


def reuse_freed_memory(env=None, libc=None) -> str:
    """Tune glibc's malloc so freed tensor memory is reused (once per process); returns what was done.

    The returned line is for ``cnnvis info``: ``"freed memory reused (glibc ...)"``, or why
    malloc was left alone (``CNNVIS_MALLOC=system``, not glibc, mallopt refused).  ``env``
    defaults to ``os.environ``, ``libc`` to the C library this interpreter runs on.
    """
    global _state
    if _state is not None:
        return _state
    env = os.environ if env is None else env
    if env.get("CNNVIS_MALLOC", "").strip().lower() == "system":
        return "system malloc (CNNVIS_MALLOC=system)"
    try:
        libc = ctypes.CDLL(None) if libc is None else libc
        get_version, mallopt = libc.gnu_get_libc_version, libc.mallopt
    except (OSError, AttributeError):       # musl, macOS, Windows: not glibc
        _state = "system malloc (not glibc)"
        return _state
    get_version.restype = ctypes.c_char_p
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    version = get_version().decode()
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM) == 1
    _state = (f"freed memory reused (glibc {version} malloc: blocks up to 32 MiB from the heap, kept after use)"
              if ok else f"system malloc (glibc {version} refused mallopt)")
    return _state
