"""The source interface shared by cameras, videos, folders and single images.

A source hands out the newest frame as an H x W x 3 uint8 BGR array (what OpenCV
delivers), never blocks the caller for long, and says in ``status`` what it is
doing in words the GUI can show as they are.
"""
from __future__ import annotations

import contextlib
import re
import os
import threading
import zlib
from pathlib import Path

import numpy as np
import cv2

from ..core.bounds import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, read_bounded
from ..core.errors import CnnvisError, opencv_reason
from ..core.spec import InputSpec, FIT_MODES
from .headers import declared_size

# Everything cv2.imdecode can read (decoders that are not built in just fail to decode:
# such files are then skipped with a notice).
IMAGE_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff", ".webp",
    ".pbm", ".pgm", ".ppm", ".pnm", ".pxm", ".pfm", ".sr", ".ras", ".jp2",
    ".exr", ".hdr", ".pic", ".avif",
})
VIDEO_EXTENSIONS = frozenset({
    ".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv",
    ".flv", ".ogv", ".3gp", ".ts", ".mts", ".m2ts", ".gif", ".mjpg", ".mjpeg",
})

MAX_NOTICES = 50

# FFmpeg inside OpenCV prints its own complaints ("moov atom not found") on stderr next to our
# one-line errors; quiet unless the user asked for its log.  Read when a capture first opens.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


class SourceError(CnnvisError):
    """A source could not be opened or has nothing to show; the message says why and what to do."""


# ---------------------------------------------------------------------------- helpers
def natural_key(text: str):
    """Sort key that orders embedded numbers by value: ``img2`` < ``img10``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t)
            for t in re.split(r"(\d+)", str(text).casefold()) if t != ""]


def to_bgr8(frame: np.ndarray) -> np.ndarray:
    """Any decoded image or captured frame -> H x W x 3 uint8 BGR, C-contiguous.

    Gray (H x W or H x W x 1) is repeated to 3 channels; BGRA drops alpha;
    16-bit is scaled by 255/65535 (full range, not truncated); float is taken
    to be in [0, 1]; other integer types are scaled by their maximum.
    """
    if not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3) or frame.size == 0:
        raise SourceError(f"not an image: expected H x W or H x W x C array, got "
                          f"{getattr(frame, 'shape', type(frame).__name__)}")
    img = frame
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = cv2.convertScaleAbs(img, alpha=255.0 / 65535.0)
        elif np.issubdtype(img.dtype, np.floating):
            img = np.clip(np.nan_to_num(img.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        elif np.issubdtype(img.dtype, np.integer):
            info = np.iinfo(img.dtype)
            f = (img.astype(np.float64) - min(info.min, 0)) * (255.0 / (info.max - min(info.min, 0)))
            img = np.clip(f + 0.5, 0, 255).astype(np.uint8)
        elif img.dtype == np.bool_:
            img = img.astype(np.uint8) * 255
        else:
            raise SourceError(f"unsupported image dtype {img.dtype}")
    if img.ndim == 2 or img.shape[2] == 1:
        img = cv2.cvtColor(img.reshape(img.shape[0], img.shape[1]), cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif img.shape[2] == 2:  # gray + alpha
        img = cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), cv2.COLOR_GRAY2BGR)
    elif img.shape[2] != 3:
        raise SourceError(f"unsupported channel count {img.shape[2]} (expected 1, 3 or 4)")
    return np.ascontiguousarray(img)


#: the largest image file read (a 100-megapixel 16-bit RGBA TIFF is 800 MB uncompressed)
MAX_IMAGE_FILE_BYTES = 2 << 30


def load_image(path) -> np.ndarray:
    """Decode one image file -> H x W x 3 uint8 BGR.

    Decoded with ``IMREAD_ANYDEPTH | IMREAD_ANYCOLOR``: 16-bit and gray survive the
    decode (then :func:`to_bgr8` scales them) *and* the EXIF orientation of photos
    is applied (``IMREAD_UNCHANGED`` would ignore it).  Raises SourceError when the
    file is missing, not a regular file, or does not decode.

    Memory is bounded before the decoder runs: the file is read only when it is a regular
    file of at most :data:`MAX_IMAGE_FILE_BYTES`, and the pixel size its header declares
    (:func:`~cnnvis_gui.sources.headers.declared_size`) must be within
    :data:`~cnnvis_gui.core.bounds.MAX_IMAGE_PIXELS` (a 1 MB PNG may declare 32000 x 32000).
    """
    return to_bgr8(_decode_file(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR))


def load_raw_image(path) -> np.ndarray:
    """Decode one image file exactly as stored (``IMREAD_UNCHANGED``): its own channels and dtype.

    For files whose pixel values are data, not colours (label maps): nothing is converted,
    scaled or rotated.  Raises SourceError when the file is missing or does not decode.
    """
    return _decode_file(path, cv2.IMREAD_UNCHANGED)


def _decode_file(path, flags: int) -> np.ndarray:
    p = os.fspath(path)                  # a str: parsing a Path cost a tenth of a small PNG's decode
    try:
        data = read_bounded(p, MAX_IMAGE_FILE_BYTES, "image file")
    except CnnvisError as e:
        raise SourceError(str(e).rstrip(".")) from None
    size = declared_size(data)
    if size is not None:
        _check_pixels(p, *size)
    buf = np.frombuffer(data, dtype=np.uint8)
    bad_png, buf = _png_checked(buf)
    if bad_png:   # refused before libpng sees it: libpng prints its complaint straight to stderr
        raise SourceError(f"'{os.path.basename(p)}' could not be decoded as an image (corrupt PNG: {bad_png})")
    try:
        img = cv2.imdecode(buf, flags) if buf.size else None
    except cv2.error as e:        # OpenCV's own size limit (formats whose header is not read above)
        raise SourceError(f"'{os.path.basename(p)}' could not be decoded as an image (OpenCV refused it: "
                          f"{opencv_reason(e)})") from None
    if img is None:
        raise SourceError(f"'{os.path.basename(p)}' could not be decoded as an image (corrupt or unsupported "
                          f"format)")
    return img


def _check_pixels(p, w: int, h: int) -> None:
    """Refuse a declared image size past the bounds, before it is decoded (``p``: the file's path)."""
    name = os.path.basename(os.fspath(p))
    if w < 1 or h < 1:
        raise SourceError(f"'{name}' could not be decoded as an image (its header declares {w}x{h} pixels)")
    if w * h > MAX_IMAGE_PIXELS or max(w, h) > MAX_IMAGE_SIDE:
        raise SourceError(f"'{name}' declares {w}x{h} pixels ({w * h / 1e6:,.0f} megapixels), more than the "
                          f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (at most {MAX_IMAGE_SIDE} a side) an image may "
                          f"have here; it was not decoded (scale it down first)")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: ancillary PNG chunks that only carry text or a colour profile (never applied by OpenCV) and make
#: libpng print warnings of its own on stderr ("iCCP: known incorrect sRGB profile"): dropped before decoding
_QUIET_CHUNKS = frozenset({b"iCCP", b"tEXt", b"zTXt", b"iTXt"})


def _png_checked(buf: np.ndarray) -> tuple:
    """(why the bytes of a PNG file are broken or None, the bytes to decode).

    Walks the chunk list and checks every CRC (zlib's crc32, as the PNG spec defines it), so a
    damaged file is refused with our message instead of libpng's line on stderr; the chunks of
    :data:`_QUIET_CHUNKS` are left out of the bytes handed to the decoder for the same reason.
    Not a PNG: (None, ``buf``) unchanged.
    """
    data = memoryview(buf)
    if bytes(data[:8]) != _PNG_SIGNATURE:
        return None, buf
    pos, n = 8, len(data)
    keep, dropped = [data[:8]], False
    while pos + 12 <= n:
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = bytes(data[pos + 4:pos + 8])
        end = pos + 12 + length
        if end > n:
            break
        if zlib.crc32(data[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            return f"bad checksum in its {kind.decode('latin-1')!s} chunk", buf
        if kind in _QUIET_CHUNKS:
            dropped = True
        else:
            keep.append(data[pos:end])
        if kind == b"IEND":
            return None, (np.frombuffer(b"".join(keep), np.uint8) if dropped else buf)
        pos = end
    return "the file is truncated (no IEND chunk)", buf


def _png_problem(buf: np.ndarray) -> str | None:
    """Why the bytes of a PNG file are broken (truncated, a chunk's checksum wrong), or None."""
    return _png_checked(buf)[0]


def opencv_name(path) -> str | None:
    """``path`` as a string OpenCV's path functions can take, or None when they cannot.

    A file name that is not valid UTF-8 (``printf 'bad\\xff.png'``) reaches Python as a string
    with surrogate escapes, and OpenCV's path functions (``haveImageReader``,
    ``VideoCapture``) crash the process on it.  Such files are read through bytes instead
    (:func:`load_image`) or refused by name (videos).
    """
    s = str(path)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return s


def have_image_reader(path) -> bool:
    """Whether OpenCV recognizes the file's header as an image (cheap: reads the header only).

    A name OpenCV cannot take (:func:`opencv_name`) is judged by its extension; its bytes are
    decoded later by :func:`load_image`, which never hands OpenCV the name.
    """
    name = opencv_name(path)
    if name is None:
        return Path(path).suffix.lower() in IMAGE_EXTENSIONS
    with quiet_opencv():
        try:
            return bool(cv2.haveImageReader(name))
        except cv2.error:
            return False


def check_readable(path) -> None:
    """Raise SourceError when the file cannot be opened for reading (permissions, I/O error)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            f.read(1)
    except PermissionError:
        raise SourceError(f"cannot read '{p}': permission denied (check the file's permissions)") from None
    except IsADirectoryError:
        return
    except OSError as e:
        raise SourceError(f"cannot read '{p}': {e.strerror or e}") from None


_log_lock = threading.Lock()
_log_depth = 0
_log_saved = None


@contextlib.contextmanager
def quiet_opencv():
    """Silence OpenCV's console warnings ("can't open camera by index"...) inside the block.

    Nests and works across threads: the level in force before the outermost entry
    is restored when the last block exits.
    """
    global _log_depth, _log_saved
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:  # very old builds: nothing to silence with
        yield
        return
    with _log_lock:
        if _log_depth == 0:
            try:
                _log_saved = logging.getLogLevel()
                logging.setLogLevel(logging.LOG_LEVEL_SILENT)
            except Exception:  # pragma: no cover - defensive
                _log_saved = None
        _log_depth += 1
    try:
        yield
    finally:
        with _log_lock:
            _log_depth -= 1
            if _log_depth == 0 and _log_saved is not None:
                try:
                    logging.setLogLevel(_log_saved)
                except Exception:  # pragma: no cover
                    pass


# ---------------------------------------------------------------------------- the interface
class Source:
    """Base of every source: newest frame, status, processing options, close.

    Parameters
    ----------
    mirror : bool
        Flip frames left-right (selfie view).  Cameras default to True, everything else False.
    spec : InputSpec, optional
        When given, :meth:`read` returns frames already fitted to ``spec.height x spec.width``
        with :meth:`InputSpec.fit_frame`.  :meth:`read_full` keeps the whole frame.
    fit : {"crop", "stretch", "letterbox"}, optional
        Overrides ``spec.fit``.

    Notes
    -----
    Frames handed out are shared, not copied: treat them as read-only.
    """

    kind = "source"

    def __init__(self, *, mirror: bool = False, spec: InputSpec | None = None, fit: str | None = None):
        self._mirror = bool(mirror)
        self._spec = None
        self._fit = None
        self._cache = (0, None, None, None)  # (frame id, raw object, full, fitted)
        self._notices: list[str] = []
        self._closed = False
        self._frozen = False
        self.description = self.kind
        self.fps: float | None = None
        self.set_processing(spec=spec, fit=fit)

    # --------------------------------------------------------------- processing options
    def set_processing(self, *, mirror=None, spec=None, fit=None, clear_spec=False):
        """Change mirror / spec / fit at run time (e.g. from the GUI)."""
        if spec is not None and not isinstance(spec, InputSpec):
            raise SourceError(f"spec must be an InputSpec, got {type(spec).__name__}")
        if fit is not None and fit not in FIT_MODES:
            raise SourceError(f"fit must be one of {', '.join(FIT_MODES)}, got {fit!r}")
        if mirror is not None:
            self._mirror = bool(mirror)
        if clear_spec:
            self._spec = None
        if spec is not None:
            self._spec = spec
        if fit is not None:
            self._fit = fit
        self._cache = (0, None, None, None)

    @property
    def mirror(self) -> bool:
        return self._mirror

    @mirror.setter
    def mirror(self, value: bool):
        self.set_processing(mirror=value)

    @property
    def spec(self) -> InputSpec | None:
        return self._spec

    @spec.setter
    def spec(self, value):
        if value is None:
            self.set_processing(clear_spec=True)
        else:
            self.set_processing(spec=value)

    @property
    def fit(self) -> str | None:
        """The fit in force: the explicit ``fit`` option, else the spec's, else None."""
        return self._fit or (self._spec.fit if self._spec is not None else None)

    @fit.setter
    def fit(self, value):
        self.set_processing(fit=value)

    # --------------------------------------------------------------- frames
    def _latest(self):
        """(frame id, H x W x 3 uint8 BGR as captured) or (0, None).  Subclasses implement."""
        raise NotImplementedError

    def _processed(self):
        fid, raw = self._latest()
        if raw is None:
            return 0, None, None, None
        cache = self._cache
        if cache[0] == fid and cache[1] is raw:
            return cache
        full = np.ascontiguousarray(cv2.flip(raw, 1)) if self._mirror else raw
        spec = self._spec
        fitted = spec.fit_frame(full, self._fit or spec.fit) if spec is not None else full
        cache = (fid, raw, full, fitted)
        self._cache = cache  # one tuple assignment: atomic for other reader threads
        return cache

    def read(self) -> np.ndarray | None:
        """The newest frame: H x W x 3 uint8 BGR (mirrored, fitted to ``spec`` if set), or None yet."""
        return self._processed()[3]

    def read_with_id(self):
        """(frame id, frame) like :meth:`read`; ids grow by one per new frame, 0 means none yet."""
        fid, _, _, fitted = self._processed()
        return fid, fitted

    def read_full(self) -> np.ndarray | None:
        """The whole newest frame (mirrored if ``mirror``), not fitted to the spec."""
        return self._processed()[2]

    def read_raw(self) -> np.ndarray | None:
        """The newest frame as captured/decoded (BGR uint8): no mirror, no fit."""
        return self._latest()[1]

    @property
    def frame_id(self) -> int:
        """Id of the newest frame available (0 when none yet)."""
        return self._latest()[0]

    # --------------------------------------------------------------- state
    @property
    def state(self) -> str:
        """Machine-readable state: opening, live, retrying, ended, frozen, closed, error."""
        return "closed" if self._closed else ("frozen" if self._frozen else "live")

    @property
    def status(self) -> str:
        """A short human-readable state for the status bar."""
        return "closed" if self._closed else self.description

    @property
    def notices(self) -> list[str]:
        """Things the user may want to know (skipped files, lost camera...), oldest first."""
        return list(self._notices)

    def _notice(self, text: str):
        self._notices.append(text)
        del self._notices[:-MAX_NOTICES]

    @property
    def is_live(self) -> bool:
        """True for cameras, streams and videos (frames change by themselves)."""
        return False

    # --------------------------------------------------------------- freeze
    def freeze(self):
        """Keep returning the current frame until :meth:`unfreeze`."""
        self._frozen = True

    def unfreeze(self):
        self._frozen = False

    @property
    def frozen(self) -> bool:
        return self._frozen

    # --------------------------------------------------------------- lifetime
    def close(self, timeout: float = 0.1):
        """Release the device/file.  Never blocks longer than about ``timeout`` seconds."""
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return f"<{type(self).__name__} {self.description!r} state={self.state}>"

