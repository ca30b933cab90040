"""What a dissection gives: every unit's concept, IoU and threshold, per layer, and its JSON.

The JSON (``cnnvis dissect --json OUT``)::

    {"layers": [{"layer": NAME, "quantile": Q, "shape": [C, H, W],
                 "units": [{"unit": k, "concept": NAME, "category": CAT, "iou": x, "threshold": T,
                            "top": [[NAME, iou], [NAME, iou], [NAME, iou]], "interpretable": bool}, ...],
                 "summary": {"interpretable": n, "by_category": {CAT: n}, "unique_by_category": {CAT: n}}}],
     "concepts": [{"id": ID, "name": NAME, "category": CAT, "pixels": n, "images": n}, ...],
     "categories": [CAT, ...], "images": N, "skipped": [{"path": P, "reason": R}],
     "quantile_method": "exact (...)" or "streaming (...)", "iou_interpretable": 0.04,
     "concept_set": {"path": DIR, "format": "broden"|"folder", "masks_resized": n}, ...}

A unit's ``concept`` is the concept with the highest IoU (ties to the smaller id), ``null`` when
no concept overlaps the unit at all; ``interpretable`` is the paper's IoU > 0.04.  The layer
summary is what the paper plots: interpretable units and distinct concepts per category.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core import CnnvisError
from .tally import IOU_INTERPRETABLE

__all__ = ["UnitLabel", "LayerDissection", "DissectResult", "label_units", "TOP"]

#: concepts listed per unit
TOP = 3


@dataclass(frozen=True)
class UnitLabel:
    """What one unit detects: ``concept`` (None when it overlaps none), its IoU, the threshold T_k."""

    unit: int
    concept: str | None
    category: str | None
    iou: float
    threshold: float
    top: tuple = ()
    interpretable: bool = False

    def describe(self) -> str:
        """``"stripes (texture), IoU 0.21"``; below the paper's cut ``"no detector (best: stripes, IoU 0.03)"``;
        ``"no concept (IoU 0)"``."""
        if self.concept is None:
            return "no concept (IoU 0)"
        if not self.interpretable:
            return f"no detector (best: {self.concept}, IoU {self.iou:.2f})"
        return f"{self.concept} ({self.category}), IoU {self.iou:.2f}"

    def to_dict(self) -> dict:
        return {"unit": self.unit, "concept": self.concept, "category": self.category, "iou": self.iou,
                "threshold": self.threshold, "top": [[n, v] for n, v in self.top],
                "interpretable": self.interpretable}

    @classmethod
    def from_dict(cls, d: dict) -> "UnitLabel":
        return cls(int(d["unit"]), d["concept"], d.get("category"), float(d["iou"]), float(d["threshold"]),
                   tuple((str(n), float(v)) for n, v in d["top"]), bool(d["interpretable"]))


@dataclass
class LayerDissection:
    """One layer's labels: ``units[k]`` is unit k's :class:`UnitLabel`."""

    name: str
    quantile: float
    shape: tuple
    units: list

    def summary(self, categories) -> dict:
        """Interpretable units and distinct concepts per category (the paper's bar chart)."""
        good = [u for u in self.units if u.interpretable]
        return {"interpretable": len(good),
                "by_category": {c: sum(1 for u in good if u.category == c) for c in categories},
                "unique_by_category": {c: len({u.concept for u in good if u.category == c}) for c in categories}}

    def to_dict(self, categories) -> dict:
        return {"layer": self.name or "output", "quantile": self.quantile, "shape": list(self.shape),
                "units": [u.to_dict() for u in self.units], "summary": self.summary(categories)}


def label_units(iou: np.ndarray, thresholds: np.ndarray, concepts: list, top: int = TOP) -> list:
    """A :class:`UnitLabel` per unit from its C x (K + 1) IoU (column j = dense concept j; 0 unused)."""
    out = []
    scores = iou[:, 1:]
    for k in range(scores.shape[0]):
        row = scores[k]
        order = np.argsort(-row, kind="stable")[:top]            # highest first, ties to the smaller id
        best = int(order[0]) if len(order) else -1
        has = best >= 0 and row[best] > 0
        c = concepts[best] if has else None
        out.append(UnitLabel(k, c.name if c else None, c.category if c else None,
                             float(row[best]) if has else 0.0, float(thresholds[k]),
                             tuple((concepts[j].name, float(row[j])) for j in order if row[j] > 0),
                             bool(has and row[best] > IOU_INTERPRETABLE)))
    return out


@dataclass
class DissectResult:
    """A finished (or loaded) dissection."""

    layers: dict                         # name -> LayerDissection
    concepts: list                       # [{"id", "name", "category", "pixels", "images"}]
    categories: list
    images: int
    skipped: list = field(default_factory=list)     # [(relative path, reason)]
    method: str = "exact"
    info: dict = field(default_factory=dict)        # concept_set, model, spec, ... (JSON extras)
    from_cache: bool = False
    world_size: int = 1

    def layer(self, name: str) -> LayerDissection:
        if name == "output" and "output" not in self.layers and "" in self.layers:
            name = ""
        try:
            return self.layers[name]
        except KeyError:
            raise CnnvisError(f"this dissection has no layer {name!r}; it has "
                              f"{', '.join(repr(n or 'output') for n in self.layers)}.") from None

    def unit(self, layer: str, unit: int) -> UnitLabel:
        t = self.layer(layer)
        if not 0 <= int(unit) < len(t.units):
            raise CnnvisError(f"unit {unit} is out of range for layer {layer!r}: it has {len(t.units)} units.")
        return t.units[int(unit)]

    def to_dict(self) -> dict:
        from .quantile import describe_method
        doc = {"layers": [t.to_dict(self.categories) for t in self.layers.values()],
               "concepts": self.concepts, "categories": list(self.categories), "images": self.images,
               "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
               "quantile_method": describe_method(self.method), "iou_interpretable": IOU_INTERPRETABLE}
        doc.update(self.info)
        doc["world_size"] = self.world_size
        return doc

    @classmethod
    def from_dict(cls, d: dict, **kw) -> "DissectResult":
        """A result from :meth:`to_dict`'s JSON (KeyError/TypeError/ValueError when it is not one)."""
        layers = {}
        for t in d["layers"]:
            name = "" if t["layer"] == "output" else str(t["layer"])
            layers[name] = LayerDissection(name, float(t["quantile"]), tuple(int(s) for s in t["shape"]),
                                           [UnitLabel.from_dict(u) for u in t["units"]])
        method = "exact" if str(d["quantile_method"]).startswith("exact") else "streaming"
        known = {"layers", "concepts", "categories", "images", "skipped", "quantile_method", "iou_interpretable",
                 "world_size"}
        return cls(layers, list(d["concepts"]), [str(c) for c in d["categories"]], int(d["images"]),
                   [(str(s["path"]), str(s["reason"])) for s in d["skipped"]], method,
                   {k: v for k, v in d.items() if k not in known}, world_size=int(d.get("world_size", 1)), **kw)
