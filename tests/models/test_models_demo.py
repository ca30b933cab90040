"""The shipped demo models load, classify their own sample images, and the training script runs."""
from __future__ import annotations

import re

import cv2
import pytest
import torch

from cnnvis_gui.models import DEMO_NAMES, ModelLoadError, assets_dir, demo, demo_samples
from cnnvis_gui.models import train_demo
from cnnvis_gui.models.demo_nets import ShapesNet

from ..waits import CHILD_S


@pytest.mark.parametrize("name", DEMO_NAMES)
def test_shipped_checkpoint_classifies_its_samples(name):
    ckpt = assets_dir() / "models" / f"{name}.pth"
    assert ckpt.is_file() and ckpt.stat().st_size < 2 * 1024 * 1024
    lm = demo(name)
    assert not lm.model.training
    assert lm.labels and len(lm.labels) == 10 and lm.output_shape == (10,)
    assert not any("guess" in n for n in lm.notes), lm.notes      # everything came from the metadata
    samples = demo_samples(name)
    assert 8 <= len(samples) <= 12
    for path in samples:
        idx, label = re.match(r"(\d+)_(.+)\.png$", path.name).groups()
        assert lm.labels[int(idx)] == label
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        with torch.no_grad():
            pred = int(lm.model(lm.spec.to_tensor(img)).argmax(1))
        assert lm.labels[pred] == label, f"{path.name} classified as {lm.labels[pred]}"


def test_demo_specs():
    s, g = demo("shapes"), demo("glyphs")
    assert s.spec.shape == (3, 64, 64) and s.spec.channel_order == "RGB"
    assert g.spec.shape == (1, 28, 28)
    assert s.labels[3] == "star"
    with pytest.raises(ModelLoadError, match="shapes, glyphs"):
        demo("cats")


def test_shapes_net_uses_inplace_and_functional_relu():
    import inspect
    net = ShapesNet()
    assert any(isinstance(m, torch.nn.ReLU) and m.inplace for m in net.modules())
    assert "F.relu" in inspect.getsource(ShapesNet.forward)


@pytest.mark.parametrize("name", DEMO_NAMES)
def test_training_script_quick_run(tmp_path, name):
    assert train_demo.main([name, "--quick", "--out", str(tmp_path)]) == 0
    ckpt = tmp_path / "models" / f"{name}.pth"
    assert ckpt.is_file()
    from cnnvis_gui.models import load
    lm = load(ckpt)
    assert lm.output_shape == (10,)
    assert len(list((tmp_path / "samples" / name).glob("*.png"))) == 10
    text = (tmp_path / "models" / "TRAINING.md").read_text()
    assert f"## {name} (quick run)" in text and "held-out accuracy" in text


def test_generators_are_deterministic():
    a, _ = train_demo.make_dataset("shapes", 4, seed=7)
    b, _ = train_demo.make_dataset("shapes", 4, seed=7)
    assert all((x == y).all() for x, y in zip(a, b))
    g, _ = train_demo.make_dataset("glyphs", 3, seed=1)
    assert g[0].shape == (28, 28) and a[0].shape == (64, 64, 3)


def test_models_package_is_qt_free():
    import subprocess
    import sys
    code = ("import sys, cnnvis_gui.models, cnnvis_gui.models.train_demo; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PyQt5', 'pyqtgraph', 'PySide2', 'PySide6')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=CHILD_S)
    assert r.returncode == 0, r.stdout + r.stderr
