"""The demo model's atlas at first start: built in the background, shown, remembered, reopened."""
from __future__ import annotations

import pytest

from cnnvis_gui.atlas import demo as D
from cnnvis_gui.models import demo_checkpoint

from ..waits import drawn, signal, until

pytestmark = pytest.mark.skipif(not demo_checkpoint("glyphs").is_file(), reason="demo checkpoints not built")


@pytest.fixture
def demo_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_DEMO_ATLAS", "1")
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "atlas-cache"))
    monkeypatch.setattr(D, "DEMO_IMAGES", 120)          # a few batches: the mechanism, not the benchmark
    return tmp_path / "atlas-cache"


def new_window(qtbot):
    from cnnvis_gui.qt.window import MainWindow
    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    return win


def test_first_start_builds_the_demo_atlas_in_the_background(qtbot, demo_env):
    win = new_window(qtbot)
    progress = []
    with signal(qtbot, win.atlasRestored) as blocker:
        assert win.open_demo("glyphs", images=True)
        until(qtbot, lambda: win.atlas.demo_worker is not None)
        win.atlas.demo_worker.progress.connect(lambda p: progress.append(p))
        # the window is usable meanwhile: a layer change renders while the atlas builds
        win.state.update(layer="features.4", unit=0)
        drawn(qtbot, win, lambda r: (r.layer, r.unit) == ("features.4", 0))
        assert win.atlas.demo_worker is not None or progress      # still building, or already reported
    scan = blocker.args[0]
    assert scan.folder == D.demo_images_folder("glyphs", 120, cache_dir=demo_env)
    assert len(scan.paths) == 120 and "features.4" in scan.layers
    assert win.atlas.scan is scan and win.atlas.demo_worker is None
    assert not win.status.task.isVisible()
    assert {p.phase for p in progress} <= {"drawing", "scanning"} and progress
    assert win.atlas.remembered()["folder"] == str(scan.folder)
    # pattern mode has what it needs now
    win.atlas.toggle_patterns()
    assert win.state.patterns
    win.close()

    # second start: the same model reopens the remembered scan from the cache; nothing is drawn or scanned
    stamps = {f: f.stat().st_mtime_ns for f in scan.folder.iterdir()}
    win2 = new_window(qtbot)
    with signal(qtbot, win2.atlasRestored) as blocker2:
        win2.open_demo("glyphs", images=False)
    again = blocker2.args[0]
    assert again.from_cache and again.key == scan.key and win2.atlas.demo_worker is None
    assert {f: f.stat().st_mtime_ns for f in scan.folder.iterdir()} == stamps
    win2.close()


def test_another_model_cancels_the_build(qtbot, demo_env, monkeypatch):
    from .conftest import loaded
    monkey_n = 2000
    monkeypatch.setattr(D, "DEMO_IMAGES", monkey_n)       # long enough to be cancelled
    win = new_window(qtbot)
    win.open_demo("glyphs", images=False)
    until(qtbot, lambda: win.atlas.demo_worker is not None)
    worker = win.atlas.demo_worker
    with signal(qtbot, win.modelChanged):
        win.load_model(loaded())
    assert win.atlas.demo_worker is None and win.atlas.scan is None
    until(qtbot, worker.isFinished)
    assert not win.status.task.isVisible()
    assert not D.demo_images_folder("glyphs", monkey_n, cache_dir=demo_env).exists()   # no partial folder kept
    win.close()


def test_off_switch(qtbot, demo_env, monkeypatch):
    monkeypatch.setenv("CNNVIS_DEMO_ATLAS", "0")
    win = new_window(qtbot)
    with signal(qtbot, win.modelChanged):
        win.open_demo("glyphs", images=False)
    qtbot.wait(200)
    assert win.atlas.demo_worker is None and win.atlas.scan is None
    win.close()
