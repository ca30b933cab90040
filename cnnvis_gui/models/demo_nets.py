"""The two small CNNs shipped as demo models (see ``train_demo.py``).

Both are VGG-style stacks of conv / batch-norm / ReLU / max-pool blocks with a small
classifier.  ``ShapesNet`` mixes ``nn.ReLU(inplace=True)`` modules with one
functional ``F.relu`` in ``forward`` on purpose: the visualizer must handle both
(module hooks never see a functional ReLU).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["ShapesNet", "GlyphsNet", "SHAPES_LABELS", "GLYPHS_LABELS"]

SHAPES_LABELS = ["circle", "square", "triangle", "star", "cross", "ring",
                 "hstripes", "vstripes", "checkerboard", "crescent"]
GLYPHS_LABELS = [str(d) for d in range(10)]


def _block(cin: int, cout: int) -> list:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ShapesNet(nn.Module):
    """RGB 64 x 64 -> 10 shape classes.

    features: 4 blocks (16, 32, 64, 64 channels), each conv-BN-ReLU then 2x2 max-pool,
    64 -> 4 pixels; classifier: global average pool, Linear(64, 64), functional ReLU,
    Linear(64, num_classes).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            *_block(in_channels, 16), nn.MaxPool2d(2),     # 32
            *_block(16, 32), nn.MaxPool2d(2),              # 16
            *_block(32, 64), nn.MaxPool2d(2),              # 8
            *_block(64, 64), nn.MaxPool2d(2),              # 4
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        x = F.relu(self.fc1(x))          # functional ReLU on purpose (see module docstring)
        return self.fc2(x)


class GlyphsNet(nn.Module):
    """Grayscale 28 x 28 -> digits 0-9 (MNIST-like).

    features: conv-BN-ReLU blocks of 16, 32, 64 channels with 2x2 max-pools (28 -> 14 -> 7 -> 3);
    classifier: Flatten, Linear(64*3*3, 64), ReLU, Linear(64, num_classes).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            *_block(in_channels, 16), nn.MaxPool2d(2),     # 14
            *_block(16, 32), nn.MaxPool2d(2),              # 7
            *_block(32, 64), nn.MaxPool2d(2),              # 3
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 3 * 3, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
