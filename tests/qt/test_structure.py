"""The window's structure: a thin MainWindow over one module per concern, no import cycles."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..waits import CHILD_S

QT = Path(__file__).resolve().parents[2] / "cnnvis_gui" / "qt"


def test_window_imports_neither_the_app_nor_the_command_line():
    code = ("import sys, cnnvis_gui.qt.window\n"
            "print(','.join(m for m in ('cnnvis_gui.qt.app', 'cnnvis_gui.cli') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=CHILD_S,
                       env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"qt.window pulls in {r.stdout.strip()}"


def test_no_qt_module_is_a_monolith():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in QT.glob("*.py")}
    assert sizes["window.py"] < 350, sizes["window.py"]          # the window wires, the controllers work
    big = {k: v for k, v in sizes.items() if v > 600}
    assert not big, big


def test_each_concern_has_its_controller(window):
    from cnnvis_gui.qt.atlas_control import AtlasController
    from cnnvis_gui.qt.inputs import InputController
    from cnnvis_gui.qt.render import RenderLoop
    from cnnvis_gui.qt.session import ModelSession
    from cnnvis_gui.qt.settings import Persistence
    for name, cls in (("session", ModelSession), ("inputs", InputController), ("render", RenderLoop),
                      ("atlas", AtlasController), ("persistence", Persistence)):
        assert isinstance(getattr(window, name), cls)
    assert window.loaded is window.session.loaded and window.frame is window.inputs.frame
    assert window.worker is window.render.worker


def test_status_bar_shows_the_torch_threads(window):
    import torch
    assert f"{torch.get_num_threads()} thread" in window.status.device.text()
    assert "torch thread" in window.status.device.toolTip()
