"""Text from files reaches the terminal as text: control characters are shown, never obeyed.

A layer name, a label, an architecture string or a file name is written by whoever made the
file.  Printed raw, ``ESC[2K ESC[1A`` erases the line above (the real warning) and the text that
follows takes its place; ``\\r`` overwrites the start of a line; a right-to-left override
(U+202E) reorders what the reader sees ("Trojan Source", Boucher & Anderson 2021).
:func:`printable` writes every such character as its Python escape (``\\x1b``, ``\\u202e``), so
the bytes on the terminal are exactly the characters that were in the file.

:class:`TerminalStream` applies :func:`printable` to everything written through it; the
``cnnvis`` and ``cnnvis-gui`` command lines put it in front of stdout and stderr for the whole
run (:mod:`cnnvis_gui.cli.boundary`), so every message and every table passes one filter.
Progress bars, which draw with ``\\r`` on purpose, write to :attr:`TerminalStream.raw`.
"""
from __future__ import annotations

import io
import re

__all__ = ["printable", "TerminalStream", "raw_stream"]

# C0 controls but tab and newline, DEL, C1 controls; line/paragraph separators; the bidirectional
# embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069) and the marks U+200E/U+200F, U+061C
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
_UNSAFE_NO_NEWLINE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200e\u200f"
                                "\u061c]")


def _escape(m: re.Match) -> str:
    c = ord(m.group(0))
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text, newlines: bool = True) -> str:
    """``text`` with every control character written as its escape (``"\\x1b[2K"`` -> ``"\\\\x1b[2K"``).

    Tabs are kept; newlines are kept when ``newlines`` (a table, a multi-line message) and
    escaped otherwise (one line of a message, a name).  Any other text is unchanged, so a
    clean message prints as it is, and applying it twice changes nothing more.
    """
    s = text if isinstance(text, str) else str(text)
    return (_UNSAFE if newlines else _UNSAFE_NO_NEWLINE).sub(_escape, s)


class TerminalStream(io.TextIOBase):
    """A text stream that writes :func:`printable` text to the stream it wraps.

    ``raw`` is the wrapped stream, for the writers that draw with control characters on purpose
    (progress bars).  Everything else (``isatty``, ``fileno``, ``encoding``, ``flush``) is the
    wrapped stream's.
    """

    def __init__(self, raw):
        super().__init__()
        self.raw = raw

    def write(self, s) -> int:
        self.raw.write(printable(s))
        return len(s)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.raw.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.raw, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self.raw.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self):
        return getattr(self.raw, "encoding", "utf-8")

    @property
    def errors(self):
        return getattr(self.raw, "errors", "strict")

    def __getattr__(self, name):    # buffer, mode, name, ... of the wrapped stream
        return getattr(self.raw, name)


def raw_stream(stream):
    """The stream under a :class:`TerminalStream` (for progress bars), or ``stream`` itself."""
    return stream.raw if isinstance(stream, TerminalStream) else stream
