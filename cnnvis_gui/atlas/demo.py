"""The demo models' atlas, built at first start from images their own generator draws.

The deep visualization toolbox (Yosinski et al. 2015) shipped the top-9 images of every unit
with its CaffeNet; here the shipped demo models (``shapes``, ``glyphs``) get theirs the
first time they are opened: :class:`DemoAtlas` draws :data:`DEMO_IMAGES` images with the
demo's own training generator (:func:`cnnvis_gui.models.train_demo.iter_dataset`, with a seed
used neither for training nor for testing) into a folder of the atlas cache, then runs an
ordinary :class:`~cnnvis_gui.atlas.TopKScan` of every visualizable layer over it.  Both steps
are cached: the folder is drawn once (a hidden ``.complete`` marker is written last), and the
scan is cached under its usual key, so a second start costs a folder listing and a weights
hash.  ``run()`` is a generator (yield progress, check cancel between steps), like the scan.

>>> d = DemoAtlas(lm.model, lm.spec, "shapes")          # doctest: +SKIP
>>> for p in d.run(): print(p.describe())               # doctest: +SKIP
>>> d.result.hits("features.12", 3)                     # doctest: +SKIP
"""
from __future__ import annotations

import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
from torch import nn

from ..core import CnnvisError, InputSpec, model_map
from . import cache as _cache
from .results import AtlasScan
from .scan import TopKScan

__all__ = ["DEMO_IMAGES", "DEMO_SEED", "DemoProgress", "DemoAtlas", "demo_images_folder", "draw_demo_images"]

#: images drawn per demo model (a few thousand: seconds on a CPU, enough for distinct top-9 lists)
DEMO_IMAGES = 2000
#: generator seed of the atlas images (training uses 1000+, its test set 2000+, the samples 3000+)
DEMO_SEED = 4000
_MARKER = ".complete"


@dataclass(frozen=True)
class DemoProgress:
    """Where a demo atlas build stands: ``phase`` is "drawing", "scanning" or "cached"."""

    phase: str
    done: int
    total: int

    @property
    def fraction(self) -> float:
        return 1.0 if self.total == 0 else self.done / self.total

    def describe(self) -> str:
        if self.phase == "cached":
            return "demo atlas: from the cache"
        what = "drawing images" if self.phase == "drawing" else "scanning"
        return f"demo atlas: {what} {self.done}/{self.total}"


def demo_images_folder(name: str, n: int = DEMO_IMAGES, seed: int = DEMO_SEED, cache_dir=None) -> Path:
    """Where the atlas images of demo ``name`` are kept: ``<atlas cache>/demo-images-<name>-<n>-<seed>``."""
    return _cache.cache_dir(cache_dir) / f"demo-images-{name}-{int(n)}-{int(seed)}"


def draw_demo_images(name: str, folder, n: int = DEMO_IMAGES, seed: int = DEMO_SEED,
                     cancel: threading.Event | None = None, every: int = 100) -> Iterator[int]:
    """Draw the ``n`` images into ``folder`` (``NNNNN_label.png``), yielding the count every ``every``.

    A complete folder is kept as it is (its files' times are part of the scan's cache key);
    otherwise the images are drawn into a temporary sibling folder that is renamed into
    place when complete, so an interrupted run never leaves a partial folder to be scanned.
    """
    from ..models.demo_nets import GLYPHS_LABELS, SHAPES_LABELS
    from ..models.train_demo import iter_dataset
    folder = Path(folder)
    if (folder / _MARKER).is_file():
        yield n
        return
    labels = {"shapes": SHAPES_LABELS, "glyphs": GLYPHS_LABELS}.get(name)
    if labels is None:
        raise CnnvisError(f"no image generator for {name!r}: the demo atlas exists for shapes and glyphs.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.partial")
    tmp.mkdir()
    try:
        for i, (img, k) in enumerate(iter_dataset(name, n, seed)):
            if cancel is not None and cancel.is_set():
                return
            tag = "".join(c if c.isalnum() else "-" for c in str(labels[int(k)]))
            if not cv2.imwrite(str(tmp / f"{i:05d}_{tag}.png"), img):
                raise CnnvisError(f"cannot write the demo atlas images to {tmp} (disk full or read-only?).")
            if (i + 1) % every == 0 and i + 1 < n:
                yield i + 1
        (tmp / _MARKER).write_text(f"{name} {n} {seed}\n")
        if folder.exists() and not (folder / _MARKER).is_file():
            shutil.rmtree(folder, ignore_errors=True)        # an old incomplete folder
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / _MARKER).is_file():              # another process finished first: use theirs
                raise
        yield n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class DemoAtlas:
    """Draw (once) and scan (once) a demo model's atlas images; ``run()`` yields :class:`DemoProgress`.

    Parameters
    ----------
    model, spec
        The demo model as loaded (the scan runs on its device; use a private copy in a thread).
    name : str
        ``"shapes"`` or ``"glyphs"``: which generator draws the images.
    layers : list of str, optional
        Layers to scan; default every visualizable layer of the model map.
    k, n, seed, cache_dir, batch_size
        Top-k per unit, images drawn (default :data:`DEMO_IMAGES`), generator seed, atlas cache
        override, scan batch size.
    """

    def __init__(self, model: nn.Module, spec: InputSpec, name: str, layers=None, k: int = 9,
                 n: int | None = None, seed: int = DEMO_SEED, cache_dir=None, batch_size: int = 128):
        self.model, self.spec, self.name = model, spec, name
        self.layers = list(layers) if layers is not None else None
        self.n = int(DEMO_IMAGES if n is None else n)
        self.k, self.seed, self.cache_dir, self.batch_size = int(k), int(seed), cache_dir, batch_size
        self.folder = demo_images_folder(name, self.n, self.seed, cache_dir)
        self.scan: TopKScan | None = None
        self.result: AtlasScan | None = None
        self._cancel = threading.Event()

    def cancel(self) -> None:
        """Stop between images or between batches (thread-safe); the scan checkpoints as usual."""
        self._cancel.set()
        if self.scan is not None:
            self.scan.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> Iterator[DemoProgress]:
        """Draw the images if needed, then scan (or read the cached scan); sets :attr:`result`."""
        drawn = (self.folder / _MARKER).is_file()
        for done in draw_demo_images(self.name, self.folder, self.n, self.seed, self._cancel):
            if not drawn:
                yield DemoProgress("drawing", done, self.n)
        if self._cancel.is_set():
            return
        layers = self.layers or list(model_map(self.model, self.spec).visualizable_names())
        self.scan = TopKScan(self.model, self.spec, self.folder, layers, k=self.k, batch_size=self.batch_size,
                             cache_dir=self.cache_dir)
        if self._cancel.is_set():
            self.scan.cancel()
        for p in self.scan.run():
            yield DemoProgress("cached" if p.from_cache else "scanning", p.done, p.total)
            if self._cancel.is_set():
                self.scan.cancel()
        self.result = self.scan.result
