"""What a top-k scan gives: hits, progress, each layer's top-k tables and the finished atlas."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import CnnvisError, InputSpec

__all__ = ["Hit", "ScanProgress", "LayerTopK", "AtlasScan", "MODEL_FAILED"]

#: reason prefix of a skipped image on which the model's own forward raised (see AtlasScan.model_failures)
MODEL_FAILED = "the model's forward raised"



@dataclass(frozen=True)
class Hit:
    """One top-k entry: ``image`` index into :attr:`AtlasScan.paths`, position (y, x) in the
    layer's map (``(0, 0)`` for a flat layer), and the unit's activation there."""

    path: Path
    image: int
    y: int
    x: int
    value: float

    def to_dict(self) -> dict:
        return {"path": str(self.path), "image": self.image, "y": self.y, "x": self.x, "value": self.value}


@dataclass(frozen=True)
class ScanProgress:
    """Where a scan stands: images ``done`` of ``total`` (skipped ones count as done)."""

    done: int
    total: int
    images_per_s: float
    eta_s: float | None
    skipped: int
    batch_size: int
    from_cache: bool = False

    @property
    def fraction(self) -> float:
        return 1.0 if self.total == 0 else self.done / self.total

    def describe(self) -> str:
        eta = "" if self.eta_s is None else f", ETA {self.eta_s:.0f} s"
        sk = f", {self.skipped} skipped" if self.skipped else ""
        return f"{self.done}/{self.total} images, {self.images_per_s:.1f} images/s{eta}{sk}"


@dataclass
class LayerTopK:
    """The k best hits of every unit of one layer; arrays are units x k, best first.

    ``images`` is -1 where a unit has fewer than k hits (a folder with fewer than k images).
    ``shape`` is the per-sample shape of the layer's units and their map (e.g. (64, 16, 16) or (10,)):
    its output read through its layout (:mod:`cnnvis_gui.core.layouts`), so a ViT block's
    197 x 192 tokens are (192, 14, 14) and a hit's (y, x) is on that grid.
    """

    name: str
    values: np.ndarray
    images: np.ndarray
    ys: np.ndarray
    xs: np.ndarray
    shape: tuple

    @property
    def units(self) -> int:
        return int(self.values.shape[0])


@dataclass
class AtlasScan:
    """A finished (or loaded) top-k scan of a folder."""

    folder: Path
    paths: list                 # image paths relative to ``folder`` (posix strings), index = image id
    layers: dict                # layer name -> LayerTopK
    k: int
    spec: InputSpec
    skipped: list = field(default_factory=list)   # [(relative path, reason)]
    key: str = ""
    from_cache: bool = False
    ranges: list = field(default_factory=list)    # [(start, stop)] scanned by each rank/shard; [] = one process

    @property
    def world_size(self) -> int:
        """How many processes (torchrun ranks or shards) scanned the listing (1 for one process)."""
        return max(1, len(self.ranges))

    @property
    def images_per_rank(self) -> list:
        """Image files each rank or shard scanned (skipped ones included), in rank order."""
        return [b - a for a, b in self.ranges] if self.ranges else [len(self.paths)]

    @property
    def model_failures(self) -> list:
        """The skipped images on which the model's own forward raised: [(relative path, reason)]."""
        return [(p, r) for p, r in self.skipped if r.startswith(MODEL_FAILED)]

    def layer(self, name: str) -> LayerTopK:
        if name == "output" and "output" not in self.layers and "" in self.layers:
            name = ""
        try:
            return self.layers[name]
        except KeyError:
            raise CnnvisError(f"this atlas has no layer {name!r}; it has {', '.join(map(repr, self.layers))}.") \
                from None

    def path(self, image: int) -> Path:
        return self.folder / self.paths[int(image)]

    def hits(self, layer: str, unit: int) -> list:
        """The unit's hits, highest activation first (at most k, distinct images)."""
        t = self.layer(layer)
        if not 0 <= int(unit) < t.units:
            raise CnnvisError(f"unit {unit} is out of range for layer {layer!r}: it has {t.units} units "
                              f"(0..{t.units - 1}).")
        out = []
        for j in range(t.values.shape[1]):
            i = int(t.images[unit, j])
            if i < 0:
                break
            out.append(Hit(self.path(i), i, int(t.ys[unit, j]), int(t.xs[unit, j]), float(t.values[unit, j])))
        return out

    def to_dict(self) -> dict:
        """JSON-able summary: every unit's hits (path, position, value), highest first."""
        layers = {}
        for name, t in self.layers.items():
            layers[name or "output"] = {
                "shape": list(t.shape),
                "units": [{"unit": u, "hits": [h.to_dict() for h in self.hits(name, u)]} for u in range(t.units)],
            }
        return {"folder": str(self.folder), "images": len(self.paths), "k": self.k,
                "spec": self.spec.to_dict(), "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
                "model_failed": len(self.model_failures), "world_size": self.world_size,
                "images_per_rank": self.images_per_rank, "layers": layers}
