"""Helpers for the dissection tests: a network whose units detect colours, and concept folders.

``ColourNet``'s unit k is ``relu(w_k . rgb + b_k + e_k(y, x))`` of each pixel, average-pooled
2 x 2: it fires on one colour.  ``e`` is a fixed map of tiny (1e-3) offsets: without it the
8-bit pixels give tied activations, and a tie that lands exactly on a threshold is decided by
float rounding alone (the product upsamples in float32 like PyTorch and NetDissect-Lite, the
reference in float64), which no definition of the method can settle.  :func:`make_concepts` draws images with coloured rectangles and discs on
a noisy gray ground and writes the label maps that say where each colour and each shape is.
"""
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from cnnvis_gui.core import InputSpec

#: (id, name, category, BGR colour) of the generated concepts; shapes get their own ids
COLOURS = [(1, "red", "color", (30, 30, 220)), (2, "green", "color", (40, 200, 40)),
           (3, "blue", "color", (220, 60, 30)), (4, "yellow", "color", (30, 220, 230))]
SHAPES = [(5, "square", "shape"), (6, "disk", "shape")]
SPEC = InputSpec(channels=3, height=32, width=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                 channel_order="RGB", scale=1 / 255)


class ColourNet(nn.Module):
    """RGB 32 x 32 -> 5 units on a 16 x 16 map: unit k detects colour k (unit 4: brightness)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 1)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(5, 2)
        w = torch.tensor([[1.0, -1.5, -0.5], [-1.5, 1.0, -0.5], [-0.5, -0.5, 1.0], [1.0, 1.0, -1.5],
                          [0.4, 0.4, 0.4]])
        with torch.no_grad():
            self.conv.weight.copy_(w[:, :, None, None])
            self.conv.bias.copy_(torch.tensor([-0.3, -0.3, -0.3, -1.2, -0.3]))
            self.head.weight.fill_(0.1)
            self.head.bias.zero_()
        g = torch.Generator().manual_seed(7)
        self.register_buffer("jitter", torch.randn((1, 5, 32, 32), generator=g) * 1e-3)

    def forward(self, x):
        f = self.pool(self.relu(self.conv(x) + self.jitter))
        return self.head(f.mean((2, 3)))


def colour_net() -> ColourNet:
    return ColourNet().eval()


def draw(rng, size=(32, 32)):
    """One image (BGR uint8) and its colour and shape label maps (uint8, 0 = none)."""
    h, w = size
    img = np.clip(rng.normal(128, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    colour = np.zeros((h, w), np.uint8)
    shape = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cid, _, _, bgr = COLOURS[int(rng.integers(len(COLOURS)))]
        m = np.zeros((h, w), np.uint8)
        if rng.random() < 0.5:
            y0, x0 = int(rng.integers(0, h - 6)), int(rng.integers(0, w - 6))
            cv2.rectangle(m, (x0, y0), (x0 + int(rng.integers(4, 14)), y0 + int(rng.integers(4, 14))), 1, -1)
            sid = 5
        else:
            cv2.circle(m, (int(rng.integers(4, w - 4)), int(rng.integers(4, h - 4))), int(rng.integers(3, 8)), 1, -1)
            sid = 6
        on = m > 0
        noise = rng.normal(0, 12, (int(on.sum()), 3))
        img[on] = np.clip(np.array(bgr)[None, :] + noise, 0, 255).astype(np.uint8)
        colour[on] = cid
        shape[on] = sid
    return img, colour, shape


def make_concepts(root: Path, n: int = 24, seed: int = 0, size=(32, 32), mask_size=None) -> Path:
    """A simple-format concept folder: images/, masks/ (colour or shape ids in one map), labels.csv.

    One label map per image can hold one concept per pixel: here a pixel's concept is its colour
    (category ``color``) except in every third image, where it is its shape (category ``shape``).
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, colour, shape = draw(rng, size)
        lab = shape if i % 3 == 2 else colour
        if mask_size is not None:
            lab = cv2.resize(lab, (mask_size[1], mask_size[0]), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(root / "images" / f"im{i:03d}.png"), img)
        cv2.imwrite(str(root / "masks" / f"im{i:03d}.png"), lab)
    rows = ["id,name,category"] + [f"{c[0]},{c[1]},{c[2]}" for c in COLOURS] + [f"{s[0]},{s[1]},{s[2]}" for s in SHAPES]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def broden_mask(labels: np.ndarray) -> np.ndarray:
    """A Broden mask PNG's pixels (BGR uint8) for label numbers: R + 256 * G."""
    out = np.zeros(labels.shape + (3,), np.uint8)
    out[..., 2] = labels % 256
    out[..., 1] = labels // 256
    return out


def write_broden(root: Path, images: list, labels: list, categories: list, shift: dict | None = None) -> Path:
    """A Broden-format folder.

    ``images``: [(name, BGR image, {category: [label map | int label, ...]})]; ``labels``: [(number,
    name, category)]; ``shift`` adds to the numbers (to use the G channel).  Each category cell lists
    its mask files (written here) and whole-image labels; coverage makes each label's category primary.
    """
    shift = shift or {}
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = ["image,split,ih,iw,sh,sw," + ",".join(categories)]
    for name, img, cats in images:
        cv2.imwrite(str(root / "images" / f"{name}.png"), img)
        cells, sh, sw = [], img.shape[0], img.shape[1]
        for cat in categories:
            items = []
            for j, item in enumerate(cats.get(cat, [])):
                if isinstance(item, (int, np.integer)):
                    items.append(str(int(item) + shift.get(int(item), 0)))
                else:
                    lab = item.astype(np.int64)
                    lab = np.vectorize(lambda v: v + shift.get(int(v), 0) if v else 0)(lab) if shift else lab
                    fn = f"{name}_{cat}_{j}.png"
                    cv2.imwrite(str(root / "images" / fn), broden_mask(lab))
                    sh, sw = lab.shape
                    items.append(fn)
            cells.append(";".join(items))
        rows.append(f"{name}.png,train,{img.shape[0]},{img.shape[1]},{sh},{sw}," + ",".join(cells))
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    lab_rows = ["number,name,category,frequency,coverage,syns", "0,-,-,0,0.0,"]
    for num, name, cat in labels:
        lab_rows.append(f"{num + shift.get(num, 0)},{name},{cat}(1),1,1.0,")
    (root / "label.csv").write_text("\n".join(lab_rows) + "\n")
    cat_rows = ["name,first,last,count,frequency"] + [f"{c},1,1,1,1" for c in categories]
    (root / "category.csv").write_text("\n".join(cat_rows) + "\n")
    for cat in categories:
        mine = [(n, nm) for n, nm, c in labels if c == cat]
        c_rows = ["code,number,name,frequency,coverage,syns"] + [
            f"{i},{n + shift.get(n, 0)},{nm},1,1.0," for i, (n, nm) in enumerate(mine, 1)]
        (root / f"c_{cat}.csv").write_text("\n".join(c_rows) + "\n")
    return root
