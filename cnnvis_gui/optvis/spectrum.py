"""Frequency grids and spectrum scales of the Fourier parameterizations.

* :func:`frequencies` -- the radial frequency (cycles per pixel) of every coefficient of an
  ``rfft2`` of an ``H x W`` image;
* :func:`power_law_scale` -- Lucid's ``1 / max(f, 1 / max(H, W)) ** decay`` scale, which makes
  equal steps on every coefficient give an image whose spectrum falls like a natural one's;
* :func:`natural_magnitude` -- the mean magnitude spectrum of natural photographs (the fixed
  magnitude of MACO, Fel et al. 2023), read from ``natural_spectrum.json`` at any ``H x W``.
  The table (made by ``tools/natural_spectrum.py``) holds log magnitudes in bins of
  log-spaced radial frequency from ``F_MIN`` to ``F_MAX`` cycles per pixel and of orientation
  in [0, pi), per decorrelated colour channel (luminance, two opponent axes); it is
  interpolated linearly in (log f, orientation), orientation wrapping around, and
  extrapolated on the power law of its two end bins outside [F_MIN, F_MAX].
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import torch

__all__ = ["F_MIN", "F_MAX", "RADIAL_BINS", "ANGLE_BINS", "frequencies", "orientations", "power_law_scale",
           "natural_magnitude", "natural_table"]

F_MIN, F_MAX = 1.0 / 256.0, 0.5
RADIAL_BINS, ANGLE_BINS = 16, 16
TABLE = Path(__file__).with_name("natural_spectrum.json")


def frequencies(h: int, w: int) -> torch.Tensor:
    """H x (W // 2 + 1) radial frequencies ``sqrt(fy^2 + fx^2)`` of ``torch.fft.rfft2``'s coefficients."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return torch.sqrt(fy * fy + fx * fx)


def orientations(h: int, w: int) -> torch.Tensor:
    """H x (W // 2 + 1) orientation of each coefficient's frequency vector, in [0, pi)."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return torch.remainder(torch.atan2(fy.expand(h, fx.shape[1]), fx.expand(h, fx.shape[1])), math.pi)


def power_law_scale(h: int, w: int, decay: float = 1.0) -> torch.Tensor:
    """Lucid's spectrum scale ``1 / max(f, 1 / max(H, W)) ** decay`` (float64, H x (W // 2 + 1))."""
    return 1.0 / torch.clamp(frequencies(h, w), min=1.0 / max(h, w)) ** decay


@lru_cache(maxsize=1)
def natural_table() -> torch.Tensor:
    """The measured log-magnitude table: 3 x RADIAL_BINS x ANGLE_BINS (float64)."""
    doc = json.loads(TABLE.read_text())
    t = torch.tensor(doc["log_magnitude"], dtype=torch.float64)
    if t.shape != (3, RADIAL_BINS, ANGLE_BINS) or doc["f_min"] != F_MIN or doc["f_max"] != F_MAX:
        raise RuntimeError(f"{TABLE.name} does not match this version of spectrum.py; rerun tools/natural_spectrum.py")
    return t


def natural_magnitude(h: int, w: int, channels: int = 3) -> torch.Tensor:
    """channels x H x (W // 2 + 1) magnitude spectrum of natural images (float64).

    For 3 channels the decorrelated luminance and opponent spectra; for any other count
    every channel gets the luminance spectrum.  The DC coefficient gets the magnitude of
    the lowest frequency ``1 / max(H, W)`` (as Lucid's scale does).
    """
    table = natural_table()
    f = torch.clamp(frequencies(h, w), min=1.0 / max(h, w))
    lo, hi = math.log(F_MIN), math.log(F_MAX)
    r = (torch.log(f) - lo) / (hi - lo) * (RADIAL_BINS - 1)            # fractional radial bin
    a = orientations(h, w) / math.pi * ANGLE_BINS - 0.5                 # fractional angle bin (centres at +0.5)
    r0 = torch.clamp(torch.floor(r), 0, RADIAL_BINS - 2).long()
    tr = r - r0                                                          # < 0 or > 1: power-law extrapolation
    a0 = torch.floor(a).long()
    ta = a - a0
    a0, a1 = a0 % ANGLE_BINS, (a0 + 1) % ANGLE_BINS

    def at(ri, ai):
        return table[:, ri, ai]

    low = at(r0, a0) * (1 - ta) + at(r0, a1) * ta
    high = at(r0 + 1, a0) * (1 - ta) + at(r0 + 1, a1) * ta
    logm = low * (1 - tr) + high * tr
    mag = torch.exp(logm)
    if channels != 3:
        mag = mag[:1].expand(channels, -1, -1).clone()
    return mag
