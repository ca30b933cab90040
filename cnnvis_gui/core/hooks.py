"""Module hooks as context managers: every handle kept, all removed in ``finally``.

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


class ModuleCallHook(HookSet):
    """One forward hook (``always_call``, with kwargs) on every module call, or on some, for a ``with`` block.

    With ``modules=None`` it is one global hook
    (``torch.nn.modules.module.register_module_forward_hook``): one registration however
    many modules the model has, where a hook per module costs one each (the engine
    records every call of every module, so on a network of small modules the
    registrations alone would be a measurable part of a forward).  It sees every module
    call in the process, so :meth:`make_hook`'s hook must first compare
    ``threading.get_ident()`` with ``self.thread`` and ignore modules it does not know.
    With a list of modules, the same hook goes on those modules only (every other
    module call keeps ``nn.Module.__call__``'s fast path).
    """

    def __init__(self, modules=None):
        super().__init__()
        self.modules = modules

    def make_hook(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def register(self) -> None:
        hook = self.make_hook()
        if self.modules is None:
            from torch.nn.modules.module import register_module_forward_hook
            self.handles.append(register_module_forward_hook(hook, with_kwargs=True, always_call=True))
        else:
            for m in self.modules:
                self.handles.append(m.register_forward_hook(hook, with_kwargs=True, always_call=True))
