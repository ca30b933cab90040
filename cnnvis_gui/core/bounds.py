"""Bounded sizes: every number that decides how much memory is taken is checked before it is taken.

A size read from a file or an argument is somebody else's number: a 270 KB checkpoint may say
its labels run to index 10^12, a 1 MB PNG that it is 32000 x 32000 pixels, a part file that the
scan had 10^12 shards.  Allocating first and checking after turns such a number into gigabytes
(or a killed process).  :func:`bounded_int` is the one reader for such a number: it refuses
what is not an integer (``True``, ``2.5``, ``"3"``, NaN) and what lies outside its bounds, with
one line naming the number, where it came from, the bound and what to do.  The bounds are
here, named, so every reader of the same quantity uses the same one.

:func:`read_bounded` is the same for files: it reads a *regular* file of at most ``limit``
bytes (a FIFO, ``/dev/zero`` or a 40 GB "labels file" are refused by what they are, not read
until memory runs out), and :func:`load_json_bounded` parses such a file as JSON, nesting
depth included.
"""
from __future__ import annotations

import errno
import json
import math
import numbers
import os
import re
import stat

from .errors import CnnvisError

__all__ = ["SizeError", "bounded_int", "finite_float", "read_bounded", "load_json_bounded", "MAX_INPUT_SIDE",
           "MAX_INPUT_VALUES", "MAX_INPUT_CHANNELS", "MAX_LABELS", "MAX_IMAGE_PIXELS", "MAX_IMAGE_SIDE",
           "MAX_THREADS", "MAX_PROBES", "MAX_TOP", "MAX_SHARDS", "MAX_OUTPUT_PIXELS", "MAX_JSON_BYTES",
           "MAX_JSON_DEPTH", "MAX_CLASSES", "MAX_UNITS", "MAX_WORKERS", "MAX_BATCH_VALUES", "not_a_file",
           "parse_json_bounded", "check_batch", "check_output_size", "npy_declared_bytes", "npz_declared_bytes",
           "MAX_NPZ_BYTES"]

#: the largest model input side (a 3 x 8192 x 8192 float32 input is 0.8 GB)
MAX_INPUT_SIDE = 8192
#: the most values one model input may hold, whoever gave the spec
MAX_INPUT_VALUES = 3 * 8192 * 8192
#: the most input channels of a spec (hyperspectral cubes have a few hundred)
MAX_INPUT_CHANNELS = 4096
#: the most class labels (ImageNet-21k has 21,843; a million short strings are ~60 MB)
MAX_LABELS = 1 << 20
#: the most outputs a classifier built from a file's ``arch_kwargs`` may have (same bound as the labels)
MAX_CLASSES = MAX_LABELS
#: the most units a layer may be asked about by number (``--units``) before the model is known
MAX_UNITS = 1 << 20
#: the most pixels a decoded image may have (a 100-megapixel photo fits; 400 MB as 8-bit BGR)
MAX_IMAGE_PIXELS = 1 << 27
#: the longest side of a decoded image
MAX_IMAGE_SIDE = 1 << 16
#: the most pixels of one written picture (model input side x ``--zoom``): 16384 x 16384
MAX_OUTPUT_PIXELS = 1 << 28
#: torch CPU threads: libgomp aborts at some 20,000 and the process segfaults at 100,000
MAX_THREADS = 1024
#: random probe inputs per receptive field (each one is a forward and a backward)
MAX_PROBES = 256
#: images kept per unit (``--top``); a units x k table per layer is kept in memory
MAX_TOP = 10_000
#: slices of one scan (``--shard I/N``, a part file's ``count``)
MAX_SHARDS = 1 << 16
#: image-decoding threads of a scan (``--workers``)
MAX_WORKERS = 64
#: the most input values one batch may hold (``--batch-size`` x C x H x W): 4 GB as float32
MAX_BATCH_VALUES = 1 << 30
#: the largest JSON file read as metadata, labels, a part or a cache entry
MAX_JSON_BYTES = 64 << 20
#: the deepest nesting of such a JSON document (metadata is a few levels deep)
MAX_JSON_DEPTH = 64
#: the most bytes the arrays of one cache or part ``.npz`` may declare (a units x k table is a few MB)
MAX_NPZ_BYTES = 2 << 30


class SizeError(CnnvisError):
    """A number read from a file or an argument is not an integer or is out of its bounds."""


def bounded_int(value, what: str, low: int = 0, high: int | None = None, hint: str = "") -> int:
    """``value`` as an ``int`` in ``[low, high]``, or :class:`SizeError` naming ``what``.

    Accepts ints (and numpy integers), and floats only when they hold a whole number (JSON
    writers spell 64 as ``64.0`` too).  Refuses booleans, strings, NaN/inf, fractions and
    anything else *before* the number is used for anything.
    """
    v = _as_int(value)
    if v is None:
        raise SizeError(f"{what} must be a whole number, got {_show(value)}" + (f"; {hint}" if hint else "") + ".")
    if v < low or (high is not None and v > high):
        span = f"{low}..{high:,}" if high is not None else f"at least {low}"
        raise SizeError(f"{what} is {v:,}, outside {span}" + (f"; {hint}" if hint else "") + ".")
    return v


def _as_int(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        if not math.isfinite(f) or f != int(f):
            return None
        return int(f)
    return None


def finite_float(value, what: str, low: float | None = None, high: float | None = None,
                 positive: bool = False, nonzero: bool = False) -> float:
    """``value`` as a finite ``float`` (NaN and inf refused, as a zero std is), or :class:`SizeError`.

    ``positive``: > 0; ``nonzero``: != 0; ``low``/``high``: inclusive bounds.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise SizeError(f"{what} must be a number, got {_show(value)}.")
    f = float(value)
    if not math.isfinite(f):
        raise SizeError(f"{what} must be a finite number, got {f}.")
    if positive and f <= 0:
        raise SizeError(f"{what} must be positive, got {f:g}.")
    if nonzero and f == 0:
        raise SizeError(f"{what} must not be zero.")
    if low is not None and f < low:
        raise SizeError(f"{what} must be at least {low:g}, got {f:g}.")
    if high is not None and f > high:
        raise SizeError(f"{what} must be at most {high:g}, got {f:g}.")
    return f


def check_batch(batch_size: int, input_shape, what: str = "--batch-size") -> int:
    """``batch_size`` inputs of ``input_shape`` (C, H, W) must hold at most :data:`MAX_BATCH_VALUES` values."""
    per = 1
    for s in input_shape:
        per *= int(s)
    most = max(1, MAX_BATCH_VALUES // max(per, 1))
    return bounded_int(batch_size, what, 1, most,
                       f"a batch of {'x'.join(map(str, input_shape))} inputs may hold at most {MAX_BATCH_VALUES:,} "
                       f"values ({most:,} of them)")


def check_output_size(height: int, width: int, zoom: int, what: str = "--zoom") -> None:
    """A picture of ``height`` x ``width`` enlarged ``zoom`` times must have at most :data:`MAX_OUTPUT_PIXELS`."""
    pixels = int(height) * int(zoom) * int(width) * int(zoom)
    if pixels > MAX_OUTPUT_PIXELS:
        raise SizeError(f"{what} {zoom}: a {height}x{width} picture would become {height * zoom}x{width * zoom} "
                        f"({pixels / 1e6:,.0f} megapixels), more than the {MAX_OUTPUT_PIXELS / 1e6:.0f} megapixels a "
                        f"written picture may have; use a smaller {what}.")


def _show(value) -> str:
    """A short, printable picture of a value that was not what it should be."""
    from .text import printable
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    kind = type(value).__name__
    return printable(f"{text} ({kind})" if not isinstance(value, (int, float, str)) or isinstance(value, bool)
                     else text, newlines=False)


# ---------------------------------------------------------------------------- files
def read_bounded(path, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or :class:`CnnvisError` saying why not.

    A missing file, a folder, a device (``/dev/zero``), a FIFO or a socket, a file that cannot be
    read (permissions) and a file over ``limit`` are each named for what they are.  The file is
    opened without blocking (a FIFO with no writer would hang ``open``) and checked with
    ``fstat`` on the open descriptor, so it cannot be swapped between the check and the read.
    """
    p = os.fspath(path)               # a str, not a Path: this runs for every image of a scan
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise CnnvisError(f"{what} not found: '{p}'.") from None
    except IsADirectoryError:
        raise CnnvisError(f"{what} '{p}' is a folder; give the file inside it.") from None
    except PermissionError:
        raise CnnvisError(f"cannot read the {what} '{p}': permission denied (check the file's permissions).") from None
    except OSError as e:
        raise CnnvisError(f"cannot open the {what} '{p}': {e.strerror or e}.") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise CnnvisError(f"{what} '{p}' is a folder; give the file inside it.")
        if not stat.S_ISREG(st.st_mode):
            raise CnnvisError(f"{what} '{p}' is {_file_kind(st.st_mode)}, not a regular file; give a file.")
        if st.st_size > limit:
            raise CnnvisError(f"{what} '{p}' is {st.st_size:,} bytes, more than the {limit:,} such a file may "
                              f"have; is it the right file?")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        chunks, size = [], 0
        while True:
            try:
                b = os.read(fd, min(1 << 20, limit + 1 - size))
            except OSError as e:
                if e.errno == errno.EISDIR:
                    raise CnnvisError(f"{what} '{p}' is a folder; give the file inside it.") from None
                raise CnnvisError(f"cannot read the {what} '{p}': {e.strerror or e}.") from None
            if not b:
                break
            chunks.append(b)
            size += len(b)
            if size > limit:     # the file grew while it was read
                raise CnnvisError(f"{what} '{p}' is more than {limit:,} bytes; is it the right file?")
        return b"".join(chunks)
    finally:
        os.close(fd)


def not_a_file(path) -> str | None:
    """What ``path`` is when it is not a regular file: ``"missing"``, ``"a folder"``, ``"a device"``,
    ``"a FIFO (named pipe)"``, ``"a socket"``; None for a regular file (symbolic links followed)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError:
        return None           # exists but cannot be looked at: the read says why
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    return _file_kind(mode)


def _file_kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def npy_declared_bytes(f) -> int:
    """The bytes the header of the ``.npy`` stream ``f`` declares, read without loading the array.

    ValueError for an array of Python objects (or a header numpy cannot read).
    """
    import numpy as np

    major, _ = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    if dtype.hasobject:
        raise ValueError("it holds Python objects")
    n = 1
    for s in shape:
        n *= int(s)
    return n * dtype.itemsize


def npz_declared_bytes(path) -> int:
    """The bytes the arrays of an ``.npz`` file declare in their headers, read without loading any array.

    A 1 KB archive may declare an array of 10^12 elements; numpy allocates what the header says
    before it reads a byte, so :func:`cnnvis_gui.atlas.cache.load_npz` compares this sum with its
    bound first.  Raises ValueError for a member that is not a plain ``.npy`` array.
    """
    import zipfile

    total = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            with zf.open(info) as f:
                try:
                    total += npy_declared_bytes(f)
                except ValueError as e:
                    raise ValueError(f"{info.filename}: {e}") from None
    return total


def load_json_bounded(path, what: str, limit: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH):
    """The JSON document in a regular file of at most ``limit`` bytes, nested at most ``max_depth`` deep.

    Raises :class:`CnnvisError` for a file :func:`read_bounded` refuses, for text that is not
    UTF-8 JSON and for nesting past ``max_depth`` (Python's own recursion limit is never reached:
    the depth is counted on the text before it is parsed).
    """
    data = read_bounded(path, limit, what)
    return parse_json_bounded(data, what, max_depth)


def parse_json_bounded(data, what: str, max_depth: int = MAX_JSON_DEPTH):
    """Parse JSON bytes or text whose nesting is at most ``max_depth`` (see :func:`load_json_bounded`)."""
    try:
        text = data.decode("utf-8-sig") if isinstance(data, (bytes, bytearray)) else str(data)
    except UnicodeDecodeError:
        raise CnnvisError(f"{what} is not UTF-8 text.") from None
    depth = _json_depth(text)
    if depth > max_depth:
        raise CnnvisError(f"{what} is nested {depth} levels deep, more than the {max_depth} a metadata file "
                          f"needs; it is not one of ours.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CnnvisError(f"{what} is not valid JSON: {e}.") from None
    except RecursionError:     # pragma: no cover - the depth was counted above
        raise CnnvisError(f"{what} is nested too deeply to read.") from None


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def _json_depth(text: str) -> int:
    """The deepest bracket nesting of JSON text (brackets inside strings are not counted)."""
    import numpy as np

    brackets = re.sub(r"[^\[\]{}]+", "", _JSON_STRING.sub("", text))
    if not brackets:
        return 0
    steps = np.frombuffer(brackets.encode("ascii"), np.uint8)
    depth = np.cumsum(np.where((steps == ord("[")) | (steps == ord("{")), 1, -1))
    return int(depth.max())
