"""Still sources: one image, or a folder / list of images to step through."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import (Source, SourceError, IMAGE_EXTENSIONS, check_readable, have_image_reader, natural_key,
                   load_image, to_bgr8)


class ImageSource(Source):
    """One image file (or an array already in memory), handed out as a still frame.

    Raises SourceError when the file is missing or does not decode.
    """

    kind = "image"

    def __init__(self, image, *, mirror: bool = False, spec=None, fit=None):
        super().__init__(mirror=mirror, spec=spec, fit=fit)
        if isinstance(image, np.ndarray):
            self.path = None
            self._frame = to_bgr8(image)
            self.description = "image (array)"
        else:
            p = Path(image).expanduser()
            if not p.exists():
                raise SourceError(f"image file '{p}' does not exist")
            if not p.is_file():
                raise SourceError(f"'{p}' is not a file")
            check_readable(p)
            self.path = p
            self._frame = load_image(p)
            self.description = f"image {p.name}"
        self.fps = None

    @property
    def current_path(self):
        return self.path

    def _latest(self):
        return 1, self._frame

    @property
    def status(self) -> str:
        if self._closed:
            return "closed"
        h, w = self._frame.shape[:2]
        return f"{self.description} ({w}x{h})"

    def close(self, timeout: float = 0.1):
        self._closed = True


def _list_images(folder: Path, recursive: bool):
    it = folder.rglob("*") if recursive else folder.iterdir()
    images, others = [], 0
    for p in it:
        try:
            if not p.is_file():
                continue
        except OSError:
            continue
        if any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue  # hidden files/folders (.DS_Store, .thumbnails...)
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(p)
        else:
            others += 1
    images.sort(key=lambda q: natural_key(q.relative_to(folder).as_posix()))
    return images, others


class ImageFolderSource(Source):
    """A folder of images, or an explicit list of image paths, to step through.

    Parameters
    ----------
    what : str, Path or list of paths
        A folder (its image files, sorted naturally: ``img2`` before ``img10``) or a list
        of image files (kept in the given order).
    recursive : bool
        Folders: include sub-folders (default False).
    wrap : bool
        ``next()`` after the last image goes to the first (and ``prev()`` the other way).
    start : int
        Index of the first image shown.

    Notes
    -----
    Files whose header is not an image are skipped when the folder is listed; files that
    fail to decode are skipped when reached.  Each skip adds a line to ``notices`` and the
    status counts them.  A folder with no usable image raises SourceError.
    """

    kind = "folder"

    def __init__(self, what, *, recursive: bool = False, wrap: bool = True, start: int = 0,
                 mirror: bool = False, spec=None, fit=None):
        super().__init__(mirror=mirror, spec=spec, fit=fit)
        self.wrap = bool(wrap)
        self.recursive = bool(recursive)
        self.skipped: list[Path] = []
        self.fps = None
        self._frame = None
        self._id = 0
        if isinstance(what, (list, tuple)):
            self.folder = None
            paths = []
            for item in what:
                p = Path(item).expanduser()
                if p.is_file():
                    paths.append(p)
                else:
                    self._skip(p, "missing" if not p.exists() else "not a file")
            self.description = f"{len(what)} images"
            others = 0
        else:
            folder = Path(what).expanduser()
            if not folder.exists():
                raise SourceError(f"folder '{folder}' does not exist")
            if not folder.is_dir():
                raise SourceError(f"'{folder}' is not a folder")
            self.folder = folder
            self.description = f"folder {folder.name or folder}"
            paths, others = _list_images(folder, self.recursive)
        self.ignored = others  #: non-image files found in the folder
        good = []
        for p in paths:
            if have_image_reader(p):  # reads the header only: cheap
                good.append(p)
            else:
                self._skip(p, "not a readable image")
        self._paths = good
        self._index = 0
        if good:
            self._index = min(max(int(start), 0), len(good) - 1)
            self._load(+1)
        if not self._paths:
            raise SourceError(self._empty_message(others))

    def _empty_message(self, others):
        if self.folder is None:
            msg = "none of the given paths is a readable image"
        else:
            where = f"folder '{self.folder}'" + (" or its sub-folders" if self.recursive else "")
            msg = f"no images in {where}"
            exts = ", ".join(sorted(e for e in IMAGE_EXTENSIONS if e in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".webp")))
            msg += f" (looked for {exts}...)"
            extra = []
            if others:
                extra.append(f"{others} other file{'s' if others != 1 else ''}")
            if not self.recursive:
                try:
                    if any(p.is_dir() for p in self.folder.iterdir()):
                        extra.append("sub-folders: pass recursive=True to look inside them")
                except OSError:
                    pass
            if extra:
                msg += "; found " + ", ".join(extra)
        if self.skipped:
            msg += f"; {len(self.skipped)} unreadable: " + ", ".join(p.name for p in self.skipped[:5])
        return msg + "."

    def _skip(self, path: Path, why: str):
        self.skipped.append(path)
        self._notice(f"skipped {path.name}: {why}")

    def _load(self, direction: int):
        """Decode the image at the index; skip (drop from the list) those that fail."""
        while self._paths:
            i = self._index % len(self._paths)
            p = self._paths[i]
            try:
                frame = load_image(p)
            except SourceError as e:
                self._skip(p, str(e).split(": ", 1)[-1] if "could not be decoded" not in str(e)
                           else "could not be decoded")
                del self._paths[i]
                if not self._paths:
                    break
                self._index = i if direction > 0 else i - 1
                self._index %= len(self._paths)
                continue
            self._index = i
            self._frame = frame
            self._id += 1
            return frame
        self._frame = None
        return None

    # ------------------------------------------------------------------ navigation
    def _go(self, index: int, direction: int):
        if not self._paths:
            raise SourceError("no readable images left")
        n = len(self._paths)
        if self.wrap:
            index %= n
        else:
            index = min(max(index, 0), n - 1)
            if index == self._index and self._frame is not None:
                return self.read()
        self._index = index
        if self._load(direction) is None:
            raise SourceError(self._empty_message(0))
        return self.read()

    def next(self):
        """Go to the next image and return it (processed like :meth:`read`)."""
        return self._go(self._index + 1, +1)

    def prev(self):
        """Go to the previous image and return it."""
        return self._go(self._index - 1, -1)

    def seek(self, index: int):
        """Go to image ``index`` (0-based; negative counts from the end) and return it."""
        n = len(self._paths)
        if not n:
            raise SourceError("no readable images left")
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise SourceError(f"image index {index} out of range: there are {n} images (0..{n - 1})")
        return self._go(i, +1)

    @property
    def index(self) -> int:
        """0-based position of the current image."""
        return self._index

    @property
    def count(self) -> int:
        """Number of usable images (drops when a file turns out not to decode)."""
        return len(self._paths)

    def __len__(self):
        return len(self._paths)

    @property
    def current_path(self) -> Path | None:
        return self._paths[self._index] if self._paths else None

    @property
    def paths(self) -> list[Path]:
        return list(self._paths)

    def _latest(self):
        return (self._id, self._frame) if self._frame is not None else (0, None)

    @property
    def status(self) -> str:
        if self._closed:
            return "closed"
        if not self._paths:
            return "no readable images left"
        p = self.current_path
        text = f"image {self._index + 1} of {len(self._paths)}: {p.name}"
        if self._frame is not None:
            text += f" ({self._frame.shape[1]}x{self._frame.shape[0]})"
        if self.skipped:
            text += f"; {len(self.skipped)} skipped"
        return text

    @property
    def state(self) -> str:
        if self._closed:
            return "closed"
        if not self._paths:
            return "error"
        return "frozen" if self._frozen else "live"

    def close(self, timeout: float = 0.1):
        self._closed = True
        self._frame = None

