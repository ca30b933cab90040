"""The README's saliency figure: guided backprop of 'Egyptian cat' on the cat photo, max scale vs the default.

Needs the real pretrained MobileNetV2 and scikit-image's photos, offline::

    eval "$(../shared/tools/realnet.sh /tmp/realnet)"      # TORCH_HOME, CNNVIS_OFFLINE=1, REAL_PHOTOS
    python benchmarks/fig_saliency_display.py docs/images/saliency_cat.png

Prints, per picture, the share of pixels at least 16 levels away from the picture's zero colour (the
property ``tests/core/test_saliency_realnet.py`` checks) and writes the figure.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np

from cnnvis_gui.core import saliency, saliency_to_image
from cnnvis_gui.core.saliency_display import diverging_lut
from cnnvis_gui.models import load

ZOOM = 2
ZERO = {"raw": 128, "gray": diverging_lut()[128].astype(np.float32), "norm": 0, "normblur": 0}


def visible(img, f):
    return float((np.abs(img.astype(np.float32) - ZERO[f]).max(axis=-1) > 16).mean())


def panel(img, title, sub):
    big = cv2.resize(img, (img.shape[1] * ZOOM, img.shape[0] * ZOOM), interpolation=cv2.INTER_NEAREST)
    head = np.full((44, big.shape[1], 3), 255, np.uint8)
    cv2.putText(head, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.52, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(head, sub, (6, 37), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (90, 90, 90), 1, cv2.LINE_AA)
    return np.concatenate([head, big], axis=0)


def main(out: str) -> None:
    photos = Path(os.environ.get("REAL_PHOTOS", "/tmp/realnet/photos"))
    lm = load(arch="torchvision:mobilenet_v2", pretrained="IMAGENET1K_V1")
    model = lm.model.eval()
    frame = cv2.imread(str(photos / "chelsea.png"))
    x = lm.spec.to_tensor(frame)
    unit = lm.labels.index("Egyptian cat")
    g = saliency(model, x, "classifier.1", unit=unit, method="guided")[0].numpy()
    rgb = lm.spec.to_image(x)
    a = np.abs(g)
    print(f"guided backprop of 'Egyptian cat' (unit {unit}) on chelsea.png: max |g| = {a.max():.3g}, "
          f"98th percentile = {np.percentile(a, 98):.3g} ({a.max() / np.percentile(a, 98):.0f}x)")
    cells = [panel(rgb, "the photo (model input)", "MobileNetV2 IMAGENET1K_V1: 79% Egyptian cat")]
    for f, kw, title in (("raw", dict(clip="max"), "raw, max scale (before)"),
                         ("raw", {}, "raw, clip 98th pct (default)"),
                         ("gray", {}, "gray, signed: blue - / red +"),
                         ("normblur", dict(clip="max"), "normblur, max scale (before)"),
                         ("normblur", {}, "normblur, clip 98th pct (default)")):
        img = saliency_to_image(g, f, **kw)
        v = visible(img, f)
        print(f"{title:<40} visible {v:6.1%}")
        cells.append(panel(img, title, f"{v:.1%} of pixels visibly non-zero"))
    sep = np.full((cells[0].shape[0], 6, 3), 255, np.uint8)
    rows = [np.concatenate([cells[0], sep, cells[1], sep, cells[2]], axis=1),
            np.concatenate([cells[3], sep, cells[4], sep, cells[5]], axis=1)]
    fig = np.concatenate([rows[0], np.full((6, rows[0].shape[1], 3), 255, np.uint8), rows[1]], axis=0)
    cv2.imwrite(out, cv2.cvtColor(fig, cv2.COLOR_RGB2BGR))
    print(f"wrote {out} ({fig.shape[1]}x{fig.shape[0]})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/images/saliency_cat.png")
