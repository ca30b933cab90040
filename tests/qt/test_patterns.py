"""Pattern mode (s) and the unit atlas reopened from the cache, driven like a user (offscreen)."""
from __future__ import annotations

import numpy as np
import pytest
from PyQt5 import QtCore

from cnnvis_gui.atlas import TopKScan, fit_tile, top1_crops
from cnnvis_gui.qt.patterns import PATTERN_TILE
from cnnvis_gui.qt.window import MainWindow

from ..atlas.helpers import make_images
from ..waits import drawn, signal, until

pytest.importorskip("cnnvis_gui.qt.atlas_pane")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))


def _scan(win, folder, layers, k=2):
    s = TopKScan(win.loaded.model, win.loaded.spec, folder, layers, k=k, batch_size=8)
    for _ in s.run():
        pass
    return s.result


def _tile_center_in_view(win, unit):
    x0, y0, w, h = win.grid.mosaic.tile_rect(unit)
    scene_pt = win.grid.item.mapToScene(QtCore.QPointF(x0 + w / 2, y0 + h / 2))
    return win.grid.view.mapFromScene(scene_pt)


def test_s_without_a_scan_says_so_and_stays_on_activations(qtbot, window):
    res = window.last_result
    qtbot.keyClick(window, "s")
    assert not window.state.patterns
    assert "no atlas for layer conv2 yet" in window.status_text() and "Atlas" in window.status_text()
    assert window.grid.mosaic is res.mosaic and window.grid.title.text().startswith("Activations")


def test_s_shows_top1_crops_in_the_grid_and_clicks_still_select(qtbot, window, tmp_path):
    make_images(tmp_path / "im", n=10, bad=False)
    scan = _scan(window, tmp_path / "im", ["conv2"])
    window.atlas.on_scan(scan)
    with signal(qtbot, window.patternsReady):
        qtbot.keyClick(window, "s")
    assert window.state.patterns
    m, act = window.grid.mosaic, window.last_result.mosaic
    assert m is not act and (m.rows, m.cols, m.n_units) == (act.rows, act.cols, 12)
    assert "Patterns" in window.grid.title.text() and "top-1 crops" in window.grid.title.text()
    # every tile is that unit's best top-1 crop, fitted to the tile
    crops = top1_crops(window.loaded.model, window.loaded.spec, scan, "conv2")
    img = window.grid.last_image
    for u in (0, 5, 11):
        x0, y0, w, h = m.tile_rect(u)
        assert (w, h) == (PATTERN_TILE, PATTERN_TILE)
        assert np.array_equal(img[y0:y0 + h, x0:x0 + w], fit_tile(crops[u], PATTERN_TILE))
    # a click on a pattern tile selects that unit; the grid keeps showing patterns
    qtbot.wait(50)          # let the view range follow the larger image
    qtbot.mouseClick(window.grid.view.viewport(), QtCore.Qt.LeftButton, pos=_tile_center_in_view(window, 5))
    drawn(qtbot, window, lambda r: r.unit == 5)
    assert window.state.unit == 5 and window.grid.mosaic is m
    r = window.grid.sel_rect.rect()
    assert (r.x(), r.y(), r.width(), r.height()) == m.tile_rect(5)
    # s again: back to activations at once; s once more: patterns at once (cached, no recompute)
    qtbot.keyClick(window, "s")
    assert not window.state.patterns and window.grid.mosaic is window.last_result.mosaic
    qtbot.keyClick(window, "s")
    assert window.state.patterns and window.grid.mosaic is m and window.atlas._pattern_pending is None
    # a layer without a scan: message, back to activations
    window.state.update(layer="conv1")
    assert not window.state.patterns and "no atlas for layer conv1 yet" in window.status_text()


def test_reopening_the_app_shows_the_cached_atlas_without_scanning(qtbot, tmp_path, monkeypatch):
    make_images(tmp_path / "im", n=12, size=(72, 72), bad=False)
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    with signal(qtbot, win.modelChanged):
        assert win.open_demo("shapes", images=False)
    dlg = win.atlas_scan_dialog()
    assert dlg is not None and win.atlas_dock.isVisible()
    dlg.folder.setText(str(tmp_path / "im"))
    dlg.k.setValue(3)
    with signal(qtbot, dlg.scanFinished) as sig:
        dlg.start_button.click()
    scan = sig.args[0]
    layer = win.state.layer
    assert layer in scan.layers and win.atlas_pane.scan is scan
    until(qtbot, lambda: dlg.worker is None)
    dlg.close()
    win.close()

    def no_scanning(self):
        raise AssertionError("the reopened window must not scan again")
    monkeypatch.setattr(TopKScan, "run", no_scanning)
    win2 = MainWindow()
    qtbot.addWidget(win2)
    win2.show()
    with signal(qtbot, win2.atlasRestored) as sig:
        win2.open_demo("shapes", images=False)
    again = sig.args[0]
    assert again.from_cache and again.key == scan.key and win2.atlas_scan is again
    pane = win2.atlas_pane
    assert pane is not None and not win2.atlas_dock.isHidden()        # shown again, as it was
    assert pane.scan is again
    win2.state.select_unit(1)                                            # the pane follows the selection
    assert (pane.layer, pane.unit) == (layer, 1)

    def shown():
        return sum(lab.pixmap() is not None and not lab.pixmap().isNull() for lab in pane.image_cells)
    until(qtbot, lambda: shown() == 3)                # its 3 top images, no scan ran
    assert all(scan.hits(layer, 1)[i].path.name in pane.image_cells[i].toolTip() for i in range(3))
    win2.close()


def test_another_model_does_not_get_the_cached_atlas(qtbot, tmp_path):
    make_images(tmp_path / "im", n=6, size=(72, 72), bad=False)
    win = MainWindow()
    qtbot.addWidget(win)
    with signal(qtbot, win.modelChanged):
        win.open_demo("shapes", images=False)
    win.atlas.on_scan(_scan(win, tmp_path / "im", [win.state.layer]))
    import copy
    import torch
    other = copy.copy(win.loaded)
    other.model = copy.deepcopy(win.loaded.model)
    with torch.no_grad():
        next(other.model.parameters()).add_(1.0)            # same name and source, other weights
    looked = []
    win.atlas._atlasLookedUp.connect(lambda gen, scan: looked.append(scan))
    with signal(qtbot, win.modelChanged):
        win.load_model(other)
    until(qtbot, lambda: bool(looked))
    assert looked == [None] and win.atlas_scan is None
    win.close()


def test_s_when_the_model_cannot_be_copied_says_so(qtbot, window, tmp_path, monkeypatch):
    import cnnvis_gui.qt.patterns as patterns
    from cnnvis_gui.core import CnnvisError

    make_images(tmp_path / "im", n=6, bad=False)
    window.atlas.on_scan(_scan(window, tmp_path / "im", ["conv2"]))

    def no_copy(model):
        raise CnnvisError("the model could not be copied for a background thread: boom")

    monkeypatch.setattr(patterns, "private_model", no_copy)
    qtbot.keyClick(window, "s")
    assert not window.state.patterns
    assert "pattern mode is not available" in window.status_text() and "boom" in window.status_text()
    assert window.grid.title.text().startswith("Activations")
    qtbot.keyClick(window, "j")  # the window keeps working
