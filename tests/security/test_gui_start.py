"""The window's interactive start with a model that fails: a box says why, code is asked about first.

``cnnvis-gui --weights broken.pth`` and ``cnnvis-gui --model file.pth`` (a checkpoint naming
code) used to end in a NameError before any box showed.  These tests run the real start
(:func:`cnnvis_gui.qt.app.main`, no ``--screenshot``) and answer its boxes as a user would.
"""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PyQt5 import QtCore  # noqa: E402

from .gui_driver import answer_yes, run_interactive  # noqa: E402
from .helpers import pth_with_meta, py_beside, touch_meta  # noqa: E402

SHAPES_ARCH = "cnnvis_gui.models.demo_nets:ShapesNet"


def test_corrupt_checkpoint_says_so_and_shows_the_demo(qapp, tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    rc, seen, shown = run_interactive(["--model", SHAPES_ARCH, "--weights", str(bad)])
    assert rc == 0
    assert [b["cls"] for b in seen] == ["QMessageBox"]
    box = seen[0]
    assert "Cannot load the model" in box["text"] and "broken.pth" in box["text"]
    assert "demo model instead" in box["informative"]
    assert set(box["formats"]) == {QtCore.Qt.PlainText}       # it quotes the file: shown as text
    assert shown["model"] == "ShapesNet" and shown["demo"] == "shapes"      # the window works on the demo


@pytest.mark.parametrize("how", ["--model", "--weights"])
def test_checkpoint_naming_code_asks_and_no_shows_the_demo(qapp, tmp_path, how):
    marker = tmp_path / "PWNED"
    p = pth_with_meta(tmp_path / "e.pth", touch_meta(marker))
    rc, seen, shown = run_interactive([how, str(p)])
    assert rc == 0 and [b["cls"] for b in seen] == ["TrustCodeDialog"]
    assert "os:system" in seen[0]["text"] and str(p) in seen[0]["text"] and seen[0]["default_no"]
    assert not marker.exists(), "the code the file names ran"
    assert shown["demo"] == "shapes" and "os:system was not run" in shown["status"]   # still said once it renders


def test_checkpoint_naming_a_py_file_runs_it_after_yes(qapp, tmp_path):
    marker = tmp_path / "RAN"
    p = py_beside(tmp_path, marker)
    rc, seen, shown = run_interactive(["--model", str(p)], answer=answer_yes)
    assert rc == 0 and [b["cls"] for b in seen] == ["TrustCodeDialog"]
    assert str(tmp_path / "evil.py") in seen[0]["text"]
    assert marker.exists() and shown["model"] == "ShapesNet" and shown["demo"] is None


def _remember(settings_path, entry):
    st = QtCore.QSettings(str(settings_path), QtCore.QSettings.IniFormat)
    st.setValue("last_model", entry)
    st.setValue("recent_models", [entry])
    st.sync()


@pytest.mark.parametrize("arch_in", ["what", "arch"])
def test_remembered_model_naming_code_asks_at_start(qapp, tmp_path, arch_in):
    """A settings file whose last model is a .py architecture: a remembered model is not consent."""
    import os
    marker = tmp_path / "RAN"
    ckpt = py_beside(tmp_path, marker)
    evil = f"{tmp_path / 'evil.py'}:Net"
    settings = os.environ["CNNVIS_GUI_SETTINGS"]
    _remember(settings, f"{evil}|" if arch_in == "what" else f"{ckpt}|{evil}")
    rc, seen, shown = run_interactive([])
    assert rc == 0 and [b["cls"] for b in seen] == ["TrustCodeDialog"] and seen[0]["default_no"]
    assert settings in seen[0]["text"] and str(tmp_path / "evil.py") in seen[0]["text"]
    assert not marker.exists(), "the settings' architecture ran without consent"
    assert shown["demo"] == "shapes"
    st = QtCore.QSettings(settings, QtCore.QSettings.IniFormat)
    assert st.value("last_model").startswith(evil if arch_in == "what" else str(ckpt))   # still asked next time


def test_remembered_model_naming_code_runs_after_yes(qapp, tmp_path):
    import os
    marker = tmp_path / "RAN"
    py_beside(tmp_path, marker)
    _remember(os.environ["CNNVIS_GUI_SETTINGS"], f"{tmp_path / 'evil.py'}:Net|")
    rc, seen, shown = run_interactive([], answer=answer_yes)
    assert rc == 0 and [b["cls"] for b in seen] == ["TrustCodeDialog"]
    assert marker.exists() and shown["model"] == "ShapesNet" and shown["demo"] is None


def test_a_fifo_as_settings_file_starts_with_the_defaults_and_says_so(qapp, tmp_path, monkeypatch, capsys):
    import os
    from cnnvis_gui.qt.settings import settings_file_problem
    fifo = tmp_path / "settings.ini"
    os.mkfifo(fifo)
    assert settings_file_problem(fifo)           # checked first: the start below would hang on it otherwise
    monkeypatch.setenv("CNNVIS_GUI_SETTINGS", str(fifo))
    rc, seen, shown = run_interactive([])
    assert rc == 0 and seen == [] and shown["demo"] == "shapes"
    assert "not a regular file" in shown["status"] and "default settings" in shown["status"]
    assert "named pipe (FIFO)" in capsys.readouterr().err


def test_a_broken_install_without_the_demo_says_so(qapp, tmp_path, monkeypatch):
    """Not even the demo loads (its checkpoint is missing): a box, then an empty window that says why."""
    from cnnvis_gui import models
    from cnnvis_gui.models import ModelLoadError

    def missing(name="shapes", device="cpu"):
        raise ModelLoadError(f"the demo checkpoint {name}.pth is missing")
    monkeypatch.setattr(models, "demo", missing)
    rc, seen, status = run_interactive([], ready=lambda win: win.status_text() if "either" in win.status_text()
                                       else None)
    assert rc == 0 and [b["cls"] for b in seen] == ["QMessageBox"] and "shapes.pth is missing" in seen[0]["text"]
    assert "the demo model did not load either" in status
