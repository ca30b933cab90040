"""``open(what)``: one entry point that picks the right source for what the user named."""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from .base import Source, SourceError, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, check_readable, have_image_reader
from .live import CameraSource, VideoSource
from .stills import ImageSource, ImageFolderSource


def _options(cls) -> set[str]:
    return {n for n, p in inspect.signature(cls.__init__).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _make(cls, what, options):
    allowed = _options(cls)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SourceError(f"{cls.__name__} does not take option{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)}; it takes {', '.join(sorted(allowed))}.")
    return cls(what, **options)


def open(what, **options) -> Source:  # noqa: A001 - the public name is cnnvis_gui.sources.open
    """Open a camera, a video, a stream, an image folder, a list of images or one image.

    Parameters
    ----------
    what :
        * ``int`` (or a string of digits such as ``"0"``): camera index -> :class:`CameraSource`
        * ``"rtsp://..."``, ``"http://..."`` (anything with ``://``): stream -> :class:`VideoSource`
        * a folder: -> :class:`ImageFolderSource`
        * a list/tuple of image paths: -> :class:`ImageFolderSource`
        * an image file (by extension, else by probing its header): -> :class:`ImageSource`
        * a video file (by extension, else by trying FFmpeg): -> :class:`VideoSource`
        * a numpy array: -> :class:`ImageSource`
        * a :class:`Source`: returned as it is.
    **options :
        Passed to the source (``mirror``, ``spec``, ``fit``, ``loop``, ``pace``, ``recursive``...).
        An option the chosen kind does not take raises SourceError naming the valid ones.

    Raises
    ------
    SourceError
        With a message for the user: missing file, empty folder, camera not found...
    """
    if isinstance(what, Source):
        return what
    if isinstance(what, bool):
        raise SourceError(f"cannot open {what!r}: give a camera index, a file, a folder or a URL")
    if isinstance(what, (int, np.integer)):
        return _make(CameraSource, int(what), options)
    if isinstance(what, np.ndarray):
        return _make(ImageSource, what, options)
    if isinstance(what, (list, tuple)):
        if not what:
            raise SourceError("the list of images is empty")
        return _make(ImageFolderSource, list(what), options)
    if isinstance(what, (str, Path)):
        text = str(what).strip()
        if not text:
            raise SourceError("no source given: name a camera index, a file, a folder or a URL")
        if text.isdigit() or (text[:1] == "-" and text[1:].isdigit()):   # "-1": CameraSource says why not
            return _make(CameraSource, int(text), options)
        if "://" in text and not text.startswith("file://"):
            return _make(VideoSource, text, options)
        if text.startswith("file://"):
            text = text[len("file://"):]
        p = Path(text).expanduser()
        if not p.exists():
            raise SourceError(f"no such file or folder: '{p}'")
        if p.is_dir():
            return _make(ImageFolderSource, p, options)
        check_readable(p)
        ext = p.suffix.lower()
        if ext in VIDEO_EXTENSIONS:
            return _make(VideoSource, p, options)
        if ext in IMAGE_EXTENSIONS or have_image_reader(p):
            return _make(ImageSource, p, options)
        try:
            return _make(VideoSource, p, options)
        except SourceError as e:
            if "UTF-8" in str(e):
                raise
            raise SourceError(f"'{p.name}' is neither an image nor a video OpenCV can read") from None
    raise SourceError(f"cannot open a {type(what).__name__}: give a camera index (int), a file or "
                      f"folder path, a URL or a list of image paths")
