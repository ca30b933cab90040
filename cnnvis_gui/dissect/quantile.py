"""Per-unit thresholds: the (1 - Q) quantile of every activation of a unit, exact, across processes.

Network dissection (Bau et al. 2017) thresholds unit k at T_k, the (1 - Q) quantile of all its
activations over every image and position (Q = 0.005).  Here T_k is exactly what
``np.quantile(values, 1 - Q)`` (linear interpolation) returns for those values, however the
images were split between processes:

**Exact: the top tail** (:class:`TopTail`).  ``np.quantile`` with ``method="linear"`` reads two
order statistics of the n sorted values, at ``floor((n - 1) q)`` and the one after, and
interpolates between them.  Both lie among the ``m = n - floor((n - 1) q)`` largest values
(about Q n + 1 of them), so a unit needs only its top m values.  Each process (torchrun rank,
shard) keeps the top m of its own values, with m computed for the whole listing (an upper bound
on n: m grows with n).  The merge takes the union of the parts' tails and keeps its top m.

*Why the merge is exact*: every value among the m largest of all n values is among the m largest
of its own part (a part has no more values above it than the whole has), so the union of the
parts' tails contains the global top m with their multiplicities, and sorting that union gives
the global top m in order.  Ties and duplicates do not matter: only values are compared.  The
two order statistics, n (a sum of the parts' counts) and q are then those of one process, and
:func:`quantile_from_tail` reproduces ``np.quantile``'s arithmetic on them to the last bit (the
test suite checks it against ``np.quantile`` itself).  NaN activations count as ``-inf``.

**Streaming, past the memory budget** (:class:`LogSketch`).  When a layer's activations do not
fit the budget (see :mod:`cnnvis_gui.dissect.store`), every unit keeps a histogram of its values
in logarithmic buckets (DDSketch, Masson, Rim & Lee, VLDB 2019): bucket k holds the values of
magnitude in (gamma^(k-1), gamma^k] with gamma = (1 + a) / (1 - a), and stands for 2 gamma^k /
(gamma + 1), which is within relative error ``a`` of every value in it.  The two order
statistics are read from the cumulative counts, so each is within a relative ``a`` (1 %) of the
exact one, and so is the interpolated threshold: ``|T~ - T| <= a * max(|x_lo|, |x_hi|)``, for
magnitudes in [2^-40, 2^40] (smaller ones count as 0, larger ones as 2^40).  Counts add, so the
sketch merges exactly too: ranks and shards give the threshold one process gives.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["quantile_position", "tail_size", "quantile_from_tail", "TopTail", "LogSketch", "SKETCH_ACCURACY",
           "describe_method"]

#: the streaming quantile's relative accuracy (DDSketch's alpha)
SKETCH_ACCURACY = 0.01
_SKETCH_RANGE = 40            # magnitudes 2^-40 .. 2^40


def quantile_position(n: int, q: float) -> tuple:
    """(index, next index, gamma) ``np.quantile(values, q)`` interpolates between, for ``n`` values.

    NumPy's ``linear`` method: the virtual index ``(n - 1) * q`` in float64, its floor, the
    next index (both the last one when the virtual index reaches it) and the fraction.
    """
    vi = float((n - 1) * np.float64(q))
    if vi >= n - 1:
        return n - 1, n - 1, vi - math.floor(vi)
    if vi < 0:
        return 0, 0, vi - math.floor(vi)
    lo = math.floor(vi)
    return lo, lo + 1, vi - lo


def tail_size(n: int, q: float) -> int:
    """How many of the largest values of ``n`` decide ``np.quantile(values, q)``: ``n - floor((n - 1) q)``.

    It never shrinks as n grows, so the size for an upper bound of n is enough for any n below it.
    """
    if n <= 0:
        return 0
    lo, _, _ = quantile_position(n, q)
    return n - lo


def quantile_from_tail(tail: np.ndarray, n: int, q: float) -> np.ndarray:
    """``np.quantile(values, q)`` per row, from each row's largest values sorted descending.

    ``tail`` is C x m (m >= :func:`tail_size` of n) in the values' dtype; NumPy's ``_lerp`` is
    reproduced operation for operation (a Python-float ``q`` keeps the result in that dtype).
    """
    lo, hi, g = quantile_position(n, q)
    need = n - lo
    if tail.shape[1] < need:
        raise ValueError(f"the tail holds {tail.shape[1]} values, the quantile needs the top {need} of {n}")
    a = tail[:, n - 1 - lo]                      # ascending index lo = descending rank n - 1 - lo
    b = tail[:, n - 1 - hi]
    diff = b - a
    if g >= 0.5:
        return b - diff * (1 - g)
    return a + diff * g


class TopTail:
    """The exact quantile's summary of one layer: every unit's ``m`` largest values and the count ``n``.

    ``values`` is C x m, descending, padded with ``-inf`` while fewer than m values were seen.
    """

    def __init__(self, values: np.ndarray, n: int):
        self.values = values
        self.n = int(n)

    @classmethod
    def empty(cls, units: int, m: int, dtype=np.float32) -> "TopTail":
        return cls(np.full((units, m), -np.inf, dtype), 0)

    @property
    def m(self) -> int:
        return int(self.values.shape[1])

    def add(self, block: torch.Tensor) -> None:
        """Take C x V more values (a torch tensor, any device) into the tail.

        Only values above each unit's current m-th largest can enter, so once the tail is full a
        block costs one comparison pass and a top-k over its few candidates.
        """
        if block.numel() == 0:
            return
        vals = torch.nan_to_num(block, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
        cur = torch.from_numpy(self.values).to(vals.device, vals.dtype)
        cutoff = cur[:, -1:]
        if bool(torch.isfinite(cutoff).all()):             # full: keep only the candidates
            above = vals > cutoff
            k = int(above.sum(1).max())
            if k == 0:
                self.n += int(block.shape[1])
                return
            vals = torch.where(above, vals, torch.full_like(vals, float("-inf")))
            vals = torch.topk(vals, min(k, vals.shape[1]), dim=1, largest=True, sorted=False).values
        both = torch.cat([cur, vals], 1)
        k = min(self.m, both.shape[1])
        top = torch.topk(both, k, dim=1, largest=True, sorted=True).values
        out = np.full(self.values.shape, -np.inf, self.values.dtype)
        out[:, :k] = top.cpu().numpy()
        self.values = out
        self.n += int(block.shape[1])

    @classmethod
    def merge(cls, tails) -> "TopTail":
        """The tail of the union of the parts' values (exact; see the module docstring)."""
        tails = [t for t in tails if t is not None]
        m = max(t.m for t in tails)
        both = np.concatenate([t.values for t in tails], 1)
        top = -np.sort(-both, axis=1, kind="stable")[:, :m]
        return cls(np.ascontiguousarray(top), sum(t.n for t in tails))

    def thresholds(self, q: float) -> np.ndarray:
        return quantile_from_tail(self.values, self.n, q)


class LogSketch:
    """The streaming quantile of one layer: per unit, counts of its values in log buckets (DDSketch)."""

    def __init__(self, counts: np.ndarray, accuracy: float = SKETCH_ACCURACY):
        self.counts = counts
        self.accuracy = float(accuracy)

    @staticmethod
    def buckets_per_sign(accuracy: float = SKETCH_ACCURACY) -> int:
        gamma = (1 + accuracy) / (1 - accuracy)
        return int(math.ceil(2 * _SKETCH_RANGE * math.log(2) / math.log(gamma))) + 1

    @classmethod
    def nbytes(cls, units: int, accuracy: float = SKETCH_ACCURACY) -> int:
        return units * (2 * cls.buckets_per_sign(accuracy) + 1) * 8

    @classmethod
    def empty(cls, units: int, accuracy: float = SKETCH_ACCURACY) -> "LogSketch":
        return cls(np.zeros((units, 2 * cls.buckets_per_sign(accuracy) + 1), np.int64), accuracy)

    @property
    def n(self) -> int:
        return int(self.counts[0].sum()) if len(self.counts) else 0

    def _keys(self, v: torch.Tensor) -> torch.Tensor:
        """Bucket index of every value: negatives below the zero bucket, positives above, ascending."""
        b = self.buckets_per_sign(self.accuracy)
        gamma = (1 + self.accuracy) / (1 - self.accuracy)
        v = torch.nan_to_num(v.double(), nan=-math.inf)
        mag = v.abs().clamp(max=2.0 ** _SKETCH_RANGE)
        k = torch.ceil(torch.log(mag.clamp(min=2.0 ** -_SKETCH_RANGE)) / math.log(gamma))
        k = (k + math.ceil(_SKETCH_RANGE * math.log(2) / math.log(gamma))).clamp(0, b - 1).long()
        zero = mag < 2.0 ** -_SKETCH_RANGE
        return torch.where(zero, torch.full_like(k, b), torch.where(v > 0, b + 1 + k, b - 1 - k))

    def add(self, block: torch.Tensor) -> None:
        """Count C x V more values."""
        if block.numel() == 0:
            return
        C, V = block.shape
        width = self.counts.shape[1]
        flat = self._keys(block) + torch.arange(C, device=block.device)[:, None] * width
        self.counts += torch.bincount(flat.reshape(-1), minlength=C * width).view(C, width).cpu().numpy()

    def _value(self, index: np.ndarray) -> np.ndarray:
        b = self.buckets_per_sign(self.accuracy)
        gamma = (1 + self.accuracy) / (1 - self.accuracy)
        off = math.ceil(_SKETCH_RANGE * math.log(2) / math.log(gamma))
        k = np.where(index > b, index - b - 1, b - 1 - index) - off
        rep = 2 * gamma ** k.astype(np.float64) / (gamma + 1)
        return np.where(index == b, 0.0, np.where(index > b, rep, -rep))

    @classmethod
    def merge(cls, sketches) -> "LogSketch":
        sketches = [s for s in sketches if s is not None]
        return cls(sum(s.counts for s in sketches), sketches[0].accuracy)

    def thresholds(self, q: float, dtype=np.float32) -> np.ndarray:
        """The estimated quantile per unit (see the module docstring for the bound)."""
        n = self.n
        lo, hi, g = quantile_position(n, q)
        cum = np.cumsum(self.counts, axis=1)
        a = self._value(np.argmax(cum > lo, axis=1)).astype(dtype)
        b = self._value(np.argmax(cum > hi, axis=1)).astype(dtype)
        diff = b - a
        return (b - diff * (1 - g)) if g >= 0.5 else (a + diff * g)


def describe_method(method: str) -> str:
    """The words for how the thresholds were found (the JSON's ``quantile_method`` and the summary)."""
    if method == "exact":
        return "exact (np.quantile of every activation, linear)"
    return (f"streaming (log-bucket sketch: each threshold within {SKETCH_ACCURACY:.0%} of the exact one, relative; "
            f"the activations did not fit the memory budget)")
