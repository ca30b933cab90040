import os

# Qt must never need a display in tests.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")
# The window builds the demo models' atlas at first start; tests that want it turn it on.
os.environ.setdefault("CNNVIS_DEMO_ATLAS", "0")

import pytest
import torch

# Two cores: keep torch from oversubscribing when pytest-qt threads run too.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
