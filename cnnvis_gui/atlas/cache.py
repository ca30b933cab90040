"""The atlas cache: content keys for models, specs and folders, and atomic files.

Every cached result lives under ``cache_dir()/<kind>-<key>/`` where ``key`` is a hash of
everything the result depends on -- the model's weights (every tensor of its
``state_dict``: names, dtypes, shapes and bytes), the architecture's class (its qualname and
the hash of its source file -- never the random module name a ``net.py:Net`` file gets), the input
spec, the layer(s), and for scans the folder's contents (relative paths, sizes and
modification times of its image files).  A changed weight file, spec or folder gives a
new key, so a result computed for another model or another folder is never shown.

Files are written atomically (a temporary file in the same folder, then ``os.replace``),
so a crash or kill mid-write leaves the previous file intact, never a torn one.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import re
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core import InputSpec

ENV_VAR = "CNNVIS_CACHE_DIR"
CACHE_VERSION = 1

__all__ = ["ENV_VAR", "cache_dir", "weights_hash", "class_key", "spec_key", "digest", "atomic_write_bytes",
           "atomic_write_json", "atomic_save_npz", "load_npz", "read_json"]


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


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux), else set back at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
    return old


_UMASK_LOCK = threading.Lock()


def atomic_write_bytes(path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    Readers never see a torn file.  ``durable`` also syncs the data to disk before the rename
    (cache files that must survive a crash); exported pictures skip that cost.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        if hasattr(os, "fchmod"):   # mkstemp makes 0600 whatever the umask: give the usual 0666 & ~umask
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, default=str).encode("utf-8"))


def atomic_save_npz(path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path) -> dict | None:
    """The arrays of an ``.npz`` file, or None when it is missing or unreadable (treated as no cache)."""
    try:
        with np.load(str(path), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError):
        return None
    except Exception:  # zipfile.BadZipFile and friends: a damaged file is no cache
        return None


def read_json(path):
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError):
        return None
