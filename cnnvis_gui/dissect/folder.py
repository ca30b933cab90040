"""The simple concept-folder format, for anyone's own segmentation data.

::

    DIR/labels.csv            id,name[,category]     (a header row is optional)
    DIR/images/NAME.png|jpg   the images (sub-folders allowed)
    DIR/masks/NAME.png        one label map per image, same relative name: single-channel uint8
                              or uint16, each pixel the id of its concept, 0 for none

A mask is used at its own resolution; one whose size differs from its image's is resized
nearest-neighbour to the image's size (the result says how many were).  Every image is
annotated in every category (its label map covers the whole image: 0 is an explicit "none of
these").  Concepts without a category are in the category ``concept``.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np

from .concepts import AnnotatedImage, Concept, ConceptError, ConceptSet, clean_name, parse_id, read_csv

__all__ = ["open_folder", "MASK_EXTENSIONS", "DEFAULT_CATEGORY"]

#: label-map files the simple format reads (lossless formats only)
MASK_EXTENSIONS = (".png", ".tif", ".tiff")
DEFAULT_CATEGORY = "concept"
#: PNG (bit depth, colour type) of the label maps :func:`_decode_mask` takes as they are: 8- and 16-bit grey
PLAIN_PNGS = ((8, 0), (16, 0))


def _concepts(path: Path) -> list:
    rows = read_csv(path, "labels file")
    if not rows:
        raise ConceptError(f"labels file '{path}' is empty; write one line per concept: id,name[,category].")
    head = [c.lower() for c in rows[0]]
    if not head[0].lstrip("+").isdigit():              # a header row
        if "id" not in head or "name" not in head:
            raise ConceptError(f"labels file '{path}': the header {','.join(rows[0][:4])!r} has no 'id' and 'name' "
                               f"columns; write id,name[,category].")
        cols = {k: head.index(k) for k in ("id", "name", "category") if k in head}
        rows = rows[1:]
    else:
        cols = {"id": 0, "name": 1, "category": 2}
    out, seen = [], {}
    for n, r in enumerate(rows, 2 if "id" in head else 1):
        where = f"labels file '{path}', line {n}"
        if len(r) <= cols["name"]:
            raise ConceptError(f"{where}: expected id,name[,category], got {clean_name(','.join(r), 60)!r}.")
        cid = parse_id(r[cols["id"]], where)
        if cid in seen:
            raise ConceptError(f"{where}: concept id {cid} is listed twice (line {seen[cid]} too).")
        seen[cid] = n
        name = clean_name(r[cols["name"]]) or f"concept {cid}"
        cat = clean_name(r[cols["category"]]) if "category" in cols and len(r) > cols["category"] else ""
        out.append(Concept(cid, name, cat or DEFAULT_CATEGORY))
    if not out:
        raise ConceptError(f"labels file '{path}' lists no concepts.")
    return out


def _decode_mask(raw: np.ndarray, path: Path) -> np.ndarray:
    """A label map (h x w int64) from a decoded mask file; anything that is not one is refused."""
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[:, :, 0]
    if raw.ndim != 2:
        raise ConceptError(f"mask '{path}' is a {raw.shape[2]}-channel (colour) image, not a label map: save one "
                           f"channel of concept ids (uint8 or uint16 PNG), 0 for no concept.")
    if raw.dtype not in (np.uint8, np.uint16):
        kind = "floating-point" if np.issubdtype(raw.dtype, np.floating) else str(raw.dtype)
        raise ConceptError(f"mask '{path}' holds {kind} values, not a label map: save concept ids as a uint8 or "
                           f"uint16 PNG, 0 for no concept.")
    return raw.astype(np.int64)


def open_folder(root: Path) -> ConceptSet:
    """Read a simple concept folder (see the module docstring); every problem is one ConceptError."""
    from ..atlas.folders import list_images

    root = Path(root)
    labels = root / "labels.csv"
    if not labels.is_file():
        raise ConceptError(f"concept folder '{root}' has no labels.csv; write one line per concept: id,name[,category].")
    concepts = _concepts(labels)
    if not (root / "images").is_dir():
        raise ConceptError(f"concept folder '{root}' has no images/ folder.")
    listed, _ = list_images(root / "images", recursive=True)
    if not listed:
        raise ConceptError(f"concept folder '{root}' has no images in images/ (looked for .png, .jpg ...).")
    masks_dir = root / "masks"
    have = {}
    if masks_dir.is_dir():
        for dirpath, dirs, names in os.walk(masks_dir, followlinks=False):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                stem, ext = os.path.splitext(name)
                if ext.lower() in MASK_EXTENSIONS and not name.startswith("."):
                    rel = Path(dirpath, name).relative_to(root).as_posix()
                    have.setdefault(Path(dirpath, stem).relative_to(masks_dir).as_posix(), rel)
    categories = list(dict.fromkeys(c.category for c in concepts))
    every = tuple(range(len(categories)))          # a label map covers every category
    images, files, missing = [], [], []
    for rel, size, mtime in listed:
        key = PurePosixPath(rel).with_suffix("").as_posix()
        mask = have.get(key)
        if mask is None:
            missing.append(rel)
            continue
        images.append(AnnotatedImage(f"images/{rel}", (mask,), (), every))
        st = (root / mask).stat()
        files += [(f"images/{rel}", size, mtime), (mask, int(st.st_size), int(st.st_mtime_ns))]
    if missing:
        raise ConceptError(f"{len(missing)} image{'s' if len(missing) > 1 else ''} of '{root / 'images'}' "
                           f"{'have' if len(missing) > 1 else 'has'} no mask (first: images/{missing[0]}: expected "
                           f"masks/{PurePosixPath(missing[0]).with_suffix('.png').as_posix()}); every image needs "
                           f"its label map.")
    st = labels.stat()
    files.append(("labels.csv", int(st.st_size), int(st.st_mtime_ns)))
    return ConceptSet(root, "folder", concepts, categories, images, files, _decode_mask, PLAIN_PNGS)
