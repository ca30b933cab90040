"""Issue 10's command-line cases: crashing names, unbounded ranges and zooms, file modes, NaN results."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest

from cnnvis_gui import cli
from cnnvis_gui.core import CnnvisError
from cnnvis_gui.core.display import MAX_ZOOM, enlarge
from cnnvis_gui.models import demo_samples
from cnnvis_gui.sources import base as sources_base

from ..waits import CHILD_S
from .test_cli import REPO, _env, run_module

NAN_NET = '''
import torch
from torch import nn


class NaNNet(nn.Module):
    """conv1 relu1 conv2 relu2 pool fc with NaN put in by ``mode``:

    "where": relu2's unit 0 is NaN (set in forward with torch.where: gradients stay finite);
    "weight": one weight of conv2's unit 0 is NaN (every gradient through conv2 is NaN: 0 * NaN);
    "bias": conv1's biases are NaN (everything after conv1 is NaN).
    """
    def __init__(self, mode="where"):
        super().__init__()
        self.mode = mode
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            if mode == "bias":
                self.conv1.bias[:] = float("nan")
            elif mode == "weight":
                self.conv2.weight[0, 0, 0, 0] = float("nan")

    def forward(self, x):
        x = self.conv2(self.relu1(self.conv1(x)))
        if self.mode == "where":
            unit0 = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1) == 0
            x = torch.where(unit0, torch.full_like(x, float("nan")), x)
        return self.fc(self.pool(self.relu2(x)).flatten(1))
'''


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "im"
    d.mkdir()
    for p in demo_samples("shapes")[:2]:
        (d / p.name).write_bytes(p.read_bytes())
    return d


def _nan_model(tmp_path, *extra):
    (tmp_path / "nannet.py").write_text(NAN_NET)
    return ["--model", f"{tmp_path / 'nannet.py'}:NaNNet", "--input-size", "32", "--device", "cpu", *extra]


# ----------------------------------------------------------------------------- names OpenCV crashes on
def test_export_folder_with_a_non_utf8_file_name(tmp_path, images):
    try:
        with open(os.path.join(os.fsencode(images), b"bad\xff.png"), "wb") as f:
            f.write(demo_samples("shapes")[3].read_bytes())
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    r = subprocess.run([sys.executable, "-m", "cnnvis_gui", "export", "--input", str(images), "--layer",
                        "features.0", "--units", "0", "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"],
                       capture_output=True, cwd=REPO, env=_env(), timeout=CHILD_S)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert len(list((tmp_path / "out").iterdir())) == 3 and b"Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "cnnvis_gui", "atlas", "--images", str(images), "--layer",
                        "features.0", "--units", "0", "--top", "3", "--out", str(tmp_path / "at"), "--quiet",
                        "--no-cache", "--device", "cpu"], capture_output=True, cwd=REPO, env=_env(), timeout=CHILD_S)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    doc = json.loads((tmp_path / "at" / "atlas.json").read_text())
    assert doc["images"] == 3 and not doc["skipped"]


def test_gui_opens_a_folder_with_a_non_utf8_file_name(tmp_path, images):
    try:
        with open(os.path.join(os.fsencode(images), b"bad\xff.png"), "wb") as f:
            f.write(demo_samples("shapes")[3].read_bytes())
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    env = dict(_env(), CNNVIS_GUI_SETTINGS=str(tmp_path / "s.ini"))
    r = subprocess.run([sys.executable, str(REPO / "run_gui.py"), "--input", str(images), "--screenshot",
                        str(tmp_path / "s.png"), "--timeout", "120"], capture_output=True, cwd=REPO, env=env,
                       timeout=CHILD_S)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert (tmp_path / "s.png").stat().st_size > 0


def test_gui_camera_minus_one_is_an_error_not_a_signal(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "run_gui.py"), "--camera", "-1", "--screenshot",
                        str(tmp_path / "s.png"), "--timeout", "60"], capture_output=True, text=True, cwd=REPO,
                       env=_env(), timeout=CHILD_S)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "camera index -1 is not valid" in r.stderr


def test_unreadable_input_says_permission_denied(tmp_path, monkeypatch, capsys):
    p = tmp_path / "clip.mp4"
    p.write_bytes(b"\0" * 100)

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(sources_base, "open", denied, raising=False)   # root ignores chmod 000
    assert cli.main(["export", "--input", str(p), "--layer", "features.0", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "permission denied" in err and "neither an image nor a video" not in err


def test_broken_video_error_comes_alone(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(os.urandom(5000))
    r = run_module("export", "--input", tmp_path / "junk.mp4", "--layer", "features.0", "--out", tmp_path / "o")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"cnnvis: error: --input: cannot read '{tmp_path / 'junk.mp4'}': neither an image nor a video OpenCV "
        f"can decode"]                                   # no "moov atom not found" from FFmpeg


# ----------------------------------------------------------------------------- ranges checked before use
def test_units_ranges_are_checked_before_expansion(tmp_path, images, capsys):
    with pytest.raises(cli.UsageError, match="beyond any layer's units"):
        cli.parse_units("0-1000000000")
    with pytest.raises(cli.UsageError, match="out of range: the layer has 16 units"):
        cli.parse_units("3,0-1000000000", 16)
    assert cli.parse_units("0-3,2", 16) == [0, 1, 2, 3]
    for cmd in (["export", "--input", str(images)], ["atlas", "--images", str(images), "--no-cache"]):
        rc = cli.main([*cmd, "--layer", "features.0", "--units", "0-1000000000", "--out", str(tmp_path / "o"),
                       "--quiet", "--device", "cpu"])
        err = capsys.readouterr().err
        assert rc == 2 and "1000000000" in err and "Traceback" not in err


def test_zoom_is_bounded(tmp_path, images, capsys):
    assert enlarge(np.ones((2, 3), np.uint8), 4).shape == (8, 12)
    for bad in (0, MAX_ZOOM + 1, 2.0, True):
        with pytest.raises(CnnvisError):
            enlarge(np.ones((2, 3), np.uint8), bad)
    assert cli.main(["export", "--input", str(images), "--layer", "features.0", "--units", "0", "--zoom", "100000",
                     "--out", str(tmp_path / "o")]) == 2
    assert f"--zoom must be 1..{MAX_ZOOM}" in capsys.readouterr().err
    assert cli.main(["optimize", "--layer", "features.0", "--unit", "0", "--zoom", "100000", "--out",
                     str(tmp_path / "o.png")]) == 2
    assert f"at most {MAX_ZOOM}" in capsys.readouterr().err


@pytest.mark.parametrize("lr,msg", [("inf", "a finite number"),
                                    ("nan", "a finite number"), ("-1", "> 0"), ("0", "> 0")])
def test_optimize_lr_must_be_finite_and_positive(tmp_path, capsys, lr, msg):
    assert cli.main(["optimize", "--layer", "features.0", "--unit", "0", "--lr", lr, "--out",
                     str(tmp_path / "o.png")]) == 2
    assert f"--lr must be {msg}, got '{lr}'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- written files
def test_written_files_get_the_usual_mode(tmp_path, images):
    old = os.umask(0o022)
    try:
        assert cli.main(["export", "--input", str(images), "--layer", "features.0", "--units", "0", "--raw",
                         "--out", str(tmp_path / "ex"), "--quiet", "--device", "cpu"]) == 0
        assert cli.main(["atlas", "--images", str(images), "--layer", "features.0", "--units", "0", "--top", "1",
                         "--out", str(tmp_path / "at"), "--quiet", "--no-cache", "--device", "cpu"]) == 0
        assert cli.main(["optimize", "--layer", "features.0", "--unit", "0", "--iterations", "2", "--no-cache",
                         "--out", str(tmp_path / "opt.png"), "--device", "cpu"]) == 0
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != images]
    assert len(files) > 5 and any(p.name == "atlas.json" for p in files) and any(p.suffix == ".npz" for p in files)
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {"0o644"}, modes


# ----------------------------------------------------------------------------- NaN / Inf results
def test_export_warns_on_nan_naming_the_first_layer(tmp_path, images, capsys):
    rc = cli.main(["export", *_nan_model(tmp_path), "--input", str(images), "--layer", "relu2", "--units", "0,1",
                   "--out", str(tmp_path / "a"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0 and err.count("warning: the model's activations hold NaN/Inf, first in layer 'relu2'") == 1
    rc = cli.main(["export", *_nan_model(tmp_path, "--arch-kwarg", "mode='weight'"), "--input", str(images),
                   "--layer", "conv2", "--units", "0,1", "--out", str(tmp_path / "b"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "first in layer 'conv2'" in err and "error: every result is NaN/Inf (6 maps)" in err


def test_atlas_warns_on_nan_naming_the_first_layer(tmp_path, images, capsys):
    rc = cli.main(["atlas", *_nan_model(tmp_path, "--arch-kwarg", "mode='bias'"), "--images", str(images),
                   "--layer", "relu2", "--top", "1", "--out", str(tmp_path / "at"), "--quiet", "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 0 and "NaN/Inf, first in layer 'conv1'" in err and "'relu2': 4 of 4 units" in err


def test_input_size_is_bounded(capsys):
    assert cli.main(["info", "--input-size", "100000"]) == 2
    assert "--input-size: at most 8192 pixels a side" in capsys.readouterr().err
