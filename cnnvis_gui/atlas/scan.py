"""Top-k scan: for every unit of one or more layers, the k images of a folder that excite it most.

The deep visualization toolbox (Yosinski et al. 2015) shows, for the selected unit, the nine
dataset images with the highest activation; it computed them with offline Caffe scripts.
Here a folder (recursive; an image-folder-per-class layout is fine) streams through the
model in batches:

* decoding (OpenCV) and resizing (``InputSpec.fit_frame``) run in a thread pool a few batches
  ahead, so the model does not wait on file reads; the normalization runs batched on the
  model's device;
* the forward runs under ``torch.no_grad`` on the model's own device; a forward hook on
  each chosen layer reduces its output at once to the per-channel maximum over positions
  and the position of that maximum (so no activation map is kept).  Channels and positions are
  those of the layer's layout in the model map (:mod:`cnnvis_gui.core.layouts`): a ConvNeXt
  block's channels-last features or a ViT's tokens are units on their H x W grid, prefix tokens
  left out;
* every unit keeps its k best (value, image, y, x); each image enters a unit's list at most
  once (its own maximum), so a unit's k images are distinct.  Ties go to the image listed
  first (stable merge: by the image's place in the sorted listing, then by position, the first
  maximum in row-major order), so the result does not depend on batch boundaries.

``shard=(I, N)`` scans only slice I of N of the listing (whole batches; see :func:`shard_range`)
with global image indices; :mod:`cnnvis_gui.atlas.merge` merges such parts exactly, and
:mod:`cnnvis_gui.atlas.distributed` runs them as torch.distributed ranks.

:meth:`TopKScan.run` is a generator that yields :class:`ScanProgress` after every batch
(superqt ``GeneratorWorker`` style): stop iterating, or call :meth:`TopKScan.cancel`, to
stop between batches.  The partial state is checkpointed atomically every few seconds and
on stop, and a later run with the same key resumes from it.  A finished scan is cached
(see :mod:`cnnvis_gui.atlas.cache`), so reopening it costs a folder listing and a weights
hash, and never runs the model.  Unreadable or non-image files are skipped and counted, and
so are images on which the model's own forward raises (the failing batch is retried image by
image; see :attr:`AtlasScan.model_failures`).
A CUDA out-of-memory error on a batch halves the batch size and retries.

The pipeline (decode ahead, normalize on the device, hooked forward, out-of-memory and model
failures) is :mod:`cnnvis_gui.atlas.sweep`, shared with the network dissection; this module adds
the top-k reduction, its state, checkpoints and cache.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from ..core import FIT_MODES, CnnvisError, InputSpec
from ..core.bounds import MAX_TOP, bounded_int, check_batch
from ..core.layouts import layout_key
from ..core.modelmap import check_overrides
from ..core.recorder import model_device_dtype as model_device   # (device, float dtype): the engine's own rule
from ..sources import IMAGE_EXTENSIONS
from . import cache as _cache
from .folders import folder_fingerprint, list_images
from .results import AtlasScan, ScanProgress
from .state import check_state, nothing_decoded_error, scan_arrays, state_from_arrays
from .sweep import (LayerForward, decode_images, layer_layouts, through_layouts, normalize_batch, prefetched, resolve_layers, to_model_input,
                    training_off)

__all__ = ["TopKScan", "scan_folder", "load_scan", "resolve_layers", "model_device", "shard_range"]


# ============================================================================ model helpers
def _max_and_position(name, module, output) -> tuple:
    """The top-k scan's reduction of a layer's output: per-channel maximum over positions and where it is."""
    if not isinstance(output, torch.Tensor) or output.ndim < 2:
        raise CnnvisError(f"layer {name or 'output'!r} ({type(module).__name__}) does not output an "
                          f"N x C (x H x W) tensor; choose another layer to scan.")
    a = output.detach()
    if not a.is_floating_point():
        a = a.float()
    if a.ndim == 2:
        vals = a
        ys = xs = torch.zeros(a.shape, dtype=torch.int32, device=a.device)
    else:
        vals, idx = a.flatten(2).max(dim=2)
        if a.ndim == 4:
            w = a.shape[3]
            ys, xs = (idx // w).to(torch.int32), (idx % w).to(torch.int32)
        else:
            ys, xs = torch.zeros_like(idx, dtype=torch.int32), idx.to(torch.int32)
    vals = torch.nan_to_num(vals.float(), nan=float("-inf"))
    return vals, ys, xs, tuple(a.shape[1:])


def shard_range(total: int, index: int, count: int, batch_size: int) -> tuple:
    """Images [start, stop) of slice ``index`` of ``count`` of a listing of ``total`` images.

    The slices are disjoint, cover the listing in order, and are made of whole batches of
    ``batch_size`` (the listing's batches are dealt out as evenly as possible), so every image
    goes through the model in the same batch as in a one-process scan with that batch size and
    the activations are the same to the bit (a forward's float result can depend on the batch
    it runs in).  A slice is empty when there are fewer batches than slices.
    """
    if not 0 <= index < count:
        raise CnnvisError(f"shard {index}/{count}: the index must be 0..{count - 1}.")
    blocks = -(-total // batch_size)
    a, b = blocks * index // count, blocks * (index + 1) // count
    return min(total, a * batch_size), min(total, b * batch_size)


# ============================================================================ the scan
class TopKScan:
    """A resumable, cancellable, cached top-k scan of one folder for one or more layers.

    Parameters
    ----------
    model : nn.Module
        Any model; it runs on its own device (CUDA when it is there), in eval mode.
    spec : InputSpec
        How image files become the model's input.
    folder : path
        Folder of images, scanned recursively (class subfolders are fine).
    layers : str or list of str
        Module names (``named_modules()``); ``""`` or ``"output"`` is the model output.
    k : int
        Hits kept per unit (default 9).
    batch_size : int
        Images per forward; halved automatically on out-of-memory.
    cache_dir : path, optional
        Overrides ``CNNVIS_CACHE_DIR`` / ``~/.cache/cnnvis-gui/atlas``.
    use_cache : bool
        False: neither read nor write the cache (always a fresh scan).
    workers : int, optional
        Decode threads (default: up to 4, at most the CPU count).
    checkpoint_every : float
        Seconds between checkpoints of the partial state (also written on stop).
    layouts : dict, optional
        ``{layer name: layout}`` overriding the detected layouts (:mod:`cnnvis_gui.core.layouts`);
        the scan reads each layer's units and positions through its layout.
    shard : (int, int), optional
        ``(I, N)``: scan only slice I of N of the listing (:func:`shard_range`, whole batches of
        ``batch_size``); the result keeps global image indices and the whole listing in
        :attr:`AtlasScan.paths`, with the slice in :attr:`AtlasScan.ranges`.  A slice in which
        no image could be decoded gives a result without layers instead of an error.

    Example
    -------
    >>> scan = TopKScan(lm.model, lm.spec, "photos/", ["features.10"])      # doctest: +SKIP
    >>> for p in scan.run():                                                  # doctest: +SKIP
    ...     print(p.describe())
    >>> scan.result.hits("features.10", 3)[0]                                  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, spec: InputSpec, folder, layers, k: int = 9, batch_size: int = 64,
                 cache_dir=None, use_cache: bool = True, workers: int | None = None,
                 checkpoint_every: float = 5.0, recursive: bool = True, fit: str | None = None,
                 shard: tuple | None = None, layouts: dict | None = None):
        if int(k) < 1:
            raise CnnvisError(f"k must be at least 1, got {k}.")
        if int(batch_size) < 1:
            raise CnnvisError(f"batch_size must be at least 1, got {batch_size}.")
        bounded_int(k, "k (images kept per unit)", 1, MAX_TOP)              # a units x k table per layer
        check_batch(batch_size, spec.shape, "batch_size")
        if fit is not None and fit not in FIT_MODES:      # refused here, not as a failure of every image
            raise CnnvisError(f"fit must be one of {', '.join(FIT_MODES)}, got {fit!r}.")
        self.model = model
        self.spec = spec
        self.folder = Path(folder).expanduser()
        self.layers = resolve_layers(model, spec, layers)
        self.layout_overrides = check_overrides(layouts, [n for n, _ in model.named_modules()])
        self._layouts: dict | None = None
        self.k = int(k)
        self.batch_size = int(batch_size)
        self.cache_root = _cache.cache_dir(cache_dir)
        self.use_cache = bool(use_cache)
        self.workers = int(workers) if workers else max(1, min(4, os.cpu_count() or 1))
        self.checkpoint_every = float(checkpoint_every)
        self.recursive = bool(recursive)
        self.fit = fit
        self.result: AtlasScan | None = None
        self.other_files = 0
        self.wait_s = 0.0          # time the model spent waiting for decoded batches (last run)
        self.forward_s = 0.0       # time in forward + top-k merge (last run)
        self._cancel = threading.Event()
        self._files = None
        self._key = None
        self.notices: list = []    # one line per damaged cache file found (and ignored) by the last run
        self.identity: dict = {}   # what the result depends on (hashed into the key); set by _prepare
        self.shard = None if shard is None else (int(shard[0]), int(shard[1]))
        if self.shard is not None and not (self.shard[1] >= 1 and 0 <= self.shard[0] < self.shard[1]):
            raise CnnvisError(f"shard {shard[0]}/{shard[1]}: use I/N with N >= 1 and 0 <= I < N.")
        self._range = (0, 0)
        self.shard_batch_size = self.batch_size   # the slices are whole batches of this size

    @property
    def layouts(self) -> dict:
        """Each scanned layer's :class:`~cnnvis_gui.core.layouts.Layout` (the model map's, with the overrides)."""
        if self._layouts is None:
            self._layouts = layer_layouts(self.model, self.spec, self.layers, self.layout_overrides)
        return self._layouts

    # ------------------------------------------------------------------ keys & files
    def _prepare(self):
        if self._files is None:
            files, self.other_files = list_images(self.folder, self.recursive)
            if not files:
                raise CnnvisError(self._empty_message())
            key = {"kind": "scan", "weights": _cache.weights_hash(self.model), "spec": self.spec.to_dict(),
                   "fit": self.fit, "layers": self.layers, "k": self.k, "recursive": self.recursive,
                   "folder": str(self.folder.resolve()), "files": folder_fingerprint(files),
                   **layout_key(self.model, self.layout_overrides)}
            self._range = (0, len(files))
            if self.shard is not None:
                self._range = shard_range(len(files), self.shard[0], self.shard[1], self.shard_batch_size)
                key["shard"] = list(self._range)        # a one-process scan keeps its old key
            self.identity = key
            self._key = _cache.digest(key)
            self._files = files
            self._paths = [f[0] for f in files]
        return self._files

    def _empty_message(self) -> str:
        where = f"folder '{self.folder}'" + (" or its sub-folders" if self.recursive else "")
        shown = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".webp")
        exts = ", ".join(e for e in shown if e in IMAGE_EXTENSIONS)
        msg = f"no images in {where} (looked for {exts}...)"
        if self.other_files:
            msg += f"; found {self.other_files} other file{'s' if self.other_files != 1 else ''}"
        return msg + "."

    @property
    def key(self) -> str:
        self._prepare()
        return self._key

    @property
    def cache_path(self) -> Path:
        return self.cache_root / f"scan-{self.key}"

    @property
    def total(self) -> int:
        """Images this scan covers: the whole listing, or its slice for a shard."""
        self._prepare()
        return self._range[1] - self._range[0]

    @property
    def listing_size(self) -> int:
        """Image files in the whole listing (a shard scans only :attr:`range` of them)."""
        return len(self._prepare())

    @property
    def range(self) -> tuple:
        """(start, stop): the listing indices this scan covers."""
        self._prepare()
        return self._range

    def cancel(self) -> None:
        """Stop after the current batch (thread-safe); the partial state is checkpointed."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # ------------------------------------------------------------------ cache
    def cached(self) -> AtlasScan | None:
        """The finished result from the cache, or None (never runs the model)."""
        if not self.use_cache:
            return None
        files = self._prepare()
        path = self.cache_path / "result.npz"
        z = self._load_checked(path, len(files), finished=True)
        if z is None:
            return None
        try:
            res = self._result_from(z, files)
        except (KeyError, ValueError, TypeError) as e:
            self._damaged(path, e)
            return None
        res.from_cache = True
        return res

    def _damaged(self, path: Path, why) -> None:
        what = "scanning again" if path.name == "result.npz" else "the scan starts over"
        self.notices.append(f"the atlas cache file '{path}' is damaged ({why}); {what}.")

    def _load_checked(self, path: Path, n_files: int, finished: bool) -> dict | None:
        """The arrays of a cache file, or None when it is missing, or damaged (with a notice).

        Damaged: unreadable, or arrays that do not fit this scan (layers, k, shapes, image
        indices, how far it got); such a file is no cache, never a crash or a wrong atlas.
        """
        z = _cache.load_npz(path)
        if z is None:
            if path.exists():
                self._damaged(path, "not a readable .npz file")
            return None
        try:
            check_state(z, len(self.layers), self.k, n_files, finished,
                         span=self._range if self.shard is not None else None)
        except (KeyError, ValueError, TypeError, IndexError) as e:
            self._damaged(path, e)
            return None
        return z

    def _state_arrays(self, state, next_index, skipped, shapes) -> dict:
        tables = {name: tuple(t.detach().cpu().numpy() for t in state[name]) + (shapes[name],) for name in state}
        return scan_arrays(self.layers, tables, next_index, skipped)

    def _result_from(self, z: dict, files) -> AtlasScan:
        layers, skipped = state_from_arrays(z, self.layers)
        ranges = [self._range] if self.shard is not None else []
        return AtlasScan(self.folder, [f[0] for f in files], layers, self.k, self.spec, skipped, self._key,
                         ranges=ranges)

    def _load_partial(self, device):
        if not self.use_cache:
            return None
        z = self._load_checked(self.cache_path / "partial.npz", len(self._files), finished=False)
        if z is None:
            return None
        try:
            state, shapes = {}, {}
            for i, name in enumerate(self.layers):
                if f"v{i}" not in z:
                    continue
                state[name] = [torch.from_numpy(z[f"v{i}"]).to(device), torch.from_numpy(z[f"i{i}"]).to(device),
                               torch.from_numpy(z[f"y{i}"]).to(device), torch.from_numpy(z[f"x{i}"]).to(device)]
                shapes[name] = tuple(int(s) for s in z[f"s{i}"])
            skipped = list(zip([str(s) for s in z["skipped_paths"]], [str(s) for s in z["skipped_reasons"]]))
            return int(z["next_index"]), state, shapes, skipped
        except (KeyError, ValueError):
            return None

    def _checkpoint(self, state, next_index, skipped, shapes):
        if self.use_cache:
            _cache.atomic_save_npz(self.cache_path / "partial.npz", hint=_cache.cache_hint(self.cache_root),
                                   **self._state_arrays(state, next_index, skipped, shapes))

    # ------------------------------------------------------------------ the loop
    def _decode(self, start: int, stop: int):
        """Decode files [start, stop) -> (batch array, their image indices, [(rel, why)]) (:func:`decode_images`)."""
        return decode_images(self.spec, self.folder, self._paths, start, stop, self.fit)

    def _normalize(self, x: torch.Tensor, dtype) -> torch.Tensor:
        """N x H x W x 3 uint8 BGR -> N x 3 x H x W normalized, exactly as ``InputSpec.to_array``."""
        return normalize_batch(self.spec, x, dtype)

    def _smaller_batch(self, half: int) -> None:
        self.batch_size = max(1, min(self.batch_size, half))

    def _forward_or_skip(self, x: torch.Tensor, ok: list) -> tuple:
        """The batch's reductions, or its images retried one by one when the model raises (:class:`LayerForward`)."""
        fwd = LayerForward(self.model, self.layers, through_layouts(_max_and_position, self.layouts),
                           self._smaller_batch)
        return fwd.or_skip(x, ok, lambda i: self._files[i][0])

    def _merge(self, state, shapes, found, index: torch.Tensor):
        k = self.k
        for name in self.layers:
            vals, ys, xs, shape = found[name]
            vals, ys, xs = vals.t(), ys.t(), xs.t()           # C x B
            C, B = vals.shape
            imgs = index.to(vals.device).expand(C, B)
            if name not in state:
                dev = vals.device
                state[name] = [torch.full((C, k), float("-inf"), device=dev),
                               torch.full((C, k), -1, dtype=torch.int64, device=dev),
                               torch.zeros((C, k), dtype=torch.int32, device=dev),
                               torch.zeros((C, k), dtype=torch.int32, device=dev)]
                shapes[name] = shape
            sv, si, sy, sx = state[name]
            av = torch.cat([sv, vals], 1)
            order = torch.sort(av, dim=1, descending=True, stable=True).indices[:, :k]
            state[name] = [av.gather(1, order), torch.cat([si, imgs], 1).gather(1, order),
                           torch.cat([sy, ys], 1).gather(1, order), torch.cat([sx, xs], 1).gather(1, order)]

    def run(self) -> Iterator[ScanProgress]:
        """Scan, yielding :class:`ScanProgress` after each batch; sets :attr:`result` when finished.

        A cached result is loaded instead (one progress with ``from_cache=True``).  Stop by
        leaving the loop or calling :meth:`cancel`; the state is checkpointed for a resume.
        """
        self._cancel.clear()
        self.wait_s = self.forward_s = 0.0
        self.notices = []
        files = self._prepare()
        first, total = self._range          # [first, total): the listing indices to scan
        size = total - first
        hit = self.cached()
        if hit is not None:
            self.result = hit
            yield ScanProgress(size, size, 0.0, 0.0, len(hit.skipped), self.batch_size, from_cache=True)
            return
        self.layouts    # noqa: B018 - read from the model map before the first batch (one probe forward)
        device, dtype = model_device(self.model)
        start, state, shapes, skipped = first, {}, {}, []
        resumed = self._load_partial(device)
        if resumed is not None and first <= resumed[0] <= total:
            start, state, shapes, skipped = resumed
        waited = [0.0]
        batches = prefetched(self._decode, start, total, lambda: self.batch_size, self.workers, "atlas-decode",
                             waited)
        done = start
        t0 = time.perf_counter()
        last_ckpt = t0
        finished = False
        try:
            with training_off(self.model):
                while done < total:
                    stop, (arr, ok, bad) = next(batches)
                    tf = time.perf_counter()
                    self.wait_s = waited[0]
                    skipped.extend(bad)
                    if ok:
                        x = to_model_input(self.spec, arr, device, dtype)
                        with torch.no_grad():
                            found, ok, failed = self._forward_or_skip(x, ok)
                        skipped.extend(failed)
                        if ok:
                            self._merge(state, shapes, found, torch.tensor(ok, dtype=torch.int64))
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                    self.forward_s += time.perf_counter() - tf
                    done = stop
                    el = time.perf_counter() - t0
                    rate = (done - start) / el if el > 0 else 0.0
                    eta = (total - done) / rate if rate > 0 else None
                    now = time.perf_counter()
                    if done < total and now - last_ckpt >= self.checkpoint_every:
                        self._checkpoint(state, done, skipped, shapes)
                        last_ckpt = now
                    yield ScanProgress(done - first, size, rate, eta, len(skipped), self.batch_size)
                    if self._cancel.is_set():
                        break
            if done >= total:
                finished = True
                if not state and self.shard is None:  # every file unreadable (or the model raised): no hits
                    raise nothing_decoded_error(self.folder, total, skipped)
                arrays = self._state_arrays(state, total, skipped, shapes)
                self.result = self._result_from(arrays, files)
                if self.use_cache:
                    hint = _cache.cache_hint(self.cache_root)
                    _cache.atomic_save_npz(self.cache_path / "result.npz", hint=hint, **arrays)
                    _cache.atomic_write_json(self.cache_path / "meta.json", hint=hint, obj={
                        "folder": str(self.folder), "layers": self.layers, "k": self.k, "images": size,
                        "skipped": len(skipped), "spec": self.spec.to_dict(), "model": type(self.model).__name__,
                        "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
                    try:
                        os.unlink(self.cache_path / "partial.npz")
                    except OSError:
                        pass
        finally:
            batches.close()
            if not finished and done > start:
                try:
                    self._checkpoint(state, done, skipped, shapes)
                except (OSError, _cache.WriteError):   # the error in flight says more than a full cache
                    pass


def scan_folder(model: nn.Module, spec: InputSpec, folder, layers, k: int = 9, batch_size: int = 64,
                cache_dir=None, use_cache: bool = True, progress=None, cancel: threading.Event | None = None,
                **kw) -> AtlasScan | None:
    """Run a :class:`TopKScan` to the end; ``progress(ScanProgress)`` is called after each batch.

    Returns the :class:`AtlasScan`, or None when ``cancel`` (a ``threading.Event``) was set.
    """
    s = TopKScan(model, spec, folder, layers, k=k, batch_size=batch_size, cache_dir=cache_dir,
                 use_cache=use_cache, **kw)
    for p in s.run():
        if progress is not None:
            progress(p)
        if cancel is not None and cancel.is_set():
            s.cancel()
    return s.result


def load_scan(model: nn.Module, spec: InputSpec, folder, layers, k: int = 9, cache_dir=None,
              **kw) -> AtlasScan | None:
    """The cached atlas for this model, spec, folder and layers, or None (never runs the model)."""
    return TopKScan(model, spec, folder, layers, k=k, cache_dir=cache_dir, **kw).cached()
