"""The atlas pane and scan dialog (offscreen Qt), used the way a user uses them."""
import pytest

pytest.importorskip("pytestqt")

from cnnvis_gui.atlas import TopKScan  # noqa: E402

from ..waits import signal, until  # noqa: E402
from .helpers import TINY_SPEC, make_images, tiny_model  # noqa: E402


def test_scan_dialog_scans_then_reopens_from_cache(qtbot, tmp_path):
    from cnnvis_gui.qt.atlas_dialog import AtlasScanDialog
    make_images(tmp_path / "im", n=20)
    model = tiny_model()
    dlg = AtlasScanDialog(model, TINY_SPEC, ["features.1", "features.4", ""], folder=tmp_path / "im", k=4,
                          selected=["features.4"], cache_dir=tmp_path / "c", batch_size=4)
    qtbot.addWidget(dlg)
    with signal(qtbot, dlg.scanFinished) as sig:
        dlg.start_button.click()
    res = sig.args[0]
    assert not res.from_cache and list(res.layers) == ["features.4"] and dlg.bar.value() == 100
    until(qtbot, lambda: dlg.worker is None)
    with signal(qtbot, dlg.scanFinished) as sig:
        dlg.start_button.click()
    assert sig.args[0].from_cache and "cache" in dlg.status.text()


def test_pane_shows_crops_and_optimized_image(qtbot, tmp_path):
    from cnnvis_gui.qt.atlas_pane import AtlasPane
    make_images(tmp_path / "im", n=12, bad=False)
    model = tiny_model()
    s = TopKScan(model, TINY_SPEC, tmp_path / "im", ["features.4"], k=9, use_cache=False)
    for _ in s.run():
        pass
    pane = AtlasPane(model, TINY_SPEC)
    qtbot.addWidget(pane)
    assert [pane.preset.itemText(i) for i in range(pane.preset.count())] == [
        "Fourier", "MACO", "pixels", "Yosinski 1", "Yosinski 2", "Yosinski 3", "Yosinski 4"]
    assert pane.preset.currentData() == "fourier"
    pane.set_scan(s.result)
    with signal(qtbot, pane.worker.cropsReady):
        pane.show_unit("features.4", 2)
    assert all(lab.pixmap() is not None and not lab.pixmap().isNull() for lab in pane.image_cells)
    assert all(not lab.pixmap().isNull() for lab in pane.deconv_cells)
    pane.preset.setCurrentIndex(pane.preset.findData("yosinski-2"))   # 750 steps; stopped by selecting another unit
    with signal(qtbot, pane.worker.optimized):
        pane.optimize()
    assert not pane.opt_label.pixmap().isNull()
    with signal(qtbot, pane.worker.cropsReady):
        pane.show_unit("features.4", 3)
    assert "features.4 unit 3" in pane.title.text()
    pane.close_worker()


def test_pane_makes_four_different_images_of_a_unit_and_shows_them_again_from_the_cache(qtbot, cache):
    from cnnvis_gui.qt.atlas_pane import AtlasPane
    pane = AtlasPane(tiny_model(), TINY_SPEC)
    qtbot.addWidget(pane)
    assert pane.copies.text() == "×4" and not pane.copies.isChecked()   # one image unless asked
    pane.show_unit("features.4", 2)
    pane.copies.click()
    pane.optimize()
    until(qtbot, lambda: "4 images, activation" in pane.status.text())
    text = pane.status.text()
    assert "Gram similarity" in text and "at features.4" in text and "(cached)" not in text, text
    assert pane._opt_rgb.shape == (2 * 32 + 2, 2 * 32 + 2, 3)      # their 2 x 2 montage
    tiles = [pane._opt_rgb[y:y + 32, x:x + 32].astype(int) for y in (0, 34) for x in (0, 34)]
    assert min(abs(a - b).mean() for i, a in enumerate(tiles) for b in tiles[i + 1:]) > 2   # four pictures
    assert not pane.opt_label.pixmap().isNull()
    pane.show_unit("features.4", 3)                               # another unit: not optimized yet
    until(qtbot, lambda: pane.status.text() == "not optimized yet")
    pane.show_unit("features.4", 2)                               # back: the four images from the cache
    until(qtbot, lambda: "(cached)" in pane.status.text())
    pane.preset.setCurrentIndex(pane.preset.findData("yosinski-1"))
    pane.optimize()
    until(qtbot, lambda: "the Yosinski presets make one image" in pane.status.text())
    pane.close_worker()
