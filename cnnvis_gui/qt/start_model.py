"""The model the window starts with: the command line's, else the last session's, else a demo.

The model is read before any window exists (:func:`read_start_model`), so a usage error just
exits.  Code that a file or a setting names is never run there (``trust_code`` stays off):
a checkpoint whose metadata names ``os:system``, or a remembered model whose architecture is a
``.py`` file, comes back as an :class:`~cnnvis_gui.models.UntrustedCodeError`.  Once the window
is up, :func:`settle_start_model` asks the user ("Run code named by this file?", default No);
Yes loads it again with consent, No leaves the demo model.  Any other failure (a corrupt
checkpoint) is said in a message box, as plain text since it quotes the file, and the window
starts on the demo model so that it is usable at once.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..options import UsageError, model_entry, model_from_args, model_from_entry, spec_overrides

__all__ = ["StartModel", "read_start_model", "settle_start_model"]

#: the demo the window falls back to
FALLBACK_DEMO = "shapes"


@dataclass
class StartModel:
    """What the window starts with, before and after the user was asked."""

    loaded: object = None                       # LoadedModel once there is one
    demo_name: Optional[str] = None             # the demo shown (its sample images open with it)
    error: Optional[Exception] = None           # why the chosen model did not load
    retry: Optional[Callable] = None            # loads it again with trust_code=True (after a Yes)
    entry: tuple = (None, None)                 # (what, arch) to remember once shown
    notes: list = field(default_factory=list)   # said in the status bar
    fallback: bool = False                      # the demo shown because the chosen model did not load


def _explicit(args) -> bool:
    return bool(args.model or args.weights or args.pretrained or args.arch_kwarg or args.labels
                or spec_overrides(args))


def read_start_model(args, settings, models) -> StartModel:
    """Load the model the command line names, else ``settings``' last model (None: not read).

    Never raises for a model that fails to load (the failure is kept in ``.error``);
    :class:`~cnnvis_gui.options.UsageError` propagates (the caller exits with it).
    """
    if _explicit(args):
        demo = None
        if not args.weights and args.pretrained is None and (args.model is None or args.model in models.DEMO_NAMES):
            demo = args.model or FALLBACK_DEMO

        def retry():
            consented = argparse.Namespace(**vars(args))
            consented.trust_code = True
            return model_from_args(consented)
        start = StartModel(demo_name=demo, retry=retry, entry=model_entry(args, demo))
        try:
            start.loaded = model_from_args(args)
        except UsageError:
            raise
        except Exception as e:  # noqa: BLE001 - said in the window's box, or the exit message of an automated run
            start.error = e
        return start
    try:
        return _last_model(settings, models)
    except Exception as e:  # noqa: BLE001 - even the demo did not load (a broken install): said like any failure
        return StartModel(error=e)


def _last_model(settings, models) -> StartModel:
    """The model of the previous session (a remembered model names code: the user is asked first)."""
    entry = "" if settings is None else str(settings.value("last_model", "") or "")
    what, _, arch = entry.partition("|")
    if what.startswith("demo:") and what[5:] in models.DEMO_NAMES:
        return StartModel(loaded=models.demo(what[5:]), demo_name=what[5:])
    if what:
        where = settings.fileName()
        start = StartModel(retry=lambda: model_from_entry(what, arch, trust_code=True, settings_file=where))
        try:
            start.loaded = model_from_entry(what, arch, settings_file=where)
            return start
        except models.UntrustedCodeError as e:
            start.error = e
            return start
        except Exception as e:  # noqa: BLE001 - fall back to the demo, say why
            return _demo(models, notes=[f"last model {what} did not open ({e}); showing the demo model"])
    return _demo(models)


def _demo(models, notes=()) -> StartModel:
    return StartModel(loaded=models.demo(FALLBACK_DEMO), demo_name=FALLBACK_DEMO,
                      entry=(f"demo:{FALLBACK_DEMO}", None), notes=list(notes))


def settle_start_model(win, start: StartModel, models) -> StartModel:
    """Resolve a failed start in the window: ask before running code, else report and show the demo.

    Returns the :class:`StartModel` to show (``.loaded`` may still be None when even the demo
    cannot be loaded; the reason is then in ``.notes``).
    """
    if start.error is None:
        return start
    error, note = start.error, None
    if isinstance(error, models.UntrustedCodeError) and start.retry is not None:
        from .trust_dialog import confirm_untrusted_code
        if confirm_untrusted_code(win, error):      # as --trust-code would: the user said Yes
            try:
                return StartModel(loaded=start.retry(), demo_name=start.demo_name, entry=start.entry,
                                  notes=start.notes)
            except Exception as e:  # noqa: BLE001 - said below
                error = e
        else:
            note = f"not opened: {error.target} was not run (you answered No); showing the {FALLBACK_DEMO} demo model"
            error = None
    if error is not None:
        from .plain import plain_message
        plain_message(win, "critical", "cnnvis-gui", f"Cannot load the model:\n{error}",
                      f"The window shows the {FALLBACK_DEMO} demo model instead.")
        note = f"the model did not load; showing the {FALLBACK_DEMO} demo model"
    try:
        fallback = _demo(models, notes=start.notes + [note])
    except Exception as e:  # noqa: BLE001 - a broken install: an empty window that says why
        return StartModel(notes=start.notes + [f"{note}; the demo model did not load either: {e}"], fallback=True)
    fallback.entry = (None, None)               # the user's last model stays remembered
    fallback.fallback = True
    return fallback
