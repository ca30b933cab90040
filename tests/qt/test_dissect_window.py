"""Network dissection in the window: the Dissect dialog, labels in the grid (tiles and hover), the
unit pane's and the atlas pane's titles, the summary dock; the shapes demo labels itself at first
start and comes back from the cache at the next."""
from __future__ import annotations

import pytest

from cnnvis_gui.dissect import demo as DD
from cnnvis_gui.models import demo_checkpoint

from ..dissect.helpers import make_concepts
from ..waits import drawn, signal, until


def _hover(win, unit):
    m = win.grid.mosaic
    x0, y0, w, h = m.tile_rect(unit)
    win.grid._on_hover(x0 + w / 2, y0 + h / 2)
    return win.grid.info.text()


def _labels(win):
    """The concepts under the tiles (a name wider than its tile is shown shrunk or cut with "…": the whole
    name is the label's own; tests/qt/test_first_session.py checks the fit)."""
    shown = [t.textItem.toPlainText() for t in win.grid._label_items]
    full = [t.full_text for t in win.grid._label_items]
    assert all(a == b or (a.endswith("…") and b.startswith(a[:-1])) for a, b in zip(shown, full)), (shown, full)
    return full


def test_the_dialog_dissects_and_every_view_shows_the_labels(qtbot, window, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))
    folder = make_concepts(tmp_path / "concepts", n=16, seed=1)
    win = window
    d = win.dissect.dialog()
    qtbot.addWidget(d)
    assert [d.layers.item(i).data(0x0100) for i in range(d.layers.count())] == \
        ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2"]          # layers with a spatial map (pool2: 1 x 1)
    d.concepts.setText(str(folder))
    for i in range(d.layers.count()):
        d.layers.item(i).setCheckState(2 if d.layers.item(i).data(0x0100) in ("relu1", "conv2") else 0)
    d.quantile.setValue(0.1)
    with signal(qtbot, d.dissected) as got:
        d.start()
    res, params = got.args
    assert params == {"concepts": str(folder), "layers": ["relu1", "conv2"], "quantile": 0.1}
    assert win.state.dissection is res and set(res.layers) == {"relu1", "conv2"}
    assert "units interpretable" in d.status.text()
    assert win.dissect.dock.isVisible() and "relu1" not in win.dissect.summary.title.text()
    win.state.update(layer="conv2", unit=0)
    win.request_render()
    drawn(qtbot, win, lambda r: r.layer == "conv2" and r.unit == 0)
    lab = res.unit("conv2", 0)
    assert lab.describe() in _hover(win, 0)                              # the hover line
    assert win.unit_pane.title.text() == "Unit 0"                          # the unit pane's title, and under it
    concept = win.unit_pane.concept                                      # the label on a line that wraps
    assert concept.isVisible() and concept.wordWrap() and lab.concept in concept.text()
    assert lab.concept in concept.toolTip() and f"{lab.iou:.3f}" in concept.toolTip()
    shown = _labels(win)
    assert shown == [u.concept for u in res.layer("conv2").units if u.interpretable] and shown
    assert "conv2" in win.dissect.summary.title.text()
    pane = win.show_atlas()
    assert lab.describe() in pane.title.text()                           # the atlas pane
    # a layer without a dissection: no labels, a plain title
    win.state.update(layer="fc", unit=1)
    drawn(qtbot, win, lambda r: r.layer == "fc" and r.unit == 1)
    assert _labels(win) == ["a", "b", "c", "d"] and win.unit_pane.title.text() == "Unit 1"
    assert not win.unit_pane.concept.isVisible()
    assert "No dissection of this layer" in win.dissect.summary.title.text()
    assert win.dissect.remembered() == params


def test_a_bad_concept_folder_is_one_line_in_the_dialog(qtbot, window, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))
    folder = make_concepts(tmp_path / "concepts", n=4)
    (folder / "masks" / "im001.png").unlink()
    d = window.dissect.dialog()
    qtbot.addWidget(d)
    d.concepts.setText(str(folder))
    d.start()
    until(qtbot, lambda: d.status.text().startswith("Dissection failed"))
    assert "has no mask" in d.status.text() and "\n" not in d.status.text()
    assert window.state.dissection is None


@pytest.mark.skipif(not demo_checkpoint("shapes").is_file(), reason="demo checkpoints not built")
def test_the_shapes_demo_shows_labels_at_first_start_and_from_the_cache_after(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNVIS_DEMO_DISSECT", "1")
    monkeypatch.setattr(DD, "DEMO_CONCEPT_IMAGES", 40)
    monkeypatch.setattr(DD, "DEMO_LAYERS", ("features.12", "features.14"))
    from cnnvis_gui.qt.window import MainWindow

    def start():
        win = MainWindow()
        qtbot.addWidget(win)
        win.resize(1280, 720)
        win.show()
        win.open_demo("shapes", images=True)
        return win
    win = start()
    until(qtbot, lambda: win.state.dissection is not None)
    res = win.state.dissection
    assert not res.from_cache and res.images == 40 and set(res.layers) == {"features.12", "features.14"}
    assert res.categories == ["shape", "color", "texture"]
    assert win.dissect.dock.isVisible()
    until(qtbot, lambda: win.state.layer == "features.14")        # the demo's first view (core.stops)
    win.request_render()
    drawn(qtbot, win, lambda r: r.layer == "features.14")
    assert _labels(win) == [u.concept for u in res.layer("features.14").units if u.interpretable]
    assert res.unit("features.14", 3).describe() in _hover(win, 3)
    win.close()
    # the next start: from the cache, nothing drawn or run again
    win2 = start()
    until(qtbot, lambda: win2.state.dissection is not None)
    again = win2.state.dissection
    assert again.from_cache and win2.dissect.demo_worker is None
    assert [u.to_dict() for u in again.layer("features.14").units] == [u.to_dict() for u in res.layer("features.14").units]
    win2.close()


def test_a_models_last_dissection_comes_back_from_the_cache_when_it_is_opened_again(qtbot, window, tmp_path,
                                                                                     monkeypatch):
    from cnnvis_gui.qt.window import MainWindow

    from .conftest import loaded
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))
    folder = make_concepts(tmp_path / "concepts", n=8, seed=2)
    d = window.dissect.dialog()
    qtbot.addWidget(d)
    d.concepts.setText(str(folder))
    with signal(qtbot, d.dissected) as got:
        d.start()
    first = got.args[0]
    d.close()
    model = window.session.loaded.model
    win2 = MainWindow()                   # the same settings file: this model's last dissection is remembered
    qtbot.addWidget(win2)
    win2.load_model(loaded(model))
    until(qtbot, lambda: win2.state.dissection is not None)
    again = win2.state.dissection
    assert again.from_cache and list(again.layers) == list(first.layers)
    assert [u.to_dict() for u in again.layer("conv2").units] == [u.to_dict() for u in first.layer("conv2").units]
    win2.close()
