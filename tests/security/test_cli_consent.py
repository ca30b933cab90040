"""``cnnvis`` and ``cnnvis-gui`` refuse code named by a file unless ``--trust-code`` is given."""
from __future__ import annotations

from cnnvis_gui import cli

from .helpers import pth_with_meta, py_beside, safetensors_with_meta, touch_meta


def test_cnnvis_info_refuses_then_trust_code_allows(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    for p in (pth_with_meta(tmp_path / "e.pth", touch_meta(marker)),
              safetensors_with_meta(tmp_path / "e.safetensors", touch_meta(marker))):
        assert cli.main(["info", "--model", str(p)]) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert "os:system" in err and "--trust-code" in err and len(err.strip().splitlines()) == 1
        assert "Traceback" not in err and not marker.exists()
    ran = tmp_path / "RAN"
    p = py_beside(tmp_path, ran)
    assert cli.main(["info", "--weights", str(p)]) == cli.EXIT_USAGE and not ran.exists()
    capsys.readouterr()
    assert cli.main(["info", "--weights", str(p), "--trust-code"]) == cli.EXIT_OK and ran.exists()
    assert "ShapesNet" in capsys.readouterr().out


def test_cnnvis_gui_command_line_refuses_without_trust_code(tmp_path, capsys):
    from cnnvis_gui.qt import app
    marker = tmp_path / "PWNED"
    p = pth_with_meta(tmp_path / "e.pth", touch_meta(marker))
    rc = app.main(["--model", str(p), "--screenshot", str(tmp_path / "shot.png"), "--timeout", "5"])
    err = capsys.readouterr().err
    assert rc == 2 and "os:system" in err and "--trust-code" in err and not marker.exists()
