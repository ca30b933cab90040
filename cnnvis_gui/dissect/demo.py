"""The shapes demo's concept set and dissection, made at first use from the demo's own generator.

Network dissection needs labelled images; the shapes demo draws its own.  :func:`draw_demo_concepts`
draws :data:`DEMO_CONCEPT_IMAGES` images with the demo's training generator
(:func:`cnnvis_gui.models.train_demo.make_shape_parts`, a seed used neither for training nor for
testing nor for the demo atlas) and writes them as a Broden-format set with three categories:

* ``shape`` -- the ten figures, where the figure covers at least half of a pixel;
* ``color`` -- every pixel's colour name (Broden's eleven: black, blue, brown, green, grey,
  orange, pink, purple, red, white, yellow), the nearest in CIE Lab of the 3 x 3-smoothed pixel;
* ``texture`` -- the background's kind (flat, gradient, blotchy), on the background pixels.

The folder is written once into the cache (``demo-concepts-shapes-N-SEED``, a hidden marker
last) and is then an ordinary Broden folder: ``cnnvis dissect --model shapes`` uses it when no
``--concepts`` is given.  :class:`DemoDissection` draws it (once) and dissects the demo's
convolutional layers (cached like any dissection), yielding progress like the scans.
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
import numpy as np
from torch import nn

from ..atlas import cache as _cache
from ..core import CnnvisError, InputSpec
from .results import DissectResult
from .scan import Dissection

__all__ = ["DEMO_CONCEPT_IMAGES", "DEMO_CONCEPT_SEED", "COLOUR_NAMES", "demo_concepts_folder", "draw_demo_concepts",
           "DemoDissection", "DEMO_LAYERS"]

#: images in the shapes demo's concept set
DEMO_CONCEPT_IMAGES = 400
#: generator seed (training 1000+, test 2000+, samples 3000+, demo atlas 4000)
DEMO_CONCEPT_SEED = 5000
#: the layers the demo dissects: the outputs of every convolution and ReLU
DEMO_LAYERS = ("features.0", "features.2", "features.4", "features.6", "features.8", "features.10", "features.12",
               "features.14")
#: Broden's colour names and an sRGB prototype of each
COLOUR_NAMES = (("black", (20, 20, 20)), ("blue", (40, 70, 200)), ("brown", (120, 75, 35)), ("green", (50, 160, 60)),
                ("grey", (128, 128, 128)), ("orange", (240, 140, 30)), ("pink", (240, 150, 190)),
                ("purple", (130, 50, 160)), ("red", (200, 30, 30)), ("white", (235, 235, 235)),
                ("yellow", (235, 220, 40)))
_MARKER = ".complete"


def demo_concepts_folder(n: int = DEMO_CONCEPT_IMAGES, seed: int = DEMO_CONCEPT_SEED, cache_dir=None) -> Path:
    """Where the shapes demo's concept set is kept: ``<cache>/demo-concepts-shapes-<n>-<seed>``."""
    return _cache.cache_dir(cache_dir) / f"demo-concepts-shapes-{int(n)}-{int(seed)}"


def _colour_names(img: np.ndarray) -> np.ndarray:
    """Per pixel, 1 + the index in :data:`COLOUR_NAMES` of its nearest colour (CIE Lab)."""
    smooth = cv2.blur(img, (3, 3))
    lab = cv2.cvtColor(smooth, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float32)
    protos = np.array([rgb[::-1] for _, rgb in COLOUR_NAMES], np.uint8)[None]
    plab = cv2.cvtColor(protos, cv2.COLOR_BGR2LAB)[0].astype(np.float32)
    d = ((lab[:, None, :] - plab[None, :, :]) ** 2).sum(-1)
    return (d.argmin(1) + 1).reshape(img.shape[:2])


def _mask_png(labels: np.ndarray) -> np.ndarray:
    out = np.zeros(labels.shape + (3,), np.uint8)
    out[..., 2] = labels % 256
    out[..., 1] = labels // 256
    return out


def _labels() -> list:
    """[(number, name, category)]: shapes 1-10, colours 11-21, textures 22-24."""
    from ..models.demo_nets import SHAPES_LABELS
    from ..models.train_demo import BACKGROUNDS
    out = [(i + 1, str(n), "shape") for i, n in enumerate(SHAPES_LABELS)]
    out += [(11 + i, n, "color") for i, (n, _) in enumerate(COLOUR_NAMES)]
    out += [(22 + i, n, "texture") for i, n in enumerate(BACKGROUNDS)]
    return out


def draw_demo_concepts(folder, n: int = DEMO_CONCEPT_IMAGES, seed: int = DEMO_CONCEPT_SEED,
                       cancel: threading.Event | None = None, every: int = 50) -> Iterator[int]:
    """Write the concept set into ``folder`` (see the module docstring), yielding the count every ``every``.

    A complete folder is kept as it is; otherwise it is drawn into a temporary sibling that is
    renamed into place when complete, so an interrupted run never leaves a partial set.
    """
    from ..models.train_demo import make_shape_parts
    folder = Path(folder)
    if (folder / _MARKER).is_file():
        yield n
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.partial")
    (tmp / "images").mkdir(parents=True)
    labels = _labels()
    rng = np.random.default_rng(seed)
    order = np.arange(n) % 10
    rng.shuffle(order)
    rows = ["image,split,ih,iw,sh,sw,shape,color,texture"]
    cover = {num: 0 for num, _, _ in labels}
    try:
        for i, k in enumerate(order):
            if cancel is not None and cancel.is_set():
                return
            img, alpha, _, kind = make_shape_parts(int(k), rng)
            figure = alpha >= 0.5
            shape = np.where(figure, int(k) + 1, 0)
            colour = 10 + _colour_names(img)
            texture = np.where(figure, 0, 22 + kind)
            name = f"{i:05d}"
            files = [f"{name}.png", f"{name}_shape.png", f"{name}_color.png", f"{name}_texture.png"]
            for fn, arr in zip(files, (img, _mask_png(shape), _mask_png(colour), _mask_png(texture))):
                if not cv2.imwrite(str(tmp / "images" / fn), arr):
                    raise CnnvisError(f"cannot write the demo concept images to {tmp} (disk full or read-only?).")
            for m in (shape, colour, texture):
                for v, c in zip(*np.unique(m[m > 0], return_counts=True)):
                    cover[int(v)] += int(c)
            rows.append(f"{files[0]},train,64,64,64,64,{files[1]},{files[2]},{files[3]}")
            if (i + 1) % every == 0 and i + 1 < n:
                yield i + 1
        (tmp / "index.csv").write_text("\n".join(rows) + "\n")
        cats = ("shape", "color", "texture")
        (tmp / "label.csv").write_text("number,name,category,frequency,coverage,syns\n0,-,-,0,0,\n" + "".join(
            f"{num},{nm},{c}({cover[num]}),{cover[num]},{cover[num] / 4096:.3f},\n" for num, nm, c in labels))
        (tmp / "category.csv").write_text("name,first,last,count,frequency\n" + "".join(
            f"{c},0,0,{sum(1 for _, _, cc in labels if cc == c)},{n}\n" for c in cats))
        for c in cats:
            mine = [(num, nm) for num, nm, cc in labels if cc == c]
            (tmp / f"c_{c}.csv").write_text("code,number,name,frequency,coverage,syns\n" + "".join(
                f"{j},{num},{nm},{cover[num]},{cover[num] / 4096:.3f},\n" for j, (num, nm) in enumerate(mine, 1)))
        (tmp / _MARKER).write_text(f"shapes {n} {seed}\n")
        if folder.exists() and not (folder / _MARKER).is_file():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / _MARKER).is_file():
                raise
        yield n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class DemoDissectProgress:
    """Where the demo dissection stands: ``phase`` is "drawing", then the dissection's phases."""

    phase: str
    done: int
    total: int
    skipped: int = 0
    from_cache: bool = False

    @property
    def fraction(self) -> float:
        return 1.0 if self.total == 0 else self.done / self.total

    def describe(self) -> str:
        if self.phase == "drawing":
            return f"demo dissection: drawing the concept images {self.done}/{self.total}"
        if self.phase == "cached":
            return "demo dissection: from the cache"
        return f"demo dissection: {self.phase} {self.done}/{self.total}"


class DemoDissection:
    """Draw (once) the shapes demo's concept set and dissect the demo (cached); ``run()`` yields progress."""

    def __init__(self, model: nn.Module, spec: InputSpec, layers=None, n: int | None = None,
                 seed: int = DEMO_CONCEPT_SEED, cache_dir=None, batch_size: int = 64, quantile: float | None = None):
        self.model, self.spec = model, spec
        modules = dict(model.named_modules())
        self.layers = [l for l in (layers or DEMO_LAYERS) if l in modules]
        self.n = int(DEMO_CONCEPT_IMAGES if n is None else n)
        self.seed, self.cache_dir, self.batch_size, self.quantile = int(seed), cache_dir, batch_size, quantile
        self.folder = demo_concepts_folder(self.n, self.seed, cache_dir)
        self.dissection: Dissection | None = None
        self.result: DissectResult | None = None
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()
        if self.dissection is not None:
            self.dissection.cancel()

    def make(self) -> Dissection:
        from .scan import DEFAULT_QUANTILE
        return Dissection(self.model, self.spec, self.folder, self.layers, self.quantile or DEFAULT_QUANTILE,
                          batch_size=self.batch_size, cache_dir=self.cache_dir)

    def run(self) -> Iterator[DemoDissectProgress]:
        drawn = (self.folder / _MARKER).is_file()
        for done in draw_demo_concepts(self.folder, self.n, self.seed, self._cancel):
            if not drawn:
                yield DemoDissectProgress("drawing", done, self.n)
        if self._cancel.is_set():
            return
        self.dissection = self.make()
        if self._cancel.is_set():
            self.dissection.cancel()
        for p in self.dissection.run():
            yield DemoDissectProgress(p.phase, p.done, p.total, p.skipped, p.from_cache)
            if self._cancel.is_set():
                self.dissection.cancel()
        self.result = self.dissection.result
