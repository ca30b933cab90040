"""The activation store: every unit map of a scan, spilled to memory-mapped files in the cache.

With the maps kept, one forward per image is enough: the thresholds are read from the store
(:class:`~cnnvis_gui.dissect.quantile.TopTail`, exact) and the tally upsamples the stored maps,
so a dissection runs at the speed of a bare forward.  The store is a ``.npy`` file per layer
(``numpy.lib.format.open_memmap``: the operating system pages it, the process's memory does not
hold it), B x C x H x W rows in listing order, written as batches finish and flushed at every
checkpoint, so a killed scan resumes with the rows it has.  It is deleted once the dissection
is finished.

Rows are written with ``os.pwrite`` on the file (one copy into the page cache per batch) and read
through the memory map: assigning into a fresh shared map instead costs a page fault per 4 KiB,
which for a small network doubled the cost of keeping its maps.  Both see the same page cache, so
a process that is killed loses nothing it wrote; :meth:`ActivationStore.flush` (``fsync``, at the
checkpoints of a cached scan) makes the rows as durable as the checkpoint that counts them.

Its size is the memory budget's measure (:func:`store_bytes`): past ``memory_budget`` (or the
free space of the cache's disk) a dissection keeps no maps and uses the streaming quantile.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

__all__ = ["ActivationStore", "store_bytes", "DEFAULT_MEMORY_BUDGET", "parse_size"]

#: bytes of unit maps a dissection may keep (exact thresholds, one forward) before it streams
DEFAULT_MEMORY_BUDGET = 4 << 30


def store_bytes(images: int, grids: dict, itemsize: int = 4) -> int:
    """Bytes the maps of ``images`` images take for layers of (C, H, W) ``grids``."""
    return int(images) * sum(int(np.prod(g)) for g in grids.values()) * int(itemsize)


def free_bytes(folder: Path) -> int | None:
    """Free bytes on the disk that holds ``folder`` (its first existing parent), or None when unknown."""
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(shutil.disk_usage(p).free)
    except OSError:
        return None


def parse_size(text) -> int:
    """``"4G"``, ``"512M"``, ``"1.5GiB"``, ``"1000000"`` -> bytes; ValueError otherwise."""
    t = str(text).strip().upper().replace("IB", "").rstrip("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in "KMGT" else t
    v = float(num)
    if not np.isfinite(v) or v < 0:
        raise ValueError(text)
    return int(v * mult)


class ActivationStore:
    """The maps of one layer for rows ``[0, rows)`` (a scan's slice, in listing order)."""

    def __init__(self, path: Path, rows: int, grid: tuple, dtype=np.float32):
        self.path = Path(path)
        shape = (int(rows),) + tuple(int(g) for g in grid)
        self.array = None
        self._fd = None
        if self.path.is_file():
            try:
                a = np.lib.format.open_memmap(str(self.path), mode="r+")
                if a.shape == shape and a.dtype == np.dtype(dtype):
                    self.array = a
            except (OSError, ValueError):
                self.array = None
        if self.array is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.array = np.lib.format.open_memmap(str(self.path), mode="w+", dtype=dtype, shape=shape)
        self._row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.array.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDWR | getattr(os, "O_BINARY", 0))

    def write(self, rows: np.ndarray, maps: np.ndarray) -> None:
        """Rows ``rows`` (ascending) := ``maps`` (len(rows) x C x H x W, the store's dtype)."""
        maps = np.ascontiguousarray(maps, self.array.dtype)
        if len(rows) != len(maps) or maps.shape[1:] != self.array.shape[1:]:
            raise ValueError(f"{len(maps)} maps of shape {maps.shape[1:]} for {len(rows)} rows of {self.array.shape[1:]}")
        rows = np.asarray(rows, np.int64)
        a = 0
        while a < len(rows):                                 # runs of consecutive rows: one write each
            b = a + 1
            while b < len(rows) and rows[b] == rows[b - 1] + 1:
                b += 1
            data = memoryview(maps[a:b]).cast("B")
            pos = self.array.offset + int(rows[a]) * self._row_bytes
            while len(data):
                n = os.pwrite(self._fd, data, pos)
                data, pos = data[n:], pos + n
            a = b

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop])

    def flush(self) -> None:
        """Make the written rows durable (``fsync``): before a checkpoint that counts them is written."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.array is not None:
            mm = getattr(self.array, "_mmap", None)
            self.array = None
            if mm is not None:
                try:
                    mm.close()
                except (BufferError, ValueError):
                    pass

    def delete(self) -> None:
        self.close()
        try:
            self.path.unlink()
        except OSError:
            pass
