"""Writing files: whole or not at all, inside the folder the user named, failures said in one line.

Every file this program writes (``cnnvis export`` pictures and ``raw.npz``, the atlas's montages
and ``atlas.json``, ``cnnvis optimize``'s image, the scan cache, shard parts, the window's
*Save panes* and *Save raw arrays*) goes through :func:`atomic_write_bytes`: the bytes go to a
temporary file in the target's folder, which replaces the target with ``os.replace`` only once
it is complete.  A full disk, a quota, a size limit or a kill mid-way therefore leave the
earlier file byte for byte as it was (and no temporary file behind), never a torn one.  The
error is a :class:`WriteError`: one line naming the file, what the system said (no space left
on the device...) and what to do, which every front end shows as it is.

:func:`output_path` builds a path under an output folder from names that come from elsewhere
(an input file's stem, a layer name): a name such as ``..`` (the stem of ``...png``), ``.``,
``a/b`` or an absolute path can never lead out of the folder.
"""
from __future__ import annotations

import errno
import io
import json
import os
import re
import stat
import tempfile
import threading
from pathlib import Path

import numpy as np

from .errors import CnnvisError

__all__ = ["WriteError", "atomic_write_bytes", "atomic_write_json", "atomic_save_npz", "npz_bytes",
           "atomic_write_image", "encode_image", "output_path", "file_name_part"]


class WriteError(CnnvisError):
    """A file could not be written (disk full, read-only, permissions...); the earlier file is untouched.

    ``path`` is the file, ``errno`` the system's error number (None when it was not the system's).
    """

    def __init__(self, msg: str, path=None, errno_=None):
        super().__init__(msg)
        self.path = path
        self.errno = errno_


_FULL = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "the file is larger than allowed (file size "
                                                                    "limit)",
         getattr(errno, "EDQUOT", -1): "the disk quota is exceeded"}


def _write_error(path: Path, e: OSError, hint: str) -> WriteError:
    """The one-line error for an ``OSError`` met writing ``path``."""
    folder = path.parent
    code = getattr(e, "errno", None)
    if code in _FULL:
        what = f"cannot write '{path}': {_FULL[code]} (folder '{folder}'); the earlier file, if any, is unchanged"
        way = hint or "free some space there or choose another folder"
    elif code == errno.EROFS:
        what = f"cannot write '{path}': the folder '{folder}' is on a read-only file system"
        way = hint or "choose another folder"
    elif code in (errno.EACCES, errno.EPERM):
        what = f"cannot write '{path}': permission denied in '{folder}'"
        way = hint or "check the folder's permissions or choose another folder"
    else:
        what = f"cannot write '{path}': {e.strerror or e}"
        way = hint
    return WriteError(f"{what}; {way}." if way else f"{what}.", path, code)


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


def atomic_write_bytes(path, data, durable: bool = True, hint: str = "") -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    Readers never see a torn file, and when the write fails (full disk, file size limit, kill)
    the earlier file stays as it was and the temporary file is removed.  ``durable`` also syncs
    the data to disk before the rename (cache files that must survive a crash); exported
    pictures skip that cost.  An existing ``path`` that is not a regular file (a folder, a
    device, a FIFO) is refused, not replaced.  Raises :class:`WriteError` (one line naming the
    file and what to do; ``hint`` replaces the generic way out) for every system error.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise _write_error(path, e, hint) from None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, FIFO or socket)"
        raise WriteError(f"cannot write '{path}': it is {kind}; give a file name.", path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=str(path.parent))
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):   # mkstemp makes 0600 whatever the umask: give the usual 0666 & ~umask
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise _write_error(path, e, hint) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def atomic_write_json(path, obj, durable: bool = True, hint: str = "") -> Path:
    """``obj`` as indented JSON, written by :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, json.dumps(obj, indent=1, default=str).encode("utf-8"), durable, hint)


def npz_bytes(compressed: bool = False, **arrays) -> bytes:
    """The bytes of an ``.npz`` archive of ``arrays`` (``np.savez[_compressed]`` into memory)."""
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def atomic_save_npz(path, durable: bool = True, compressed: bool = False, hint: str = "", **arrays) -> Path:
    """``arrays`` as an ``.npz`` file, written by :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, npz_bytes(compressed, **arrays), durable, hint)


def encode_image(path, rgb: np.ndarray) -> bytes:
    """An RGB (or gray) uint8 image encoded in the format of ``path``'s extension (PNG without one)."""
    import cv2

    ext = Path(path).suffix or ".png"
    img = np.ascontiguousarray(rgb[..., ::-1] if rgb.ndim == 3 and rgb.shape[2] == 3 else rgb)
    try:
        ok, buf = cv2.imencode(ext, img)
    except cv2.error:
        ok = False
    if not ok:
        raise WriteError(f"cannot write '{path}': OpenCV cannot encode a {'x'.join(map(str, rgb.shape))} image as "
                         f"{ext}; give a .png or .jpg file name.", Path(path))
    return buf.tobytes()


def atomic_write_image(path, rgb: np.ndarray, durable: bool = False, hint: str = "") -> Path:
    """An RGB uint8 image written atomically in the format of ``path``'s extension."""
    return atomic_write_bytes(path, encode_image(path, rgb), durable, hint)


# ---------------------------------------------------------------------------- inside the output folder
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.+=@-]")


def file_name_part(text, fallback: str = "item") -> str:
    """``text`` as one file-name component that stays where it is put.

    Characters other than letters, digits and ``_ . + = @ -`` become ``_``; leading dots are
    dropped (``..``, ``.`` and hidden names cannot result), and an empty result is ``fallback``.
    Names longer than 150 characters are shortened (file systems allow 255 bytes).
    """
    s = _UNSAFE_NAME.sub("_", str(text)).lstrip(".")
    s = s[:150]
    return s or fallback


def output_path(root, *parts) -> Path:
    """``root / part / ...`` for names that come from elsewhere, guaranteed to lie inside ``root``.

    Each part must be one plain component (see :func:`file_name_part`); a part that is empty,
    ``.``, ``..``, absolute or holds a separator raises :class:`WriteError` instead of leading
    out of the folder.  Symbolic links already inside ``root`` are the user's own and are
    followed.
    """
    root = Path(root)
    out = root
    for part in parts:
        s = str(part)
        if not s or s in (".", "..") or "/" in s or "\\" in s or "\x00" in s or Path(s).is_absolute():
            raise WriteError(f"refusing to write '{s}' under '{root}': not a plain file name (it would leave the "
                             f"output folder).", root / s)
        out = out / s
    return out
