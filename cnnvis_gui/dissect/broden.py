"""Broden, the NetDissect authors' concept data set, read as they publish it.

Broden (Bau et al., CVPR 2017; ``broden1_224`` / ``broden1_227`` from netdissect.csail.mit.edu)
is a folder with

* ``index.csv``: one row per image: ``image`` (a path under ``images/``), ``split``, ``ih``,
  ``iw`` (image size), ``sh``, ``sw`` (mask size), then one column per category (``color``,
  ``object``, ``part``, ``material``, ``scene``, ``texture``).  A category cell lists, separated
  by ``;``, mask files (under ``images/``) and whole-image label numbers (scene, texture);
* ``label.csv``: ``number,name,category,frequency,coverage,syns``; label 0 is "no label";
* ``category.csv``: the categories in order; ``c_<category>.csv``: each category's labels
  with their ``coverage``;
* masks: RGB PNGs whose label number is ``R + 256 * G``.

As in NetDissect, every label belongs to one *primary* category, the one where its coverage
is largest (ties to the later category); an image counts for a category's IoU sums when its
row lists something in that category; rows with nothing in the chosen categories are left out.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .concepts import (AnnotatedImage, Concept, ConceptError, ConceptSet, clean_name, inside, parse_id,
                       read_csv)

__all__ = ["open_broden", "broden_mask", "META_COLUMNS"]

#: index.csv columns that are not categories
META_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")
MAX_MASK_SIDE = 16384
#: PNG (bit depth, colour type) of the masks :func:`broden_mask` takes as they are: 8- and 16-bit grey, 8-bit RGB(A)
PLAIN_PNGS = ((8, 0), (16, 0), (8, 2), (8, 6))


def broden_mask(raw: np.ndarray, path: Path) -> np.ndarray:
    """Label numbers (h x w int64) of a Broden mask: ``R + 256 * G`` of an RGB PNG (or a one-channel map)."""
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[:, :, 0]
    if not (np.issubdtype(raw.dtype, np.unsignedinteger) and raw.dtype.itemsize <= 2):
        kind = "floating-point" if np.issubdtype(raw.dtype, np.floating) else str(raw.dtype)
        raise ConceptError(f"mask '{path}' holds {kind} values: a Broden mask is an 8-bit RGB PNG whose label is "
                           f"R + 256 * G.")
    if raw.ndim == 2:
        return raw.astype(np.int64)
    if raw.shape[2] not in (3, 4) or raw.dtype != np.uint8:
        raise ConceptError(f"mask '{path}' has {raw.shape[2]} channels of {raw.dtype}: a Broden mask is an 8-bit "
                           f"RGB PNG whose label is R + 256 * G.")
    return raw[:, :, 2].astype(np.int64) + 256 * raw[:, :, 1].astype(np.int64)   # OpenCV decodes BGR


def _header(rows: list, path: Path, need: tuple, what: str) -> tuple:
    if not rows:
        raise ConceptError(f"{what} '{path}' is empty.")
    head = [h.strip().lower() for h in rows[0]]
    missing = [k for k in need if k not in head]
    if missing:
        raise ConceptError(f"{what} '{path}' has no {', '.join(repr(m) for m in missing)} column "
                           f"(its header: {clean_name(','.join(rows[0][:8]), 80)!r}).")
    return head, rows[1:]


def _coverage(root: Path, categories: list, numbers: set) -> dict:
    """{label number: {category: coverage}} from the c_<category>.csv files (those that exist)."""
    out: dict = {}
    for cat in categories:
        p = root / f"c_{cat}.csv"
        if not p.is_file():
            continue
        head, rows = _header(read_csv(p, "category file"), p, ("number",), "category file")
        i_num = head.index("number")
        i_cov = head.index("coverage") if "coverage" in head else None
        for n, r in enumerate(rows, 2):
            if len(r) <= i_num:
                continue
            num = parse_id(r[i_num], f"category file '{p}', line {n}")
            try:
                cov = float(r[i_cov]) if i_cov is not None and len(r) > i_cov and r[i_cov] else 0.0
            except ValueError:
                raise ConceptError(f"category file '{p}', line {n}: coverage {clean_name(r[i_cov], 30)!r} is not a "
                                   f"number.") from None
            if num in numbers:
                out.setdefault(num, {})[cat] = cov if np.isfinite(cov) else 0.0
    return out


def _label_categories(text: str, where: str) -> dict:
    """label.csv's ``category`` cell, ``color(11);object(3)`` -> {"color": 11, "object": 3}."""
    out = {}
    for part in filter(None, (p.strip() for p in str(text).split(";"))):
        m = re.fullmatch(r"([^()]+)\((\d{1,12})\)", part)
        if not m:
            raise ConceptError(f"{where}: cannot read the category {clean_name(part, 40)!r} (expected name(count)).")
        out[m.group(1).strip().lower()] = int(m.group(2))
    return out


def _primary(num: int, scores: dict, categories: list) -> str | None:
    """NetDissect's primary category: the largest score, ties to the later category; None without one."""
    best = max(((scores.get(c, 0), i) for i, c in enumerate(categories) if c in scores), default=None)
    return categories[best[1]] if best is not None else None


def open_broden(root: Path, categories=None) -> ConceptSet:
    """Read a Broden folder (see the module docstring); every problem is one ConceptError."""
    root = Path(root)
    index_path = root / "index.csv"
    head, rows = _header(read_csv(index_path, "Broden index"), index_path, ("image", "sh", "sw"), "Broden index")
    columns = [h for h in head if h not in META_COLUMNS and h]
    cat_path = root / "category.csv"
    if cat_path.is_file():
        chead, crow = _header(read_csv(cat_path, "Broden category list"), cat_path, ("name",), "Broden category list")
        listed = [r[chead.index("name")].strip().lower() for r in crow if len(r) > chead.index("name")]
        all_cats = [c for c in listed if c in columns] + [c for c in columns if c not in listed]
    else:
        all_cats = list(columns)
    if not all_cats:
        raise ConceptError(f"Broden index '{index_path}' has no category columns (color, object, ...).")
    chosen = all_cats if not categories else []
    for c in categories or ():
        c = str(c).strip().lower()
        if c not in all_cats:
            raise ConceptError(f"--category {clean_name(c, 40)!r}: this Broden set has {', '.join(all_cats)}.")
        if c not in chosen:
            chosen.append(c)
    chosen = [c for c in all_cats if c in chosen]           # in the set's own order

    label_path = root / "label.csv"
    lhead, lrows = _header(read_csv(label_path, "Broden label list"), label_path, ("number", "name"),
                           "Broden label list")
    i_num, i_name = lhead.index("number"), lhead.index("name")
    i_cat = lhead.index("category") if "category" in lhead else None
    names, declared = {}, {}
    for n, r in enumerate(lrows, 2):
        where = f"Broden label list '{label_path}', line {n}"
        if len(r) <= max(i_num, i_name):
            raise ConceptError(f"{where}: expected number,name,..., got {clean_name(','.join(r), 60)!r}.")
        if r[i_num].strip() == "0":
            continue                                       # label 0: "no label"
        num = parse_id(r[i_num], where)
        if num in names:
            raise ConceptError(f"{where}: label number {num} is listed twice.")
        names[num] = clean_name(r[i_name]) or f"label {num}"
        declared[num] = _label_categories(r[i_cat], where) if i_cat is not None and len(r) > i_cat else {}
    if not names:
        raise ConceptError(f"Broden label list '{label_path}' lists no labels.")
    coverage = _coverage(root, all_cats, set(names))
    concepts, ignored = [], []
    for num, name in names.items():
        scores = coverage.get(num) or declared[num]
        cat = _primary(num, scores, all_cats)
        if cat in chosen:
            concepts.append(Concept(num, name, cat))
        else:
            ignored.append(num)                            # another category's label: "no concept" here
    if not concepts:
        raise ConceptError(f"no label of this Broden set belongs to {', '.join(chosen)}.")

    i_img, i_sh, i_sw = head.index("image"), head.index("sh"), head.index("sw")
    col = {c: head.index(c) for c in chosen}
    images, files, missing, seen = [], [], [], set()
    for n, r in enumerate(rows, 2):
        where = f"Broden index '{index_path}', line {n}"
        r = r + [""] * (len(head) - len(r))
        masks, scalars, annotated = [], [], []
        for k, c in enumerate(chosen):
            items = [s.strip() for s in r[col[c]].split(";") if s.strip()]
            if items:
                annotated.append(k)
            for it in items:
                if it.isdigit():
                    num = parse_id(it, where)
                    if num not in names:
                        raise ConceptError(f"{where}: image label {num} ({c}) is not in label.csv.")
                    scalars.append(num)
                else:
                    masks.append("images/" + inside(root, it, where))
        if not annotated:
            continue                                        # nothing in the chosen categories: NetDissect drops it
        img = "images/" + inside(root, r[i_img], where)
        if img in seen:
            raise ConceptError(f"{where}: image {clean_name(r[i_img], 80)!r} is listed twice.")
        seen.add(img)
        try:
            sh, sw = int(r[i_sh]), int(r[i_sw])
        except ValueError:
            raise ConceptError(f"{where}: sh/sw {clean_name(r[i_sh], 20)!r}/{clean_name(r[i_sw], 20)!r} are not "
                               f"whole numbers.") from None
        if not (1 <= sh <= MAX_MASK_SIDE and 1 <= sw <= MAX_MASK_SIDE):
            raise ConceptError(f"{where}: mask size {sh}x{sw} is outside 1..{MAX_MASK_SIDE}.")
        for rel in [img] + masks:
            try:
                st = (root / rel).stat()
            except OSError:
                missing.append(rel)
                continue
            files.append((rel, int(st.st_size), int(st.st_mtime_ns)))
        images.append(AnnotatedImage(img, tuple(masks), tuple(scalars), tuple(annotated), (sh, sw)))
    if missing:
        raise ConceptError(f"{len(missing)} file{'s' if len(missing) > 1 else ''} named in '{index_path}' "
                           f"{'are' if len(missing) > 1 else 'is'} missing (first: {root / missing[0]}); "
                           f"the masks and images of a Broden set must all be there.")
    if not images:
        raise ConceptError(f"Broden index '{index_path}' lists no image annotated in {', '.join(chosen)}.")
    for p in ("index.csv", "label.csv", "category.csv", *(f"c_{c}.csv" for c in all_cats)):
        if (root / p).is_file():
            st = (root / p).stat()
            files.append((p, int(st.st_size), int(st.st_mtime_ns)))
    cs = ConceptSet(root, "broden", concepts, chosen, images, files, broden_mask, PLAIN_PNGS)
    cs.dense[ignored] = 0
    return cs
