"""The atlas pane's *Objective* field on the shapes demo (offscreen Qt), used the way a user uses it:
the command line's image for the same text, one line for a bad text, Stop, and ×4."""
import cv2
import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PyQt5 import QtCore  # noqa: E402

from cnnvis_gui import cli  # noqa: E402

from ..waits import until  # noqa: E402

TEXT = "features.10:5 - 0.5*features.10:7"


@pytest.fixture
def pane(qtbot, cache):
    from cnnvis_gui.models import demo
    from cnnvis_gui.qt.atlas_pane import AtlasPane
    lm = demo("shapes")
    p = AtlasPane(lm.model, lm.spec)
    qtbot.addWidget(p)
    yield p
    p.close_worker()


def _type(qtbot, pane, text):
    pane.objective.edit.setText(text)
    qtbot.keyClick(pane.objective.edit, QtCore.Qt.Key_Return)


def _done(pane):
    return pane.status.text().startswith(("1 image", "4 images", "failed:"))


def _cli(tmp_path, out, *args):
    return cli.main(["optimize", "--model", "shapes", "--device", "cpu", "--quiet", "--objective", TEXT,
                     "--iterations", "6", "--out", str(out), *args])


def test_the_field_makes_the_command_lines_image_and_shares_its_cache(qtbot, pane, tmp_path, capsys):
    assert "features.10:5 + 0.5*features.13:20" in pane.objective.edit.toolTip()     # the grammar, an example
    assert pane.objective.edit.placeholderText().startswith("e.g. output:0 - output:1")
    pane.show_unit("features.10", 5)
    assert pane.objective.edit.placeholderText().startswith("e.g. features.10:5 - 0.5*features.10:0")
    pane.max_iter = 6
    _type(qtbot, pane, TEXT)
    until(qtbot, lambda: _done(pane))
    status = pane.status.text()
    assert status.startswith("1 image, objective ") and "random input" in status and "cached" not in status, status
    assert pane.title.text() == f"Objective {TEXT}" and not pane.opt_label.pixmap().isNull()
    assert not pane.objective.stop_button.isEnabled()
    shown = pane._opt_rgb.copy()
    # the command line with the same text, preset, steps and seed: the window's image, from the shared cache
    assert _cli(tmp_path, tmp_path / "cached.png") == cli.EXIT_OK
    assert "from cache" in capsys.readouterr().out
    assert np.array_equal(cv2.imread(str(tmp_path / "cached.png"))[..., ::-1], shown)
    # ... and computed again without the cache: the same pixels (same seeds, parameters and layouts)
    assert _cli(tmp_path, tmp_path / "fresh.png", "--no-cache") == cli.EXIT_OK
    assert "from cache" not in capsys.readouterr().out
    assert np.array_equal(cv2.imread(str(tmp_path / "fresh.png"))[..., ::-1], shown)
    _type(qtbot, pane, f"  {TEXT} ")                            # the spaces around it change nothing
    until(qtbot, lambda: "(cached)" in pane.status.text())
    assert np.array_equal(pane._opt_rgb, shown)


@pytest.mark.parametrize("text,words", [
    ("features.10:5 +* 2", "failed: cannot read a term at character 16 of 'features.10:5 +* 2'"),
    ("featurez.10:5", "failed: unknown layer 'featurez.10'. Did you mean: 'features.10'"),
    ("features.10:99", "failed: unit 99 is out of range for layer 'features.10': it has 64 units (0..63)."),
    ("features.10:5@40,40", "failed: position (40, 40) is outside the 16x16 map of layer 'features.10'."),
    ("features.10:dir=/nonexistent/v.npy", "failed: direction file of layer 'features.10' not found"),
    ("", "failed: nothing to optimize"),
])
def test_a_bad_objective_is_one_line_and_the_pane_goes_on(qtbot, pane, text, words):
    reported = []
    pane.objectiveReported.connect(lambda line, error: reported.append((line, error)))
    pane.max_iter = 3
    _type(qtbot, pane, text)
    until(qtbot, lambda: _done(pane))
    status = pane.status.text()
    assert status.startswith(words) and "\n" not in status and "Traceback" not in status, status
    assert reported == [(f"objective: {status[len('failed: '):]}", True)]       # for the window's status bar
    assert not pane.objective.stop_button.isEnabled()
    _type(qtbot, pane, "output:2 - output:3")                    # the pane still works
    until(qtbot, lambda: _done(pane))
    assert pane.status.text().startswith("1 image, objective "), pane.status.text()


def test_stop_ends_an_objective_keeping_its_image_uncached_and_x4_makes_four(qtbot, pane, cache):
    pane.max_iter = 100_000
    _type(qtbot, pane, "output:2")
    assert pane.objective.stop_button.isEnabled()
    until(qtbot, lambda: pane.status.text().startswith("optimizing: step "))
    pane.objective.stop_button.click()
    until(qtbot, lambda: _done(pane))
    assert "(stopped at step " in pane.status.text() and not pane.opt_label.pixmap().isNull(), pane.status.text()
    assert not list(cache.glob("optimize-objective-*"))             # a stopped run is not cached
    pane.max_iter = 4
    pane.copies.click()
    _type(qtbot, pane, "features.10:5")
    until(qtbot, lambda: _done(pane))
    assert pane.status.text().startswith("4 images, objective ") and "Gram similarity" in pane.status.text()
    assert pane._opt_rgb.shape == (2 * 64 + 2, 2 * 64 + 2, 3)        # their 2 x 2 montage


def test_the_field_sits_beside_the_title_in_a_wide_dock_and_under_it_in_a_column(qtbot, pane):
    from PyQt5 import QtWidgets
    pane.resize(1300, 300)
    pane.show()
    until(qtbot, lambda: pane._top.direction() == QtWidgets.QBoxLayout.LeftToRight and pane.tile > 60)
    assert abs(pane.objective.geometry().top() - pane.title.geometry().top()) < pane.objective.height()
    pane.resize(600, 900)
    until(qtbot, lambda: pane._top.direction() == QtWidgets.QBoxLayout.TopToBottom)
    until(qtbot, lambda: pane.objective.geometry().top() >= pane.title.geometry().bottom())


def test_a_click_on_the_optimized_image_shows_it_large(qtbot, pane):
    pane.resize(1300, 200)
    pane.show()
    pane.max_iter = 4
    _type(qtbot, pane, "output:2")
    until(qtbot, lambda: _done(pane))
    assert pane.opt_label.pixmap().width() < 100                      # two tiles of a low dock
    qtbot.mouseClick(pane.opt_label, QtCore.Qt.LeftButton)
    until(qtbot, lambda: pane.large is not None and pane.large.isVisible())
    assert pane.large.pixmap().width() >= 400 and "output:2" in pane.large.windowTitle()
    assert np.array_equal(pane.large.rgb, pane._opt_rgb)
