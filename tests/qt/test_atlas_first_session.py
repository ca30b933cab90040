"""The atlas in the window as a first session meets it (issue 29): the scan dialog's folder and the layers it
will scan in plain sight, tiles that fill the dock, pattern mode that says how long it takes."""
import pytest

pytest.importorskip("pytestqt")

from PyQt5 import QtCore  # noqa: E402

from cnnvis_gui.atlas import TopKScan  # noqa: E402

from ..waits import signal, until  # noqa: E402
from ..atlas.helpers import TINY_SPEC, make_images, tiny_model  # noqa: E402


def test_tile_layout_fills_a_wide_low_dock_and_a_tall_column():
    from cnnvis_gui.qt.atlas_pane import tile_layout
    cols, tile = tile_layout(1300, 260, 9)
    assert (cols, tile) != (3, 62) and tile >= 95 and cols == 5          # 2 rows of 5: ~100 px, not 62
    cols, tile = tile_layout(420, 1000, 9)
    assert tile >= 48
    assert tile_layout(700, 700, 9)[1] > tile_layout(1300, 260, 9)[1]     # a square room: bigger still
    for w, h in ((1300, 260), (700, 700), (420, 1000), (1900, 300)):
        cols, tile = tile_layout(w, h, 9)
        rows = -(-9 // cols)
        assert (2 * cols + min(rows, 2)) * tile <= w and rows * tile <= h, (w, h, cols, tile)
    assert tile_layout(1450, 70, 9) == (9, 66)                            # a strip: one row beside the optimized


def test_the_pane_scales_its_tiles_with_the_dock(qtbot, tmp_path):
    from cnnvis_gui.qt.atlas_pane import AtlasPane
    make_images(tmp_path / "im", n=12, bad=False)
    model = tiny_model()
    s = TopKScan(model, TINY_SPEC, tmp_path / "im", ["features.4"], k=9, use_cache=False)
    for _ in s.run():
        pass
    pane = AtlasPane(model, TINY_SPEC)
    qtbot.addWidget(pane)
    pane.resize(1300, 300)
    pane.show()
    pane.set_scan(s.result)
    with signal(qtbot, pane.worker.cropsReady):
        pane.show_unit("features.4", 2)
    until(qtbot, lambda: pane.tile >= 90)
    assert pane.cols == 5 and pane.image_cells[0].maximumWidth() == pane.tile
    assert pane.minimumSizeHint().width() < 800                          # big tiles, and the dock can shrink
    assert pane.image_cells[0].pixmap().width() == pane.tile or pane.image_cells[0].pixmap().height() == pane.tile
    pane.resize(700, 900)                                             # a column: fewer columns, bigger tiles
    until(qtbot, lambda: pane.cols < 5 and pane.tile > 100)
    assert max(pane.image_cells[0].pixmap().width(), pane.image_cells[0].pixmap().height()) == pane.tile
    pane.close_worker()


def test_scan_dialog_shows_what_it_will_scan(qtbot, tmp_path):
    from cnnvis_gui.qt.atlas_dialog import AtlasScanDialog
    make_images(tmp_path / "im", n=4)
    names = ["features.0", "features.1", "features.2", "features.3", "features.4", ""]
    dlg = AtlasScanDialog(tiny_model(), TINY_SPEC, names, folder=tmp_path / "im", k=4, selected=["features.4"],
                          stops=["features.1", ""], current="features.4")
    qtbot.addWidget(dlg)
    first = dlg.layers.item(0)
    assert first.data(QtCore.Qt.UserRole) == "features.4" and "current layer" in first.text()
    assert first.checkState() == QtCore.Qt.Checked                          # ticked, and at the top
    shown = [dlg.layers.item(i).data(QtCore.Qt.UserRole) for i in range(dlg.layers.count())
             if not dlg.layers.item(i).isHidden()]
    assert shown == ["features.4", "features.1", ""]                        # the stops, and what is ticked
    assert dlg.ticked.text() == "1 layer: features.4 (the current layer)"
    dlg.every_module.setChecked(True)
    assert all(not dlg.layers.item(i).isHidden() for i in range(dlg.layers.count()))
    dlg.layers.item(1).setCheckState(QtCore.Qt.Checked)
    assert dlg.ticked.text().startswith("2 layers: features.4 (the current layer), ")


def test_scan_dialog_starts_on_the_folder_being_looked_at(qtbot, window, tmp_path):
    import cv2
    import numpy as np
    from cnnvis_gui.sources import ImageFolderSource
    (tmp_path / "photos").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "photos" / f"p{i}.png"), np.full((40, 48, 3), 40 * i, np.uint8))
    with signal(qtbot, window.frameDrawn):
        window.set_source(ImageFolderSource(tmp_path / "photos"))
    d = window.atlas.scan_dialog()
    qtbot.addWidget(d)
    assert d.folder.text() == str(tmp_path / "photos")
    assert d.layers.item(0).data(QtCore.Qt.UserRole) == window.state.layer
    d.close()


def test_pattern_mode_says_how_long_it_takes(qtbot, window, tmp_path, monkeypatch):
    from cnnvis_gui.qt import patterns
    monkeypatch.setattr(patterns, "PATTERN_REPORT_S", 0.0)               # a report after every crop
    make_images(tmp_path / "im", n=6, size=(32, 32), bad=False)
    scan = TopKScan(window.loaded.model, window.loaded.spec, tmp_path / "im", ["conv2"], k=2, use_cache=False)
    for _ in scan.run():
        pass
    window.atlas.set_scan(scan.result)
    reports = []
    show = window.status.show_report
    monkeypatch.setattr(window.status, "show_report", lambda r: (reports.append(r), show(r)))
    qtbot.keyClick(window, "s")                                           # conv2: 12 units, 12 top-1 crops
    until(qtbot, lambda: bool(window.atlas._pattern_tiles))
    assert reports[0].what == "patterns" and (reports[0].done, reports[0].total, reports[0].unit) == (0, 12, "crop")
    assert any(r.left_s is not None and not r.finished for r in reports)   # the time left, once measured
    assert reports[-1].finished and reports[-1].done == 12
    until(qtbot, lambda: not window.status.task.isVisible())
    assert "Patterns" in window.grid.title.text()
