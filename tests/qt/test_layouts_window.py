"""The window on modern networks (issue 25): ConvNeXt and ViT layers are grids of features.

A ViT block is 192 tiles of 14 x 14 (not 197 tokens), its class token is shown beside the map and
can be the backprop objective; a ConvNeXt block's channels-last MLP is 768 tiles; the module tree
has a Layout column, and a layer can be read in another layout from its menu (a wrong one is a
message naming the shape, and the model stays as it was).
"""
import types

import numpy as np
import pytest

from cnnvis_gui.core import InputSpec

from ..waits import drawn, idle, signal, until
from .conftest import StillSource


def _loaded(model, spec, name):
    return types.SimpleNamespace(model=model, spec=spec, labels=None, name=name, notes=[], layouts={})


@pytest.fixture
def open_window(qtbot):
    from cnnvis_gui.qt.window import MainWindow
    wins = []

    def open_(model, spec, name, size=(1200, 800)):
        win = MainWindow()
        qtbot.addWidget(win)
        win.resize(*size)
        win.show()
        with signal(qtbot, win.modelChanged):
            win.load_model(_loaded(model, spec, name))
        win.set_source(StillSource())
        idle(qtbot, win)
        wins.append(win)
        return win

    yield open_
    for w in wins:
        w.close()


def _choose(qtbot, win, layer):
    win.tree.setCurrentItem(win.tree.items[layer])
    return drawn(qtbot, win, lambda r: r.layer == layer)


def test_vit_block_is_a_grid_of_features_with_its_class_token(qtbot, open_window, timm_net):
    win = open_window(timm_net("vit"), InputSpec(3, 224, 224), "vit-tiny (random)")
    res = _choose(qtbot, win, "blocks.5")
    assert win.grid.mosaic.n_units == 192 and win.state.n_units == 192
    assert res.raw_grid.shape == (192, 14, 14) and res.layout == "tokens:1+14x14"
    assert len(res.prefix_values) == 1 and win.unit_pane.info.text().startswith("CLS ")
    assert "the class token" in win.unit_pane.info.toolTip()
    assert "(192 units of 14×14 · tokens:1+14x14 · Block, 197×192)" in win.grid.title.text()
    assert win.tree.items["blocks.5"].text(3) == "tokens:1+14x14"
    assert "not visualizable: not spatial: per-head token" in win.tree.items["blocks.5.attn.q_norm"].toolTip(0)
    # the class token as the objective: backprop from the feature at token 0
    win.objective_box.setCurrentIndex(win.objective_box.findData("prefix:0"))
    until(qtbot, lambda: win.state.objective == "prefix:0")
    idle(qtbot, win)
    assert win.last_result.backprops and np.any(win.last_result.backprops[0].raw)



def test_deit_unit_pane_names_both_prefix_tokens(qtbot, open_window, timm_net):
    """DeiT's class and distillation tokens are both in the unit pane's header, by name, the layer after."""
    win = open_window(timm_net("deit"), InputSpec(3, 224, 224), "deit-tiny-distilled (random)")
    res = _choose(qtbot, win, "blocks.5")
    assert res.layout == "tokens:2+14x14" and len(res.prefix_values) == 2
    cls, dist = res.prefix_values
    assert win.unit_pane.info.text() == f"CLS {cls:.3g} · dist {dist:.3g} · of blocks.5"
    assert f"dist {dist:.6g}" in win.unit_pane.info.toolTip()

def test_layer_layout_override_from_the_tree_menu(qtbot, open_window, timm_net, tmp_path):
    win = open_window(timm_net("vit"), InputSpec(3, 224, 224), "vit-tiny (random)")
    _choose(qtbot, win, "blocks.5")
    menu = win.tree.layout_menu("blocks.5")
    texts = [a.text() for a in menu.actions() if not a.isSeparator()]
    assert "the detected layout (tokens:1+14x14)" in texts and "nchw (channels first)" in texts
    # a wrong layout: one line naming the shape, the model unchanged
    gen = win.session.gen
    assert not win.session.set_layout("blocks.5", "tokens:2+14x14")
    assert "N x 197 x 192" in win.status.last_error and win.session.gen == gen
    # the user's reading: 197 channels-first units, then back to the detected layout
    with signal(qtbot, win.modelChanged):
        next(a for a in menu.actions() if a.text() == "nchw (channels first)").trigger()
    res = drawn(qtbot, win, lambda r: r.layer == "blocks.5" and r.gen == win.session.gen)
    assert win.state.n_units == 197 and res.layout == "nchw" and win.tree.items["blocks.5"].text(3) == "nchw"
    with signal(qtbot, win.modelChanged):
        win.session.set_layout("blocks.5", None)
    res = drawn(qtbot, win, lambda r: r.layer == "blocks.5" and r.gen == win.session.gen)
    assert win.state.n_units == 192 and res.layout == "tokens:1+14x14"
    # the raw arrays keep the model's own layout and say which it is
    path = win.saver.save_npz(tmp_path / "vit.npz")
    z = np.load(path)
    assert str(z["layout"]) == "tokens:1+14x14" and z["grid"].shape == (192, 14, 14)
    assert z["activations"].shape == (197, 192) and np.array_equal(z["activations"][1:].T.reshape(192, 14, 14),
                                                                   z["grid"])
    assert np.array_equal(z["activations"][0], z["prefix_tokens"][:, 0])


def test_convnext_channels_last_mlp_is_a_grid_of_features(qtbot, open_window, timm_net):
    win = open_window(timm_net("convnext"), InputSpec(3, 64, 64), "convnext-tiny (random)")
    res = _choose(qtbot, win, "stages.1.blocks.0.mlp.fc1")
    assert win.grid.mosaic.n_units == 768 and res.raw_grid.shape == (768, 8, 8) and res.layout == "nhwc"
    assert win.tree.items["stages.1.blocks.0.mlp.fc1"].text(3) == "nhwc"
    assert win.tree.items["stages.1.blocks.0"].text(3) == "nchw"
    # the default CAM layer of the output is the last spatial map: Grad-CAM works without a choice
    assert win.session.mm.default_cam_layer("") == "norm_pre"


def test_the_module_dock_widens_until_the_layout_column_is_whole(qtbot, open_window, timm_net):
    """The module dock widens (while the panes beside it keep 900 px) until Output, Units and Layout are
    whole: its first 300 px cut ``tokens:1+14x14`` to "toke…" at 1280 x 720 (X11 fonts; the offscreen platform's
    are wider, hence the wider window here); the module names give way first, down to 90 px."""
    win = open_window(timm_net("vit"), InputSpec(3, 224, 224), "vit-tiny (random)", size=(1800, 800))
    tree, fm = win.tree, win.tree.fontMetrics()
    whole = lambda: (all(tree.columnWidth(c) >= tree.sizeHintForColumn(c) for c in (1, 2, 3))  # noqa: E731
                     and sum(tree.columnWidth(c) for c in range(4)) <= tree.viewport().width())
    until(qtbot, whole)
    assert tree.columnWidth(3) >= fm.horizontalAdvance("tokens:1+14x14")
    # the first layer's row is on screen once the dock is laid out (it had ended under the bottom edge)
    row = lambda: tree.visualItemRect(tree.currentItem())                                   # noqa: E731
    until(qtbot, lambda: 0 <= row().top() and row().bottom() < tree.viewport().height())
    assert tree.columnWidth(0) >= tree.MIN_NAME_WIDTH
    assert 300 < win.tree_dock.width() <= win.width() - 900
    width = win.tree_dock.width()
    with signal(qtbot, win.modelChanged):            # a model with narrower columns never narrows the dock
        win.load_model(_loaded(timm_net("convnext"), InputSpec(3, 64, 64), "convnext-tiny (random)"))
    idle(qtbot, win)
    assert win.tree_dock.width() >= width and whole()
    win.resize(1000, 800)                            # a narrower window: the names give way, then Layout scrolls
    until(qtbot, lambda: tree.columnWidth(0) == tree.MIN_NAME_WIDTH or whole())


def test_a_narrow_grid_title_keeps_the_units(qtbot, open_window, timm_net):
    """At 1280 x 720 the grid's rich-text title was clipped to "(1536 units of 14": a narrow title now
    shows the longest of its shorter variants that fits, the units always in it; text() stays whole."""
    win = open_window(timm_net("convnext"), InputSpec(3, 64, 64), "convnext-tiny (random)")
    _choose(qtbot, win, "stages.1.blocks.0.mlp.fc1")
    title = win.grid.title
    assert "(768 units of 8×8 · nhwc · Linear, 8×8×768)" in title.text()
    assert "Activations — stages.1.blocks.0.mlp.fc1 (768 units of 8×8 · nhwc · Linear" in title.toolTip()
    title.resize(title.sizeHint().width(), title.height())           # room for the whole title
    assert title.shown_text() == title.text()
    title.resize(title.sizeHint().width() - 20, title.height())
    shown = title.shown_text()
    assert "(768 units of 8×8 · nhwc)" in shown and "Linear" not in shown
    title.resize(60, title.height())
    shown = title.shown_text()
    assert shown.startswith("<b>stages.1.blocks.0.mlp.fc1</b>") and "(768 units of 8×8)" in shown


def test_the_grid_gives_the_module_dock_its_room(qtbot, timm_net):
    """The widened dock's pixels come out of the activation grid: the input and backprop columns keep
    their widths (shrunk by the splitter's stretch, the method box had read "Grad-CA" at 1280 x 720)."""
    from cnnvis_gui.qt.window import MainWindow
    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1800, 800)
    with qtbot.waitExposed(win):
        win.show()
    until(qtbot, lambda: sum(win.splitter.sizes()) > 0)
    before, dock = win.splitter.sizes(), win.tree_dock.width()
    with signal(qtbot, win.modelChanged):
        win.load_model(_loaded(timm_net("vit"), InputSpec(3, 224, 224), "vit-tiny (random)"))
    centre = win.splitter.indexOf(win.center)
    grown = lambda: win.tree_dock.width() - dock                                              # noqa: E731
    until(qtbot, lambda: grown() > 0 and win.splitter.sizes()[centre] <= before[centre] - grown() + 2)
    after = win.splitter.sizes()
    assert [s for i, s in enumerate(after) if i != centre] == [s for i, s in enumerate(before) if i != centre]
    win.close()
