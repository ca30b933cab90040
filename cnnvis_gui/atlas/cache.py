"""The atlas cache: content keys for models, specs and folders, and atomic files.

Every cached result lives under ``cache_dir()/<kind>-<key>/`` where ``key`` is a hash of
everything the result depends on -- the model's weights (every tensor of its
``state_dict``: names, dtypes, shapes and bytes), the architecture's class (its qualname and
the hash of its source file -- never the random module name a ``net.py:Net`` file gets), the input
spec, the layer(s), and for scans the folder's contents (relative paths, sizes and
modification times of its image files).  A changed weight file, spec or folder gives a
new key, so a result computed for another model or another folder is never shown.

Files are written atomically by the one writer of :mod:`cnnvis_gui.core.files` (a temporary
file in the same folder, then ``os.replace``), so a crash, a kill or a full disk mid-write leaves
the previous file intact, never a torn one; a write that fails says which cache folder is full
and the way out (:func:`cache_hint`).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import weakref
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core import InputSpec
from ..core.bounds import MAX_JSON_BYTES, MAX_NPZ_BYTES, load_json_bounded, npz_declared_bytes
# the one atomic writer (core/files.py), used here for every cache file
from ..core.files import WriteError, atomic_save_npz, atomic_write_bytes, atomic_write_json

ENV_VAR = "CNNVIS_CACHE_DIR"
CACHE_VERSION = 1

__all__ = ["ENV_VAR", "cache_dir", "cache_hint", "weights_hash", "class_key", "spec_key", "digest", "is_digest",
           "atomic_write_bytes", "atomic_write_json", "atomic_save_npz", "load_npz", "read_json", "WriteError"]


def cache_dir(override=None) -> Path:
    """Where atlas results are kept.

    ``override`` (an argument) wins, then the ``CNNVIS_CACHE_DIR`` environment variable,
    then ``~/.cache/cnnvis-gui/atlas``.
    """
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "cnnvis-gui" / "atlas"


_CLASS_KEYS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_USER_MODULE = re.compile(r"^(_cnnvis_user_.*)_[0-9a-f]{8}$")


def class_key(cls) -> str:
    """A stable name for a model class: its qualname plus where it comes from.

    Architectures loaded from a file (``path/to/net.py:Net``) live in a module with a random
    name (``_cnnvis_user_<stem>_<uuid>``) on every load, so the module name cannot be part of a
    cache key: the hash of the class's source file is used instead (the same file gives the
    same key; an edited file a new one).  Without a readable source file: the module name,
    with such a random suffix removed.
    """
    try:
        return _CLASS_KEYS[cls]
    except (KeyError, TypeError):
        pass
    module = getattr(cls, "__module__", "") or ""
    src = None
    try:
        f = inspect.getsourcefile(cls)
        if f and os.path.isfile(f):
            src = hashlib.blake2b(Path(f).read_bytes(), digest_size=16).hexdigest()
    except (TypeError, OSError):
        src = None
    m = _USER_MODULE.match(module)
    if m:
        module = m.group(1)
    key = f"{module if src is None or not m else 'file'}.{cls.__qualname__}" + (f"@{src}" if src else "")
    try:
        _CLASS_KEYS[cls] = key      # the file as it was when first hashed (normally: when loaded)
    except TypeError:
        pass
    return key


def weights_hash(model: nn.Module) -> str:
    """Hash of the model's class (:func:`class_key`) and every ``state_dict`` tensor (name, dtype, shape, bytes)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(class_key(type(model)).encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        if not isinstance(t, torch.Tensor):
            h.update(repr(t).encode())
            continue
        t = t.detach()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        if t.numel() == 0:
            continue
        t = t.cpu().contiguous()
        if t.dtype == torch.bfloat16 or not hasattr(t, "numpy"):
            t = t.float()
        try:
            h.update(t.numpy().tobytes())
        except (TypeError, RuntimeError):
            h.update(t.float().numpy().tobytes())
    return h.hexdigest()


def spec_key(spec: InputSpec) -> dict:
    return spec.to_dict()


def digest(obj) -> str:
    """Stable short hash of a JSON-able object (the cache key)."""
    s = json.dumps({"v": CACHE_VERSION, "k": obj}, sort_keys=True, default=str)
    return hashlib.blake2b(s.encode(), digest_size=12).hexdigest()


_DIGEST = re.compile(r"[0-9a-f]{24}")


def is_digest(text) -> bool:
    """Whether ``text`` is a key :func:`digest` can return (24 lower-case hex digits), nothing else."""
    return isinstance(text, str) and _DIGEST.fullmatch(text) is not None


def cache_hint(root=None) -> str:
    """The way out when a cache file cannot be written (a full disk, a read-only folder)."""
    return (f"the atlas cache is kept in '{cache_dir(root)}': free some space there, point --cache-dir or "
            f"{ENV_VAR} at another folder, or run with --no-cache")


def load_npz(path, limit: int = MAX_NPZ_BYTES) -> dict | None:
    """The arrays of an ``.npz`` file, or None when it is missing, unreadable or declares more than
    ``limit`` bytes (checked on the headers before any array is allocated): treated as no cache."""
    try:
        if npz_declared_bytes(path) > limit:
            return None
        with np.load(str(path), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError):
        return None
    except Exception:  # zipfile.BadZipFile and friends: a damaged file is no cache
        return None


def read_json(path, limit: int = MAX_JSON_BYTES):
    """The JSON document of a cache or part file, or None when it is missing, too big, too deep or not JSON."""
    try:
        return load_json_bounded(path, "cache file", limit)
    except (OSError, ValueError):
        return None
