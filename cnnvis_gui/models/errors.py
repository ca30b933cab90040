"""The errors model loading raises, and the short-list formatting their messages share."""
from __future__ import annotations

from ..core import CnnvisError

__all__ = ["ModelLoadError", "UntrustedPickleError"]

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


def _short(items, n: int = _SHOW) -> str:
    items = list(items)
    s = ", ".join(str(i) for i in items[:n])
    return s + (f", ... and {len(items) - n} more" if len(items) > n else "")
