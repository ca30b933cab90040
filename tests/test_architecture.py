"""The Qt-free packages must stay Qt-free (STYLE.md: imports point one way)."""
import os
import subprocess
import sys
from pathlib import Path

from .waits import CHILD_S

ROOT = Path(__file__).resolve().parents[1]

QT_FREE = ["cnnvis_gui.core", "cnnvis_gui.models", "cnnvis_gui.sources", "cnnvis_gui.optvis", "cnnvis_gui.atlas",
           "cnnvis_gui.dissect", "cnnvis_gui.cli", "cnnvis_gui.options"]


def test_qt_free_packages_import_no_qt():
    code = (
        "import sys, importlib\n"
        f"for name in {QT_FREE!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('PyQt5', 'pyqtgraph', 'PySide2', 'PySide6'))\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=CHILD_S)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"Qt modules loaded by the Qt-free packages: {r.stdout.strip()}"


def test_core_does_not_import_other_project_packages():
    code = (
        "import sys, cnnvis_gui.core\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('cnnvis_gui.') "
        "and not m.startswith('cnnvis_gui.core'))))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=CHILD_S)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_import_contracts_hold():
    """The import-linter contracts in pyproject.toml: layers qt > cli > dissect > atlas | options > models | sources | optvis > core,
    core imports nothing of ours above it and no Qt, nothing but qt imports PyQt5/pyqtgraph or qt, no cycles."""
    code = ("import sys\n"
            "from importlinter.cli import lint_imports\n"
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=CHILD_S, cwd=str(ROOT),
                       env=env)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "4 kept, 0 broken" in r.stdout, r.stdout[-4000:]
