"""Concept data: labelled images whose masks say, pixel by pixel, which concept is where.

Network dissection (Bau et al., CVPR 2017) scores a unit against every concept of a labelled
image set.  A :class:`ConceptSet` is such a set as this program reads it, from either of two
on-disk formats (:func:`~cnnvis_gui.dissect.formats.open_concepts` tells them apart):

* **Broden** (:mod:`cnnvis_gui.dissect.broden`), the NetDissect authors' data set, as published;
* **a simple folder** (:mod:`cnnvis_gui.dissect.folder`): ``images/``, ``masks/`` and ``labels.csv``.

Whatever the format, every concept has an id (the value its pixels carry in a mask, 1..65535;
0 is "no concept"), a name and one category; every image has zero or more label maps (pixel
concepts), zero or more image-level concepts (Broden's scene and texture labels) and the set
of categories it is annotated in.  IoU sums for a concept run over the images annotated in the
concept's category (:mod:`cnnvis_gui.dissect.tally`).

Nothing named in a concept set's files is ever imported or run: the CSV files are read as
text with bounded sizes, every path they name must stay inside the concept folder, and names
are shown with their control characters escaped.
"""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ..core import CnnvisError
from ..core.bounds import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, read_bounded
from ..sources import SourceError, load_raw_image
from ..sources.base import MAX_IMAGE_FILE_BYTES, _png_problem

__all__ = ["ConceptError", "Concept", "AnnotatedImage", "ImageLabels", "ConceptSet",
           "read_csv", "inside", "clean_name", "MAX_LABEL_ID", "MAX_CSV_BYTES"]

#: the largest concept id a mask can carry (a uint16 label map; Broden's R + 256 G)
MAX_LABEL_ID = 65535
#: the largest CSV file read (Broden's index.csv of 63,305 images is about 20 MB)
MAX_CSV_BYTES = 256 << 20
#: the longest concept or category name kept (longer ones are cut, with an ellipsis)
MAX_NAME = 120


class ConceptError(CnnvisError):
    """A concept set that cannot be used as it is; the message names the file and what to do."""


@dataclass(frozen=True)
class Concept:
    """One concept: ``id`` as written in the masks, its ``name`` and its ``category``."""

    id: int
    name: str
    category: str


@dataclass(frozen=True)
class AnnotatedImage:
    """One image of a concept set (paths relative to the set's root, posix).

    ``masks`` are label maps of pixel concepts; ``scalars`` are ids of concepts that cover the
    whole image; ``categories`` are the indices (into :attr:`ConceptSet.categories`) of the
    categories the image is annotated in; ``mask_size`` is the (height, width) its masks have
    when the format says so (Broden's ``sh``/``sw``), else None (the image's own size).
    """

    image: str
    masks: tuple = ()
    scalars: tuple = ()
    categories: tuple = ()
    mask_size: tuple | None = None


@dataclass
class ImageLabels:
    """One image's concepts, ready to count: label maps as dense concept indices (0 = none).

    ``maps`` is k x h x w int32 (k may be 0), ``scalars`` dense indices of whole-image
    concepts, ``annotated`` a bool per category, ``size`` the (h, w) every count is made at,
    ``resized`` whether a mask was resized to its image's size (the simple format).
    """

    maps: np.ndarray
    scalars: tuple
    annotated: np.ndarray
    size: tuple
    resized: bool = False


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean_name(text, limit: int = MAX_NAME) -> str:
    """A name from a file as it may be shown: control characters escaped, at most ``limit`` characters."""
    s = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}",
                     str(text)).strip()
    return s if len(s) <= limit else s[:limit - 1] + "…"


def read_csv(path: Path, what: str, max_bytes: int = MAX_CSV_BYTES) -> list:
    """The rows of a CSV file (lists of stripped strings; empty rows dropped), read with a size bound.

    A missing, unreadable, oversized, non-UTF-8 or malformed file is one :class:`ConceptError`.
    """
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ConceptError(f"{what} '{path}' is {size / 2**20:.0f} MB, more than the {max_bytes >> 20} MB a "
                               f"concept file may have; is it the right file?")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ConceptError(f"{what} '{path}' does not exist.") from None
    except OSError as e:
        raise ConceptError(f"cannot read {what} '{path}': {e.strerror or e}.") from None
    if len(data) > max_bytes:
        raise ConceptError(f"{what} '{path}' is larger than the {max_bytes >> 20} MB a concept file may have.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConceptError(f"{what} '{path}' is not UTF-8 text (byte {e.start}); save it as UTF-8 CSV.") from None
    try:
        rows = [[c.strip() for c in r] for r in csv.reader(io.StringIO(text, newline=""))]
    except csv.Error as e:
        raise ConceptError(f"{what} '{path}' is not a readable CSV file ({e}).") from None
    return [r for r in rows if any(r)]


def inside(root: Path, rel: str, what: str) -> str:
    """``rel`` as a clean posix path inside ``root``; a path that leaves it (absolute, ``..``) is refused."""
    text = str(rel).replace("\\", "/")
    p = PurePosixPath(text)
    if not text or p.is_absolute() or re.match(r"^[A-Za-z]:", text) or ".." in p.parts or "\x00" in text:
        raise ConceptError(f"{what} names {clean_name(text, 80)!r}, which is not a path inside the concept folder "
                           f"'{root}'; paths in a concept set must be relative and stay inside it.")
    return p.as_posix()


def parse_id(text: str, where: str) -> int:
    """A concept id from a CSV cell: an integer 1..65535."""
    t = str(text).strip()
    if not re.fullmatch(r"[+]?\d{1,6}", t):
        raise ConceptError(f"{where}: {clean_name(t, 40)!r} is not a concept id (a whole number from 1 to "
                           f"{MAX_LABEL_ID}).")
    v = int(t)
    if not 1 <= v <= MAX_LABEL_ID:
        raise ConceptError(f"{where}: concept id {v} is outside 1..{MAX_LABEL_ID} (0 means no concept in a mask; a "
                           f"mask holds at most 16-bit ids).")
    return v


@dataclass
class ConceptSet:
    """A labelled image set: its concepts, categories and images (see the module docstring).

    Built by :func:`open_concepts`.  ``dense`` maps a concept id to its dense index 1..K (0 for
    "no concept", -1 for an id the set does not list); :attr:`concept_category` gives each dense
    index its category index.
    """

    root: Path
    format: str
    concepts: list
    categories: list
    images: list
    files: list = field(default_factory=list)      # [(relative path, size, mtime_ns)]: the cache key's part
    decode: object = None                           # how one mask file becomes a label map (per format)
    plain_pngs: tuple = ()                          # PNG (bit depth, colour type)s that ``decode`` takes as they are

    def __post_init__(self):
        ids = [c.id for c in self.concepts]
        if len(set(ids)) != len(ids):
            raise ConceptError(f"concept set '{self.root}' lists a concept id twice.")
        self.concepts = sorted(self.concepts, key=lambda c: c.id)
        self.dense = np.full(MAX_LABEL_ID + 1, -1, np.int32)
        self.dense[0] = 0
        for j, c in enumerate(self.concepts, 1):
            self.dense[c.id] = j
        cat = {name: i for i, name in enumerate(self.categories)}
        self.concept_category = np.array([-1] + [cat[c.category] for c in self.concepts], np.int64)
        self._root = os.fspath(self.root)           # joined as a str in the per-image loops

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        """Concepts in the set (dense indices run 1..size)."""
        return len(self.concepts)

    def describe(self) -> str:
        cats = ", ".join(f"{n} {sum(1 for c in self.concepts if c.category == n)}" for n in self.categories)
        return (f"{len(self.images)} images, {len(self.concepts)} concepts ({cats}), "
                f"{'Broden' if self.format == 'broden' else 'folder'} format")

    def identity(self) -> dict:
        """What a dissection's result depends on in this set (hashed into the cache key)."""
        from ..atlas.folders import folder_fingerprint
        return {"root": str(self.root.resolve()), "format": self.format, "files": folder_fingerprint(self.files),
                "categories": list(self.categories),
                "concepts": [[c.id, c.name, c.category] for c in self.concepts]}

    def labels(self, i: int, image_hw: tuple) -> ImageLabels:
        """Read and check image ``i``'s masks; ``image_hw`` is its decoded (height, width).

        Raises :class:`ConceptError` naming the mask and what is wrong (not a label map, an id
        the set does not list, unreadable).
        """
        item = self.images[i]
        maps, size, resized = self._dense_maps(i, image_hw)
        annotated = np.zeros(len(self.categories), bool)
        annotated[list(item.categories)] = True
        counts = np.zeros(len(self.concept_category), bool)      # concepts of the annotated categories
        counts[1:] = annotated[self.concept_category[1:]]
        arr = np.stack(maps) if maps else np.zeros((0,) + tuple(size), np.int32)
        arr = np.where(counts[arr], arr, 0).astype(np.int32)
        scalars = tuple(d for d in (int(self.dense[s]) for s in item.scalars) if counts[d])
        return ImageLabels(arr, scalars, annotated, tuple(int(s) for s in size), resized)

    def check(self, i: int, image_hw: tuple) -> None:
        """Check image ``i``'s masks from their headers; raise the :class:`ConceptError` :meth:`labels` would.

        A mask whose PNG header says it is a label map the format takes as it is (:attr:`plain_pngs`,
        within the pixel bounds, of its image's mask size) is not decoded here: its ids are checked
        when :meth:`labels` reads it (the tally).  Any other mask (missing, not a PNG, RGB where a
        label map is due, another size, a broken chunk...) is decoded here, and refused as
        :meth:`labels` would refuse it.  Pass 1 of a dissection checks every image this way: decoding
        the shapes demo's three mask PNGs an image took as much CPU as a third of its forward.
        """
        item = self.images[i]
        for rel in item.masks:
            head = self._png_header(rel)
            if head is None or (item.mask_size is not None and head[0] != tuple(item.mask_size)):
                self._dense_maps(i, image_hw)
                return

    def _png_header(self, rel: str):
        """((height, width), bit depth, colour type) of a plain label-map PNG that needs no check but
        its ids, or None (decode it to know)."""
        try:
            data = read_bounded(os.path.join(self._root, rel), MAX_IMAGE_FILE_BYTES, "mask")   # str: no Path parsing
        except (CnnvisError, OSError):
            return None
        if len(data) < 33 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
            return None
        w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if (data[24], data[25]) not in self.plain_pngs or not (0 < w <= MAX_IMAGE_SIDE and 0 < h <= MAX_IMAGE_SIDE
                                                              and w * h <= MAX_IMAGE_PIXELS):
            return None
        if b"tRNS" in data or _png_problem(np.frombuffer(data, np.uint8)) is not None:   # tRNS: an alpha channel
            return None
        return (h, w), data[24], data[25]

    def _dense_maps(self, i: int, image_hw: tuple) -> tuple:
        """([dense label map per mask], (h, w) of the counts, whether a mask was resized to its image)."""
        item = self.images[i]
        maps, resized = [], False
        size = item.mask_size
        for rel in item.masks:
            m = self._read_mask(rel)
            if item.mask_size is None and m.shape != tuple(image_hw):   # the simple format: the image's size
                import cv2
                m = cv2.resize(m, (int(image_hw[1]), int(image_hw[0])), interpolation=cv2.INTER_NEAREST)
                resized = True
            if size is None:
                size = m.shape
            elif m.shape != tuple(size):
                raise ConceptError(f"mask '{self.root / rel}' is {m.shape[1]}x{m.shape[0]}, the other masks of its "
                                   f"image are {size[1]}x{size[0]}; an image's masks must have one size.")
            maps.append(self._dense(m, rel))
        return maps, tuple(image_hw) if size is None else size, resized

    def _read_mask(self, rel: str) -> np.ndarray:
        path = self.root / rel
        try:
            raw = load_raw_image(path)
        except SourceError as e:
            if not path.exists():
                raise ConceptError(f"mask '{path}' is missing; every image needs its mask.") from None
            raise ConceptError(f"mask '{path}' cannot be read: {e}.") from None
        return self.decode(raw, path)

    def _dense(self, m: np.ndarray, rel: str) -> np.ndarray:
        d = self.dense[m]
        if (d < 0).any():
            bad = np.unique(m[d < 0])
            known = ", ".join(str(c.id) for c in self.concepts[:12]) + (" ..." if len(self.concepts) > 12 else "")
            raise ConceptError(f"mask '{self.root / rel}' holds concept id{'s' if len(bad) > 1 else ''} "
                               f"{', '.join(map(str, bad[:5].tolist()))}{' ...' if len(bad) > 5 else ''}, which the "
                               f"concept list does not name (it names {known}); a mask holds concept ids, 0 for none.")
        return d
