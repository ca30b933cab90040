"""The ``cnnvis-gui --screenshot`` automation path, run as a real subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

models = pytest.importorskip("cnnvis_gui.models")
if not hasattr(models, "demo"):
    pytest.skip("demo models not available", allow_module_level=True)


def run_gui(tmp_path, *args, timeout=120):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CNNVIS_GUI_SETTINGS=str(tmp_path / "s.ini"),
               OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")  # a crash shows its Python stack in stderr
    return subprocess.run([sys.executable, str(ROOT / "run_gui.py"), *args], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def test_screenshot_of_the_demo_model(tmp_path):
    out = tmp_path / "win.png"
    sample = str(models.demo_samples("shapes")[0])
    p = run_gui(tmp_path, "--model", "shapes", "--input", sample, "--layer", "features.14", "--unit", "3",
                "--method", "gradcam", "--screenshot", str(out))
    assert p.returncode == 0, p.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000


def test_screenshot_fails_with_a_message(tmp_path):
    p = run_gui(tmp_path, "--layer", "no.such.layer", "--screenshot", str(tmp_path / "x.png"))
    assert p.returncode != 0
    assert "no.such.layer" in p.stderr
    p = run_gui(tmp_path, "--input", str(tmp_path / "missing.png"), "--screenshot", str(tmp_path / "x.png"))
    assert p.returncode != 0 and "missing.png" in p.stderr
    assert not (tmp_path / "x.png").exists()


def test_model_options_mean_what_they_mean_in_cnnvis(tmp_path):
    """--model FILE.pth (a checkpoint naming its architecture) and the spec overrides, as `cnnvis info`."""
    ckpt = ROOT / "assets" / "models" / "shapes.pth"
    if not ckpt.is_file():
        pytest.skip("the shapes demo checkpoint is not built")
    sample = str(models.demo_samples("shapes")[0])
    out = tmp_path / "ckpt.png"
    p = run_gui(tmp_path, "--model", str(ckpt), "--input", sample, "--layer", "output", "--unit", "1",
                "--screenshot", str(out))
    assert p.returncode == 0, p.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p = run_gui(tmp_path, "--model", str(ckpt), "--input-size", "0x5", "--screenshot", str(tmp_path / "x.png"))
    assert p.returncode != 0 and "--input-size must be HxW" in p.stderr
    p = run_gui(tmp_path, "--weights", str(tmp_path / "nope.pth"))
    assert p.returncode != 0 and "no such file" in p.stderr


def test_unknown_layer_or_unit_exits_with_the_nearest_names(tmp_path):
    # no --screenshot: it must still exit (before any window opens) rather than start the GUI
    p = run_gui(tmp_path, "--model", "shapes", "--layer", "features.1x", timeout=60)
    assert p.returncode != 0
    assert "Did you mean" in p.stderr and "'features.1'" in p.stderr
    p = run_gui(tmp_path, "--model", "shapes", "--layer", "features.0", "--unit", "999", timeout=60)
    assert p.returncode != 0 and "out of range" in p.stderr


def test_method_spellings_match_the_command_line():
    from cnnvis_gui.qt.app import build_parser

    args = build_parser().parse_args(["--method", "guided-gradcam", "--compare", "gradcam"])
    assert (args.method, args.compare) == ("guided_gradcam", "gradcam")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--method", "lrp"])
