"""Helpers for the atlas tests: a tiny fixed-seed CNN and generated image folders."""
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from cnnvis_gui.core import InputSpec


class TinyNet(nn.Module):
    """RGB 32 x 32 -> 5 classes; conv/relu/pool with a functional ReLU in the head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def tiny_model(seed: int = 0) -> nn.Module:
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        m = TinyNet().eval()
    return m


TINY_SPEC = InputSpec(channels=3, height=32, width=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def make_images(folder: Path, n: int = 40, seed: int = 0, size=(40, 36), bad: bool = True) -> list:
    """n generated PNG images in two class subfolders (+ a corrupt .png and a .txt when ``bad``)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        h, w = size
        img = np.full((h, w, 3), rng.integers(0, 255, 3), np.uint8)
        for _ in range(3):
            c = tuple(int(v) for v in rng.integers(0, 255, 3))
            x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
            if rng.random() < 0.5:
                cv2.rectangle(img, (x0, y0), (x0 + int(rng.integers(3, 12)), y0 + int(rng.integers(3, 12))), c, -1)
            else:
                cv2.circle(img, (x0 + 4, y0 + 4), int(rng.integers(2, 8)), c, -1)
        img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        p = sub / f"img{i:03d}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    if bad:
        (folder / "b" / "broken.png").write_bytes(b"not an image at all")
        (folder / "notes.txt").write_text("hello")
    return paths


def run_scan(scan):
    """Run a TopKScan to the end (ignoring progress) and return its result."""
    for _ in scan.run():
        pass
    return scan.result
