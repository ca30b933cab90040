"""The ``cnnvis-gui --screenshot`` automation path, run as a real subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..waits import CHILD_S, WAIT_S

ROOT = Path(__file__).resolve().parents[2]

models = pytest.importorskip("cnnvis_gui.models")
if not hasattr(models, "demo"):
    pytest.skip("demo models not available", allow_module_level=True)


def run_gui(tmp_path, *args, timeout=CHILD_S):
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
    p = run_gui(tmp_path, "--model", "shapes", "--layer", "features.1x")
    assert p.returncode != 0
    assert "Did you mean" in p.stderr and "'features.1'" in p.stderr
    p = run_gui(tmp_path, "--model", "shapes", "--layer", "features.0", "--unit", "999")
    assert p.returncode != 0 and "out of range" in p.stderr


def test_layout_override_on_the_window_command_line(tmp_path):
    """``cnnvis-gui --layout`` as ``cnnvis``'s: the user's reading gives the layer its units (64 rows of
    features.0 read channels-last), and a layout that does not fit is one line naming the shape."""
    sample = str(models.demo_samples("shapes")[0])
    out = tmp_path / "nhwc.png"
    p = run_gui(tmp_path, "--model", "shapes", "--input", sample, "--layout", "features.0=nhwc",
                "--layer", "features.0", "--unit", "40", "--screenshot", str(out))      # unit 40 of 64 (16 nchw)
    assert p.returncode == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p.stderr
    p = run_gui(tmp_path, "--model", "shapes", "--layout", "features.0=tokens:1+4x4", "--screenshot",
                str(tmp_path / "x.png"))
    assert p.returncode != 0 and "Traceback" not in p.stderr
    err = [line for line in p.stderr.splitlines() if line.startswith("cnnvis-gui")]
    assert len(err) == 1 and "does not fit layer 'features.0': its output is N x 16 x 64 x 64" in err[0], p.stderr


def test_method_spellings_match_the_command_line():
    from cnnvis_gui.qt.app import build_parser

    args = build_parser().parse_args(["--method", "guided-gradcam", "--compare", "gradcam"])
    assert (args.method, args.compare) == ("guided_gradcam", "gradcam")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--method", "lrp"])


def _video(path, n=40, size=(96, 72)):
    import cv2
    import numpy as np
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    assert w.isOpened()
    for i in range(n):
        f = np.full((size[1], size[0], 3), (i * 9) % 255, np.uint8)
        cv2.circle(f, (10 + 2 * i, size[1] // 2), 8, (0, 255, 0), -1)
        w.write(f)
    w.release()
    return path


def test_live_screenshot_keeps_the_users_settings_and_uses_the_default_size(tmp_path, qapp):
    """A video supersedes frames: the screenshot holds the first one; nothing is written to the settings."""
    import cv2
    from PyQt5 import QtCore
    from cnnvis_gui.qt.settings import DEFAULT_SIZE
    from cnnvis_gui.qt.window import MainWindow
    ini = tmp_path / "s.ini"
    settings = QtCore.QSettings(str(ini), QtCore.QSettings.IniFormat)
    win = MainWindow(settings=settings)                  # a normal session at 900x600, method "gradient"
    win.resize(900, 600)
    win.state.update(method="gradient")
    win.close()
    del win
    before = ini.read_bytes()
    clip = _video(tmp_path / "clip.avi")
    out = tmp_path / "live.png"
    p = run_gui(tmp_path, "--model", "shapes", "--input", str(clip), "--layer", "features.14", "--unit", "3",
                "--method", "deconvnet", "--filter", "raw", "--compare", "gradcam", "--screenshot", str(out))
    assert p.returncode == 0, p.stderr
    img = cv2.imread(str(out))
    assert img is not None and (img.shape[1], img.shape[0]) == DEFAULT_SIZE
    assert ini.read_bytes() == before                    # --method/--filter/--compare did not leak
    assert "propagateSizeHints" not in p.stderr


def test_quit_after_writes_the_stats(tmp_path):
    import json
    clip = _video(tmp_path / "clip.avi", n=90)
    stats = tmp_path / "stats.json"
    p = run_gui(tmp_path, "--model", "shapes", "--input", str(clip), "--quit-after", "2", "--stats", str(stats),
                "--threads", "1")
    assert p.returncode == 0, p.stderr
    d = json.loads(stats.read_text())
    for k in ("processed_fps", "capture_fps", "forward_ms", "backward_ms", "gui_stall_max_ms", "dropped_frames"):
        assert k in d, k
    assert d["processed_fps"] > 0 and d["capture_fps"] > 0 and d["forward_ms"] > 0
    assert d["frames_processed"] + d["dropped_frames"] == d["frames_captured"] and d["torch_threads"] == 1
    assert 1.8 < d["seconds"] < 10
    assert not (tmp_path / "s.ini").exists()
    p = run_gui(tmp_path, "--model", "shapes", "--stats", str(stats))
    assert p.returncode != 0 and "--stats needs --quit-after" in p.stderr


STUCK_NET = '''
import threading, time
from torch import nn

class Net(nn.Module):
    """A forward that never returns ({where})."""
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if {everywhere} or threading.current_thread() is not threading.main_thread():
            while True:
                time.sleep(0.05)
        return self.fc(self.pool(self.conv(x)).flatten(1))
'''


@pytest.mark.parametrize("everywhere", [False, True], ids=["render-thread", "gui-thread"])
def test_timeout_ends_a_run_whose_forward_never_returns(tmp_path, everywhere):
    """--timeout holds while the forward runs: in the render thread (the close gives it up) or in the
    GUI thread while loading (the watchdog); the process exits 1 and says why."""
    net = tmp_path / "stuck_net.py"
    net.write_text(STUCK_NET.format(everywhere=everywhere, where="anywhere" if everywhere else "off the main thread"))
    p = run_gui(tmp_path, "--model", f"{net}:Net", "--input-size", "32", "--screenshot", str(tmp_path / "x.png"),
                "--timeout", "4", timeout=WAIT_S)     # a hang would hit this bound and fail the test
    assert p.returncode == 1, p.stderr
    err = p.stderr
    assert "cnnvis-gui:" in err and ("timed out waiting for the first frame" in err or "--timeout 4 s passed" in err)
    if "timed out waiting" in err:                  # the orderly path: the window closed, the thread given up on
        assert "had not returned when the window closed" in err
    assert not (tmp_path / "x.png").exists()
    assert "Traceback" not in err and "Aborted" not in err
