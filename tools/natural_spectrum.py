"""Measure the mean magnitude spectrum of natural photographs: the fixed magnitude of MACO.

Fel et al. 2023 ("Unlocking Feature Visualization for Deeper Networks with MAgnitude
Constrained Optimization", NeurIPS) keep the Fourier magnitude of the optimized image fixed
to that of natural images and optimize only its phase.  This script measures that magnitude
from a folder of colour photographs and writes it as a small table,
``cnnvis_gui/optvis/natural_spectrum.json``, read by :mod:`cnnvis_gui.optvis.spectrum`:

* every photo goes to the decorrelated colour space of :mod:`cnnvis_gui.optvis.colour`
  (``z = C^-1 rgb``), at full size and at 1/2 and 1/4 (area downsampling);
* square crops of 64, 128 and 256 pixels (stride half a crop) have their per-channel mean
  removed, are divided by their standard deviation (so every crop counts the same), windowed
  (Hann) and transformed (``rfft2``, orthonormal);
* each coefficient's magnitude is averaged into a bin of (radial frequency in cycles per
  pixel, log-spaced, and orientation in [0, pi)), per colour channel.

Frequencies in cycles per pixel make the table independent of the image size: natural
images are close to scale invariant (their magnitude falls as ~1/f), and the table is read
at any ``H x W`` by interpolating in (log f, orientation).

    python tools/natural_spectrum.py PHOTO_FOLDER [--out cnnvis_gui/optvis/natural_spectrum.json]

The shipped table was measured from scikit-image's bundled colour photographs (astronaut,
chelsea, coffee, rocket, motorcycle_left, motorcycle_right: ``realnet.sh``'s REAL_PHOTOS).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import cv2
import numpy as np
import torch

from cnnvis_gui.optvis.colour import colour_matrix
from cnnvis_gui.optvis.spectrum import ANGLE_BINS, RADIAL_BINS, F_MIN, F_MAX

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png")
CROPS = (64, 128, 256)


def _bins(size):
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    theta = np.mod(np.arctan2(fy, fx), math.pi)
    with np.errstate(divide="ignore"):
        r = np.floor((np.log(f) - math.log(F_MIN)) / (math.log(F_MAX) - math.log(F_MIN)) * (RADIAL_BINS - 1) + 0.5)
    a = np.floor(theta / math.pi * ANGLE_BINS).astype(int) % ANGLE_BINS
    ok = (f > 0) & (r >= 0) & (r < RADIAL_BINS)
    return np.where(ok, r, -1).astype(int), a, ok


def measure(paths) -> np.ndarray:
    inv = np.linalg.inv(colour_matrix(dtype=torch.float64).numpy())
    total = np.zeros((3, RADIAL_BINS, ANGLE_BINS))
    count = np.zeros((3, RADIAL_BINS, ANGLE_BINS))
    for p in paths:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot read {p}")
        rgb = bgr[..., ::-1].astype(np.float64) / 255.0
        for k in (1, 2, 4):
            img = rgb if k == 1 else cv2.resize(rgb, (rgb.shape[1] // k, rgb.shape[0] // k),
                                                interpolation=cv2.INTER_AREA)
            z = np.einsum("dc,hwc->dhw", inv, img)
            for size in CROPS:
                if min(z.shape[1:]) < size:
                    continue
                win = np.outer(np.hanning(size), np.hanning(size))
                r, a, ok = _bins(size)
                for y in range(0, z.shape[1] - size + 1, size // 2):
                    for x in range(0, z.shape[2] - size + 1, size // 2):
                        c = z[:, y:y + size, x:x + size]
                        c = c - c.mean(axis=(1, 2), keepdims=True)
                        s = c.std()
                        if s < 1e-3:
                            continue
                        mag = np.abs(np.fft.rfft2(c / s * win, norm="ortho"))
                        for ch in range(3):
                            np.add.at(total[ch], (r[ok], a[ok]), mag[ch][ok])
                            np.add.at(count[ch], (r[ok], a[ok]), 1)
    ring = count.sum(axis=2)
    if (ring == 0).any():
        raise SystemExit("some radial frequency bins got no sample: give larger photos")
    # the lowest frequencies have few coefficients: an orientation bin without one takes its ring's mean
    mean = total / np.maximum(count, 1)
    ring_mean = total.sum(axis=2, keepdims=True) / ring[..., None]
    print(f"{int((count == 0).sum())} of {count.size} bins had no coefficient (low frequencies): ring means used")
    return np.where(count > 0, mean, ring_mean)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "cnnvis_gui" / "optvis" /
                                         "natural_spectrum.json"))
    args = ap.parse_args(argv)
    paths = [Path(args.folder) / n for n in PHOTOS]
    table = measure(paths)
    doc = {"about": "mean magnitude of the orthonormal rfft2 of standardized, Hann-windowed crops of natural colour "
                    "photos in Lucid's decorrelated colour space; tools/natural_spectrum.py",
           "photos": list(PHOTOS), "crops": list(CROPS), "f_min": F_MIN, "f_max": F_MAX,
           "radial_bins": RADIAL_BINS, "angle_bins": ANGLE_BINS,
           "log_magnitude": np.round(np.log(table), 4).tolist()}
    Path(args.out).write_text(json.dumps(doc) + "\n")
    print(f"wrote {args.out}: {table.shape}, luminance magnitude from {table[0, 0].mean():.3g} (f={F_MIN:.4g}) "
          f"to {table[0, -1].mean():.3g} (f={F_MAX})")


if __name__ == "__main__":
    main()
