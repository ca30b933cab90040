"""Pickle safety: read a checkpoint's pickled extras without running code, or explain why not.

``weights_only`` unpickling is the first line; this module holds what comes after it: the
inert types a checkpoint's extras may rebuild (argparse namespaces, numpy scalars, paths,
dates), stand-ins that record unknown classes without importing them, and the refusal that
names the globals a pickle refers to -- found by :mod:`.pickle_scan`, which follows the
unpickler's stack and memo without executing anything -- those that can run code first.
"""
from __future__ import annotations

import sys
import warnings
import zipfile
from pathlib import Path

import torch

from .errors import UntrustedPickleError, _short
from .pickle_scan import COMPUTED_NAME, PickleScan, scan_globals
from .state_dicts import _state_dict_candidates

_PICKLE_HINT = ("Loading it runs the Python code the file names, which can execute arbitrary code. "
                "Only if you trust where the file came from, allow it explicitly: load(..., trust_pickle=True) in "
                "Python, --trust-pickle on the command line, or confirm the prompt in the GUI. Safer: re-save "
                "just the weights (torch.save(model.state_dict(), path)) and give the architecture separately.")


def _inert_globals() -> dict:
    """Names a checkpoint's extras may refer to that are safe to rebuild: plain data, no code runs.

    ``{"full.name": object}``: argparse namespaces (timm/DeiT/MAE ``args``), dates, paths and
    numpy scalars/dtypes/arrays (Lightning ``hyper_parameters``, ``best_acc`` numbers).
    """
    import argparse
    import collections
    import datetime
    import pathlib
    out: dict = {"argparse.Namespace": argparse.Namespace, "collections.OrderedDict": collections.OrderedDict}
    for n in ("datetime", "date", "time", "timedelta", "timezone"):
        out[f"datetime.{n}"] = getattr(datetime, n)
    for n in ("PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath"):
        for m in ("pathlib", "pathlib._local"):
            out[f"{m}.{n}"] = getattr(pathlib, n)
    for m in ("pathlib", "pathlib._local"):   # a Windows path cannot be built here: keep its text
        out[f"{m}.WindowsPath"] = pathlib.PureWindowsPath
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return out
    mod_core = getattr(np, "_core", None) or getattr(np, "core")
    ma = mod_core.multiarray
    for m in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[f"{m}.scalar"] = ma.scalar
        out[f"{m}._reconstruct"] = ma._reconstruct
    out["numpy.dtype"] = np.dtype
    out["numpy.ndarray"] = np.ndarray
    dts = getattr(np, "dtypes", None)
    if dts is not None:
        for n in dir(dts):
            v = getattr(dts, n)
            if isinstance(v, type) and issubclass(v, np.dtype):
                out[f"numpy.dtypes.{n}"] = v
    return out


class _Stub:
    """Stands in for a class or function the safe loader does not know: records, never runs."""

    _cnnvis_global = "?"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.__dict__["_stub_args"] = args
        self.__dict__["_stub_state"] = None
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["_stub_state"] = state

    def looks_like_module(self) -> bool:
        st = self._stub_state
        st = st[0] if isinstance(st, tuple) and st else st
        return isinstance(st, dict) and ("_modules" in st or "_parameters" in st)

    def __repr__(self):
        return f"<not loaded: {self._cnnvis_global}>"


def _make_stub(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (_Stub,), {"_cnnvis_global": name, "__module__": "cnnvis_gui.models._stubs"})


def _find_stubs(obj, where: str = "", depth: int = 0, out=None) -> list:
    out = [] if out is None else out
    if depth > 6 or len(out) > 50:
        return out
    if isinstance(obj, _Stub):
        out.append((where or "the file", obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _find_stubs(v, f"{where}[{k!r}]", depth + 1, out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _find_stubs(v, f"{where}[{i}]", depth + 1, out)
    return out


def _stdlib() -> set:
    return set(getattr(sys, "stdlib_module_names", ())) | {"__builtin__", "copy_reg", "builtins"}


def _by_risk(globals_) -> list:
    """The names, those that can run code first: a standard-library callable (``posix.system``,
    ``builtins.eval``) or a computed name, then other classes, then plain-data types; within
    each group in the order the pickle looks them up."""
    inert, std = _inert_globals(), _stdlib()

    def rank(g: str) -> int:
        if g == COMPUTED_NAME or (g.split(".", 1)[0] in std and g not in inert):
            return 0
        return 2 if g in inert or g.startswith(_TENSOR_GLOBALS) else 1
    return sorted(dict.fromkeys(globals_), key=rank)


def _untrusted(path: Path, globals_, whole=None, scan: PickleScan | None = None) -> UntrustedPickleError:
    ordered = _by_risk(globals_)
    names = _short(ordered, 6) or "Python classes"
    if whole:
        what = (f"{path.name} is a whole pickled model ({whole}): pickled Python objects, not a state dict, so it "
                f"cannot be read as plain weights. ")
    else:
        what = (f"{path.name} contains pickled Python objects that the safe loader does not accept (it refers to "
                f"{names}); it cannot be read as plain weights. ")
    if scan is not None and scan.truncated:
        what += (f"Only its first {SCAN_BYTES >> 20} MB were scanned: it may refer to more than these names. ")
    return UntrustedPickleError(what + _PICKLE_HINT, path=path, globals_=ordered)


def _load_with_extras(path: Path, globals_: set, notes):
    """``weights_only`` load of a checkpoint whose extras need more than tensors and plain containers.

    Inert types (:func:`_inert_globals`) are rebuilt for real; any other class or function from
    outside the standard library is replaced by an inert :class:`_Stub` (its code is neither
    imported nor run). Standard-library callables (``os.system``, ``builtins.exec``...) or a
    whole pickled model refuse the file with :class:`UntrustedPickleError`.
    """
    try:
        default = set(torch._weights_only_unpickler._get_allowed_globals())
    except Exception:  # pragma: no cover - private API moved
        default = set()
    inert = _inert_globals()
    needed = {g for g in globals_ if g not in default}
    std = _stdlib()
    risky = {g for g in needed if g == COMPUTED_NAME or (g not in inert and g.split(".", 1)[0] in std)}
    if not needed or risky:
        return None
    stubs = {g: _make_stub(g) for g in needed if g not in inert}
    # all inert types, not only the names the pickle mentions: BUILD checks the type of the object
    # built (numpy.dtype("f8") is a numpy.dtypes.Float64DType)
    entries = [(o, g) for g, o in inert.items()] + [(c, g) for g, c in stubs.items()]
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(entries):
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    found = _find_stubs(obj)
    whole = [s for _, s in found if s.looks_like_module()]
    if whole or isinstance(obj, _Stub) or (found and not _state_dict_candidates(obj, False)):
        raise _untrusted(path, globals_, whole=", ".join(sorted({s._cnnvis_global for s in whole}))[:200] or None)
    if notes is not None:
        kept = sorted(g for g in needed if g in inert)
        msg = f"{path.name}: non-tensor extras were read with the safe loader and are not used"
        if kept:
            msg += f" (plain data: {_short(kept, 6)})"
        if found:
            msg += (f"; {len(found)} object(s) of unknown classes were skipped without importing them: "
                    + _short(sorted({f'{s._cnnvis_global} at checkpoint{w}' for w, s in found}), 4))
        notes.append(msg)
    return obj


def _unsupported_global(msg: str) -> str:
    i = msg.find("GLOBAL ")
    return msg[i + 7:].split(" ")[0] if i >= 0 else ""


#: How much of a pickle the opcode scan reads (zip entries are decompressed only that far).
SCAN_BYTES = 1 << 22
#: The largest ``data.pkl`` a zip checkpoint may declare: it holds the object structure only (the
#: tensors are stored beside it), a few MB even for big models; more is a decompression bomb.
MAX_ZIP_PICKLE_BYTES = 256 << 20
#: pickles a legacy (non-zip) ``torch.save`` file starts with: magic number, protocol, system info,
#: the object, the storage keys; raw storage bytes follow and are never unpickled
LEGACY_PICKLES = 5


def _pickle_bytes(path: Path) -> list:
    """The file's pickle streams as [(bytes, pickles in them, whether more follows)], at most
    :data:`SCAN_BYTES` in all: every ``data.pkl`` of a zip checkpoint (torch reads the one under the
    archive's first folder, which a crafted zip may list after a decoy), else the file itself."""
    if zipfile.is_zipfile(path):
        out, budget = [], SCAN_BYTES
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                if n.endswith("data.pkl"):
                    with z.open(n) as f:
                        data = f.read(budget + 1)
                    out.append((data[:budget], 1, len(data) > budget))
                    budget -= min(budget, len(data))
        return out
    with open(path, "rb") as f:
        data = f.read(SCAN_BYTES + 1)
    return [(data[:SCAN_BYTES], LEGACY_PICKLES, len(data) > SCAN_BYTES)]


#: globals of a plain tensor checkpoint (``torch.save`` of a state dict): not Python objects to refuse
_TENSOR_GLOBALS = ("torch._utils._rebuild", "torch.FloatStorage", "torch.HalfStorage", "torch.DoubleStorage",
                   "torch.LongStorage", "torch.IntStorage", "torch.ByteStorage", "torch.BoolStorage",
                   "torch.BFloat16Storage", "torch.storage", "collections.OrderedDict", "torch._tensor",
                   "torch.Size", "torch.float", "torch.device", "__builtin__.set", "builtins.set")


def _classify_pickle(path: Path):
    """Scan the pickle WITHOUT executing it: ("objects", scan) or ("broken", scan).

    ``scan`` is the :class:`~.pickle_scan.PickleScan` (the globals it looks up, in order);
    "objects" when it looks up anything beyond a plain tensor checkpoint's globals.
    """
    try:
        streams = _pickle_bytes(path)
    except Exception:  # noqa: BLE001 - unreadable: weights_only's own error says why
        return "broken", PickleScan()
    scan = PickleScan()
    for data, pickles, more in streams:
        part = scan_globals(data, max_pickles=pickles, more_data=more) if data else PickleScan(truncated=more)
        for g in part.globals:
            scan.add(g)
        scan.pickles += part.pickles
        scan.truncated = scan.truncated or part.truncated
        scan.stopped = scan.stopped or part.stopped
    if any(not g.startswith(_TENSOR_GLOBALS) for g in scan.globals):
        return "objects", scan
    return "broken", scan
