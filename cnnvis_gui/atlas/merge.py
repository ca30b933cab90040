"""Parts of one top-k scan and their exact merge: shards on disk and torchrun ranks alike.

A *part* is the top-k state of one slice of an image listing (:func:`~cnnvis_gui.atlas.scan.shard_range`):
for every unit of every scanned layer its k best (value, image, y, x), with image indices into
the whole listing.  ``cnnvis atlas --shard I/N`` writes one to its ``--out`` folder
(:func:`write_part`: ``atlas-part.json`` + ``atlas-part.npz``), torchrun ranks send theirs to
rank 0 (:mod:`cnnvis_gui.atlas.distributed`), and :func:`merge_parts` turns parts into one
:class:`~cnnvis_gui.atlas.results.AtlasScan`.

Exactness: a one-process scan keeps, per unit, the k best images under the order *value
descending, then place in the listing ascending* (each image enters once, at the first maximum
of its map in row-major order, so the position tie is settled inside the image).  Every hit of
the global top-k is in the top-k of its own slice under the same order, so sorting the union of
the parts' lists by that order and keeping k gives the one-process result, entry for entry.
Empty entries (image -1, value -inf) sort before any real image of value -inf, as in the scan.

Before merging, :func:`check_parts` refuses parts of different scans (model weights, input
spec, layers, k, folder, image listing, batch size, number of slices) with a message that names
the difference, and parts that do not tile the listing (a slice missing or given twice).
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core import CnnvisError
from ..core.bounds import MAX_SHARDS, MAX_TOP, bounded_int
from ..core.text import printable
from . import cache as _cache
from .results import LayerTopK
from .state import nothing_decoded_error, scan_arrays, state_from_arrays, store_result

__all__ = ["AtlasPart", "PART_JSON", "PART_NPZ", "PART_VERSION", "part_meta", "part_from_scan", "write_part",
           "read_part", "read_part_files", "check_parts", "first_difference", "SAME_SCAN", "merge_topk", "cache_merged", "merge_parts", "parse_shard"]

PART_VERSION = 2
PART_JSON = "atlas-part.json"
PART_NPZ = "atlas-part.npz"

#: identity fields that must be equal in every part: (meta key, what the user reads)
SAME_SCAN = (("weights", "model weights"), ("spec", "input spec"), ("fit", "input fit"), ("layers", "layers"),
         ("k", "k (--top)"), ("recursive", "recursive listing"), ("folder", "image folder"),
         ("images", "number of images"), ("files", "image listing"), ("batch_size", "batch size"),
         ("count", "number of shards (N of --shard I/N)"))


@dataclass
class AtlasPart:
    """The top-k state of one slice of a listing.

    ``meta`` holds the scan's identity (:attr:`TopKScan.identity`: weights hash, spec, fit,
    layers, k, recursive, folder, files fingerprint) plus ``images`` (listing length),
    ``batch_size``, ``index``/``count`` (slice I of N), ``range`` ([start, stop)), ``model``
    (a display name), ``options`` (the model options, to quote in messages) and ``scan_key``
    (the cache key of the same scan in one process, where the merged result is kept).  ``layers``
    maps layer name -> :class:`LayerTopK` with global image indices (a slice in which nothing
    was decoded has none); ``skipped`` is [(relative path, reason)] of the slice.
    """

    meta: dict
    layers: dict
    skipped: list = field(default_factory=list)
    label: str = ""          # where it came from, for messages ("DIR_1", "rank 1")

    @property
    def index(self) -> int:
        return int(self.meta["index"])

    @property
    def range(self) -> tuple:
        a, b = self.meta["range"]
        return int(a), int(b)

    def to_payload(self) -> dict:
        """Plain types and CPU tensors only (what ``weights_only`` unpickling accepts)."""
        return {"meta": json.loads(json.dumps(self.meta, default=str)), "label": self.label,
                "skipped": [[str(p), str(r)] for p, r in self.skipped],
                "layers": {n: {"shape": [int(s) for s in t.shape],
                               **{a: torch.from_numpy(np.ascontiguousarray(getattr(t, a)))
                                  for a in ("values", "images", "ys", "xs")}}
                           for n, t in self.layers.items()}}

    @classmethod
    def from_payload(cls, d: dict) -> "AtlasPart":
        layers = {n: LayerTopK(n, v["values"].numpy().astype(np.float32), v["images"].numpy().astype(np.int64),
                               v["ys"].numpy().astype(np.int32), v["xs"].numpy().astype(np.int32),
                               tuple(v["shape"]))
                  for n, v in d["layers"].items()}
        return cls(dict(d["meta"]), layers, [tuple(s) for s in d["skipped"]], d.get("label", ""))


def parse_shard(text) -> tuple:
    """``"I/N"`` -> (I, N) with 0 <= I < N (as ``--shard`` takes it)."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise CnnvisError(f"--shard: use I/N (slice I of N, counted from 0), e.g. 0/4; got {text!r}.") from None
    if n < 1 or not 0 <= i < n:
        raise CnnvisError(f"--shard {text}: N must be at least 1 and I one of 0..{max(n, 1) - 1}.")
    return i, n


def part_meta(scan, model_name: str = "", options: str = "") -> dict:
    """The meta of the part a :class:`~cnnvis_gui.atlas.scan.TopKScan` computes (known before it runs)."""
    index, count = scan.shard if scan.shard is not None else (0, 1)
    images = scan.listing_size                  # lists the folder, hashes the weights
    whole = {k: v for k, v in scan.identity.items() if k != "shard"}     # the one-process scan's key fields
    meta = dict(scan.identity, version=PART_VERSION, images=images, batch_size=scan.shard_batch_size,
                index=index, count=count, range=list(scan.range), model=model_name, options=options,
                scan_key=_cache.digest(whole))
    meta.pop("kind", None)
    meta.pop("shard", None)
    return json.loads(json.dumps(meta, default=str))     # as it reads back from atlas-part.json


def part_from_scan(scan, model_name: str = "", options: str = "") -> AtlasPart:
    """The part a finished :class:`~cnnvis_gui.atlas.scan.TopKScan` (usually with ``shard=(I, N)``) computed."""
    res = scan.result
    if res is None:
        raise CnnvisError("the scan has not finished; run it to the end before taking its part.")
    meta = dict(part_meta(scan, model_name, options), from_cache=bool(res.from_cache))
    return AtlasPart(meta, dict(res.layers), list(res.skipped))


# ============================================================================ files
def write_part(folder, part: AtlasPart) -> None:
    """``folder/atlas-part.npz`` (the arrays, in the scan cache's layout) then ``folder/atlas-part.json``."""
    folder = Path(folder)
    tables = {n: (t.values, t.images, t.ys, t.xs, t.shape) for n, t in part.layers.items()}
    _cache.atomic_save_npz(folder / PART_NPZ, **scan_arrays(part.meta["layers"], tables, part.range[1],
                                                            part.skipped))
    _cache.atomic_write_json(folder / PART_JSON, part.meta)


def read_part_files(folder: Path, json_name: str, npz_name: str, version: int, command: str) -> tuple:
    """(meta, arrays or None) of a part folder; one clear error when its meta is missing or of another version.

    The shards of ``cnnvis atlas`` and of ``cnnvis dissect`` write their parts this way: the
    arrays first, then the meta (each atomically), so a meta names arrays that were complete.
    """
    meta = _cache.read_json(folder / json_name)
    if not isinstance(meta, dict):
        what = "is not a folder" if not folder.is_dir() else f"has no readable {json_name}"
        raise CnnvisError(f"'{folder}' {what}: give the --out folders of '{command} --shard I/N' runs "
                          f"that finished.")
    if meta.get("version") != version:
        raise CnnvisError(f"'{folder / json_name}' has format version {_short(meta.get('version'))}, this cnnvis "
                          f"reads version {version}; run that shard again with this version.")
    return meta, _cache.load_npz(folder / npz_name)


def read_part(folder) -> AtlasPart:
    """The part written to ``folder`` by ``cnnvis atlas --shard I/N``; one clear error when there is none.

    The arrays are checked against the meta (layers, k, units, image indices, the slice), so a
    damaged or hand-edited part is refused instead of merged.
    """
    folder = Path(folder).expanduser()
    meta, z = read_part_files(folder, PART_JSON, PART_NPZ, PART_VERSION, "cnnvis atlas")
    try:
        meta = checked_meta(meta)
        if z is None:
            raise ValueError(f"no readable {PART_NPZ}")
        a, b = meta["range"]
        layers, skipped = state_from_arrays(z, meta["layers"], meta["k"], meta["images"], (a, b))
        if any(not (a <= i < b) for t in layers.values() for i in t.images[t.images >= 0].tolist()):
            raise ValueError("a hit outside the part's slice")
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise CnnvisError(f"'{folder}' holds a damaged or incomplete part ({printable(e, newlines=False)}); "
                          f"rerun that shard (it resumes from its cache).") from None
    return AtlasPart(meta, layers, skipped, str(folder))


#: the type of every meta field a part must have (what :func:`checked_meta` checks)
_META_TYPES = (("weights", str), ("files", str), ("folder", str), ("spec", dict), ("layers", list),
               ("recursive", bool), ("range", list))


def checked_meta(meta: dict) -> dict:
    """A part's meta with every field the merge reads checked for type and bound (a copy).

    Numbers are read by :func:`~cnnvis_gui.core.bounds.bounded_int` before anything is built from
    them (a ``count`` of 10^12 would list 10^12 missing shards); ``scan_key`` is not trusted at
    all: the merge recomputes the key from the checked fields (:func:`scan_key`).  Raises
    ValueError / KeyError naming the field.
    """
    out = dict(meta)
    for key, kind in _META_TYPES:
        if key not in meta:
            raise KeyError(f"no {key!r} field")
        if not isinstance(meta[key], kind):
            raise ValueError(f"its {key!r} is {type(meta[key]).__name__}, not {kind.__name__}")
    if not meta["layers"] or not all(isinstance(n, str) for n in meta["layers"]):
        raise ValueError("its 'layers' is not a list of layer names")
    out["count"] = bounded_int(meta.get("count"), "its 'count'", 1, MAX_SHARDS)
    out["index"] = bounded_int(meta.get("index"), "its 'index'", 0, out["count"] - 1)
    out["images"] = bounded_int(meta.get("images"), "its 'images'", 0, 1 << 40)
    out["k"] = bounded_int(meta.get("k"), "its 'k'", 1, MAX_TOP)
    out["batch_size"] = bounded_int(meta.get("batch_size", 1), "its 'batch_size'", 1, 1 << 30)
    if len(meta["range"]) != 2:
        raise ValueError("its 'range' is not [start, stop]")
    a = bounded_int(meta["range"][0], "its range start", 0, out["images"])
    out["range"] = [a, bounded_int(meta["range"][1], "its range stop", a, out["images"])]
    out["layers"] = list(meta["layers"])
    out["scan_key"] = scan_key(out)
    return out


#: the meta fields the one-process scan's cache key is made of (with ``kind``: see TopKScan._prepare)
_KEY_FIELDS = ("weights", "spec", "fit", "layers", "k", "recursive", "folder", "files")


def scan_key(meta: dict) -> str:
    """The cache key of the one-process scan a part belongs to, recomputed from its fields.

    A part file's own ``scan_key`` is never joined into a path: the merged result is kept under
    the key this function returns, always a hex digest (:func:`~cnnvis_gui.atlas.cache.is_digest`).
    """
    return _cache.digest({"kind": "scan", **{k: meta.get(k) for k in _KEY_FIELDS}})


# ============================================================================ checks
def _short(v) -> str:
    if isinstance(v, str) and len(v) > 16 and v.isalnum():
        return v[:12] + "…"
    text = json.dumps(v, default=str) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 160 else text[:157] + "..."


def _describe(part: AtlasPart, key: str) -> str:
    v = part.meta.get(key)
    if key == "weights":
        return f"{part.meta.get('model') or 'a model'} (weights {_short(v)})"
    if key == "files":
        return f"{part.meta.get('images')} images, listing {_short(v)}"
    if key == "spec" and isinstance(v, dict):
        return ", ".join(f"{k}={v[k]}" for k in sorted(v))
    return _short(v)


def first_difference(a: dict, b: dict, same=SAME_SCAN) -> str | None:
    """What differs between two parts' meta ("different k (--top): 9 vs 5"), or None when they agree.

    ``same`` lists the (meta key, words) pairs that must agree (default: a top-k scan's).
    """
    pa, pb = AtlasPart(a, {}), AtlasPart(b, {})
    for key, what in same:
        if a.get(key) == b.get(key):
            continue
        if key == "spec":
            x, y = a.get(key) or {}, b.get(key) or {}
            diff = [k for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
            detail = "; ".join(f"{k}: {_short(x.get(k))} vs {_short(y.get(k))}" for k in diff)
        else:
            detail = f"{_describe(pa, key)} vs {_describe(pb, key)}"
        hint = ""
        if key == "files":
            hint = " (files were added, removed or changed between the scans)"
        elif key == "weights" and a.get("options") != b.get("options"):
            hint = f" (model options {a.get('options')!r} vs {b.get('options')!r})"
        return f"different {what}: {detail}{hint}"
    return None


def check_parts(parts, same=SAME_SCAN) -> list:
    """Parts of one scan, sorted by slice; raises CnnvisError naming the first difference.

    The parts must share the model weights, input spec, layers, k, folder, image listing,
    batch size and number of slices (``same``: another scan's list), and be exactly the slices
    0..N-1 once each.  Any part with ``meta``, ``index``, ``range`` and ``label`` will do.
    """
    parts = list(parts)
    if not parts:
        raise CnnvisError("no parts to merge.")
    ref = parts[0]
    for p in parts[1:]:
        diff = first_difference(ref.meta, p.meta, same)
        if diff is not None:
            raise CnnvisError(f"cannot merge {ref.label or 'part ' + str(ref.index)} and "
                              f"{p.label or 'part ' + str(p.index)}: {diff}.")
    count = int(ref.meta["count"])
    by_index: dict = {}
    for p in parts:
        if p.index in by_index:
            raise CnnvisError(f"{by_index[p.index].label} and {p.label} are both shard {p.index}/{count}; "
                              f"give each shard once.")
        by_index[p.index] = p
    if len(by_index) < count:      # by_index has at most len(parts) entries: the list below stays short
        missing = list(itertools.islice((i for i in range(count) if i not in by_index), 8))
        more = count - len(by_index) - len(missing)
        raise CnnvisError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(f'{i}/{count}' for i in missing)}"
                          f"{f' and {more} more' if more > 0 else ''} missing: the merge needs all {count} parts "
                          f"of the scan.")
    ordered = [by_index[i] for i in range(count)]
    pos = 0
    for p in ordered:
        a, b = p.range
        if a != pos or b < a:
            raise CnnvisError(f"{p.label}: its slice {a}..{b} does not continue the previous one (ends at {pos}).")
        pos = b
    if pos != int(ref.meta["images"]):
        raise CnnvisError(f"the parts cover images 0..{pos} of {ref.meta['images']}.")
    return ordered


# ============================================================================ merge
def merge_topk(tables, k: int) -> tuple:
    """Exact top-k of the union of several units x k tables (values, images, ys, xs).

    Order: value descending, then image index ascending (empty entries, image -1, before real
    images of the same value), the order a one-process scan keeps; the first k per unit.
    """
    v = torch.from_numpy(np.concatenate([t[0] for t in tables], 1).astype(np.float32))
    im = torch.from_numpy(np.concatenate([t[1] for t in tables], 1).astype(np.int64))
    y = torch.from_numpy(np.concatenate([t[2] for t in tables], 1).astype(np.int32))
    x = torch.from_numpy(np.concatenate([t[3] for t in tables], 1).astype(np.int32))
    order = torch.sort(im, dim=1, stable=True).indices                       # secondary key first
    order = order.gather(1, torch.sort(v.gather(1, order), dim=1, descending=True, stable=True).indices)[:, :k]
    return (v.gather(1, order).numpy(), im.gather(1, order).numpy(), y.gather(1, order).numpy(),
            x.gather(1, order).numpy())


def cache_merged(cache_root, layers: dict, skipped, meta: dict):
    """Keep a merged result in the scan cache under the one-process key, recomputed from ``meta`` (:func:`scan_key`).

    The app, ``load_scan`` and a later ``cnnvis atlas`` of the same model, spec, folder, layers
    and k then open it from the cache instead of scanning again on one machine.  Only results
    checked against the model (:func:`check_against_model`) belong here: the cache is trusted.
    """
    key = scan_key(meta)
    info = {k: meta.get(k) for k in ("folder", "layers", "k", "images", "spec", "model")}
    return store_result(cache_root, key, meta["layers"], layers, int(meta["images"]), skipped,
                        dict(info, skipped=len(skipped), merged_from=int(meta["count"])))


def check_against_model(layers: dict, layer_shapes: dict) -> None:
    """Refuse merged tables that do not fit the model: units and map size per layer.

    ``layer_shapes``: layer name -> the model's per-sample output shape for that layer (the
    model map's).  A part that claims 3 units for a 64-unit layer, or a hit outside the map,
    raises CnnvisError before anything is cached or drawn.
    """
    from .state import check_positions

    for name, t in layers.items():
        want = tuple(int(s) for s in layer_shapes.get(name) or ())
        if tuple(t.shape) != want:
            raise CnnvisError(f"the parts say layer {printable(name or 'output', newlines=False)!r} has output shape "
                              f"{'x'.join(map(str, t.shape))}, but the model gives "
                              f"{'x'.join(map(str, want)) or 'none'}: the parts are not from this model (or were "
                              f"edited); nothing was cached.")
        try:
            check_positions(t.ys, t.xs, t.images, want)
        except ValueError as e:
            raise CnnvisError(f"the parts' hits in layer {printable(name or 'output', newlines=False)!r}: {e}; "
                              f"nothing was cached.") from None


def merge_parts(parts) -> tuple:
    """Check and merge parts -> (layers {name: LayerTopK}, skipped, ranges, meta of the first part).

    ``skipped`` is in listing order; ``ranges`` is each slice's [start, stop) in slice order.
    Raises the scan's own error when no image of any part went through the model.
    """
    ordered = check_parts(parts)
    meta = ordered[0].meta
    k = int(meta["k"])
    skipped = [s for p in ordered for s in p.skipped]
    layers = {}
    for name in meta["layers"]:
        have = [p.layers[name] for p in ordered if name in p.layers]
        if not have:
            continue
        shapes = {tuple(t.shape) for t in have}
        if len(shapes) > 1:
            raise CnnvisError(f"layer {name or 'output'!r} has different shapes in the parts: {sorted(shapes)}.")
        v, im, y, x = merge_topk([(t.values, t.images, t.ys, t.xs) for t in have], k)
        layers[name] = LayerTopK(name, v, im, y, x, have[0].shape)
    if not layers:
        raise nothing_decoded_error(meta.get("folder", "?"), int(meta["images"]), skipped)
    return layers, skipped, [p.range for p in ordered], meta
