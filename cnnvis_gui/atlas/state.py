"""A scan's top-k state as arrays: how the cache stores it (``result.npz`` / ``partial.npz``),
the checks a stored state must pass before it is trusted, and the error for a scan in which no
image went through the model."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..core import CnnvisError, ModelForwardError
from . import cache as _cache
from .results import MODEL_FAILED, LayerTopK

__all__ = ["check_state", "check_positions", "nothing_decoded_error", "scan_arrays", "state_from_arrays",
           "store_result"]


def check_state(z: dict, n_layers: int, k: int, n_files: int, finished: bool, span: tuple | None = None) -> None:
    """Raise ValueError/KeyError unless ``z`` holds a top-k state that fits this scan.

    A finished result covers all ``n_files`` and every layer; a partial state covers
    ``0 <= next_index <= n_files`` and either every layer or none (no image decoded yet).
    A shard's state (``span`` = its [start, stop) of the listing) covers its slice instead, and
    may have no layer even when finished (nothing in the slice could be decoded).
    """
    lo, hi = (0, n_files) if span is None else span
    nxt = int(np.asarray(z["next_index"]).reshape(()))
    if finished and nxt != hi:
        raise ValueError(f"it covers {nxt - lo} of {hi - lo} images")
    if not lo <= nxt <= hi:
        raise ValueError(f"it stopped at image {nxt} outside {lo}..{hi}")
    if len(z["skipped_paths"]) != len(z["skipped_reasons"]):
        raise ValueError("its list of skipped files is inconsistent")
    present = [i for i in range(n_layers) if f"v{i}" in z]
    if present and len(present) != n_layers or (finished and not present and span is None):
        raise ValueError(f"it has {len(present)} of {n_layers} layers")
    for i in present:
        v, im, y, x, shape = z[f"v{i}"], z[f"i{i}"], z[f"y{i}"], z[f"x{i}"], z[f"s{i}"]
        if v.ndim != 2 or v.shape[1] != k or any(a.shape != v.shape for a in (im, y, x)):
            raise ValueError(f"layer {i}: arrays of shape {v.shape} for k={k}")
        if not all(np.issubdtype(a.dtype, np.integer) for a in (im, y, x, shape)) \
                or not np.issubdtype(v.dtype, np.floating):
            raise ValueError(f"layer {i}: wrong array types")
        if shape.ndim != 1 or len(shape) < 1 or int(shape[0]) != v.shape[0]:
            raise ValueError(f"layer {i}: shape {shape.tolist()} for {v.shape[0]} units")
        if im.size and (int(im.min()) < -1 or int(im.max()) >= n_files):
            raise ValueError(f"layer {i}: image indices outside the {n_files} images")
        try:
            check_positions(y, x, im, tuple(int(s) for s in shape))
        except ValueError as e:
            raise ValueError(f"layer {i}: {e}") from None


def check_positions(ys, xs, images, shape: tuple) -> None:
    """Raise ValueError unless every hit's (y, x) lies in a layer output of per-sample ``shape``.

    As the scan records them: a flat layer (C,) has (0, 0); a C x H x W map has y < H, x < W;
    any other map has y = 0 and x < the product of its sizes after C.  Empty entries (image -1)
    are not positions and are not checked.
    """
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"output shape {list(shape)} is not a layer's")
    hit = np.asarray(images) >= 0
    y, x = np.asarray(ys)[hit], np.asarray(xs)[hit]
    if not y.size:
        return
    if len(shape) == 3:
        h, w = shape[1], shape[2]
    else:
        h, w = 1, int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    if int(y.min()) < 0 or int(x.min()) < 0:
        raise ValueError("negative positions")
    if int(y.max()) >= h or int(x.max()) >= w:
        where = f"a {h}x{w} map" if len(shape) == 3 else ("a flat layer (no positions)" if len(shape) == 1
                                                            else f"a map of {w} positions")
        raise ValueError(f"positions outside {where}")


def nothing_decoded_error(folder, total: int, skipped) -> CnnvisError:
    """The error for a scan in which no image went through the model (all unreadable, or the model raised)."""
    failed = [t for t in skipped if t[1].startswith(MODEL_FAILED)]
    if failed:
        return ModelForwardError(
            f"the model's forward raised on all {len(failed)} decodable image"
            f"{'s' if len(failed) != 1 else ''} of '{folder}' (first: {failed[0][0]}: "
            f"{failed[0][1].rstrip('.')}); check the input spec against what the model was trained on.")
    first = f": {skipped[0][0]}: {skipped[0][1].rstrip('.')}" if skipped else ""   # one full stop
    return CnnvisError(f"none of the {total} image file{'s' if total != 1 else ''} in "
                       f"'{folder}' could be decoded{first}.")


def scan_arrays(layer_names, tables: dict, next_index: int, skipped) -> dict:
    """The arrays of a top-k state as the cache stores them (``result.npz`` / ``partial.npz``).

    ``tables``: layer name -> (values, images, ys, xs, shape), numpy, units x k; a layer without
    a table (nothing decoded yet) is left out.
    """
    arrays = {"next_index": np.array(next_index, np.int64),
              "skipped_paths": np.array([p for p, _ in skipped], dtype=str),
              "skipped_reasons": np.array([r for _, r in skipped], dtype=str)}
    for i, name in enumerate(layer_names):
        if name not in tables:
            continue
        v, im, y, x, shape = tables[name]
        arrays[f"v{i}"], arrays[f"i{i}"], arrays[f"y{i}"], arrays[f"x{i}"] = v, im, y, x
        arrays[f"s{i}"] = np.array(shape, np.int64)
    return arrays


def state_from_arrays(z: dict, layer_names, k: int | None = None, n_files: int | None = None,
                      span: tuple | None = None) -> tuple:
    """(layers {name: LayerTopK}, skipped [(path, reason)]) from arrays in the :func:`scan_arrays` layout.

    With ``k`` and ``n_files`` the arrays are checked first as a finished state of a scan (of its
    slice ``span``); ValueError/KeyError/TypeError/IndexError when they do not fit.  A layer
    without arrays (a slice in which nothing was decoded) is left out.
    """
    if k is not None and n_files is not None:
        check_state(z, len(layer_names), k, n_files, True, span=span)
    layers = {}
    for i, name in enumerate(layer_names):
        if f"v{i}" not in z:
            continue
        layers[name] = LayerTopK(name, z[f"v{i}"].astype(np.float32), z[f"i{i}"].astype(np.int64),
                                 z[f"y{i}"].astype(np.int32), z[f"x{i}"].astype(np.int32),
                                 tuple(int(s) for s in z[f"s{i}"]))
    skipped = list(zip([str(s) for s in z["skipped_paths"]], [str(s) for s in z["skipped_reasons"]]))
    return layers, skipped


def store_result(cache_root, key: str, layer_names, layers: dict, n_files: int, skipped, info: dict) -> Path:
    """Write a finished result (e.g. merged from parts) where a one-process scan with ``key`` finds it.

    ``layers``: name -> :class:`LayerTopK`; ``info`` goes into ``meta.json``.  Returns the folder.
    """
    path = _cache.cache_dir(cache_root) / f"scan-{key}"
    tables = {n: (t.values, t.images, t.ys, t.xs, t.shape) for n, t in layers.items()}
    hint = _cache.cache_hint(cache_root)
    _cache.atomic_save_npz(path / "result.npz", hint=hint, **scan_arrays(layer_names, tables, n_files, skipped))
    _cache.atomic_write_json(path / "meta.json", dict(info, finished=time.strftime("%Y-%m-%d %H:%M:%S")), hint=hint)
    return path
