"""Attention rollout and LeGrad in the window on a ViT (timm ViT-Ti/16, random init): chosen in the CAM
group with no CAM layer, the pane's map is the core's, and LeGrad of an inner unit says why in the pane."""
import numpy as np
import torch

from cnnvis_gui.core import InputSpec, Visualizer

from ..waits import drawn
from .test_layouts_window import _choose, open_window  # noqa: F401 - the fixture


def _method(qtbot, win, method):
    box = win.bp1.method_box
    assert box.model().item(box.findData(method)).isEnabled()          # a ViT: not greyed
    box.setCurrentIndex(box.findData(method))
    return drawn(qtbot, win, lambda r: r.backprops and r.backprops[0].method == method)


def test_rollout_and_legrad_in_the_pane_are_the_cores(qtbot, open_window, timm_net):
    model = timm_net("vit")
    win = open_window(model, InputSpec(3, 224, 224), "vit-tiny (random)")
    _choose(qtbot, win, "head")
    res = _method(qtbot, win, "legrad")
    bp = res.backprops[0]
    assert not bp.unavailable and bp.cam_layer is None and bp.raw.shape == (224, 224)
    assert not win.bp1.cam_box.isVisibleTo(win.bp1) and not win.bp1.cam_label.isVisibleTo(win.bp1)
    assert win.bp1.title.text() == "LeGrad" and win.bp1.info.text() == f"head · #{res.bp[1]}"
    assert "Bousselham" in win.bp1.info.toolTip()
    x = torch.from_numpy(np.array(res.raw_input))[None]
    with Visualizer(model).forward(x) as frame:
        ref = frame.cam("head", res.bp[1], method="legrad")[0].numpy()
        roll = frame.cam("blocks.5", 0, method="rollout")[0].numpy()
    np.testing.assert_allclose(bp.raw, ref, atol=1e-5)
    # an inner unit: LeGrad says why in the pane (not an error); rollout maps it
    res = _choose(qtbot, win, "blocks.5")
    bp = res.backprops[0]
    assert bp.unavailable and win.bp1.note.isVisibleTo(win.bp1)
    assert win.bp1.note.text().startswith("LeGrad maps the model's output classes only")
    assert not np.any(bp.raw) and win.status.last_error == ""
    res = _method(qtbot, win, "rollout")
    assert not res.backprops[0].unavailable and win.bp1.title.text() == "attention rollout"
    assert not win.bp1.note.isVisibleTo(win.bp1)
    np.testing.assert_allclose(res.backprops[0].raw, roll, atol=1e-5)
