"""Hostile pickles written opcode by opcode: each would run ``touch MARKER`` through ``posix.system``.

Each builder returns the pickle's bytes; :func:`as_legacy_file` and :func:`as_zip_checkpoint` put
them where a checkpoint's pickle lives.  ``pickle.loads`` of any of them creates the marker (the
positive control in the tests); the loader must refuse them, name ``posix.system`` and leave no
marker.
"""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path


def su(s: str) -> bytes:
    """SHORT_BINUNICODE (or BINUNICODE past 255 bytes)."""
    b = s.encode()
    return (b"\x8c" + bytes([len(b)]) if len(b) < 256 else b"X" + struct.pack("<I", len(b))) + b


def frame(body: bytes, proto: int = 4) -> bytes:
    """PROTO, one FRAME around ``body`` (which ends with STOP)."""
    return bytes([0x80, proto]) + b"\x95" + struct.pack("<Q", len(body)) + body


def call_system(marker: Path) -> bytes:
    """The call once ``posix.system`` is on the stack: its argument, TUPLE1, REDUCE, STOP."""
    return su(f"touch '{marker}'") + b"\x85R."


def memo_decoy(marker: Path) -> bytes:
    """The issue's case: the names go to the memo, decoys are pushed, BINGET ... STACK_GLOBAL."""
    return frame(su("posix") + b"\x94" + su("system") + b"\x94" + b"00"    # MEMOIZE both, POP both
                 + su("numpy") + su("dtype")                                # decoys, last strings pushed
                 + b"h\x00h\x01\x93" + call_system(marker))                 # BINGET 0, BINGET 1, STACK_GLOBAL


def long_memo_decoy(marker: Path) -> bytes:
    """LONG_BINPUT / LONG_BINGET at large indices, decoys in between."""
    return frame(su("posix") + b"r" + struct.pack("<I", 70000) + b"0" + su("system") + b"r"
                 + struct.pack("<I", 5) + b"0" + su("numpy") + su("core") + su("numpy") + su("dtype")
                 + b"j" + struct.pack("<I", 70000) + b"j" + struct.pack("<I", 5) + b"\x93" + call_system(marker))


def text_memo_decoy(marker: Path) -> bytes:
    """Protocol-0 text PUT / GET under a protocol-4 header, decoys last."""
    return (b"\x80\x04" + su("posix") + b"p1\n0" + su("system") + b"p2\n0" + su("numpy") + su("dtype")
            + b"g1\ng2\n\x93" + call_system(marker))


def pop_mark_decoy(marker: Path) -> bytes:
    """The names stay on the stack; decoys are pushed after a MARK and dropped with POP_MARK."""
    return frame(su("posix") + su("system") + b"(" + su("numpy") + su("dtype") + b"1\x93" + call_system(marker))


def dup_decoy(marker: Path) -> bytes:
    """DUP of a memoized name; the stack order differs from the byte order of the strings."""
    return frame(su("system") + b"\x94" + b"0" + su("posix") + su("numpy") + b"0" + b"h\x00"
                 + su("dtype") + b"0" + b"\x93" + call_system(marker))


def proto0_global(marker: Path) -> bytes:
    """Protocol 0: GLOBAL with its name inline (the plain case)."""
    return b"cposix\nsystem\n(V" + f"touch '{marker}'".encode() + b"\ntR."


def proto0_inst(marker: Path) -> bytes:
    """Protocol 0: INST looks up and calls the global in one opcode."""
    return b"(V" + f"touch '{marker}'".encode() + b"\niposix\nsystem\n."


def many_harmless_first(marker: Path) -> bytes:
    """Ten plain-data globals looked up before ``posix.system``: the refusal must name it first."""
    body = b""
    for n in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"):
        body += su("numpy") + su(n) + b"\x93" + b"0"            # STACK_GLOBAL numpy.<type>, POP
    return frame(body + su("posix") + su("system") + b"\x93" + call_system(marker))


BUILDERS = {f.__name__: f for f in (memo_decoy, long_memo_decoy, text_memo_decoy, pop_mark_decoy, dup_decoy,
                                    proto0_global, proto0_inst, many_harmless_first)}


def as_legacy_file(path: Path, data: bytes) -> Path:
    """The pickle as a non-zip ``.pth`` (torch reads a legacy file's first pickle)."""
    path.write_bytes(data)
    return path


def as_zip_checkpoint(path: Path, data: bytes) -> Path:
    """The pickle as the ``data.pkl`` of a zip checkpoint (torch.save's default format)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return path
