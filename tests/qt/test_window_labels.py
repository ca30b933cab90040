"""The predictions pane names classes from a labels file the way the file numbers them."""
from __future__ import annotations

import torch

from cnnvis_gui.models import load_labels

from ..waits import idle
from .conftest import TinyNet, loaded
from .test_window_drawn import shown_predictions


def test_a_blank_line_in_the_labels_file_does_not_shift_the_names(qtbot, window, tmp_path):
    p = tmp_path / "classes.txt"
    p.write_text("cat\n\ndog\nbird\n")                 # class 1 has no name
    net = TinyNet()
    with torch.no_grad():
        net.fc.bias.copy_(torch.tensor([0.0, 0.0, 20.0, 0.0]))   # class 2 wins on every input
    lm = loaded(net)
    lm.labels = load_labels(p)
    window.load_model(lm)
    idle(qtbot, window)
    rows = shown_predictions(window)
    assert rows[0][0] == "dog" and rows[0][1] > 99, rows
    assert "cat" in window.predictions.text.text() and "bird" in window.predictions.text.text()
