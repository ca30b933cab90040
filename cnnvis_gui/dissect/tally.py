"""IoU of every unit with every concept: upsample, threshold, count, sum over images.

As the paper (Bau et al., CVPR 2017) and NetDissect-Lite define it, for unit k with threshold
T_k (:mod:`cnnvis_gui.dissect.quantile`) and concept c:

* the unit's map on an image is upsampled bilinearly (``align_corners=False``) to the size of
  the image's mask and thresholded: M_k = up(A_k) > T_k;
* IoU(k, c) = sum_images |M_k & L_c| / sum_images |M_k | L_c|, the sums running over the images
  annotated in c's category.

The sums are kept as integers: I[k, c] = sum |M_k & L_c|, A[k, g] = sum |M_k| over the images
annotated in category g, L[c] = sum |L_c|, so |M_k | L_c| sums to A[k, g(c)] + L[c] - I[k, c].
Integer sums add, so tallies of disjoint image sets (torchrun ranks, shards) merge exactly.

A concept can be a pixel label (its mask pixels) or a whole-image label (Broden's scene and
texture: every pixel of the image).  A pixel of a concept whose category the image is not
annotated in does not count (the concept set sets such pixels to 0, see
:meth:`~cnnvis_gui.dissect.concepts.ConceptSet.labels`).

Only the (image, unit) pairs whose low-resolution map exceeds T_k anywhere are upsampled: a
bilinear sample is a convex combination of the map's values, so no other pair has a pixel above
T_k (the test keeps a margin of a few float rounding steps, so the counts equal those of
upsampling every map).

Geometry: the map covers the model's input, which is the image fitted by the input spec
(:func:`mask_geometry`).  With ``stretch``, or an image already of the input's size, the map is
upsampled to the whole mask.  With ``crop`` it is upsampled to the part of the mask the model
sees (rounded to whole mask pixels), and the rest of the mask is not counted; with
``letterbox`` it is upsampled to the padded canvas at the mask's scale and the padding is cut
away.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..core import InputSpec

__all__ = ["Geometry", "mask_geometry", "Tally", "IOU_INTERPRETABLE", "PAIR_PIXELS"]

#: the paper's cut: a unit is a detector of its concept when the IoU exceeds this
IOU_INTERPRETABLE = 0.04
#: upsampled pixels per chunk of (image, unit) pairs (bounds the memory of one step)
PAIR_PIXELS = 1 << 23


@dataclass(frozen=True)
class Geometry:
    """How a unit map lines up with an image's masks.

    The map is upsampled to ``canvas`` (height, width, in mask pixels); ``window`` (y0, x0, y1,
    x1) of the canvas is compared with ``crop`` (y0, x0, y1, x1) of the mask (equal sizes).
    """

    canvas: tuple
    window: tuple
    crop: tuple

    @property
    def pixels(self) -> int:
        y0, x0, y1, x1 = self.crop
        return (y1 - y0) * (x1 - x0)


def mask_geometry(image_hw, mask_hw, spec: InputSpec, fit: str | None = None) -> Geometry:
    """Where the model's input lies on a mask of size ``mask_hw`` covering an image of ``image_hw``."""
    h, w = (int(v) for v in image_hw)
    mh, mw = (int(v) for v in mask_hw)
    H, W = spec.height, spec.width
    fit = fit or spec.fit
    whole = Geometry((mh, mw), (0, 0, mh, mw), (0, 0, mh, mw))
    if (h, w) == (H, W) or fit == "stretch":
        return whole
    if fit == "crop":                                   # spec.fit_frame: scale, then centre-crop
        s = max(H / h, W / w)
        nh, nw = max(H, round(h * s)), max(W, round(w * s))
        y0, x0 = (nh - H) // 2, (nw - W) // 2
        cy0, cy1 = round(y0 * mh / nh), round((y0 + H) * mh / nh)
        cx0, cx1 = round(x0 * mw / nw), round((x0 + W) * mw / nw)
        cy1, cx1 = max(cy1, cy0 + 1), max(cx1, cx0 + 1)
        return Geometry((cy1 - cy0, cx1 - cx0), (0, 0, cy1 - cy0, cx1 - cx0), (cy0, cx0, cy1, cx1))
    s = min(H / h, W / w)                               # letterbox: scale to fit, pad
    nh, nw = max(1, min(H, round(h * s))), max(1, min(W, round(w * s)))
    y0, x0 = (H - nh) // 2, (W - nw) // 2
    ch, cw = max(mh, round(H * mh / nh)), max(mw, round(W * mw / nw))
    wy, wx = min(round(y0 * mh / nh), ch - mh), min(round(x0 * mw / nw), cw - mw)
    return Geometry((ch, cw), (wy, wx, wy + mh, wx + mw), (0, 0, mh, mw))


class Tally:
    """The integer sums of a dissection, for every layer (see the module docstring).

    Parameters
    ----------
    units : dict
        Layer name -> number of units.
    concepts : int
        K, the number of concepts (dense indices 1..K; column 0 is "no concept" and stays 0).
    concept_category : array of int
        The category index of each dense index (K + 1 entries; entry 0 unused).
    categories : int
        Number of categories.
    """

    def __init__(self, units: dict, concepts: int, concept_category: np.ndarray, categories: int):
        self.K = int(concepts)
        self.concept_category = np.asarray(concept_category, np.int64)
        self.inter = {n: np.zeros((u, self.K + 1), np.int64) for n, u in units.items()}
        self.act = {n: np.zeros((u, categories), np.int64) for n, u in units.items()}
        self.label = np.zeros(self.K + 1, np.int64)       # pixels of each concept
        self.images = np.zeros(self.K + 1, np.int64)      # images in which each concept occurs
        self.count = 0                                     # images tallied
        self.resized = 0                                   # of them, images whose mask was resized to the image

    # ------------------------------------------------------------------ arrays
    def arrays(self, layers) -> dict:
        """The sums as named arrays (checkpoints, parts)."""
        out = {"label": self.label, "images": self.images, "count": np.array(self.count, np.int64),
               "resized": np.array(self.resized, np.int64)}
        for i, n in enumerate(layers):
            out[f"inter{i}"], out[f"act{i}"] = self.inter[n], self.act[n]
        return out

    def load(self, z: dict, layers) -> None:
        """Take the sums from :meth:`arrays` (shapes checked; ValueError/KeyError when they do not fit)."""
        for i, n in enumerate(layers):
            if z[f"inter{i}"].shape != self.inter[n].shape or z[f"act{i}"].shape != self.act[n].shape:
                raise ValueError(f"layer {i}: tally arrays of another shape")
            self.inter[n], self.act[n] = z[f"inter{i}"].astype(np.int64), z[f"act{i}"].astype(np.int64)
        if z["label"].shape != self.label.shape or z["images"].shape != self.images.shape:
            raise ValueError("concept counts of another length")
        self.label, self.images = z["label"].astype(np.int64), z["images"].astype(np.int64)
        self.count, self.resized = int(z["count"]), int(z["resized"])

    def merge(self, others) -> None:
        """Add other tallies (of disjoint image sets) to this one."""
        for t in others:
            for n in self.inter:
                self.inter[n] += t.inter[n]
                self.act[n] += t.act[n]
            self.label += t.label
            self.images += t.images
            self.count += t.count
            self.resized += t.resized

    # ------------------------------------------------------------------ counting
    def add_labels(self, labels, geom: Geometry) -> None:
        """Count one image's concept pixels (once per image, whatever the layers)."""
        y0, x0, y1, x1 = geom.crop
        seen = np.zeros(self.K + 1, bool)
        for m in labels.maps:
            c = np.bincount(m[y0:y1, x0:x1].ravel(), minlength=self.K + 1)
            self.label += c
            seen |= c > 0
        for s in labels.scalars:
            if s > 0:
                self.label[s] += geom.pixels
                seen[s] = True
        seen[0] = False
        self.images += seen
        self.count += 1
        self.resized += bool(labels.resized)

    def add_layer(self, name: str, maps: torch.Tensor, thresholds: torch.Tensor, items: list) -> None:
        """Count the thresholded maps of a batch against its images' concepts.

        ``maps`` is B x C x h x w (unit maps, any device), ``thresholds`` C (same device and
        dtype), ``items`` B pairs (:class:`~cnnvis_gui.dissect.concepts.ImageLabels`,
        :class:`Geometry`).  NaN counts as the lowest value (never above a threshold), also for
        the bilinear samples next to it.
        """
        low = torch.finfo(maps.dtype)
        maps = torch.nan_to_num(maps, nan=low.min, neginf=low.min, posinf=low.max)
        peak = maps.amax(dim=(2, 3))
        margin = thresholds.abs() * 1e-5 + 1e-30       # see the module docstring
        active = peak > (thresholds - margin)[None, :]
        if not bool(active.any()):
            return
        groups: dict = {}
        for b, (lab, geom) in enumerate(items):
            groups.setdefault(geom, []).append(b)
        for geom, members in groups.items():
            sel = torch.tensor(members, device=maps.device)
            pb, pc = active[sel].nonzero(as_tuple=True)
            if len(pb):
                self._pairs(name, maps, thresholds, sel[pb], pc, [items[b][0] for b in members], pb, geom)

    def _pairs(self, name, maps, thresholds, image_b, unit_c, labels, local_b, geom: Geometry) -> None:
        """Upsample, threshold and count the given (image, unit) pairs, all with one geometry.

        Only the pixels above threshold are looked up in the label maps (they are few: the top
        Q of each unit), so the cost is one pass over the upsampled maps.
        """
        K1 = self.K + 1
        ch, cw = geom.canvas
        wy0, wx0, wy1, wx1 = geom.window
        my0, mx0, my1, mx1 = geom.crop
        h, w = maps.shape[2:]
        step = max(1, PAIR_PIXELS // max(1, ch * cw))
        dev = maps.device
        ann = torch.from_numpy(np.stack([l.annotated for l in labels]).astype(np.int64)).to(dev)   # G x categories
        k_max = max(len(l.maps) for l in labels)
        lab = None
        if k_max:
            lab = torch.zeros((len(labels), k_max, (my1 - my0) * (mx1 - mx0)), dtype=torch.int64, device=dev)
            for j, l in enumerate(labels):
                for k, m in enumerate(l.maps):
                    lab[j, k] = torch.from_numpy(np.ascontiguousarray(m[my0:my1, mx0:mx1]).reshape(-1)).to(dev)
        scalars = [[s for s in l.scalars if s > 0] for l in labels]
        inter = torch.zeros(self.inter[name].shape[0] * K1, dtype=torch.int64, device=dev)
        act = torch.zeros(self.act[name].shape, dtype=torch.int64, device=dev)
        for a in range(0, len(unit_c), step):
            b_idx, c_idx, l_idx = image_b[a:a + step], unit_c[a:a + step], local_b[a:a + step]
            up = maps[b_idx, c_idx]
            if (h, w) != (ch, cw):                       # the same size: bilinear is the identity
                up = F.interpolate(up[:, None], size=(ch, cw), mode="bilinear", align_corners=False)[:, 0]
            on = up[:, wy0:wy1, wx0:wx1] > thresholds[c_idx][:, None, None]
            pair, pixel = on.reshape(len(c_idx), -1).nonzero(as_tuple=True)
            cnt = torch.bincount(pair, minlength=len(c_idx))
            act.index_add_(0, c_idx, cnt[:, None] * ann[l_idx])
            unit_of = c_idx[pair] * K1
            for k in range(k_max):
                labs = lab[l_idx[pair], k, pixel]
                keep = labs > 0
                inter += torch.bincount((unit_of + labs)[keep], minlength=inter.numel())
            for j in {int(v) for v in l_idx.tolist() if scalars[int(v)]}:
                rows = l_idx == j
                for s in scalars[j]:
                    inter.index_add_(0, c_idx[rows] * K1 + s, cnt[rows])
        self.inter[name] += inter.view(-1, K1).cpu().numpy()
        self.act[name] += act.cpu().numpy()

    # ------------------------------------------------------------------ scores
    def iou(self, name: str) -> np.ndarray:
        """C x (K + 1) IoU (column 0 is 0): I / (A[category] + L - I); 0 where nothing was seen."""
        inter = self.inter[name].astype(np.float64)
        act = self.act[name][:, np.maximum(self.concept_category, 0)].astype(np.float64)
        union = act + self.label[None, :] - inter
        out = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        out[:, 0] = 0.0
        return out
