"""The machinery every folder scan shares: decode ahead, normalize on the device, forward with
hooks that reduce each chosen layer at once, survive out-of-memory and images the model fails on.

A scan (the atlas's :class:`~cnnvis_gui.atlas.scan.TopKScan`, the network dissection of
:mod:`cnnvis_gui.dissect`) is a loop over batches of an image listing:

* :func:`prefetched` runs a ``load(start, stop)`` function in a thread pool ``workers + 1`` batches
  ahead of the consumer (memory stays bounded by that many batches), yields the results in
  order, counts the time the consumer waited, and never leaves a thread behind;
* :func:`decode_images` is the usual ``load``: OpenCV decoding and the spec's geometry
  (``InputSpec.fit_frame``), with unreadable files skipped and named;
* :func:`to_model_input` moves a decoded batch to the model's device and normalizes it there;
* :class:`LayerForward` runs the forward under the caller's ``no_grad`` with a forward hook
  on every chosen layer whose ``reduce`` turns the layer's output into what the scan keeps (the
  atlas: per-channel maximum and position; dissection: the whole unit maps), so nothing else
  of the forward is kept.  An out-of-memory error halves the batch and retries; when the model's
  own forward raises on a batch, its images are retried one by one and the failing ones skipped.

Each piece is what :class:`~cnnvis_gui.atlas.scan.TopKScan` has always done; it lives here so
that a second kind of scan reuses it instead of copying it.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..core import CnnvisError, InputSpec, model_map
from ..core.hooks import HookSet
from ..core.layouts import layout_key
from ..sources import load_image
from .results import MODEL_FAILED

__all__ = ["resolve_layers", "layer_layouts", "through_layouts", "prefetched", "decode_images", "normalize_batch", "to_model_input",
           "LayerForward", "LayerCapture", "training_off", "is_oom", "is_fatal", "model_failed"]


# ============================================================================ layers
def resolve_layers(model: nn.Module, spec: InputSpec, layers) -> list:
    """Canonical module names ("" = model output) for the requested layers.

    Names are checked against ``named_modules()`` without running the model; an unknown
    name falls back to the engine's model map, whose error names the nearest valid layers.
    """
    if isinstance(layers, str):
        layers = [layers]
    modules = dict(model.named_modules())
    out = []
    for name in layers:
        name = str(name)
        if name == "output" and "output" not in modules:
            name = ""
        if name not in modules:
            mm = model_map(model, spec)
            name = mm[name].name        # raises CnnvisError with suggestions
        if name not in out:
            out.append(name)
    if not out:
        raise CnnvisError("choose at least one layer to scan.")
    return out


def layer_layouts(model: nn.Module, spec: InputSpec, layers, overrides: dict | None = None) -> dict:
    """``{layer: Layout}`` of the scanned layers from the model map (one probe forward; overrides applied).

    A scan reads each layer's units and positions through its layout (:mod:`cnnvis_gui.core.layouts`):
    a ConvNeXt block's channels-last features, a ViT's patch tokens on their grid.  A layer whose
    output is not a map of units (window attention, per-head tensors) is refused here.

    A network without a module that makes channels-last or token maps (no LayerNorm, attention,
    patch grid or ``data_format``; :func:`~cnnvis_gui.core.layouts.layout_key`) and without
    overrides is read channels first with no probe forward: ``{}``, the scan as it always was.
    """
    from ..core import Visualizer
    if not layout_key(model, overrides):
        return {}
    vis = Visualizer(model, spec, layouts=overrides)
    out = {}
    for name in layers:
        lay = vis.layout(name)
        if lay is not None and lay.kind == "other":
            raise CnnvisError(f"layer {name or 'output'!r} ({type(dict(model.named_modules())[name]).__name__}) cannot "
                              f"be scanned: its output is not spatial ({lay.reason}); choose another layer.")
        out[name] = lay
    return out


def through_layouts(reduce: Callable, layouts: dict) -> Callable:
    """``reduce(name, module, output)`` that gets each layer's output as N x C x H x W (its layout's view)."""

    def reduce_units(name, module, output):
        lay = layouts.get(name)
        if lay is not None and isinstance(output, torch.Tensor):
            output = lay.to_nchw(output)
        return reduce(name, module, output)

    return reduce_units


# ============================================================================ errors
def is_oom(e: BaseException) -> bool:
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def is_fatal(e: BaseException) -> bool:
    """Errors that are no fault of one image: never skipped image by image (OOM, a broken CUDA context)."""
    return is_oom(e) or (isinstance(e, RuntimeError) and "CUDA error" in str(e))


def model_failed(e: BaseException) -> str:
    """The skip reason of an image on which the model's forward raised (starts with :data:`MODEL_FAILED`)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{MODEL_FAILED} {type(e).__name__}" + (f": {text}" if text else "")


# ============================================================================ the batch pipeline
def prefetched(load: Callable, start: int, stop: int, batch_size: Callable[[], int], workers: int,
               thread_name_prefix: str = "atlas-decode", waited: list | None = None) -> Iterator[tuple]:
    """Yield ``(stop_i, load(start_i, stop_i))`` for consecutive batches of [start, stop), in order.

    ``load`` runs in a pool of ``workers`` threads, at most ``workers + 1`` batches ahead of the
    consumer.  ``batch_size()`` is read each time a batch is submitted (a scan halves it on
    out-of-memory).  ``waited[0]`` (when given) grows by the seconds the consumer waited for a
    batch.  Closing the generator cancels what is queued and joins the threads.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_name_prefix)
    pending: deque = deque()
    next_submit = start
    try:
        while pending or next_submit < stop:
            while len(pending) < workers + 1 and next_submit < stop:
                end = min(stop, next_submit + max(1, int(batch_size())))
                pending.append((end, pool.submit(load, next_submit, end)))
                next_submit = end
            end, fut = pending.popleft()
            t0 = time.perf_counter()
            out = fut.result()
            if waited is not None:
                waited[0] += time.perf_counter() - t0
            yield end, out
    finally:
        for _, f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def decode_images(spec: InputSpec, folder: Path, paths: Sequence[str], start: int, stop: int,
                  fit: str | None = None, sizes: bool = False):
    """Decode files [start, stop) of ``paths`` (relative to ``folder``) -> (batch, image indices, [(rel, why)]).

    For 3-channel specs the batch is N x H x W x 3 uint8 BGR (geometry only); the
    normalization runs batched in torch on the model's device (:func:`normalize_batch`),
    which is cheaper than per-image numpy and moves 4x fewer bytes to a GPU.  Other
    specs get ``InputSpec.to_array`` here: N x C x H x W float32.  With ``sizes`` a fourth
    item lists each decoded file's own (height, width) before fitting.
    """
    fast = spec.channels == 3
    out = np.empty((stop - start, spec.height, spec.width, 3) if fast else (stop - start,) + spec.shape,
                   np.uint8 if fast else np.float32)
    ok, bad, hw = [], [], []
    root = os.fspath(folder)
    for i in range(start, stop):
        rel = paths[i]
        try:
            img = load_image(os.path.join(root, rel))      # str paths: a Path join per image cost 5 % of a decode
            out[len(ok)] = spec.fit_frame(img, fit) if fast else spec.to_array(img, fit)
            ok.append(i)
            hw.append(img.shape[:2])
        except Exception as e:  # unreadable / not an image / odd shape: skip and count
            bad.append((rel, str(e) or type(e).__name__))
    if sizes:
        return out[:len(ok)], ok, bad, hw
    return out[:len(ok)], ok, bad


def normalize_batch(spec: InputSpec, x: torch.Tensor, dtype) -> torch.Tensor:
    """N x H x W x 3 uint8 BGR -> N x 3 x H x W normalized, exactly as ``InputSpec.to_array``."""
    x = x.permute(0, 3, 1, 2)
    if spec.channel_order == "RGB":
        x = x.flip(1)                               # on uint8: a quarter of the bytes
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device).copy_(x)  # one pass: float + NCHW
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=x.device)[:, None, None]
    std = torch.tensor(spec.std, dtype=torch.float32, device=x.device)[:, None, None]
    out.mul_(spec.scale).sub_(mean).div_(std)       # same operations, same order: same numbers
    return out if dtype == torch.float32 else out.to(dtype)


def to_model_input(spec: InputSpec, arr: np.ndarray, device, dtype) -> torch.Tensor:
    """A decoded batch (:func:`decode_images`) as the model's input on its device, in its dtype."""
    pin = torch.device(device).type == "cuda"
    x = torch.from_numpy(arr)
    if pin:
        x = x.pin_memory()
    if x.dtype == torch.uint8:
        return normalize_batch(spec, x.to(device=device, non_blocking=pin), dtype)
    return x.to(device=device, dtype=dtype, non_blocking=pin)


@contextmanager
def training_off(model: nn.Module):
    """``model.eval()`` for a ``with`` block; every module's own training flag is put back after."""
    training = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for m, flag in training:
            m.training = flag


# ============================================================================ the forward
class LayerCapture(HookSet):
    """Forward hooks that hand each chosen layer's output to ``reduce(name, module, output)`` at once.

    ``reduce`` returns a tuple whose tensors have the batch as their first axis (they are
    concatenated when a batch is split) and whose other items describe the layer (taken from
    the first part).  Forwards run by other threads are ignored.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], reduce: Callable):
        super().__init__()
        self.model = model
        self.layers = list(layers)
        self.reduce = reduce
        self.found: dict = {}

    def register(self):
        modules = dict(self.model.named_modules())
        for name in self.layers:
            self.handles.append(modules[name].register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(module, args, output):
            if threading.get_ident() != self.thread:
                return None
            self.found[name] = self.reduce(name, module, output)
        return hook


def _cat(parts: list) -> tuple:
    """Join the reductions of consecutive pieces of a batch (tensors along the batch axis)."""
    first = parts[0]
    return tuple(torch.cat([p[j] for p in parts]) if isinstance(v, torch.Tensor) else v
                 for j, v in enumerate(first))


class LayerForward:
    """The forward of a scan: hooks on ``layers`` reduce their outputs; out-of-memory halves the batch.

    Parameters
    ----------
    model : nn.Module
    layers : list of str
        Module names; each must run in the forward.
    reduce : callable
        ``reduce(name, module, output) -> tuple`` (see :class:`LayerCapture`).
    on_smaller_batch : callable, optional
        Called with the halved batch size after an out-of-memory error, so that the scan
        submits smaller batches from then on.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], reduce: Callable,
                 on_smaller_batch: Callable[[int], None] | None = None):
        self.model = model
        self.layers = list(layers)
        self.reduce = reduce
        self.on_smaller_batch = on_smaller_batch

    def __call__(self, x: torch.Tensor) -> dict:
        """Reductions for a batch; on out-of-memory, halve the batch and retry (recursively)."""
        try:
            with LayerCapture(self.model, self.layers, self.reduce) as cap:
                self.model(x)
            missing = [n for n in self.layers if n not in cap.found]
            if missing:
                raise CnnvisError(f"layer(s) {', '.join(repr(m or 'output') for m in missing)} did not run in the "
                                  f"forward pass; choose layers that run.")
            return cap.found
        except RuntimeError as e:
            if not is_oom(e) or x.shape[0] <= 1:
                raise
        if x.is_cuda:
            torch.cuda.empty_cache()
        half = max(1, x.shape[0] // 2)
        if self.on_smaller_batch is not None:
            self.on_smaller_batch(half)
        a, b = self(x[:half]), self(x[half:])
        return {n: _cat([a[n], b[n]]) for n in self.layers}

    def or_skip(self, x: torch.Tensor, ok: list, name_of: Callable[[int], str]) -> tuple:
        """:meth:`__call__` a batch; when the model raises, retry its images one by one.

        Returns (found or None, image indices that went through, [(name_of(i), reason)] of the
        images the model's forward raised on).  Our own errors (CnnvisError: a layer without a
        tensor output...) and out-of-memory on a single image still propagate.
        """
        try:
            return self(x), list(ok), []
        except CnnvisError:
            raise
        except Exception as e:
            if is_fatal(e):
                raise
            if len(ok) == 1:
                return None, [], [(name_of(ok[0]), model_failed(e))]
        parts, good, bad = [], [], []
        for j, i in enumerate(ok):
            try:
                parts.append(self(x[j:j + 1]))
                good.append(i)
            except CnnvisError:
                raise
            except Exception as e:
                if is_fatal(e):
                    raise
                bad.append((name_of(i), model_failed(e)))
        if not parts:
            return None, [], bad
        return {n: _cat([p[n] for p in parts]) for n in self.layers}, good, bad
