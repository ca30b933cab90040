"""The settings are a file like any other: what they name needs consent, and only a regular file is used.

A remembered model (``last_model``, the Recent menu) is data read from the settings file;
an architecture it names is checked by the same trust policy as a checkpoint's metadata.
A settings path that is a FIFO (the start would hang) or a device node (Qt's save would
replace it by a regular file) is neither read nor written.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cnnvis_gui.models import UntrustedCodeError
from cnnvis_gui.options import model_from_entry

from ..waits import WAIT_S
from .helpers import py_beside

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("entry", ["os:system|", "subprocess:getoutput|", "{py}|", "{ckpt}|{py}", "{ckpt}|os:system",
                                   "pretrained:DEFAULT|os:system", "demo:os:system|", "pretrained:X|"])
def test_remembered_architectures_that_are_code_need_consent(tmp_path, entry):
    marker = tmp_path / "RAN"
    ckpt = py_beside(tmp_path, marker)
    entry = entry.format(py=f"{tmp_path / 'evil.py'}:Net", ckpt=ckpt)
    what, _, arch = entry.partition("|")
    with pytest.raises(UntrustedCodeError) as ei:
        model_from_entry(what, arch, settings_file="/home/u/.config/cnnvis-gui/cnnvis-gui.conf")
    assert not marker.exists()
    e = ei.value
    assert e.path == "/home/u/.config/cnnvis-gui/cnnvis-gui.conf" and "settings file" in e.origin
    assert "--trust-code" in str(e)


def test_a_relative_py_architecture_is_named_by_its_full_path(tmp_path, monkeypatch):
    marker = tmp_path / "RAN"
    py_beside(tmp_path, marker)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UntrustedCodeError) as ei:
        model_from_entry("evil.py:Net", "")
    assert ei.value.target == f"{tmp_path / 'evil.py'}:Net" and not marker.exists()
    lm = model_from_entry("evil.py:Net", "", trust_code=True)         # the user's Yes: it runs
    assert marker.exists() and type(lm.model).__name__ == "ShapesNet"


def test_remembered_models_that_name_no_code_open_without_a_question(tmp_path):
    from cnnvis_gui.models import demo_checkpoint
    assert type(model_from_entry("demo:shapes", "").model).__name__ == "ShapesNet"
    lm = model_from_entry(str(demo_checkpoint("glyphs")), "")          # its metadata: an allowlisted demo arch
    assert type(lm.model).__name__ == "GlyphsNet"
    lm = model_from_entry(str(demo_checkpoint("shapes")), "cnnvis_gui.models.demo_nets:ShapesNet")
    assert type(lm.model).__name__ == "ShapesNet"


# ---------------------------------------------------------------- a settings path that is not a regular file
def _fifo(tmp_path):
    p = tmp_path / "settings.ini"
    os.mkfifo(p)
    return p


def _char_device(tmp_path):
    """A null character device node of our own (never /dev/null itself: a regression would replace it)."""
    p = tmp_path / "settings.ini"
    try:
        os.mknod(p, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot make a device node here: {e}")
    return p


def test_settings_file_problem_names_what_it_is(tmp_path):
    from cnnvis_gui.qt.settings import settings_file_problem
    assert settings_file_problem(tmp_path / "none.ini") is None
    (tmp_path / "ok.ini").write_text("[General]\n")
    assert settings_file_problem(tmp_path / "ok.ini") is None
    assert "named pipe (FIFO)" in settings_file_problem(_fifo(tmp_path))
    assert "folder" in settings_file_problem(tmp_path)
    link = tmp_path / "link.ini"
    link.symlink_to(tmp_path / "settings.ini")
    assert "named pipe" in settings_file_problem(link)            # a link: its target counts


@pytest.mark.parametrize("make", [_fifo, _char_device], ids=["fifo", "device"])
def test_window_refuses_a_settings_path_that_is_not_a_regular_file(qtbot, tmp_path, monkeypatch, make):
    pytest.importorskip("pytestqt")
    from cnnvis_gui.qt.settings import settings_file_problem
    p = make(tmp_path)
    assert settings_file_problem(p) is not None     # checked first: else the window below would hang on it
    kind = stat.S_IFMT(os.stat(p).st_mode)
    monkeypatch.setenv("CNNVIS_GUI_SETTINGS", str(p))
    from cnnvis_gui.qt.window import MainWindow
    win = MainWindow()
    qtbot.addWidget(win)
    assert "not a regular file" in win.status_text() and "default settings" in win.status_text()
    assert not win.persistence.writable
    win.state.update(method="gradient")
    win.persistence.remember_model("demo:glyphs")
    win.close()
    assert stat.S_IFMT(os.stat(p).st_mode) == kind   # still the FIFO / device node: nothing renamed over it
    assert win.settings.fileName() != str(p)


def test_screenshot_start_with_a_fifo_as_settings_does_not_hang(tmp_path):
    fifo = _fifo(tmp_path)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CNNVIS_GUI_SETTINGS=str(fifo), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(ROOT / "run_gui.py"), "--model", "shapes", "--screenshot",
                        str(tmp_path / "s.png")], env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert p.returncode == 0, p.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and (tmp_path / "s.png").is_file()
