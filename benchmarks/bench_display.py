"""Time the display helpers: ActivationMosaic for typical layer shapes, saliency filters, overlay.

Run: ``python benchmarks/bench_display.py``. Prints median milliseconds of 50 runs.
Not part of the test suite.
"""
from __future__ import annotations

import os
import time

import numpy as np

from cnnvis_gui.core.display import ActivationMosaic, overlay
from cnnvis_gui.core.saliency_display import saliency_to_image

REPEATS = 50


def median_ms(fn, repeats: int = REPEATS) -> float:
    fn()                                  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def main() -> None:
    rng = np.random.default_rng(0)
    print("load average: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    print(f"{'what':<44} {'shape':<16} {'image':>11} {'ms (median of %d)' % REPEATS:>20}")
    cases = [
        ((512, 7, 7), {}),
        ((256, 56, 56), {}),
        ((256, 56, 56), dict(normalize="unit", gain=2.0, gamma=0.5, highlight=3, frozen=7)),
        ((64, 112, 112), {}),
        ((64, 8, 32), {}),
        ((1000,), dict(min_tile=4)),
        ((512, 4, 4), dict(min_tile=8)),
    ]
    for shape, kw in cases:
        acts = rng.standard_normal(shape).astype(np.float32)
        mosaic = ActivationMosaic(acts, **kw)
        ms = median_ms(lambda: ActivationMosaic(acts, **kw))
        what = "ActivationMosaic " + (", ".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
        img = f"{mosaic.image.shape[1]}x{mosaic.image.shape[0]}"
        print(f"{what[:44]:<44} {'x'.join(map(str, shape)):<16} {img:>11} {ms:>20.2f}")
    # a saliency picture per clip: percentile (98th, the default), captum's mass, and the exact max (the
    # toolbox's, the floor: one pass for the max); the ratio is to the same filter's max in this run
    grad = rng.standard_normal((3, 224, 224)).astype(np.float32)
    for f in ("raw", "gray", "norm", "normblur"):
        floor = median_ms(lambda: saliency_to_image(grad, f, clip="max"))
        for clip in ("max", "percentile", "mass"):
            ms = floor if clip == "max" else median_ms(lambda: saliency_to_image(grad, f, clip=clip))
            print(f"{'saliency_to_image ' + f + ', ' + clip:<44} {'3x224x224':<16} {'224x224':>11} {ms:>20.2f}"
                  f"   {ms / floor:5.2f}x max")
    rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    cam = rng.random((14, 14)).astype(np.float32)
    ms = median_ms(lambda: overlay(rgb, cam, 0.5))
    print(f"{'overlay (14x14 cam resized)':<44} {'480x640x3':<16} {'640x480':>11} {ms:>20.2f}")


if __name__ == "__main__":
    main()
