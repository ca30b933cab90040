"""``cnnvis export`` / ``optimize`` faults: a model that raises on some images, memory with --units all,
argument ranges checked before any work."""
from __future__ import annotations

import gc

import cv2
import numpy as np
import pytest
import torch

from cnnvis_gui import cli

from .test_cli import run_module

# raises on any sample whose mean (mean 0, std 1, scale 1/255: mean brightness in [0, 1]) is above 0.8
PICKY_NET = '''
import torch, torch.nn as nn
class Picky(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)
    def forward(self, x):
        if (x.flatten(1).mean(1) > 0.8).any():
            raise ValueError("too bright")
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))
'''


def _picky(tmp_path):
    (tmp_path / "picky.py").write_text(PICKY_NET)
    d = tmp_path / "im"
    d.mkdir()
    for name, v in (("a", 60), ("bright", 250), ("c", 80)):
        cv2.imwrite(str(d / f"{name}.png"), np.full((40, 40, 3), v, np.uint8))
    return ["--model", f"{tmp_path / 'picky.py'}:Picky", "--input-size", "32", "--mean", "0", "--std", "1",
            "--device", "cpu"], d


def test_export_skips_images_the_model_raises_on_exit_1(tmp_path):
    model, d = _picky(tmp_path)
    out = tmp_path / "out"
    r = run_module("export", *model, "--input", d, "--layer", "conv", "--units", "0,1", "--batch-size", "3",
                   "--out", out)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert f"skipped '{d / 'bright.png'}'" in r.stderr and "too bright" in r.stderr
    assert "forward raised on 1 image" in r.stderr
    assert "exported 2 images (1 skipped)" in r.stdout
    # the rest of the failing batch was exported (retried one by one)
    assert sorted(p.name for p in out.iterdir()) == ["a", "c"]
    assert (out / "c" / "conv_u0001_guided.png").is_file()
    assert not list(out.rglob("*.tmp"))


def test_export_all_images_fail_and_none_fail(tmp_path, capsys):
    model, d = _picky(tmp_path)
    (d / "a.png").unlink()
    (d / "c.png").unlink()
    assert cli.main(["export", *model, "--input", str(d), "--layer", "conv", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "forward raised on every image" in err and "bright.png" in err
    (d / "bright.png").unlink()
    cv2.imwrite(str(d / "dark.png"), np.full((40, 40, 3), 10, np.uint8))
    assert cli.main(["export", *model, "--input", str(d), "--layer", "conv", "--out", str(tmp_path / "o")]) == 0


def test_export_units_all_keeps_no_map_per_unit(tmp_path, monkeypatch, capsys):
    """--units all without --raw: each unit's maps are written and dropped, so the number of live
    saliency tensors does not grow with the number of units."""
    (tmp_path / "wide.py").write_text(
        "import torch.nn as nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),"
        " nn.Linear(64, 2))\n")
    d = tmp_path / "im"
    d.mkdir()
    for i in range(2):
        cv2.imwrite(str(d / f"{i}.png"), np.random.default_rng(i).integers(0, 255, (30, 30, 3), dtype=np.uint8))
    H, W = 20, 24
    peak = {"n": 0, "calls": 0}
    from cnnvis_gui.cli import export
    real = export._write_png

    def counting(path, rgb, zoom):
        peak["calls"] += 1
        if peak["calls"] % 16 == 0:
            live = sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor) and o.ndim >= 3
                       and tuple(o.shape[-2:]) == (H, W))
            peak["n"] = max(peak["n"], live)
        return real(path, rgb, zoom)

    monkeypatch.setattr(export, "_write_png", counting)
    rc = cli.main(["export", "--model", f"{tmp_path / 'wide.py'}:make", "--input-size", f"{H}x{W}", "--device", "cpu",
                   "--input", str(d), "--layer", "0", "--units", "all", "--method", "gradient,guided",
                   "--batch-size", "2", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert peak["calls"] == 2 * (2 + 64 * 2)
    # constant (input, activations, the frame's own tensors, the map being written); the old code held
    # every map of the batch (2 methods x 64 units) until the end
    assert 0 < peak["n"] <= 16, peak
    assert len(list((tmp_path / "o" / "0").glob("0_u*_guided.png"))) == 64


@pytest.mark.parametrize("argv, text", [
    (["optimize", "--layer", "fc", "--unit", "0", "--out", "noext"], "give it an extension"),
    (["optimize", "--layer", "fc", "--unit", "0", "--out", "x.foo"], "unknown image format '.foo'"),
    (["optimize", "--layer", "fc", "--unit", "0", "--lr", "0", "--out", "x.png"], "--lr must be > 0"),
    (["optimize", "--layer", "fc", "--unit", "0", "--lr", "-0.001", "--out", "x.png"], "--lr must be > 0"),
    (["optimize", "--layer", "fc", "--unit", "0", "--iterations", "0", "--out", "x.png"], "--iterations must be > 0"),
    (["atlas", "--images", ".", "--layer", "fc", "--tile", "0", "--out", "o"], "--tile must be > 0"),
    (["atlas", "--images", ".", "--layer", "fc", "--probes", "-1", "--out", "o"], "--probes must be >= 0"),
    (["atlas", "--images", ".", "--layer", "fc", "--top", "0", "--out", "o"], "--top must be > 0"),
    (["atlas", "--images", ".", "--layer", "fc", "--batch-size", "0", "--out", "o"], "--batch-size must be > 0"),
    (["atlas", "--images", ".", "--layer", "fc", "--batch-size", "x", "--out", "o"], "must be an integer"),
])
def test_optimize_and_atlas_argument_ranges(argv, text, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("cnnvis: error: ") and text in err and "Traceback" not in err, err


def test_optimize_position_target_on_flat_layer_is_refused(tmp_path, capsys):
    (tmp_path / "flat.py").write_text(
        "import torch.nn as nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 5))\n")
    base = ["optimize", "--model", f"{tmp_path / 'flat.py'}:make", "--input-size", "16", "--device", "cpu",
            "--unit", "1", "--no-cache", "--out", str(tmp_path / "x.png")]
    assert cli.main(base + ["--layer", "output", "--target", "2,3"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "is flat" in err and "no positions" in err
    assert cli.main(base + ["--layer", "0", "--target", "20,3"]) == cli.EXIT_USAGE
    assert "outside layer" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
