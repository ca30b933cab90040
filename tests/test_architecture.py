"""The Qt-free packages must stay Qt-free (STYLE.md: imports point one way)."""
import subprocess
import sys

QT_FREE = ["cnnvis_gui.core", "cnnvis_gui.models", "cnnvis_gui.sources", "cnnvis_gui.atlas", "cnnvis_gui.cli",
           "cnnvis_gui.options"]


def test_qt_free_packages_import_no_qt():
    code = (
        "import sys, importlib\n"
        f"for name in {QT_FREE!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('PyQt5', 'pyqtgraph', 'PySide2', 'PySide6'))\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"Qt modules loaded by the Qt-free packages: {r.stdout.strip()}"


def test_core_does_not_import_other_project_packages():
    code = (
        "import sys, cnnvis_gui.core\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('cnnvis_gui.') "
        "and not m.startswith('cnnvis_gui.core'))))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""
