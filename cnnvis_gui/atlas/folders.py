"""The image files of a folder, listed once each and in the same order on every run."""
from __future__ import annotations

import os
from collections import deque
from pathlib import Path

from ..core import CnnvisError
from ..sources import IMAGE_EXTENSIONS, natural_key
from . import cache as _cache

__all__ = ["list_images", "folder_fingerprint"]


def list_images(folder, recursive: bool = True) -> tuple:
    """Image files of a folder -> (sorted [(relative posix path, size, mtime_ns)], number of other files).

    Hidden files and folders are ignored; files whose extension is not an image
    extension are counted as "other" and never read.  Linked folders are followed, but every
    folder is listed once: a link back up the tree (``up -> ..``) or to a folder already listed
    is skipped, and real folders are listed before any link to them, so an image keeps its own
    path (without this, two such links listed each image millions of times and never finished).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CnnvisError(f"'{root}' is not a folder; choose a folder of images.")
    found, others = [], 0
    seen = {_folder_id(root)}
    stack, links = [root], deque()     # links to folders: followed once every real folder is listed
    while stack or links:
        if stack:
            d = stack.pop()
        else:
            d = links.popleft()            # in the order found: the first link to a folder names it
            key = _folder_id(d)
            if key is None or key in seen:
                continue
            seen.add(key)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)   # the same listing on every run
        except OSError:
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir(follow_symlinks=True):
                    if not recursive:
                        continue
                    if e.is_symlink():
                        links.append(Path(e.path))
                    elif (key := _folder_id(e.path)) not in seen:
                        seen.add(key)
                        stack.append(Path(e.path))
                    continue
                if not e.is_file(follow_symlinks=True):
                    continue
                if os.path.splitext(e.name)[1].lower() not in IMAGE_EXTENSIONS:
                    others += 1
                    continue
                st = e.stat()
            except OSError:
                others += 1
                continue
            rel = Path(e.path).relative_to(root).as_posix()
            found.append((rel, int(st.st_size), int(st.st_mtime_ns)))
    found.sort(key=lambda t: natural_key(t[0]))
    return found, others


def _folder_id(path) -> tuple | None:
    """(device, inode) of the folder ``path`` leads to; None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def folder_fingerprint(files) -> str:
    """Hash of [(relative path, size, mtime_ns)]: changes when a file is added, removed or rewritten."""
    return _cache.digest([list(f) for f in files])
