"""The errors model loading raises, and the short-list formatting their messages share."""
from __future__ import annotations

from ..core import CnnvisError

__all__ = ["ModelLoadError", "UntrustedPickleError", "UntrustedCodeError"]

_SHOW = 8


class ModelLoadError(CnnvisError):
    """A model or weight file could not be opened; the message says why and what to do."""


class UntrustedPickleError(ModelLoadError):
    """The file holds pickled Python objects and ``trust_pickle`` was not given.

    The GUI catches this one to ask "Do you trust this file?" and retries with
    ``trust_pickle=True``; ``.path`` is the file and ``.globals`` the names it refers to.
    """

    def __init__(self, msg: str, path=None, globals_=()):
        super().__init__(msg)
        self.path = path
        self.globals = tuple(globals_)


class UntrustedCodeError(ModelLoadError):
    """A file names code to run (an architecture callable or ``.py`` file) and ``trust_code`` was not given.

    The window catches this one to ask "Run the code this file names?" (default No) and
    retries with ``trust_code=True``; ``.path`` is the file, ``.target`` what it asks to run
    (``"os:system"``, ``"/abs/net.py:Net"``) and ``.origin`` where it was named.
    """

    def __init__(self, msg: str, path=None, target: str = "", origin: str = ""):
        super().__init__(msg)
        self.path = path
        self.target = target
        self.origin = origin


def _short(items, n: int = _SHOW) -> str:
    items = list(items)
    s = ", ".join(str(i) for i in items[:n])
    return s + (f", ... and {len(items) - n} more" if len(items) > n else "")
