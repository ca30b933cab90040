"""Fetch one weights file into a cache: bounded waits, progress, cancel, hash check, atomic rename.

torch's own ``torch.hub.download_url_to_file`` waits on the network without a time limit and
cannot be cancelled, so a machine without network access hangs where it should fail.  Here
every network step has a deadline -- name resolution and connect together within
:data:`CONNECT_TIMEOUT_S`, each read within :data:`READ_TIMEOUT_S` -- and a failure says
which file is missing, where it comes from and the exact path to put it at.  With the
environment variable ``CNNVIS_OFFLINE=1`` (or huggingface's ``HF_HUB_OFFLINE=1``) no
connection is tried at all.

The file is written to a temporary name next to its destination and renamed into place
only when it is complete (and its hash prefix matches, for torchvision's ``name-<sha256
prefix>.pth`` files), so an interrupted download never leaves a torn file in the cache.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from ..core.text import printable, raw_stream
from .errors import ModelLoadError

__all__ = ["OFFLINE_ENV", "CONNECT_TIMEOUT_S", "READ_TIMEOUT_S", "DownloadCancelled", "offline", "unreachable",
           "download", "missing_message", "hash_prefix", "terminal_progress"]

OFFLINE_ENV = "CNNVIS_OFFLINE"
#: seconds allowed for name resolution + TCP connect before a download is given up
CONNECT_TIMEOUT_S = 5.0
#: seconds one read may wait for data once connected
READ_TIMEOUT_S = 30.0
_CHUNK = 1 << 20
_HASH_RE = re.compile(r"-([a-f0-9]{6,})\.")      # torch.hub's convention: resnet18-f37072fd.pth
_TRUE = ("1", "true", "yes", "on")

#: ``progress(done_bytes, total_bytes_or_None)``
Progress = Callable[[int, "int | None"], None]


class DownloadCancelled(ModelLoadError):
    """The user cancelled a download; nothing was written to the cache."""


def offline() -> bool:
    """True when the environment asks for no network access (``CNNVIS_OFFLINE`` or ``HF_HUB_OFFLINE``)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in (OFFLINE_ENV, "HF_HUB_OFFLINE"))


def unreachable(url: str, timeout: float | None = None) -> str | None:
    """Why ``url``'s host cannot be reached within ``timeout`` seconds, or None when it can.

    Name resolution (``getaddrinfo``) has no timeout of its own, so the connect runs in a
    daemon thread that is abandoned when the deadline passes.
    """
    timeout = CONNECT_TIMEOUT_S if timeout is None else float(timeout)
    if offline():
        return f"offline mode: {OFFLINE_ENV} or HF_HUB_OFFLINE is set"
    parts = urlparse(url)
    host = parts.hostname
    if not host:
        return f"not a URL: {url!r}"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: list = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as e:
            result.append(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)

    t = threading.Thread(target=probe, name="cnnvis-net-probe", daemon=True)
    t.start()
    t.join(timeout + 0.5)
    if not result:
        return f"no answer from {host} within {timeout:g} s"
    return None if result[0] is None else f"cannot connect to {host}:{port} ({result[0]})"


def hash_prefix(filename: str) -> str | None:
    """The sha256 prefix in a torch.hub file name (``resnet18-f37072fd.pth`` -> ``f37072fd``), or None."""
    m = _HASH_RE.search(filename)
    return m.group(1) if m else None


def missing_message(what: str, url: str, path: Path, reason: str) -> str:
    """The one message for a weights file that is neither in the cache nor downloadable."""
    name = Path(path).name
    return (f"{what}: the weights file {name} is not in the cache and could not be downloaded ({reason}). "
            f"On a machine with network access download {url} and put it at {path} (that exact name); it then "
            f"loads without network access.")


def download(url: str, dest, progress: Progress | None = None, cancel: threading.Event | None = None,
             check_hash: bool = True, what: str | None = None, timeout: float | None = None) -> Path:
    """Download ``url`` to ``dest`` (atomically) and return ``dest``.

    Parameters
    ----------
    url : str
    dest : path
        Final file; its folder is created.  An existing file is overwritten only on success.
    progress : callable, optional
        ``progress(done_bytes, total_bytes or None)`` after every chunk (from this thread).
    cancel : threading.Event, optional
        Checked between chunks; when set, :class:`DownloadCancelled` is raised.
    check_hash : bool
        Compare the sha256 of the bytes with the ``-<hex>.`` prefix in the file name, if any.
    what : str, optional
        Subject of the error message (default: the file name).
    timeout : float, optional
        Connect deadline in seconds (default :data:`CONNECT_TIMEOUT_S`).

    Raises
    ------
    ModelLoadError
        Unreachable host, HTTP error, short read or hash mismatch -- the message names the
        URL and ``dest`` (see :func:`missing_message`).
    """
    dest = Path(dest)
    what = what or dest.name
    why = unreachable(url, timeout)
    if why:
        raise ModelLoadError(missing_message(what, url, dest, why))
    want = hash_prefix(dest.name) if check_hash else None
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        req = urllib.request.Request(url, headers={"User-Agent": "cnnvis-gui"})
        with urllib.request.urlopen(req, timeout=READ_TIMEOUT_S) as r:   # the host answered the probe above
            length = r.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            sha = hashlib.sha256()
            done = 0
            with open(tmp, "wb") as f:
                while True:
                    if cancel is not None and cancel.is_set():
                        raise DownloadCancelled(f"download of {dest.name} cancelled; nothing was saved.")
                    chunk = r.read(_CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    sha.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        if total is not None and done != total:
            raise ModelLoadError(missing_message(what, url, dest, f"the connection closed after {done} of "
                                                                   f"{total} bytes"))
        if want and not sha.hexdigest().startswith(want):
            raise ModelLoadError(f"{what}: the downloaded {dest.name} is corrupt (sha256 {sha.hexdigest()[:12]}... "
                                 f"does not start with {want}); nothing was saved, try again.")
        os.replace(tmp, dest)
        return dest
    except ModelLoadError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise ModelLoadError(missing_message(what, url, dest, f"{type(e).__name__}: {reason}")) from None
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


def terminal_progress(desc: str, stream=None) -> Progress | None:
    """A tqdm bar on stderr as a ``progress`` callback, or None when stderr is not a terminal."""
    stream = stream or sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    bar: dict = {}

    def update(done: int, total):
        b = bar.get("bar")
        if b is None:
            b = bar["bar"] = tqdm(total=total, desc=printable(desc, newlines=False), unit="B", unit_scale=True,
                                  unit_divisor=1024, file=raw_stream(stream), dynamic_ncols=True)
        b.update(done - b.n)
        if total is not None and done >= total:
            b.close()

    return update
