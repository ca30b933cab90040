"""Dissection past one process: torchrun ranks and shards, merged exactly.

A dissection is a two-pass computation: the thresholds T_k are a statistic of *every* image's
activations, and the tally needs them.  So a split run exchanges twice, the way the atlas's
scan exchanges once (:mod:`cnnvis_gui.atlas.merge`, whose checks and slices it reuses):

1. every rank or shard runs pass 1 on its slice (whole batches of the listing,
   :func:`~cnnvis_gui.atlas.scan.shard_range`: each image goes through the model in the same
   batch as in one process, so its activations are the same to the bit) and keeps its
   quantile summary: per unit the top m values (exact) or the log-bucket counts (streaming);
2. the summaries are merged -- exactly, see :mod:`cnnvis_gui.dissect.quantile` -- into the
   thresholds one process would compute;
3. every slice tallies its images with those thresholds; the integer tallies add up to the
   one-process tally, so the labels, IoUs and the JSON are the one-process ones.

Under torchrun step 2 is an ``all_gather`` and step 3 a ``gather`` to rank 0 (gloo or nccl).
Shards have no channel between them, so the user runs them twice::

    cnnvis dissect ... --shard I/N --out DIR_I                     # pass 1: writes DIR_I/dissect-part.*
    cnnvis dissect merge DIR_0 ... DIR_N-1 --json OUT.json          # writes OUT.thresholds.json
    cnnvis dissect ... --shard I/N --thresholds OUT.thresholds.json --out DIR_I   # the tally (no forward)
    cnnvis dissect merge DIR_0 ... DIR_N-1 --json OUT.json          # the result

The second run of a shard reads its unit maps back from its cache (the activation store), so
it costs no forward unless the run streamed.  Parts of different dissections (model, spec,
layers, Q, concept set, method, slices, thresholds) are refused with the difference named.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atlas import cache as _cache
from ..atlas.merge import check_parts, read_part_files
from ..core import CnnvisError, InputSpec
from ..core.bounds import MAX_IMAGE_SIDE, MAX_SHARDS, MAX_UNITS, SizeError, bounded_int
from ..core.text import printable
from .formats import open_concepts
from .quantile import LogSketch, TopTail
from .tally import Tally

__all__ = ["DissectPart", "PART_JSON", "PART_NPZ", "SAME_DISSECTION", "checked_meta", "part_meta", "part_of", "write_part",
           "read_part", "whole_key", "merge_summaries", "merge_tallies", "write_thresholds", "read_thresholds", "thresholds_path"]

PART_VERSION = 1
PART_JSON = "dissect-part.json"
PART_NPZ = "dissect-part.npz"

#: what must be equal in every part of one dissection: (meta key, what the user reads)
SAME_DISSECTION = (("weights", "model weights"), ("spec", "input spec"), ("fit", "input fit"), ("layers", "layers"),
                   ("quantile", "quantile Q (--quantile)"), ("concepts", "concept set"),
                   ("method", "quantile method (--memory-budget)"), ("images", "number of images"),
                   ("batch_size", "batch size"), ("count", "number of shards (N of --shard I/N)"),
                   ("whole", "dissection"), ("stage", "stage (run every shard with the same --thresholds)"),
                   ("thresholds", "thresholds (--thresholds)"))


@dataclass
class DissectPart:
    """One slice's summaries (stage ``summary``) or tally (stage ``tally``), with its skipped images."""

    meta: dict
    arrays: dict
    skipped: list = field(default_factory=list)
    label: str = ""

    @property
    def index(self) -> int:
        return int(self.meta["index"])

    @property
    def range(self) -> tuple:
        a, b = self.meta["range"]
        return int(a), int(b)

    def to_payload(self) -> dict:
        """Plain types and CPU tensors (what ``weights_only`` unpickling accepts), for the collectives."""
        return {"meta": self.meta, "label": self.label, "skipped": [[str(p), str(r)] for p, r in self.skipped],
                "arrays": {k: torch.from_numpy(np.array(v, order="C")) for k, v in self.arrays.items()}}

    @classmethod
    def from_payload(cls, d: dict) -> "DissectPart":
        return cls(dict(d["meta"]), {k: v.numpy() for k, v in d["arrays"].items()},
                   [tuple(s) for s in d["skipped"]], d.get("label", ""))


def part_meta(d, stage: str, thresholds: dict | None = None, model_name: str = "", options: str = "") -> dict:
    """The meta of a :class:`~cnnvis_gui.dissect.scan.Dissection`'s part (known before it runs)."""
    index, count = d.shard if d.shard is not None else (0, 1)
    meta = {k: v for k, v in d.identity.items() if k not in ("kind", "shard")}
    meta.update(version=PART_VERSION, images=len(d.paths), batch_size=d.batch_size, index=index, count=count,
                range=list(d.range), stage=stage, grids={n: list(g) for n, g in d.grids.items()},
                dtype=np.dtype(d.dtype).name, whole=d.whole_identity, model=model_name, options=options,
                thresholds=threshold_digest(thresholds) if thresholds is not None else None)
    return json.loads(json.dumps(meta, default=str))


def part_of(d, st: dict, stage: str, summaries: dict | None = None, tally: Tally | None = None,
            thresholds: dict | None = None, model_name: str = "", options: str = "") -> DissectPart:
    """The part of a slice after pass 1 (``summaries``) or after the tally (``tally``)."""
    arrays = {"ok": np.array(int(st["ok"].sum()), np.int64)}
    if stage == "summary":
        for i, n in enumerate(d.layers):
            s = summaries[n]
            if isinstance(s, TopTail):
                arrays[f"tail{i}"], arrays[f"n{i}"] = s.values, np.array(s.n, np.int64)
            else:
                arrays[f"sketch{i}"] = s.counts
    else:
        arrays.update(tally.arrays(d.layers))
        arrays.update({f"thr{i}": np.asarray(thresholds[n]) for i, n in enumerate(d.layers)})
    return DissectPart(part_meta(d, stage, thresholds, model_name, options), arrays, list(st["skipped"]))


def whole_key(meta: dict) -> str:
    """The one-process cache key of the dissection a part belongs to, computed from what it says it is
    (never a key the file gives: a path is made of it)."""
    whole = meta.get("whole")
    if not isinstance(whole, dict) or any(whole.get(k) != meta.get(k) for k in ("weights", "layers", "quantile",
                                                                                    "concepts", "method")):
        raise CnnvisError("the part's description of its dissection does not match its fields; run that shard again.")
    return _cache.digest(whole)


def threshold_digest(thresholds: dict) -> str:
    return _cache.digest({n: np.asarray(t).tobytes().hex() for n, t in thresholds.items()})


# ============================================================================ files
def write_part(folder, part: DissectPart) -> None:
    """``folder/dissect-part.npz`` (arrays) then ``folder/dissect-part.json`` (meta), each atomically."""
    folder = Path(folder)
    arrays = dict(part.arrays, skipped_paths=np.array([p for p, _ in part.skipped], dtype=str),
                  skipped_reasons=np.array([r for _, r in part.skipped], dtype=str))
    _cache.atomic_save_npz(folder / PART_NPZ, **arrays)
    _cache.atomic_write_json(folder / PART_JSON, part.meta)


def read_part(folder) -> DissectPart:
    """The part written to ``folder`` by ``cnnvis dissect --shard I/N``; one clear error when there is none."""
    folder = Path(folder).expanduser()
    meta, z = read_part_files(folder, PART_JSON, PART_NPZ, PART_VERSION, "cnnvis dissect")
    try:
        meta = checked_meta(meta)
        if z is None:
            raise ValueError(f"no readable {PART_NPZ}")
        layers, grids = meta["layers"], meta["grids"]
        for i, n in enumerate(layers):
            units = grids[n][0]
            if meta["stage"] == "summary":
                key = f"tail{i}" if meta["method"] == "exact" else f"sketch{i}"
                if z[key].ndim != 2 or z[key].shape[0] != units:
                    raise ValueError(f"layer {n!r}: a summary of another shape")
            elif z[f"inter{i}"].shape[0] != units or z[f"act{i}"].shape[0] != units:
                raise ValueError(f"layer {n!r}: a tally of another shape")
        paths, reasons = z.pop("skipped_paths"), z.pop("skipped_reasons")
        if paths.shape != reasons.shape or paths.ndim != 1 or len(paths) > meta["range"][1] - meta["range"][0]:
            raise ValueError(f"{len(paths)} skipped images for a slice of {meta['range'][1] - meta['range'][0]}")
        skipped = list(zip([str(s) for s in paths], [str(s) for s in reasons]))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, SizeError) as e:
        raise CnnvisError(f"'{folder}' holds a damaged or incomplete part ({printable(e, newlines=False)}); run that "
                          f"shard again (it resumes from its cache).") from None
    return DissectPart(meta, z, skipped, str(folder))


def checked_meta(meta: dict) -> dict:
    """A dissection part's meta with every count the reader and the merge use checked for type and bound (a copy).

    Counts come from a file and are bounded by :mod:`cnnvis_gui.core.bounds` before anything is
    sized by them: shards (``count``, ``index``) by ``MAX_SHARDS``, units per layer by
    ``MAX_UNITS``, map sides by ``MAX_IMAGE_SIDE``, layers by ``MAX_UNITS``, images by 2^40,
    the slice inside the listing.  Raises ValueError / KeyError naming the field.
    """
    out = dict(meta)
    for key, kind in (("layers", list), ("grids", dict), ("range", list), ("stage", str), ("method", str)):
        if key not in meta:
            raise KeyError(f"no {key!r} field")
        if not isinstance(meta[key], kind):
            raise ValueError(f"its {key!r} is {type(meta[key]).__name__}, not {kind.__name__}")
    layers = meta["layers"]
    bounded_int(len(layers), "its number of layers", 1, MAX_UNITS)
    if not all(isinstance(n, str) for n in layers) or len(set(layers)) != len(layers):
        raise ValueError("its 'layers' is not a list of distinct layer names")
    if meta["stage"] not in ("summary", "tally"):
        raise ValueError(f"unknown stage {printable(meta['stage'][:40], newlines=False)!r}")
    if meta["method"] not in ("exact", "streaming"):
        raise ValueError(f"unknown quantile method {printable(meta['method'][:40], newlines=False)!r}")
    out["count"] = bounded_int(meta.get("count"), "its 'count' (shards)", 1, MAX_SHARDS)
    out["index"] = bounded_int(meta.get("index"), "its 'index'", 0, out["count"] - 1)
    out["images"] = bounded_int(meta.get("images"), "its 'images'", 0, 1 << 40)
    out["batch_size"] = bounded_int(meta.get("batch_size"), "its 'batch_size'", 1, 1 << 30)
    if len(meta["range"]) != 2:
        raise ValueError("its 'range' is not [start, stop]")
    a = bounded_int(meta["range"][0], "its range start", 0, out["images"])
    out["range"] = [a, bounded_int(meta["range"][1], "its range stop", a, out["images"])]
    grids = {}
    for n in layers:
        g = meta["grids"].get(n)
        if not isinstance(g, list) or len(g) != 3:
            raise ValueError(f"layer {printable(n[:80], newlines=False)!r} has no C x H x W grid")
        grids[n] = [bounded_int(g[0], f"layer {printable(n[:80], newlines=False)!r}: its units", 1, MAX_UNITS)] + \
            [bounded_int(v, f"layer {printable(n[:80], newlines=False)!r}: its map side", 1, MAX_IMAGE_SIDE)
             for v in g[1:]]
    out["grids"], out["layers"] = grids, list(layers)
    return out


def thresholds_path(json_out) -> Path:
    """Where ``dissect merge`` of pass-1 parts writes the thresholds: next to the JSON, ``NAME.thresholds.json``."""
    p = Path(json_out).expanduser()
    return p.with_name(p.stem + ".thresholds.json")


def write_thresholds(path, meta: dict, thresholds: dict) -> None:
    doc = {"version": PART_VERSION, "kind": "cnnvis dissect thresholds",
           "dissection": {k: meta.get(k) for k, _ in SAME_DISSECTION if k not in ("stage", "thresholds")},
           "dtype": meta.get("dtype", "float32"),
           "layers": {n: [float(v) for v in np.asarray(t).ravel()] for n, t in thresholds.items()}}
    _cache.atomic_write_json(path, doc)


def read_thresholds(path, d) -> dict:
    """Thresholds written by ``dissect merge`` for dissection ``d``; refused when they belong to another one."""
    from ..atlas.merge import first_difference
    path = Path(path).expanduser()
    doc = _cache.read_json(path)
    if not isinstance(doc, dict) or doc.get("kind") != "cnnvis dissect thresholds":
        raise CnnvisError(f"--thresholds: '{path}' is not a thresholds file written by 'cnnvis dissect merge'.")
    mine = part_meta(d, "summary")
    same = [s for s in SAME_DISSECTION if s[0] not in ("stage", "thresholds")]
    diff = first_difference(dict(doc.get("dissection") or {}), mine, same)
    if diff is not None:
        raise CnnvisError(f"--thresholds: '{path}' belongs to another dissection: {diff}.")
    try:
        out = {n: np.asarray(doc["layers"][n], dtype=d.dtype) for n in d.layers}
        if any(out[n].shape != (d.grids[n][0],) for n in d.layers):
            raise ValueError("another number of units")
    except (KeyError, TypeError, ValueError) as e:
        raise CnnvisError(f"--thresholds: '{path}' is damaged ({e}); merge the pass-1 parts again.") from None
    return out


# ============================================================================ merges
def merge_summaries(parts, q: float) -> tuple:
    """(thresholds {layer: C}, ordered parts) of pass-1 parts: the exact merge of their summaries."""
    ordered = check_parts(parts, SAME_DISSECTION)
    meta = ordered[0].meta
    whole_key(meta)                                   # the part's own description must agree with it
    if meta["stage"] != "summary":
        raise CnnvisError("these parts already hold tallies: they make the result, not thresholds.")
    dtype = np.dtype(meta.get("dtype", "float32"))
    out = {}
    for i, n in enumerate(meta["layers"]):
        if meta["method"] == "exact":
            merged = TopTail.merge([TopTail(p.arrays[f"tail{i}"], int(p.arrays[f"n{i}"])) for p in ordered])
        else:
            merged = LogSketch.merge([LogSketch(p.arrays[f"sketch{i}"]) for p in ordered])
        if merged.n == 0:
            raise CnnvisError("no image of any part went through the model; nothing to threshold.")
        out[n] = np.asarray(merged.thresholds(q), dtype)
    return out, ordered


def merge_tallies(parts) -> tuple:
    """(merged Tally, thresholds, skipped in listing order, ordered parts, concept set) of tally parts."""
    ordered = check_parts(parts, SAME_DISSECTION)
    meta = ordered[0].meta
    whole_key(meta)
    if meta["stage"] != "tally":
        raise CnnvisError("these parts hold pass 1 only: merge them for the thresholds first.")
    cs = open_concepts(meta["concepts"]["root"], meta["concepts"]["categories"] if meta["concepts"]["format"]
                       == "broden" else None)
    if cs.identity() != meta["concepts"]:
        raise CnnvisError(f"the concept set '{cs.root}' changed since the shards read it; run the shards again.")
    layers = list(meta["layers"])
    tallies = []
    for p in ordered:
        t = Tally({n: int(meta["grids"][n][0]) for n in layers}, cs.size, cs.concept_category, len(cs.categories))
        try:
            t.load(p.arrays, layers)
        except (KeyError, ValueError) as e:
            raise CnnvisError(f"{p.label}: a damaged tally ({e}); run that shard again.") from None
        tallies.append(t)
    total = tallies[0]
    total.merge(tallies[1:])
    try:
        thresholds = {n: ordered[0].arrays[f"thr{i}"] for i, n in enumerate(layers)}
    except KeyError as e:
        raise CnnvisError(f"{ordered[0].label}: its tally has no thresholds ({e}); run that shard again.") from None
    return total, thresholds, [s for p in ordered for s in p.skipped], ordered, cs


def result_of(meta: dict, cs, thresholds: dict, tally: Tally, skipped, world_size: int):
    """The :class:`~cnnvis_gui.dissect.results.DissectResult` of merged parts (no model needed)."""
    from .scan import build_result
    layers = list(meta["layers"])
    return build_result(cs, layers, {n: tuple(meta["grids"][n]) for n in layers}, float(meta["quantile"]),
                        thresholds, tally, skipped, meta["method"], InputSpec.from_dict(meta["spec"]), meta["fit"],
                        meta.get("model") or "?", world_size)
