"""Fixtures for the Qt tests: isolated settings, a tiny model, a ready main window."""
from __future__ import annotations

import types

import numpy as np
import pytest
from torch import nn

from cnnvis_gui.core import InputSpec

from ..waits import idle, signal

pytest.importorskip("pytestqt")


class TinyNet(nn.Module):
    """3x32x32 -> 4 classes: conv(8) relu pool conv(12) relu pool, linear."""

    def __init__(self, fail=False):
        super().__init__()
        self.fail = fail
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        if self.fail:
            raise RuntimeError("boom: this model refuses the input")
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(x.flatten(1))


def loaded(model=None, name="tiny"):
    model = (model or TinyNet()).eval()
    return types.SimpleNamespace(model=model, spec=InputSpec(3, 32, 32), labels=["a", "b", "c", "d"],
                                 name=name, notes=[])


class StillSource:
    """A stand-in source: .read() gives the same frame object until .next()/.prev()."""

    description = "test frames"

    def __init__(self, n=3):
        rng = np.random.default_rng(0)
        self.frames = [rng.integers(0, 255, (40, 48, 3), dtype=np.uint8) for _ in range(n)]
        self.index = 0
        self.count = n
        self.status = "ok"
        self.closed = False
        self.current_path = None

    def read(self):
        return self.frames[self.index]

    def next(self):
        self.index = (self.index + 1) % self.count

    def prev(self):
        self.index = (self.index - 1) % self.count

    def close(self):
        self.closed = True


@pytest.fixture(autouse=True)
def _patient_close(monkeypatch):
    """A window's close gives up on a step still running after STOP_TIMEOUT_MS (10 s), which a normal
    step can take on a loaded machine: tests wait with the suite's one bound instead."""
    from cnnvis_gui.qt.window import MainWindow

    from ..waits import WAIT_MS
    monkeypatch.setattr(MainWindow, "STOP_TIMEOUT_MS", WAIT_MS)


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_GUI_SETTINGS", str(tmp_path / "settings.ini"))


@pytest.fixture
def window(qtbot):
    from cnnvis_gui.qt.window import MainWindow
    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    with signal(qtbot, win.modelChanged):
        win.load_model(loaded(), layer="conv2")     # the tests start at the last conv (the first view is relu2)
    src = StillSource()
    win.set_source(src)
    win.test_source = src
    idle(qtbot, win)        # the first frame drawn, and a pending re-tile (the grid follows the view) done
    yield win
    win.close()
