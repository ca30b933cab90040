"""Network dissection of a model's layers on a concept set: a resumable, cancellable, cached scan.

Bau, Zhou, Khosla, Oliva & Torralba, "Network Dissection: Quantifying Interpretability of Deep
Visual Representations", CVPR 2017 (and the NetDissect-Lite code): every unit of a layer gets
the concept whose mask its thresholded, upsampled map overlaps best.  Here it is a scan like the
atlas's (:mod:`cnnvis_gui.atlas.sweep`: the same decoding, normalization, hooked forward,
out-of-memory halving, skipped images, whole-batch slices for ranks and shards), in two passes
over the concept set's images:

1. **activations** -- one forward per image; each layer's unit maps (in the layout the model map
   gives, :mod:`cnnvis_gui.dissect.maps`) go to the activation store (memory-mapped files,
   :mod:`cnnvis_gui.dissect.store`).  Every mask's header is checked on the way (one that is not
   a plain label map is decoded and checked whole), so bad concept data stops the scan early with
   one line; the ids in the masks are checked when the tally reads them.
2. **thresholds** -- every unit's T_k, the exact ``np.quantile(values, 1 - Q)`` of its values,
   from the top tail of the stored maps (:mod:`cnnvis_gui.dissect.quantile`).
3. **tally** -- the stored maps are upsampled to each image's masks, thresholded and counted
   (:mod:`cnnvis_gui.dissect.tally`); no second forward.

When the maps would not fit ``memory_budget`` (or the cache's disk), pass 1 keeps a streaming
quantile sketch instead and pass 3 runs the model again; the result says so.

:meth:`Dissection.run` yields :class:`DissectProgress` after every batch; :meth:`cancel` (or
leaving the loop) stops between batches.  Both passes are checkpointed every few seconds and on
stop; a later run with the same key resumes where the last one stopped (a killed run too).  A
finished dissection is cached (``<cache>/dissect-<key>/result.json``), so opening it again costs
a listing of the concept files and a weights hash.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..atlas import cache as _cache
from ..atlas.results import ScanProgress
from ..atlas.scan import model_device, shard_range
from ..atlas.state import nothing_decoded_error
from ..atlas.sweep import LayerForward, decode_images, prefetched, resolve_layers, to_model_input, training_off
from ..core import FIT_MODES, CnnvisError, InputSpec
from ..core.layouts import layout_key
from ..core.modelmap import check_overrides
from .concepts import ConceptSet
from .formats import open_concepts
from .maps import layer_layouts, to_unit_maps
from .quantile import LogSketch, TopTail, tail_size
from .results import DissectResult, LayerDissection, label_units
from .store import DEFAULT_MEMORY_BUDGET, ActivationStore, free_bytes, store_bytes
from .tally import Tally, mask_geometry

__all__ = ["Dissection", "DissectProgress", "DEFAULT_QUANTILE", "dissect", "load_dissection", "build_result"]

#: the paper's Q: a unit's top 0.5 % of activations make its mask
DEFAULT_QUANTILE = 0.005
_PHASES = {"activations": "activations", "thresholds": "thresholds", "tally": "tally", "cached": "from the cache"}


@dataclass(frozen=True)
class DissectProgress(ScanProgress):
    """Where a dissection stands: ``phase`` is "activations", "thresholds", "tally" or "cached"."""

    phase: str = "activations"

    def describe(self) -> str:
        if self.phase == "cached":
            return "dissection: from the cache"
        return f"dissection {_PHASES.get(self.phase, self.phase)}: {super().describe()}"


class Dissection:
    """Dissect layers of a model on a concept set (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        Any model; it runs on its own device, in eval mode.
    spec : InputSpec
        How image files become the model's input (the atlas's rule).
    concepts : path or ConceptSet
        A Broden folder or a simple concept folder (:func:`~cnnvis_gui.dissect.concepts.open_concepts`).
    layers : str or list of str
        Layers whose units have a spatial map.
    quantile : float
        Q: each unit's mask is where it exceeds its (1 - Q) quantile (default 0.005).
    batch_size, workers, checkpoint_every, fit, cache_dir, use_cache
        As for :class:`~cnnvis_gui.atlas.scan.TopKScan`.
    shard : (int, int), optional
        ``(I, N)``: only slice I of N of the images (whole batches), for ranks and shards; see
        :mod:`cnnvis_gui.dissect.parts`.
    memory_budget : int
        Bytes of unit maps the store may keep (default 4 GiB); past it, the streaming quantile.
    categories : list of str, optional
        Broden: only these categories.
    layouts : dict, optional
        ``{layer: layout}`` overriding the layouts the model map detects (``"nhwc"``,
        ``"tokens:1+14x14"``...; :mod:`cnnvis_gui.core.layouts`).
    """

    def __init__(self, model: nn.Module, spec: InputSpec, concepts, layers, quantile: float = DEFAULT_QUANTILE,
                 batch_size: int = 64, cache_dir=None, use_cache: bool = True, workers: int | None = None,
                 checkpoint_every: float = 5.0, fit: str | None = None, shard: tuple | None = None,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, categories=None, layouts: dict | None = None):
        q = float(quantile)
        if not 0.0 < q < 1.0:
            raise CnnvisError(f"the quantile Q must be between 0 and 1 (the paper uses 0.005), got {quantile}.")
        if int(batch_size) < 1:
            raise CnnvisError(f"batch_size must be at least 1, got {batch_size}.")
        if fit is not None and fit not in FIT_MODES:
            raise CnnvisError(f"fit must be one of {', '.join(FIT_MODES)}, got {fit!r}.")
        self.model, self.spec, self.fit = model, spec, fit
        self.concepts: ConceptSet = concepts if isinstance(concepts, ConceptSet) else open_concepts(concepts,
                                                                                                       categories)
        self.layers = resolve_layers(model, spec, layers)
        self.quantile = q
        self.batch_size = int(batch_size)
        self.shard_batch_size = self.batch_size
        self.cache_root = _cache.cache_dir(cache_dir)
        self.use_cache = bool(use_cache)
        self.workers = int(workers) if workers else max(1, min(4, os.cpu_count() or 1))
        self.checkpoint_every = float(checkpoint_every)
        self.memory_budget = int(memory_budget)
        self.shard = None if shard is None else (int(shard[0]), int(shard[1]))
        if self.shard is not None and not (self.shard[1] >= 1 and 0 <= self.shard[0] < self.shard[1]):
            raise CnnvisError(f"shard {shard[0]}/{shard[1]}: use I/N with N >= 1 and 0 <= I < N.")
        self.paths = [im.image for im in self.concepts.images]
        n = len(self.paths)
        self.range = (0, n) if self.shard is None else shard_range(n, self.shard[0], self.shard[1], self.batch_size)
        self.layout_overrides = check_overrides(layouts, [n for n, _ in model.named_modules()])
        self.layouts = layer_layouts(model, spec, self.layers, self.layout_overrides)   # refuses layers without a map
        self.grids = {name: grid for name, (_, grid) in self.layouts.items()}
        _, dtype = model_device(model)
        self.dtype = np.float64 if dtype == torch.float64 else np.float32
        self.method, self.method_note = self._choose_method()
        key = {"kind": "dissect", "weights": _cache.weights_hash(model), "spec": spec.to_dict(), "fit": fit,
               "layers": self.layers, "quantile": q, "concepts": self.concepts.identity(), "method": self.method,
               **layout_key(model, self.layout_overrides)}
        if self.shard is not None:
            key["shard"] = list(self.range)
            key["batch_size"] = self.batch_size
        self.identity = key
        self.key = _cache.digest(key)
        self._tmp = None
        self.result: DissectResult | None = None
        self.tally_result: Tally | None = None
        self.notices: list = []
        self.wait_s = self.forward_s = 0.0
        self._cancel = threading.Event()

    # ------------------------------------------------------------------ where things live
    @property
    def total(self) -> int:
        return self.range[1] - self.range[0]

    @property
    def cache_path(self) -> Path:
        if self.use_cache:
            return self.cache_root / f"dissect-{self.key}"
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="cnnvis-dissect-"))
        return self._tmp

    def cancel(self) -> None:
        """Stop after the current batch (thread-safe); both passes checkpoint."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _choose_method(self) -> tuple:
        """"exact" when the largest slice's maps and tails fit the budget (and the disk), else "streaming"."""
        n = len(self.paths)
        count = self.shard[1] if self.shard else 1
        biggest = max(b - a for a, b in (shard_range(n, i, count, self.batch_size) for i in range(count)))
        itemsize = np.dtype(self.dtype).itemsize
        need = store_bytes(biggest, self.grids, itemsize)
        tails = sum(g[0] * tail_size(n * g[1] * g[2], 1 - self.quantile) for g in self.grids.values()) * itemsize
        gib = 2 ** 30
        if need + tails > self.memory_budget:
            return "streaming", (f"the unit maps of {biggest} images ({need / gib:.2f} GiB) exceed the memory budget "
                                 f"({self.memory_budget / gib:.2f} GiB): thresholds from a streaming quantile (within "
                                 f"1 %), and the tally runs the model a second time; raise --memory-budget for exact "
                                 f"thresholds.")
        free = free_bytes(self.cache_root if self.use_cache else Path(tempfile.gettempdir()))
        if free is not None and need > free * 0.9:
            return "streaming", (f"the unit maps of {biggest} images ({need / gib:.2f} GiB) do not fit the free space "
                                 f"of the cache's disk ({free / gib:.2f} GiB): thresholds from a streaming quantile "
                                 f"(within 1 %), and the tally runs the model a second time.")
        return "exact", ""

    # ------------------------------------------------------------------ cache
    def cached(self) -> DissectResult | None:
        """The finished result from the cache, or None (never runs the model)."""
        if not self.use_cache or self.shard is not None:
            return None
        path = self.cache_root / f"dissect-{self.whole_key}" / "result.json"
        doc = _cache.read_json(path)
        if doc is None:
            if path.exists():
                self.notices.append(f"the dissection cache file '{path}' is damaged (not JSON); dissecting again.")
            return None
        try:
            res = DissectResult.from_dict(doc, from_cache=True)
            if [n for n in res.layers] != self.layers or any(len(res.layers[n].units) != self.grids[n][0]
                                                              for n in self.layers):
                raise ValueError("other layers or units")
        except (KeyError, TypeError, ValueError) as e:
            self.notices.append(f"the dissection cache file '{path}' is damaged ({e}); dissecting again.")
            return None
        return res

    def _load(self, name: str) -> dict | None:
        return _cache.load_npz(self.cache_path / name) if self.use_cache else None

    def _save(self, name: str, **arrays) -> None:
        if self.use_cache:
            _cache.atomic_save_npz(self.cache_path / name, **arrays)

    def _drop(self, *names) -> None:
        for n in names:
            try:
                os.unlink(self.cache_path / n)
            except OSError:
                pass

    # ------------------------------------------------------------------ pass 1: activations
    def _stores(self) -> dict:
        return {name: ActivationStore(self.cache_path / f"store{i}.npy", self.total, self.grids[name], self.dtype)
                for i, name in enumerate(self.layers)}

    def _load_images(self, start: int, stop: int, check_masks: bool = True):
        """Decode a batch and check its masks (in a loader thread, ahead of the forward).

        For a model on the CPU the batch is normalized here too (the same torch operations as on
        the device, :func:`~cnnvis_gui.atlas.sweep.to_model_input`), so that the forward's thread
        does nothing but the forward while the next batch is prepared.
        """
        arr, ok, bad, hw = decode_images(self.spec, self.concepts.root, self.paths, start, stop, self.fit, sizes=True)
        if check_masks:
            for i, size in zip(ok, hw):
                self.concepts.check(i, size)                  # a bad mask stops the scan here, with its name
        device, dtype = model_device(self.model)
        if ok and device.type == "cpu":
            arr = to_model_input(self.spec, arr, device, dtype)
        return arr, ok, bad, hw

    def _reduce(self, name, module, output) -> tuple:
        return (to_unit_maps(name, output, self.layouts[name][0]),)

    def _forward(self, arr, ok, device, dtype) -> tuple:
        x = arr if isinstance(arr, torch.Tensor) else to_model_input(self.spec, arr, device, dtype)
        fwd = LayerForward(self.model, self.layers, self._reduce, self._smaller_batch)
        with torch.no_grad():
            return fwd.or_skip(x, ok, lambda i: self.paths[i])

    def _smaller_batch(self, half: int) -> None:
        self.batch_size = max(1, min(self.batch_size, half))

    def _pass1_state(self) -> tuple:
        first, stop = self.range
        z = self._load("pass1.npz")
        state = {"next": first, "ok": np.zeros(self.total, bool), "sizes": np.zeros((self.total, 2), np.int64),
                 "skipped": [], "finished": False,
                 "sketch": {n: LogSketch.empty(self.grids[n][0]) for n in self.layers}
                 if self.method == "streaming" else {}}
        if z is None:
            return state
        try:
            nxt = int(z["next_index"])
            if not first <= nxt <= stop or z["ok"].shape != (self.total,) or z["sizes"].shape != (self.total, 2):
                raise ValueError("it does not fit this scan")
            state.update(next=nxt, ok=z["ok"].astype(bool), sizes=z["sizes"].astype(np.int64),
                         finished=bool(z["finished"]),
                         skipped=list(zip([str(s) for s in z["skipped_paths"]], [str(s) for s in z["skipped_reasons"]])))
            for i, n in enumerate(self.layers):
                if self.method == "streaming":
                    c = z[f"sketch{i}"]
                    if c.shape != state["sketch"][n].counts.shape:
                        raise ValueError("a sketch of another shape")
                    state["sketch"][n] = LogSketch(c.astype(np.int64))
        except (KeyError, ValueError, TypeError) as e:
            self.notices.append(f"the dissection checkpoint '{self.cache_path / 'pass1.npz'}' is damaged ({e}); "
                                f"the scan starts over.")
            state.update(next=first, ok=np.zeros(self.total, bool), skipped=[], finished=False)
        return state

    def _save_pass1(self, st: dict, stores: dict) -> None:
        if not self.use_cache:
            return                                      # nothing resumes a scan without a cache
        for s in stores.values():
            s.flush()                                   # the rows before the checkpoint that counts them
        arrays = {"next_index": np.array(st["next"], np.int64), "ok": st["ok"], "sizes": st["sizes"],
                  "finished": np.array(st["finished"]),
                  "skipped_paths": np.array([p for p, _ in st["skipped"]], dtype=str),
                  "skipped_reasons": np.array([r for _, r in st["skipped"]], dtype=str)}
        for i, n in enumerate(self.layers):
            if n in st["sketch"]:
                arrays[f"sketch{i}"] = st["sketch"][n].counts
        self._save("pass1.npz", **arrays)

    def _activations(self, st: dict, stores: dict) -> Iterator[DissectProgress]:
        first, total = self.range
        start = st["next"]
        device, dtype = model_device(self.model)
        waited = [0.0]
        batches = prefetched(self._load_images, start, total, lambda: self.batch_size, self.workers,
                             "dissect-decode", waited)
        t0 = last = time.perf_counter()
        try:
            with training_off(self.model):
                while st["next"] < total:
                    stop, (arr, ok, bad, hw) = next(batches)
                    tf = time.perf_counter()
                    st["skipped"].extend(bad)
                    if ok:
                        size_of = dict(zip(ok, hw))
                        found, ok, failed = self._forward(arr, ok, device, dtype)
                        st["skipped"].extend(failed)
                        if ok:
                            rows = np.asarray(ok) - first
                            for name in self.layers:
                                maps = found[name][0]
                                if self.method == "exact":
                                    stores[name].write(rows, maps.cpu().numpy().astype(self.dtype, copy=False))
                                else:
                                    st["sketch"][name].add(maps.transpose(0, 1).reshape(maps.shape[1], -1))
                            st["ok"][rows] = True
                            st["sizes"][rows] = [size_of[i] for i in ok]
                    self.forward_s += time.perf_counter() - tf
                    self.wait_s = waited[0]
                    st["next"] = stop
                    if stop < total and time.perf_counter() - last >= self.checkpoint_every:
                        self._save_pass1(st, stores)
                        last = time.perf_counter()
                    yield self._progress("activations", stop - first, st["skipped"], t0, stop - start)
                    if self._cancel.is_set():
                        return
        finally:
            batches.close()
            if st["next"] > start or st["next"] >= total:
                st["finished"] = st["next"] >= total
                try:
                    self._save_pass1(st, stores)
                except OSError:
                    pass

    def _progress(self, phase: str, done: int, skipped, t0: float, since: int) -> DissectProgress:
        el = time.perf_counter() - t0
        rate = since / el if el > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else None
        return DissectProgress(done, self.total, rate, eta, len(skipped), self.batch_size, phase=phase)

    # ------------------------------------------------------------------ pass 2: thresholds
    def summaries(self, st: dict, stores: dict) -> dict:
        """Each layer's mergeable quantile summary of this slice: a :class:`TopTail`, or a :class:`LogSketch`."""
        if self.method == "streaming":
            return dict(st["sketch"])
        z = self._load("summary.npz")
        if z is not None:
            try:
                out = {n: TopTail(z[f"tail{i}"], int(z[f"n{i}"])) for i, n in enumerate(self.layers)}
                if all(out[n].values.shape[0] == self.grids[n][0] for n in self.layers):
                    return out
            except (KeyError, ValueError):
                pass
        ok_rows = np.flatnonzero(st["ok"])
        out, arrays = {}, {}
        for i, name in enumerate(self.layers):
            C, H, W = self.grids[name]
            tail = TopTail.empty(C, tail_size(len(self.paths) * H * W, 1 - self.quantile), self.dtype)
            step = max(1, (64 << 20) // max(1, C * H * W * np.dtype(self.dtype).itemsize))
            for a in range(0, len(ok_rows), step):
                rows = ok_rows[a:a + step]
                block = stores[name].array[rows]
                tail.add(torch.from_numpy(np.ascontiguousarray(block.transpose(1, 0, 2, 3).reshape(C, -1))))
            out[name] = tail
            arrays[f"tail{i}"], arrays[f"n{i}"] = tail.values, np.array(tail.n, np.int64)
        self._save("summary.npz", **arrays)
        return out

    def thresholds(self, summaries: dict) -> dict:
        """T_k of every unit of every layer from (merged) summaries."""
        return {n: np.asarray(summaries[n].thresholds(1 - self.quantile), self.dtype) for n in self.layers}

    # ------------------------------------------------------------------ pass 3: tally
    def _tally_key(self, thresholds: dict) -> str:
        return _cache.digest([thresholds[n].tobytes().hex() for n in self.layers])[:16]

    def new_tally(self) -> Tally:
        return Tally({n: self.grids[n][0] for n in self.layers}, self.concepts.size, self.concepts.concept_category,
                     len(self.concepts.categories))

    def _load_labels(self, st: dict, start: int, stop: int):
        first = self.range[0]
        rows = [i for i in range(start, stop) if st["ok"][i - first]]
        items = []
        for i in rows:
            lab = self.concepts.labels(i, tuple(st["sizes"][i - first]))
            items.append((lab, mask_geometry(tuple(st["sizes"][i - first]), lab.size, self.spec, self.fit)))
        arr = None
        if self.method == "streaming" and rows:                  # the model runs again: decode the images too
            arr, ok, _ = decode_images(self.spec, self.concepts.root, self.paths, start, stop, self.fit)
            pos = {i: j for j, i in enumerate(ok)}
            keep = [k for k, i in enumerate(rows) if i in pos]
            arr = arr[[pos[rows[k]] for k in keep]]
            rows, items = [rows[k] for k in keep], [items[k] for k in keep]
        return rows, items, arr

    def tally(self, st: dict, stores: dict, thresholds: dict) -> Iterator[DissectProgress]:
        """Count every image of the slice against its masks; sets :attr:`tally_result` when done."""
        first, total = self.range
        name_t = f"tally-{self._tally_key(thresholds)}.npz"
        tally = self.new_tally()
        start = first
        z = self._load(name_t)
        if z is not None:
            try:
                nxt = int(z["next_index"])
                if not first <= nxt <= total:
                    raise ValueError("outside the slice")
                tally.load(z, self.layers)
                start = nxt
            except (KeyError, ValueError, TypeError) as e:
                self.notices.append(f"the dissection checkpoint '{self.cache_path / name_t}' is damaged ({e}); the "
                                    f"tally starts over.")
                tally = self.new_tally()
        device, dtype = model_device(self.model)
        tdev = device if self.method == "streaming" else torch.device("cpu")
        T = {n: torch.from_numpy(thresholds[n]).to(tdev) for n in self.layers}
        skipped = list(st["skipped"])
        batches = prefetched(lambda a, b: self._load_labels(st, a, b), start, total, lambda: self.batch_size,
                             self.workers, "dissect-masks")
        done = start
        t0 = last = time.perf_counter()
        finished = False
        try:
            with training_off(self.model):
                while done < total:
                    stop, (rows, items, arr) = next(batches)
                    if rows:
                        if self.method == "exact":
                            local = np.asarray(rows) - first
                            maps = {n: torch.from_numpy(stores[n].array[local]) for n in self.layers}
                        else:
                            found, good, failed = self._forward(arr, rows, device, dtype)
                            skipped.extend(failed)
                            keep = [rows.index(i) for i in good]
                            items = [items[j] for j in keep]
                            maps = {n: found[n][0] for n in self.layers} if good else {}
                        for n in maps:
                            tally.add_layer(n, maps[n].to(T[n].dtype), T[n], items)
                        for lab, geom in items:
                            tally.add_labels(lab, geom)
                    done = stop
                    if done < total and time.perf_counter() - last >= self.checkpoint_every:
                        self._save(name_t, next_index=np.array(done, np.int64), **tally.arrays(self.layers))
                        last = time.perf_counter()
                    yield self._progress("tally", done - first, skipped, t0, done - start)
                    if self._cancel.is_set():
                        break
            if done >= total:
                finished = True
                self.tally_result = tally
        finally:
            batches.close()
            if not finished and done > start:
                try:
                    self._save(name_t, next_index=np.array(done, np.int64), **tally.arrays(self.layers))
                except OSError:
                    pass
        if finished:
            self._save(name_t, next_index=np.array(done, np.int64), **tally.arrays(self.layers))

    # ------------------------------------------------------------------ the whole
    @contextmanager
    def opened(self):
        """The pass-1 state and the activation stores of this scan, for a ``with`` block (closed after).

        ``run()`` is built from these steps; ranks and shards (:mod:`cnnvis_gui.dissect.parts`)
        put their exchanges between them: :meth:`activations`, :meth:`summaries`,
        :meth:`thresholds`, :meth:`tally`, :meth:`finish`.
        """
        self._cancel.clear()
        stores = self._stores() if self.method == "exact" else {}
        try:
            yield self._pass1_state(), stores
        finally:
            for s in stores.values():
                s.close()
            if not self.use_cache and self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def activations(self, st: dict, stores: dict) -> Iterator[DissectProgress]:
        """Pass 1 to the end of the slice (nothing when the cache has it); ``st["finished"]`` says it ended."""
        if not st["finished"]:
            yield from self._activations(st, stores)
        if st["finished"] and not st["ok"].any() and self.shard is None:
            raise nothing_decoded_error(self.concepts.root / "images", self.total, st["skipped"])

    def run(self) -> Iterator[DissectProgress]:
        """Dissect (or read the cached result), yielding progress; sets :attr:`result` when finished."""
        self.notices = []
        hit = self.cached()
        if hit is not None:
            self.result = hit
            yield DissectProgress(self.total, self.total, 0.0, 0.0, len(hit.skipped), self.batch_size,
                                  from_cache=True, phase="cached")
            return
        with self.opened() as (st, stores):
            yield from self.activations(st, stores)
            if not st["finished"]:
                return
            yield self._progress("thresholds", 0, st["skipped"], time.perf_counter(), 0)
            thresholds = self.thresholds(self.summaries(st, stores))
            yield from self.tally(st, stores, thresholds)
            if self.tally_result is None:
                return
            self.result = self.finish(thresholds, self.tally_result, st["skipped"])
            self.store_result(self.result)

    def finish(self, thresholds: dict, tally: Tally, skipped, world_size: int = 1) -> DissectResult:
        """The result of (merged) thresholds and tally."""
        return build_result(self.concepts, self.layers, self.grids, self.quantile, thresholds, tally, skipped,
                            self.method, self.spec, self.fit, type(self.model).__name__, world_size)

    @property
    def whole_identity(self) -> dict:
        """What the same dissection in one process depends on (its :attr:`identity` without the slice)."""
        return {k: v for k, v in self.identity.items() if k not in ("shard", "batch_size")}

    @property
    def whole_key(self) -> str:
        """The cache key of the same dissection in one process (where merged results are kept)."""
        return _cache.digest(self.whole_identity)

    def store_result(self, res: DissectResult) -> None:
        """Keep a finished result where a one-process run looks; this slice's big intermediate files go."""
        if not self.use_cache:
            return
        _cache.atomic_write_json(self.cache_root / f"dissect-{self.whole_key}" / "result.json", res.to_dict())
        self.delete_intermediates()

    def delete_intermediates(self) -> None:
        for i in range(len(self.layers)):
            self._drop(f"store{i}.npy")
        for p in self.cache_path.glob("tally-*.npz") if self.cache_path.is_dir() else ():
            self._drop(p.name)
        self._drop("pass1.npz", "summary.npz")


def build_result(concepts: ConceptSet, layers, grids: dict, quantile: float, thresholds: dict, tally: Tally,
                 skipped, method: str, spec: InputSpec, fit, model_name: str, world_size: int = 1) -> DissectResult:
    """A :class:`DissectResult` from thresholds and (merged) tally; the labels by :func:`label_units`."""
    cs = concepts
    doc_concepts = [{"id": c.id, "name": c.name, "category": c.category, "pixels": int(tally.label[j]),
                     "images": int(tally.images[j])} for j, c in enumerate(cs.concepts, 1)]
    out = {n: LayerDissection(n, quantile, tuple(int(g) for g in grids[n]),
                              label_units(tally.iou(n), thresholds[n], cs.concepts)) for n in layers}
    info = {"concept_set": {"path": str(cs.root.resolve()), "format": cs.format, "masks_resized": tally.resized},
            "spec": spec.to_dict(), "fit": fit or spec.fit, "model": model_name}
    return DissectResult(out, doc_concepts, list(cs.categories), tally.count, list(skipped), method, info,
                         world_size=world_size)


def dissect(model: nn.Module, spec: InputSpec, concepts, layers, quantile: float = DEFAULT_QUANTILE, progress=None,
            cancel: threading.Event | None = None, **kw) -> DissectResult | None:
    """Run a :class:`Dissection` to the end; ``progress(DissectProgress)`` after each batch.

    Returns the :class:`~cnnvis_gui.dissect.results.DissectResult`, or None when ``cancel`` was set.
    """
    d = Dissection(model, spec, concepts, layers, quantile, **kw)
    for p in d.run():
        if progress is not None:
            progress(p)
        if cancel is not None and cancel.is_set():
            d.cancel()
    return d.result


def load_dissection(model: nn.Module, spec: InputSpec, concepts, layers, quantile: float = DEFAULT_QUANTILE,
                    **kw) -> DissectResult | None:
    """The cached dissection for this model, spec, concept set, layers and Q, or None (never runs the model)."""
    return Dissection(model, spec, concepts, layers, quantile, **kw).cached()
