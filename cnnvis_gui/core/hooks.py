"""Module hooks as a context manager: every handle kept, all removed in ``finally``.

Subclasses register their hooks in :meth:`HookSet.register` (appending each handle to
``self.handles``); leaving the ``with`` block, or a failure half-way through registering,
removes every one of them.  Hooks fire for forwards run by any thread, so each subclass's
hooks compare ``threading.get_ident()`` with ``self.thread`` and ignore other threads.
"""
from __future__ import annotations

import threading


class HookSet:
    """Base for a set of hooks that lives exactly as long as a ``with`` block."""

    def __init__(self):
        self.handles: list = []
        self.thread = threading.get_ident()   # the thread whose forwards the hooks record

    def register(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self):
        try:
            self.register()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
