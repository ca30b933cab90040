"""Open a user's network safely: architecture sources, weight files, metadata, probe.

``load()`` is the one entry point.  It

1. builds the architecture (``torchvision:resnet18``, ``timm:name``, ``package.module:factory``,
   ``path/to/net.py:Net``) with the caller's keyword arguments, or takes a whole pickled model
   (only with ``trust_pickle=True``);
2. reads the weights with ``torch.load(..., weights_only=True)`` (or safetensors), so a
   crafted pickle never runs; TorchScript archives are refused (module hooks, which every
   visualization here relies on, cannot reach inside a TorchScript graph);
3. finds the state dict inside checkpoint dicts (``state_dict``, ``model``, ``net``, ``ema``,
   Lightning...) and strips ``module.`` / ``model.`` / ``_orig_mod.`` prefixes when that makes
   the keys fit, or explains exactly what does not fit and the likely fix;
4. resolves the input spec, labels and name (caller > sidecar JSON > checkpoint ``"cnnvis"``
   key > guesses, every guess recorded in ``notes``) and validates it with one probe forward.

Everything is built in fresh objects; a failure raises :class:`ModelLoadError` and leaves
nothing behind.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import io
import json
import pickletools
import re
import sys
import threading
import uuid
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..core import CnnvisError, InputSpec, IMAGENET_MEAN, IMAGENET_STD

__all__ = ["load", "LoadedModel", "ModelLoadError", "UntrustedPickleError", "load_labels", "read_weights", "CHECKPOINT_META_KEY",
           "STATE_DICT_KEYS", "STRIP_PREFIXES"]

#: Key of the metadata dict inside a checkpoint (and the layout of a sidecar JSON):
#: ``{"spec": InputSpec.to_dict(), "labels": [...], "name": str, "arch": str, "arch_kwargs": {...}}``.
CHECKPOINT_META_KEY = "cnnvis"
#: Keys under which checkpoint dicts nest the state dict, in order of preference.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module",
                   "ema", "model_ema", "state_dict_ema", "ema_state_dict", "params")
#: Prefixes stripped from state-dict keys when that makes them fit (DataParallel, Lightning, torch.compile).
STRIP_PREFIXES = ("module.", "model.", "_orig_mod.", "net.")
_SHOW = 8
_GUESS_SIZES = (224, 64, 32, 28, 96, 128, 256, 299, 160, 48, 16)


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


@dataclass
class LoadedModel:
    """A model ready for the visualizer.

    Attributes
    ----------
    model : nn.Module        in eval mode, on ``device``
    spec : InputSpec         the input it expects (given, read from metadata, or guessed)
    labels : list or None    class names, index = output unit
    name : str               display name
    source : str             where it came from (weights path and/or architecture)
    notes : list of str      guesses made, prefixes stripped, keys left at random init...
    """

    model: nn.Module
    spec: InputSpec
    labels: list | None
    name: str
    source: str
    notes: list = field(default_factory=list)
    arch: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    output_shape: tuple | None = None

    def __repr__(self) -> str:
        n = f", {len(self.labels)} labels" if self.labels else ""
        return f"LoadedModel({self.name!r}, {type(self.model).__name__}, {self.spec.describe()}{n}, {self.device})"


# ============================================================================ public entry point
def load(weights=None, arch=None, trust_pickle: bool = False, strict: bool = True, device="cpu",
         spec=None, labels=None, state_dict_key=None, **arch_kwargs) -> LoadedModel:
    """Build a model from an architecture source and/or a weight file.

    Parameters
    ----------
    weights : str or Path, optional
        ``.pt/.pth/.bin/.ckpt`` (state dict or checkpoint dict), ``.safetensors``, or a whole
        pickled ``nn.Module`` (needs ``trust_pickle=True``).
    arch : str or callable, optional
        ``"torchvision:resnet18"``, ``"timm:resnet18"``, ``"package.module:factory"``,
        ``"path/to/net.py:Net"`` or a callable returning an ``nn.Module``.  Defaults to the
        checkpoint's ``cnnvis.arch`` metadata.
    trust_pickle : bool
        Allow full unpickling (can run arbitrary code: only for files you trust).
    strict : bool
        Require every parameter to be loaded; ``False`` loads what fits and lists the rest in notes.
    device : str or torch.device
        ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"``.
    spec : InputSpec or dict, optional
        Input spec; a dict may give only some fields (the rest are read or guessed).
    labels : list, dict, str or Path, optional
        Class names, or a labels file (see :func:`load_labels`).  A relative file name in the
        checkpoint's or sidecar's metadata is relative to the checkpoint's folder.
    state_dict_key : str, optional
        Which entry of a checkpoint dict holds the weights to use, e.g. ``"ema"``,
        ``"state_dict_ema"`` or ``"model_ema"`` (nested: ``"model.ema"``); default: the first of
        :data:`STATE_DICT_KEYS` that fits.  CLI: ``--weights-key``.
    **arch_kwargs
        Passed to the architecture constructor (e.g. ``num_classes=10``).
    """
    dev = _resolve_device(device)
    notes: list[str] = []
    if weights is None and arch is None:
        raise ModelLoadError("nothing to load: give a weight file, an architecture (arch='torchvision:resnet18', "
                             "'package.module:factory', 'path/to/net.py:Net'), or both.")
    path = Path(weights).expanduser() if weights is not None else None
    meta: dict = {}
    obj = None
    if path is not None:
        obj = read_weights(path, trust_pickle=trust_pickle, notes=notes)
        if isinstance(obj, dict) and isinstance(obj.get(CHECKPOINT_META_KEY), dict):
            meta.update(obj[CHECKPOINT_META_KEY])
        side = _read_sidecar(path, notes)
        if side:
            meta.update(side["meta"])
            notes.append(f"metadata read from {side['path'].name}")

    arch_src = arch if arch is not None else meta.get("arch")
    if arch is None and isinstance(arch_src, str) and path is not None:
        arch_src = _resolve_meta_arch(arch_src, path)
    kwargs = dict(meta.get("arch_kwargs") or {}) if arch is None or arch == meta.get("arch") else {}
    kwargs.update(arch_kwargs)
    arch_name = arch_src if isinstance(arch_src, str) else getattr(arch_src, "__name__", None)

    if arch_src is not None:
        model = build_arch(arch_src, **kwargs)
        if obj is not None:
            if state_dict_key is not None:
                sd_candidates = _chosen_state_dict(obj, str(state_dict_key), path.name)
            else:
                sd_candidates = _state_dict_candidates(obj, trust_pickle)
            if not sd_candidates:
                raise ModelLoadError(f"{path.name}: found no weights in it (no tensors at the top level nor under "
                                     f"any of {', '.join(STATE_DICT_KEYS)}); top-level keys: "
                                     f"{_short(list(obj)[:20]) if isinstance(obj, dict) else type(obj).__name__}.")
            _fit_state_dict(model, sd_candidates, strict, notes, path.name, kwargs)
        else:
            notes.append("no weight file: all parameters are at their initial (random or built-in) values")
    elif isinstance(obj, nn.Module):
        model = obj
        notes.append(f"whole pickled model ({type(model).__name__}) loaded with trust_pickle=True")
        arch_name = f"{type(model).__module__}.{type(model).__qualname__}"
    elif isinstance(obj, dict) and any(isinstance(v, nn.Module) for v in obj.values()):
        key = next(k for k, v in obj.items() if isinstance(v, nn.Module))
        model = obj[key]
        notes.append(f"whole pickled model found under checkpoint[{key!r}] (trust_pickle=True)")
        arch_name = f"{type(model).__module__}.{type(model).__qualname__}"
    else:
        raise ModelLoadError(f"{path.name} holds only weights (a state dict), not the network's structure: give the "
                             f"architecture too, e.g. arch='torchvision:resnet18', 'mypackage.nets:make_net' or "
                             f"'path/to/net.py:Net' (command line: --model ARCH --weights FILE), plus any constructor arguments "
                             f"(num_classes=...).")
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"the loaded object is a {type(model).__name__}, not a torch.nn.Module.")

    try:
        model = model.to(dev).eval()
    except Exception as e:  # pragma: no cover - device specific
        raise ModelLoadError(f"could not move the model to {dev}: {e}") from e

    # ---------------------------------------------------------------- metadata
    lab = labels if labels is not None else meta.get("labels")
    if isinstance(lab, (str, Path)):
        lp = Path(lab).expanduser()
        if not lp.is_absolute() and path is not None and labels is None:
            lp = path.parent / lp   # metadata names a file next to the checkpoint (joined once, here)
        lab = load_labels(lp)
    elif isinstance(lab, dict):
        lab = _labels_from_mapping(lab, "labels")
    elif lab is not None:
        lab = [str(v) for v in lab]

    given = _spec_dict(spec, "spec=") if spec is not None else None
    meta_spec = _spec_dict(meta["spec"], "metadata 'spec'") if meta.get("spec") else None
    final_spec, out_shape = _resolve_spec(model, given, meta_spec, arch_name, notes, dev)

    if lab is None:
        lab = _guess_labels(arch_name, out_shape, notes)
    if lab is not None and out_shape is not None and len(out_shape) == 1 and len(lab) != out_shape[0]:
        notes.append(f"{len(lab)} labels given but the model has {out_shape[0]} outputs")

    name = meta.get("name") or (path.stem if path is not None else (arch_name or type(model).__name__))
    source = " + ".join(s for s in (str(path) if path else None, arch_name if isinstance(arch_name, str) else None)
                        if s)
    return LoadedModel(model=model, spec=final_spec, labels=lab, name=str(name), source=source or name,
                       notes=notes, arch=arch_name, device=dev, output_shape=out_shape)


# ============================================================================ device
def _resolve_device(device) -> torch.device:
    if isinstance(device, torch.device):
        device = str(device)
    d = str(device or "cpu").lower()
    if d == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(d)
    except (RuntimeError, ValueError) as e:
        raise ModelLoadError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} was asked for but CUDA is not available "
                                 f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}, no usable "
                                 f"GPU found); use device='cpu' or 'auto' (command line: --device cpu|auto).")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present.")
    elif dev.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ModelLoadError(f"device {device!r} was asked for but MPS (Apple GPU) is not available; "
                                 f"use device='cpu' or 'auto'.")
    elif dev.type != "cpu":
        raise ModelLoadError(f"unsupported device {device!r}: use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")
    return dev


# ============================================================================ weight files
_PICKLE_HINT = ("Loading it runs the Python code the file names, which can execute arbitrary code. "
                "Only if you trust where the file came from, allow it explicitly: load(..., trust_pickle=True) in "
                "Python, --trust-pickle on the command line, or confirm the prompt in the GUI. Safer: re-save "
                "just the weights (torch.save(model.state_dict(), path)) and give the architecture separately.")


def read_weights(path, trust_pickle: bool = False, notes: list | None = None):
    """Read a weight file without running code: a state dict, a checkpoint dict, or (trusted) a module.

    Checkpoint extras that need more than tensors (``argparse.Namespace`` args, numpy
    scalars, paths, dates, objects of unknown classes) are read without running code; what was
    skipped goes into ``notes`` when a list is given.
    Raises ModelLoadError with a specific reason for empty, truncated, text, random,
    TorchScript and pickled-object files (:class:`UntrustedPickleError` for the latter).
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"weight file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder; give the weight file inside it (.pth, .pt, .bin, .ckpt, .safetensors).")
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"{path.name} is empty (0 bytes): the save was interrupted or the download failed.")
    with open(path, "rb") as f:
        head = f.read(4096)

    if path.suffix.lower() == ".safetensors" or _looks_like_safetensors(head, size):
        return _read_safetensors(path)

    if head[:4] == b"PK\x03\x04" or zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise ModelLoadError(f"{path.name} is a truncated or corrupt zip archive ({e}): the checkpoint was not "
                                 f"saved completely or the copy/download was cut short; save or download it again."
                                 ) from None
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            raise ModelLoadError(
                f"{path.name} is a TorchScript archive (torch.jit.save). It is refused: the visualizations rely on "
                f"module hooks and the guided-backprop/deconvnet ReLU rules, which cannot reach inside a compiled "
                f"TorchScript graph. Export the eager model instead: torch.save(model.state_dict(), 'weights.pth') "
                f"and load it with its architecture (arch='package.module:Net' or 'net.py:Net').")
        if not any(n.endswith("data.pkl") for n in names):
            raise ModelLoadError(f"{path.name} is a zip archive but not a PyTorch checkpoint (no data.pkl inside; "
                                 f"entries: {_short(names)}).")
    elif _looks_like_text(head):
        first = head.decode("utf-8", "replace").strip().splitlines()[0][:60] if head.strip() else ""
        raise ModelLoadError(f"{path.name} is a text file, not a PyTorch checkpoint (it starts with {first!r}). "
                             f"Was a web page or a Git LFS pointer saved instead of the weights?")

    err = None
    try:
        with warnings.catch_warnings():   # "Detected pickle protocol 4..." noise from the safe unpickler
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        err = e
    # weights_only refused or failed: is it pickled Python objects, or just broken?
    kind, globals_ = _classify_pickle(path)
    if kind == "objects" or "Unsupported global" in str(err):
        if not globals_ and _unsupported_global(str(err)):
            globals_ = {_unsupported_global(str(err))}
        if not trust_pickle:
            obj = _load_with_extras(path, globals_, notes)
            if obj is not None:
                return obj
            raise _untrusted(path, globals_) from None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (AttributeError, ModuleNotFoundError, ImportError) as e:
            raise ModelLoadError(f"{path.name}: the pickled model refers to code that cannot be imported here ({e}). "
                                 f"Make the module that defines the model importable (on sys.path), or load a state "
                                 f"dict with its architecture instead.") from None
        except Exception as e:
            raise ModelLoadError(f"{path.name}: full unpickling failed: {type(e).__name__}: {e}") from None
    msg = str(err).split("\n")[0][:200]
    if isinstance(err, EOFError) or "central directory" in str(err) or "truncated" in str(err).lower() \
            or "Ran out of input" in str(err):
        raise ModelLoadError(f"{path.name} is truncated or corrupt ({type(err).__name__}: {msg or 'unexpected end of file'}): "
                             f"save or download the checkpoint again.") from None
    raise ModelLoadError(f"{path.name} is not a PyTorch checkpoint or is corrupt (could not read it as a state dict, "
                         f"checkpoint dict or .safetensors file; first bytes {head[:8]!r}). "
                         f"Supported: .pt/.pth/.bin/.ckpt saved with torch.save, and .safetensors.") from None


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


def _untrusted(path: Path, globals_, whole=None) -> UntrustedPickleError:
    names = ", ".join(sorted(globals_)[:6]) or "Python classes"
    if whole:
        what = (f"{path.name} is a whole pickled model ({whole}): pickled Python objects, not a state dict, so it "
                f"cannot be read as plain weights. ")
    else:
        what = (f"{path.name} contains pickled Python objects that the safe loader does not accept (it refers to "
                f"{names}); it cannot be read as plain weights. ")
    return UntrustedPickleError(what + _PICKLE_HINT, path=path, globals_=sorted(globals_))


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
    std = set(getattr(sys, "stdlib_module_names", ())) | {"__builtin__", "copy_reg", "builtins"}
    risky = {g for g in needed if g not in inert and g.split(".", 1)[0] in std}
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


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover
        raise ModelLoadError(f"{path.name} is a .safetensors file but the 'safetensors' package is not installed: "
                             f"pip install safetensors") from None
    try:
        from safetensors import safe_open
        out = dict(load_file(str(path), device="cpu"))
        with safe_open(str(path), framework="pt") as f:
            extra = f.metadata() or {}
    except Exception as e:
        raise ModelLoadError(f"{path.name} is not a valid .safetensors file or is truncated/corrupt ({e}).") from None
    if CHECKPOINT_META_KEY in extra:   # metadata stored as a JSON string in the safetensors header
        try:
            out[CHECKPOINT_META_KEY] = json.loads(extra[CHECKPOINT_META_KEY])
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"{path.name}: the '{CHECKPOINT_META_KEY}' metadata is not valid JSON: {e}") from None
    return out


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        s = head.decode("utf-8")
    except UnicodeDecodeError:
        s = head[:-4].decode("utf-8", "ignore") if len(head) == 4096 else None
        if s is None:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in s)
    return printable >= 0.95 * max(1, len(s))


def _unsupported_global(msg: str) -> str:
    i = msg.find("GLOBAL ")
    return msg[i + 7:].split(" ")[0] if i >= 0 else ""


def _pickle_bytes(path: Path) -> bytes:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                if n.endswith("data.pkl"):
                    return z.read(n)
        return b""
    with open(path, "rb") as f:
        return f.read(1 << 22)


def _classify_pickle(path: Path):
    """Scan pickle opcodes WITHOUT executing them: ("objects", globals) or ("broken", set())."""
    try:
        data = _pickle_bytes(path)
    except Exception:
        return "broken", set()
    stream = io.BytesIO(data)
    found: set = set()
    for _ in range(6):  # legacy torch files hold several pickles back to back
        strings: list = []
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                    strings.append(arg)
                elif op.name == "GLOBAL":
                    found.add(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.add(f"{strings[-2]}.{strings[-1]}")
        except Exception:
            break
        if stream.tell() >= len(data):
            break
    safe_prefixes = ("torch._utils._rebuild", "torch.FloatStorage", "torch.HalfStorage", "torch.DoubleStorage",
                     "torch.LongStorage", "torch.IntStorage", "torch.ByteStorage", "torch.BoolStorage",
                     "torch.BFloat16Storage", "torch.storage", "collections.OrderedDict", "torch._tensor",
                     "torch.Size", "torch.float", "torch.device", "__builtin__.set", "builtins.set")
    suspicious = {g for g in found if not g.startswith(safe_prefixes)}
    if suspicious:
        return "objects", suspicious
    return "broken", set()


_META_KEYS = ("spec", "labels", "name", "arch", "arch_kwargs")


def _read_sidecar(path: Path, notes: list | None = None):
    """The sidecar JSON next to a checkpoint, if it is one of ours.

    A JSON file there may just as well be somebody's training config: a file that is not JSON,
    not an object, or has none of our keys (``spec``, ``labels``, ``arch``, ``name``) is ignored
    with a note; of a bare sidecar only the keys we understand and that are valid are used. A
    sidecar that wraps its metadata in a ``"cnnvis"`` object is explicitly ours, and invalid
    values there are errors.
    """
    for cand in (path.with_suffix(".json"), path.with_name(path.name + ".json")):
        if not cand.is_file() or cand == path:
            continue
        ignored = f"{cand.name} next to the weights was ignored: "
        try:
            d = json.loads(cand.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
            if notes is not None:
                notes.append(ignored + f"it is not valid JSON ({e})")
            return None
        if not isinstance(d, dict):
            if notes is not None:
                notes.append(ignored + "it is not a JSON object")
            return None
        explicit = isinstance(d.get(CHECKPOINT_META_KEY), dict)
        if explicit:
            return {"path": cand, "meta": d[CHECKPOINT_META_KEY]}
        if not any(k in d for k in ("spec", "labels", "arch", "name")):
            if notes is not None:
                notes.append(ignored + f"none of the metadata keys {', '.join(_META_KEYS)} in it (a training config?)")
            return None
        meta, bad = {}, []
        for k in _META_KEYS:
            if k not in d:
                continue
            problem = _meta_problem(k, d[k], cand.parent)
            if problem:
                bad.append(f"{k!r} ({problem})")
            else:
                meta[k] = d[k]
        if bad and notes is not None:
            notes.append(f"{cand.name}: ignored {', '.join(bad)}")
        if not meta:
            return None
        return {"path": cand, "meta": meta}
    return None


def _meta_problem(key: str, value, folder: Path) -> str | None:
    """Why a bare sidecar's value cannot be used (None: it can)."""
    if key == "spec":
        if not isinstance(value, dict):
            return "not an object"
        try:
            s = _spec_dict(value, "spec")
            InputSpec(**{"height": 224, "width": 224, **s})
        except CnnvisError as e:
            return str(e)
        except TypeError as e:
            return str(e)
        return None
    if key == "labels":
        if isinstance(value, str):
            p = Path(value).expanduser()
            p = p if p.is_absolute() else folder / p
            return None if p.is_file() else f"no labels file {p}"
        if isinstance(value, list):
            return None
        if isinstance(value, dict):
            try:
                _labels_from_mapping(value, "labels")
            except ModelLoadError as e:
                return str(e)
            return None
        return "not a list, mapping or file name"
    if key in ("name", "arch"):
        return None if isinstance(value, str) and value.strip() else "not a non-empty string"
    if key == "arch_kwargs":
        return None if isinstance(value, dict) else "not an object"
    return None


def _is_file_arch(head: str) -> bool:
    return head.endswith(".py") or "/" in head or "\\" in head


def _resolve_meta_arch(arch: str, path: Path) -> str:
    """A file architecture named in a checkpoint's metadata is relative to the checkpoint's folder
    (then the current folder)."""
    head, sep, name = arch.strip().rpartition(":")
    if not sep or not head or not _is_file_arch(head) or head.startswith(("torchvision", "timm")):
        return arch
    f = Path(head).expanduser()
    if f.is_absolute():
        return arch
    tried = [path.parent / f, Path.cwd() / f]
    for cand in tried:
        if cand.is_file():
            return f"{cand}:{name}"
    raise ModelLoadError(f"{path.name}: its metadata names the architecture {arch!r}, but {head} was not found; "
                         f"tried {tried[0]} (next to the checkpoint) and {tried[1]} (current folder). Give the "
                         f"architecture explicitly (arch=..., CLI: --model path/to/net.py:Class).")


def _chosen_state_dict(obj, key: str, fname: str) -> list:
    """The state dict under the key the caller named (``state_dict_key`` / ``--weights-key``)."""
    where = "checkpoint"
    v = obj
    if isinstance(obj, dict) and key in obj:
        v, where = obj[key], f"checkpoint[{key!r}]"
    else:
        for part in key.split("."):
            if not isinstance(v, dict) or part not in v:
                avail = [w for w, _ in _state_dict_candidates(obj, False)]
                keys = _short(list(obj)[:20]) if isinstance(obj, dict) else type(obj).__name__
                raise ModelLoadError(f"{fname}: no entry {key!r} (state_dict_key / --weights-key) in the checkpoint; "
                                     f"entries holding weights: {', '.join(avail) or 'none'}; top-level keys: {keys}.")
            v, where = v[part], f"{where}[{part!r}]"
    if isinstance(v, nn.Module):
        v = v.state_dict()
    if _is_state_dict(v):
        return [(where, _tensors_only(v))]
    nested = [(where if w == "the file" else where + w[len("checkpoint"):], sd)
              for w, sd in _state_dict_candidates(v, False)]
    if nested:
        return nested[:1]
    raise ModelLoadError(f"{fname}: {where} holds no weights (a {type(v).__name__}); choose another "
                         f"state_dict_key / --weights-key.")


def _key_of(where: str) -> str:
    return ".".join(re.findall(r"\['([^']*)'\]", where))


# ============================================================================ labels
def load_labels(path) -> list:
    """Read class labels: one per line, a JSON list, or a JSON dict ``{index: label}``.

    Also accepts ImageNet-style ``{"0": ["n01440764", "tench"]}`` (the last string is used).
    """
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"labels file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ModelLoadError(f"labels file {p.name} is not UTF-8 text.") from None
    s = text.strip()
    if p.suffix.lower() == ".json" or s[:1] in "[{":
        try:
            data = json.loads(s)
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"labels file {p.name} is not valid JSON: {e}") from None
        if isinstance(data, dict) and isinstance(data.get("labels"), (list, dict)):
            data = data["labels"]
        if isinstance(data, list):
            return [_label_str(v) for v in data]
        if isinstance(data, dict):
            return _labels_from_mapping(data, p.name)
        raise ModelLoadError(f"labels file {p.name}: expected a JSON list or an object {{index: label}}.")
    labels = [ln.strip() for ln in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise ModelLoadError(f"labels file {p.name} is empty.")
    return labels


def _label_str(v) -> str:
    if isinstance(v, (list, tuple)) and v:
        return str(v[-1])
    return str(v)


def _labels_from_mapping(d: dict, what: str) -> list:
    try:
        items = {int(k): _label_str(v) for k, v in d.items()}
    except (TypeError, ValueError):
        raise ModelLoadError(f"{what}: a labels mapping needs integer keys (class index -> label).") from None
    if not items:
        return []
    n = max(items) + 1
    return [items.get(i, str(i)) for i in range(n)]


# ============================================================================ architectures
def build_arch(arch, **kwargs) -> nn.Module:
    """Instantiate an architecture source (see :func:`load`)."""
    if isinstance(arch, nn.Module):
        return arch
    if callable(arch):
        return _call_factory(arch, kwargs, getattr(arch, "__name__", repr(arch)))
    if not isinstance(arch, str) or not arch.strip():
        raise ModelLoadError(f"arch must be a string like 'torchvision:resnet18' or a callable, got {arch!r}.")
    arch = arch.strip()
    head, sep, name = arch.rpartition(":")
    if not sep or not head or not name:
        raise ModelLoadError(f"architecture {arch!r} is not understood: use 'torchvision:NAME', 'timm:NAME', "
                             f"'package.module:factory' or 'path/to/net.py:ClassName'.")
    if head == "torchvision":
        return _torchvision(name, kwargs)
    if head == "timm":
        return _timm(name, kwargs)
    if head.endswith(".py") or "/" in head or "\\" in head:
        return _from_file(Path(head).expanduser(), name, kwargs, arch)
    return _from_module(head, name, kwargs, arch)


def _torchvision(name: str, kwargs: dict) -> nn.Module:
    try:
        import torchvision.models as tvm
    except ImportError:
        raise ModelLoadError("arch 'torchvision:...' needs torchvision, which is not installed: "
                             "pip install torchvision") from None
    available = list(tvm.list_models())
    if name not in available:
        near = difflib.get_close_matches(name, available, n=5)
        raise ModelLoadError(f"torchvision has no model {name!r}" + (f"; did you mean {', '.join(near)}?" if near
                             else f"; available: {_short(sorted(available), 12)}"))
    kwargs = dict(kwargs)
    kwargs.setdefault("weights", None)
    try:
        return tvm.get_model(name, **kwargs)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"torchvision:{name}({_kw(kwargs)}) failed: {e}") from None


def _timm(name: str, kwargs: dict) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ModelLoadError(f"arch 'timm:{name}' needs the timm package, which is not installed: pip install timm"
                             ) from None
    kwargs = dict(kwargs)
    kwargs.setdefault("pretrained", False)
    try:
        return timm.create_model(name, **kwargs)
    except Exception as e:
        near = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ModelLoadError(f"timm:{name}({_kw(kwargs)}) failed: {e}" + (f"; did you mean {', '.join(near)}?"
                                                                            if near else "")) from None


def _from_module(modname: str, attr: str, kwargs: dict, arch: str) -> nn.Module:
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        raise ModelLoadError(f"architecture {arch!r}: module {modname!r} cannot be imported ({e}); check the name and "
                             f"that its package is installed or on sys.path (for a file use 'path/to/net.py:{attr}')."
                             ) from None
    except SyntaxError as e:
        raise ModelLoadError(_syntax_msg(arch, e)) from None
    except Exception as e:
        raise ModelLoadError(f"architecture {arch!r}: importing {modname!r} failed: {type(e).__name__}: {e}") from None
    return _call_factory(_get_attr(mod, attr, arch), kwargs, arch)


_IMPORT_LOCK = threading.RLock()


def _local_module_names(folder: Path) -> set:
    """Top-level module names a folder on sys.path provides: ``x.py`` files and ``x/`` packages."""
    names = set()
    try:
        for p in folder.iterdir():
            if p.suffix == ".py" and p.stem.isidentifier():
                names.add(p.stem)
            elif p.is_dir() and p.name.isidentifier() and (p / "__init__.py").is_file():
                names.add(p.name)
    except OSError:
        pass
    std = getattr(sys, "stdlib_module_names", ())
    return {n for n in names if n not in std and n not in sys.builtin_module_names}


def _package_root(folder: Path):
    """For a file in a package (its folder has ``__init__.py``), the outermost package folder, else None."""
    if not (folder / "__init__.py").is_file():
        return None
    root = folder
    while (root.parent / "__init__.py").is_file() and root.parent != root and root.parent.name.isidentifier():
        root = root.parent
    return root


def _from_file(file: Path, attr: str, kwargs: dict, arch: str) -> nn.Module:
    """Import an architecture file in isolation and build it.

    The file's folder (for a file inside a package: the folder above the package root) goes
    first on ``sys.path`` for the duration of the load; modules of other projects that carry
    the name of one of that folder's modules (``blocks``, ``utils``...) are set aside first and
    put back after, and the modules this load imported from the folder are dropped again, so two
    projects with the same helper names never see each other's code.
    """
    if not file.is_file():
        raise ModelLoadError(f"architecture {arch!r}: file {file} not found.")
    file = file.resolve()
    root = _package_root(file.parent)
    if root is not None:   # proj/pkg/model.py with proj/pkg/__init__.py: import "pkg.model" from proj/
        base = root.parent
        parts = list(file.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if not all(p.isidentifier() for p in parts):
            root = None
    if root is None:
        base = file.parent
    local = _local_module_names(base)
    if root is not None:
        local.add(root.name)

    def ours(name: str) -> bool:
        return name.split(".", 1)[0] in local

    def elsewhere(top: str) -> bool:   # a module of that name, but not from this folder
        m = sys.modules.get(top)
        if m is None:
            return True
        locs = [getattr(m, "__file__", None)] + list(getattr(m, "__path__", None) or [])
        for loc in locs:
            if not loc:
                continue
            try:
                p = Path(loc).resolve()
            except (OSError, RuntimeError):
                continue
            if p in (base / f"{top}.py", base / top / "__init__.py", base / top):
                return False
        return True

    with _IMPORT_LOCK:
        foreign = {t for t in local if t in sys.modules and elsewhere(t)}
        set_aside = {n: m for n, m in sys.modules.items() if n.split(".", 1)[0] in foreign}
        for n in set_aside:
            del sys.modules[n]
        before = set(sys.modules)
        sys.path.insert(0, str(base))
        importlib.invalidate_caches()
        modname = None
        ok = False
        try:
            if root is not None:
                modname = ".".join(parts)
                try:
                    mod = importlib.import_module(modname)
                except SyntaxError as e:
                    raise ModelLoadError(_syntax_msg(arch, e)) from None
                except Exception as e:
                    raise ModelLoadError(f"architecture {arch!r}: importing {file.name} as {modname} (package root "
                                         f"{root}) failed: {type(e).__name__}: {e}") from None
            else:
                modname = f"_cnnvis_user_{file.stem}_{uuid.uuid4().hex[:8]}"
                spec = importlib.util.spec_from_file_location(modname, file)
                if spec is None or spec.loader is None:
                    raise ModelLoadError(f"architecture {arch!r}: {file} cannot be imported as Python.")
                mod = importlib.util.module_from_spec(spec)
                sys.modules[modname] = mod   # dataclasses / pickling look the module up by name
                try:
                    spec.loader.exec_module(mod)
                except SyntaxError as e:
                    raise ModelLoadError(_syntax_msg(arch, e)) from None
                except Exception as e:
                    raise ModelLoadError(f"architecture {arch!r}: running {file.name} failed: "
                                         f"{type(e).__name__}: {e}") from None
            model = _call_factory(_get_attr(mod, attr, arch), kwargs, arch)
            ok = True
            return model
        finally:
            try:
                if sys.path and sys.path[0] == str(base):
                    del sys.path[0]
                else:
                    sys.path.remove(str(base))
            except ValueError:
                pass
            for n in [n for n in sys.modules if n not in before and (ours(n) or (n == modname and not ok))]:
                sys.modules.pop(n, None)
            for n, m in set_aside.items():
                sys.modules.setdefault(n, m)


def _syntax_msg(arch: str, e: SyntaxError) -> str:
    where = f"{Path(e.filename).name if e.filename else '?'}, line {e.lineno}"
    line = f": {e.text.strip()!r}" if e.text else ""
    return f"architecture {arch!r}: syntax error in {where}{line} ({e.msg}); fix the file and load again."


def _get_attr(mod, attr: str, arch: str):
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n, v in vars(mod).items() if not n.startswith("_") and callable(v)
                     and (isinstance(v, type) and issubclass(v, nn.Module) or not isinstance(v, type))
                     and getattr(v, "__module__", None) == mod.__name__]
            near = difflib.get_close_matches(attr, names, n=3)
            hint = f"did you mean {', '.join(near)}? " if near else ""
            raise ModelLoadError(f"architecture {arch!r}: {mod.__name__.split('_cnnvis_user_')[-1]} has no {attr!r}; "
                                 f"{hint}defined there: {_short(sorted(names), 12) if names else 'nothing callable'}.")
        obj = getattr(obj, part)
    return obj


def _call_factory(fn: Callable, kwargs: dict, what: str) -> nn.Module:
    if not callable(fn):
        raise ModelLoadError(f"architecture {what!r} is a {type(fn).__name__}, not a class or function.")
    try:
        model = fn(**kwargs)
    except TypeError as e:
        raise ModelLoadError(f"architecture {what!r}: calling it with ({_kw(kwargs)}) failed: {e}") from None
    except Exception as e:
        raise ModelLoadError(f"architecture {what!r}: building the model failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"architecture {what!r} returned a {type(model).__name__}, not a torch.nn.Module.")
    return model


def _kw(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


# ============================================================================ state dicts
def _is_state_dict(d) -> bool:
    if not isinstance(d, dict) or not d:
        return False
    n_t = sum(isinstance(v, torch.Tensor) for v in d.values())
    return n_t > 0 and n_t >= 0.5 * len(d)


def _tensors_only(d: dict) -> dict:
    return {str(k): v for k, v in d.items() if isinstance(v, torch.Tensor)}


def _state_dict_candidates(obj, trust_pickle: bool) -> list:
    """[(where, state_dict)] in order of preference."""
    if isinstance(obj, nn.Module):
        return [("the pickled model", obj.state_dict())]
    if not isinstance(obj, dict):
        return []
    out = []
    if _is_state_dict(obj):
        out.append(("the file", _tensors_only(obj)))
    for k in STATE_DICT_KEYS:
        v = obj.get(k)
        if isinstance(v, nn.Module):
            v = v.state_dict()
        if _is_state_dict(v):
            out.append((f"checkpoint[{k!r}]", _tensors_only(v)))
        elif isinstance(v, dict):   # one more level, e.g. {"model": {"state_dict": ...}} or ema {"module": ...}
            for k2 in STATE_DICT_KEYS:
                v2 = v.get(k2)
                if _is_state_dict(v2):
                    out.append((f"checkpoint[{k!r}][{k2!r}]", _tensors_only(v2)))
    return out


def _prefix_variants(sd: dict):
    """(stripped prefixes, state dict) for every way of stripping known prefixes, most direct first."""
    seen = set()
    queue = [((), sd)]
    while queue:
        strip, d = queue.pop(0)
        key = frozenset(d)
        if key in seen:
            continue
        seen.add(key)
        yield strip, d
        if len(strip) >= 3:
            continue
        for p in STRIP_PREFIXES:
            if any(k.startswith(p) for k in d):
                queue.append((strip + (p,), {(k[len(p):] if k.startswith(p) else k): v for k, v in d.items()}))


def _fit_state_dict(model: nn.Module, candidates: list, strict: bool, notes: list, fname: str, kwargs: dict):
    target = model.state_dict()
    tshape = {k: tuple(v.shape) for k, v in target.items()}
    best = None
    for order, (where, sd) in enumerate(candidates):
        for strip, d in _prefix_variants(sd):
            score = sum(1 for k, v in d.items() if tshape.get(k) == tuple(v.shape))
            named = sum(1 for k in d if k in tshape)
            rank = (score, named, -order, -len(strip))
            if best is None or rank > best[0]:
                best = (rank, where, strip, d)
    _, where, strip, sd = best
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    mismatched = [(k, tuple(sd[k].shape), tshape[k]) for k in sd if k in tshape and tuple(sd[k].shape) != tshape[k]]
    harmless = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if k not in harmless]

    if where != "the file":
        notes.append(f"state dict read from {where}")
    others = [w for w, _ in candidates if w != where]
    if others:
        k = _key_of(others[0])
        notes.append(f"the checkpoint also holds {', '.join(others)} (not used; to load "
                     f"{'it' if len(others) == 1 else 'one of them'} instead: state_dict_key={k!r}, command line "
                     f"--weights-key {k})" if k else f"the checkpoint also holds {', '.join(others)} (not used)")
    if strip:
        notes.append(f"stripped key prefix{'es' if len(strip) > 1 else ''} {' + '.join(repr(p) for p in strip)} "
                     f"so the keys fit the architecture")

    if missing or unexpected or mismatched:
        if strict:
            raise ModelLoadError(_mismatch_report(fname, type(model).__name__, target, sd, missing, unexpected,
                                                  mismatched, kwargs))
        loadable = {k: v for k, v in sd.items() if k in tshape and tuple(v.shape) == tshape[k]}
        model.load_state_dict(loadable, strict=False)
        left = [k for k in target if k not in loadable and not k.endswith("num_batches_tracked")]
        if left:
            notes.append(f"strict=False: {len(left)} of {len(target)} tensors left at random init: {_short(left)}")
        if unexpected:
            notes.append(f"strict=False: {len(unexpected)} checkpoint tensors not used (no such key): {_short(unexpected)}")
        if mismatched:
            notes.append("strict=False: skipped for shape mismatch: " + _short(
                [f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in mismatched]))
        return
    try:
        model.load_state_dict(sd, strict=not harmless)
    except RuntimeError as e:  # pragma: no cover - all checked above
        raise ModelLoadError(f"{fname}: loading the state dict failed: {e}") from None


def _mismatch_report(fname, arch, target, sd, missing, unexpected, mismatched, kwargs) -> str:
    lines = [f"{fname} does not fit {arch}: {len(sd)} tensors in the checkpoint, {len(target)} in the model; "
             f"{len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} with another shape."]
    hints = []
    # num_classes: only the classifier's output dimension differs
    if mismatched and not missing and not unexpected and all(
            len(a) == len(b) and a[1:] == b[1:] and a[0] != b[0] for _, a, b in mismatched):
        ks = {a[0] for _, a, _ in mismatched}
        ms = {b[0] for _, _, b in mismatched}
        if len(ks) == 1 and len(ms) == 1:
            k, m = ks.pop(), ms.pop()
            hints.append(f"only the classifier's output size differs: the checkpoint has {k} classes, the model "
                         f"{m}; pass num_classes={k} (Python: load(..., num_classes={k}); command line: "
                         f"--arch-kwarg num_classes={k}).")
    matched = len(sd) - len(unexpected) - len(mismatched)
    if not hints:
        pref = _common_prefix(unexpected)
        if pref and missing:
            stripped = {k[len(pref):] for k in unexpected if k.startswith(pref)}
            if len(stripped & set(missing)) >= 0.5 * len(missing):
                hints.append(f"the checkpoint keys carry the prefix {pref!r}; strip it "
                             f"({{k.removeprefix({pref!r}): v for k, v in sd.items()}}) and save again.")
    if not hints and matched <= 0.3 * len(target):
        hints.append(f"only {max(matched, 0)} of {len(target)} model tensors match by name and shape: the weights "
                     f"are probably for a different architecture; check arch= (and its constructor arguments)."
                     f" Checkpoint keys look like {_short(list(sd)[:3], 3)}, the model's like "
                     f"{_short(list(target)[:3], 3)}.")
    if not hints:
        hints.append("the architecture is close but not the same: check the variant (e.g. resnet18 vs resnet34) "
                     "and constructor arguments, or load with strict=False to keep what fits.")
    if missing:
        lines.append(f"missing in the checkpoint ({len(missing)}): {_short(missing)}")
    if unexpected:
        lines.append(f"unexpected in the checkpoint ({len(unexpected)}): {_short(unexpected)}")
    if mismatched:
        lines.append(f"shape mismatches ({len(mismatched)}): " + _short(
            [f"{k}: checkpoint {a} vs model {b}" for k, a, b in mismatched]))
    lines.append("Likely fix: " + " ".join(hints))
    return "\n".join(lines)


def _common_prefix(keys) -> str:
    keys = list(keys)
    if not keys:
        return ""
    firsts = {k.split(".", 1)[0] + "." for k in keys if "." in k}
    if len(firsts) == 1:
        p = firsts.pop()
        if all(k.startswith(p) for k in keys):
            return p
    return ""


def _short(items, n: int = _SHOW) -> str:
    items = list(items)
    s = ", ".join(str(i) for i in items[:n])
    return s + (f", ... and {len(items) - n} more" if len(items) > n else "")


# ============================================================================ spec / probe
def _spec_dict(s, what: str) -> dict:
    if isinstance(s, InputSpec):
        return s.to_dict()
    if isinstance(s, dict):
        known = set(InputSpec.__dataclass_fields__)
        unknown = set(s) - known
        if unknown:
            raise ModelLoadError(f"{what}: unknown input-spec keys {sorted(unknown)}; known: {sorted(known)}.")
        return dict(s)
    raise ModelLoadError(f"{what} must be an InputSpec or a dict, got {type(s).__name__}.")


def _first_conv_channels(model: nn.Module):
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Conv3d)):
            return m.in_channels
        if isinstance(m, nn.Linear):
            return None
    return None


def _resolve_spec(model, given, meta_spec, arch_name, notes, dev):
    known: dict = {}
    if meta_spec:
        known.update(meta_spec)
    if given:
        known.update(given)
    guessed = {}
    tv = isinstance(arch_name, str) and arch_name.startswith("torchvision:")
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if "channels" not in known:
        c = _first_conv_channels(model)
        guessed["channels"] = c or 3
        notes.append(f"guessed {guessed['channels']} input channels "
                     + ("from the first convolution" if c else "(no convolution found)"))
    if isinstance(cfg, dict) and cfg.get("input_size") and "height" not in known:
        _, h, w = cfg["input_size"]
        guessed.update(height=h, width=w)
        notes.append(f"input size {h}x{w} from the timm config")
    if isinstance(cfg, dict) and cfg.get("mean") and "mean" not in known:
        guessed.update(mean=tuple(cfg["mean"]), std=tuple(cfg.get("std", (1, 1, 1))))
        notes.append("mean/std from the timm config")
    ch = known.get("channels", guessed.get("channels"))
    if tv and "mean" not in known and "mean" not in guessed and ch == 3:
        guessed.update(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        notes.append("guessed ImageNet mean/std (torchvision architecture)")
    size_guessed = "height" not in known and "width" not in known and "height" not in guessed
    if "height" in known and "width" not in known:
        guessed["width"] = known["height"]
    if "width" in known and "height" not in known:
        guessed["height"] = known["width"]
    fields = {**guessed, **known}
    if "mean" not in fields:
        notes.append("no normalization known: using mean 0, std 1 on [0, 1] pixels (set the input spec if the "
                     "model was trained with another normalization)")
    try:
        base = InputSpec(**{k: v for k, v in fields.items() if k not in ("height", "width")},
                         height=fields.get("height", 224), width=fields.get("width", 224))
    except CnnvisError as e:
        raise ModelLoadError(f"invalid input spec: {e}") from None
    if not size_guessed:
        return base, _probe(model, base, dev)
    first_err = None
    for s in _GUESS_SIZES:
        sp = base.replace(height=s, width=s)
        try:
            out = _probe(model, sp, dev)
        except ModelLoadError as e:
            first_err = first_err or e
            continue
        notes.append(f"guessed input size {s}x{s}" + (" (torchvision default)" if tv and s == 224 else
                     " (the first size the forward accepts)" if s != 224 else ""))
        return sp, out
    raise first_err


def _probe(model: nn.Module, spec: InputSpec, dev) -> tuple | None:
    """One forward on zeros of the spec's shape; on failure name the innermost module and its input."""
    stack: list = []
    names = {m: n for n, m in model.named_modules()}
    handles = []
    failed = {}

    def pre(mod, args):
        shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        stack.append((names.get(mod, "?"), type(mod).__name__, shapes))

    def post(mod, args, out):
        if stack:
            stack.pop()

    x = torch.zeros((1, *spec.shape), device=dev)
    try:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
        with torch.no_grad():
            out = model(x)
    except Exception as e:
        failed = {"err": e, "where": stack[-1] if stack else None}
    finally:
        for h in handles:
            h.remove()
        handles.clear()
    if failed:
        e = failed["err"]
        name, typ, shapes = failed["where"] or ("", type(model).__name__, [tuple(x.shape)])
        layer = f"layer '{name}' ({typ})" if name else f"the model's own forward ({typ})"
        got = ", ".join(str(s) for s in shapes) or "no tensor"
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"the model's forward fails on the declared input shape {tuple(x.shape)} "
                             f"({spec.describe()}): {layer} got input of shape {got}: {type(e).__name__}: {msg}. "
                             f"Set the input spec (channels, height, width) the model was trained with.")
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    if isinstance(out, dict):
        out = next((v for v in out.values() if isinstance(v, torch.Tensor)), None)
    return tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None


def _guess_labels(arch_name, out_shape, notes):
    if not (isinstance(arch_name, str) and arch_name.startswith("torchvision:")):
        return None
    if out_shape != (1000,):
        notes.append(f"labels: none (the output has shape {out_shape}, not the 1000 ImageNet classes); "
                     f"give a labels file to name the classes")
        return None
    try:
        import torchvision.models as tvm
        ws = tvm.get_model_weights(arch_name.split(":", 1)[1])
        cats = next(iter(ws)).meta.get("categories")
    except Exception:
        return None
    if cats and len(cats) == 1000:
        notes.append("labels: ImageNet-1k categories (guessed from the torchvision architecture)")
        return list(cats)
    return None
